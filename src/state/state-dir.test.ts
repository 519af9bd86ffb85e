import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { toYaml, validConfigDoc } from '../config/test-helpers.js';
import { StateDirUnusableError } from '../errors.js';
import { assertUsableStateDir } from './state-dir.js';

const dir = mkdtempSync(path.join(tmpdir(), 'nhr-statedir-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const BIN = path.resolve(import.meta.dirname, '..', '..', 'bin', 'nethsm-replicator');

describe('the state directory check', () => {
  it('creates a missing directory and leaves nothing behind', () => {
    const d = path.join(dir, 'new', 'state');
    assertUsableStateDir(d);
    expect(readdirSync(d)).toEqual([]);
  });

  it('refuses a kernel pseudo filesystem, a path under a file, and a file', () => {
    const file = path.join(dir, 'a-file');
    writeFileSync(file, '');
    const cases: [string, RegExp][] = [
      ['/proc/nethsm-replicator', /stateDir \/proc\/nethsm-replicator cannot hold the daemon's state: it is under \/proc, a kernel pseudo filesystem/],
      ['/sys/x', /under \/sys/],
      [path.join(file, 'state'), /it cannot be created \(ENOTDIR\)/],
      [file, /it cannot be created \(EEXIST\)|it is not a directory/],
    ];
    for (const [d, message] of cases) {
      let err: unknown;
      try {
        assertUsableStateDir(d);
      } catch (e) {
        err = e;
      }
      expect(err, d).toBeInstanceOf(StateDirUnusableError);
      expect((err as Error).message).toMatch(message);
    }
    expect(existsSync('/proc/nethsm-replicator')).toBe(false);
  });

  it('makes the daemon exit 78 (not restarted by systemd) with Error and Try, before anything starts', () => {
    const doc = validConfigDoc() as Record<string, unknown>;
    doc.stateDir = '/proc/nethsm-replicator-state';
    const config = path.join(dir, 'config.yaml');
    writeFileSync(config, toYaml(doc));
    const r = spawnSync(process.execPath, [BIN, 'daemon', '--config', config], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/^Error: stateDir \/proc\/nethsm-replicator-state cannot hold the daemon's state: .* \[NHR_ERR_STATE_DIR_UNUSABLE\]\nTry: /m);
  });
});
