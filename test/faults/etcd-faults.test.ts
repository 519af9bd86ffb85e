/**
 * The CI-sized run of the fault suite's etcd mode: `runner.js --etcd --scenario etcd --seed 1 --minutes 1` (two sites and
 * a witness, a real etcd cluster, every etcd scenario at least once: site lost, primary cut off from the majority,
 * witness lost, a site's member lost; about two and a half minutes with setup and checks). Skipped, saying so, when no
 * `etcd` binary exists or `npm run build` has not been run. Compiles the suite first, as faults.test.ts does. On failure
 * the run's directory (history, report, daemon and etcd logs) is kept and named in the message.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdBinary } from '../helpers/etcd-cluster.js';
import type { Report } from './checker.js';
import { ETCD_FAULT_KINDS } from './history.js';

const repoRoot = path.resolve(import.meta.dirname, '../..');
const built = existsSync(path.join(repoRoot, 'dist/cli/main.js'));
const SEED = 1;
const skipWhy = !etcdBinary ? 'SKIPPED: no etcd binary on PATH; apt-get install etcd-server' : !built ? 'SKIPPED: needs `npm run build`' : 'real etcd';

describe.skipIf(!etcdBinary || !built)(`fault injection, etcd mode (automatic failover), seed ${SEED}, 1 minute (${skipWhy})`, () => {
  let out = '';
  let code: number | null = null;
  let output = '';
  let report: Report | undefined;

  beforeAll(async () => {
    const tsc = spawnSync(process.execPath, [path.join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', 'test/faults/tsconfig.json'], { cwd: repoRoot, encoding: 'utf8' });
    if (tsc.status !== 0) throw new Error(`compiling the fault suite failed:\n${tsc.stdout}${tsc.stderr}`);
    out = await mkdtemp(path.join(tmpdir(), 'nhr-faults-etcd-ci-'));
    const child = spawn(process.execPath, ['dist-faults/test/faults/runner.js', '--etcd', '--scenario', 'etcd', '--seed', String(SEED), '--minutes', '1', '--out', out, '--converge-timeout', '90'], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.on('data', (d: Buffer) => (output += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (output += d.toString('utf8')));
    code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    report = JSON.parse(await readFile(path.join(out, 'report.json'), 'utf8').catch(() => 'null')) as Report | undefined;
    console.log(output);
  }, 420_000);

  afterAll(async () => {
    if (code === 0) await rm(out, { recursive: true, force: true });
  });

  it('ran to the end and carried out every etcd scenario', () => {
    expect(report, `no report.json; the run's output:\n${output.slice(-4000)}`).toBeTruthy();
    const missing = ETCD_FAULT_KINDS.filter((k) => (report!.faults[k]?.done ?? 0) === 0);
    expect(missing, `etcd scenarios not carried out (see ${out})`).toEqual([]);
    expect(report!.ops.ack).toBeGreaterThan(0);
  });

  it('finds nothing: promotions within TTL + bound, no split brain, no acknowledgement after a lost lease, no loss', () => {
    const summary = output.trim().split('\n').pop() ?? '';
    expect(code, `${summary}\nfindings:\n${(report?.findings ?? []).slice(0, 20).map((f) => `  ${f.kind}: ${f.detail}`).join('\n')}\nrun directory kept: ${out}`).toBe(0);
  });
});
