/**
 * The short seeded fault run of CI: `runner.js --seed 1 --minutes 1` (two sites as real processes, every fault kind at
 * least once, about two minutes with setup and checks). Compiles the suite first (test/faults/tsconfig.json →
 * dist-faults/) so it never runs a stale build; needs `npm run build` for `bin/nethsm-replicator` (skipped otherwise,
 * saying so in its title). On failure the run's directory (history, report, logs) is kept and named in the message.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAULT_KINDS } from './history.js';
import type { Report } from './checker.js';

const repoRoot = path.resolve(import.meta.dirname, '../..');
const built = existsSync(path.join(repoRoot, 'dist/cli/main.js'));
const SEED = 1;

describe.skipIf(!built)('fault injection, short seeded run (seed 1, 1 minute, 2 sites) — needs `npm run build`', () => {
  let out = '';
  let code: number | null = null;
  let output = '';
  let report: Report | undefined;

  beforeAll(async () => {
    const tsc = spawnSync(process.execPath, [path.join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', 'test/faults/tsconfig.json'], { cwd: repoRoot, encoding: 'utf8' });
    if (tsc.status !== 0) throw new Error(`compiling the fault suite failed:\n${tsc.stdout}${tsc.stderr}`);
    out = await mkdtemp(path.join(tmpdir(), 'nhr-faults-ci-'));
    const child = spawn(process.execPath, ['dist-faults/test/faults/runner.js', '--seed', String(SEED), '--minutes', '1', '--out', out, '--converge-timeout', '60'], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.on('data', (d: Buffer) => (output += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (output += d.toString('utf8')));
    code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    report = JSON.parse(await readFile(path.join(out, 'report.json'), 'utf8').catch(() => 'null')) as Report | undefined;
    // The whole report, so a CI log shows what was found without opening files.
    console.log(output.split('\n').filter((l) => !l.includes('  fault #')).join('\n'));
  }, 330_000);

  afterAll(async () => {
    if (code === 0) await rm(out, { recursive: true, force: true });
  });

  it('ran to the end and injected every fault kind', () => {
    expect(report, `no report.json; the run's output:\n${output.slice(-4000)}`).toBeTruthy();
    // Operator commands may be refused by the daemon (a promote of a lagging replica): attempted is enough for them.
    const attempted = new Set(['promote', 'promote-force', 'demote', 'sync-other']);
    const missing = FAULT_KINDS.filter((k) => {
      const f = report!.faults[k] ?? { done: 0, notDone: 0 };
      return attempted.has(k) ? f.done + f.notDone === 0 : f.done === 0;
    });
    expect(missing, `fault kinds not carried out (see ${out})`).toEqual([]);
    expect(report!.ops.ack).toBeGreaterThan(0);
  });

  it('finds nothing: no acknowledged write lost, nothing duplicated or extra, every status true', () => {
    const summary = output.trim().split('\n').pop() ?? '';
    expect(code, `${summary}\nfindings:\n${(report?.findings ?? []).slice(0, 20).map((f) => `  ${f.kind}: ${f.detail}`).join('\n')}\nrun directory kept: ${out}`).toBe(0);
  });
});
