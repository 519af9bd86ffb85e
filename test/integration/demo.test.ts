import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES } from '../../src/lab/lab.js';

const repo = path.resolve(import.meta.dirname, '../..');
const built = existsSync(path.join(repo, 'dist/cli/main.js'));

function run(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(repo, 'bin/nethsm-replicator'), ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

describe.skipIf(!built)('the demo (README quick start) — needs `npm run build`', () => {
  let dir: string;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs two sites replicating, then a failover, prints each step, exits 0 and leaves nothing running', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-demo-test-'));
    const logFile = path.join(dir, 'daemons.log');
    const r = await run(['demo', '--keys', '5', '--log-file', logFile]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 9]) expect(r.out).toMatch(new RegExp(`\\] ${n}\\. `));
    expect(r.out).toContain('b holds 5 alpha keys; a holds 5 beta keys');
    expect(r.out).toMatch(/promoted alpha: epoch 1 → 2/);
    expect(r.out).toMatch(/read-only replica at site b \(epoch 1\); its primary is site a/);
    expect(r.out).toMatch(/resync\s+epoch 2 → 2\s+fenced → replica/);
    // The process exited on its own: every server and timer was closed (the spawn resolved on 'close').

    // No secret in the daemons' logs (debug level): passphrases, and the Basic-auth tokens made from them.
    const logs = await readFile(logFile, 'utf8');
    expect(logs.length).toBeGreaterThan(1000);
    const secrets: string[] = Object.values(LAB_PASSPHRASES);
    for (const [user, pw] of [
      ['admin', LAB_PASSPHRASES.admin],
      ['backup', LAB_PASSPHRASES.backupUser],
      ['metrics', LAB_PASSPHRASES.metrics],
      ['alpha~admin', LAB_PASSPHRASES.nsAdmin],
      ['alpha~replicator', LAB_PASSPHRASES.replicator],
    ]) {
      secrets.push(Buffer.from(`${user}:${pw}`).toString('base64'));
    }
    for (const s of secrets) expect(logs.includes(s), `log contains a secret (${s.slice(0, 4)}…)`).toBe(false);
    expect(r.out.includes(LAB_PASSPHRASES.admin)).toBe(false);
  });
});
