import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: plain JavaScript module of bin/, checked here by behaviour
import { nodeVersionProblem } from '../../bin/node-version.mjs';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'nethsm-replicator');
const check = nodeVersionProblem as (v: string) => string[] | undefined;

/** A Node.js older than 22.12 on this machine, if there is one (Debian's Node 20 on these machines). */
function oldNode(): string | undefined {
  for (const candidate of ['/usr/bin/node', '/bin/node', '/usr/local/bin/node']) {
    const r = spawnSync(candidate, ['-p', 'process.versions.node'], { encoding: 'utf8' });
    if (r.status === 0 && check(r.stdout.trim()) !== undefined) return candidate;
  }
  return undefined;
}

describe('the Node.js version check of bin/nethsm-replicator', () => {
  it('accepts 22.12 and later, refuses older with an Error and a Try line', () => {
    for (const ok of ['22.12.0', '22.20.1', '23.0.0', '24.1.0', '30.0.0']) expect(check(ok)).toBeUndefined();
    for (const old of ['20.20.2', '22.11.9', '18.0.0']) {
      const lines = check(old)!;
      expect(lines[0]).toBe(`Error: Node.js 22.12 or later is needed (this is v${old})`);
      expect(lines[1]).toMatch(/^Try: scripts\/run /);
    }
  });

  const old = oldNode();
  it.skipIf(old === undefined)('prints the two lines and exits 1 under an old Node instead of crashing', () => {
    const r = spawnSync(old!, [BIN, 'status'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.signal).toBeNull();
    expect(r.stderr).toMatch(/^Error: Node\.js 22\.12 or later is needed \(this is v\d+\.\d+\.\d+\)\nTry: scripts\/run /);
  });
});

describe('bin/nethsm-replicator as a Unix tool', () => {
  it('stops quietly when its reader goes away (check-config | true)', () => {
    // `true` exits without reading, so every line check-config prints meets a closed pipe.
    const cmd = `"${process.execPath}" "${BIN}" check-config --offline --config /nonexistent/config.yaml | true`;
    const r = spawnSync('bash', ['-c', cmd], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
  });

  it('takes -c for --config on every command that reads the config', () => {
    for (const cmd of ['status', 'sync', 'promote', 'check-config', 'init-replica', 'daemon']) {
      const r = spawnSync(process.execPath, [BIN, cmd, '--help'], { encoding: 'utf8' });
      expect(r.stdout, cmd).toMatch(/-c, --config <file>/);
    }
  });
});
