/**
 * The state directory lock within one process (the cross-process cases, SIGKILL included, are in
 * test/integration/state-lock.test.ts with real daemons): exclusive, refusal names directory and holder, changes
 * nothing, released on release(), and a lock file that is not a lock database is refused clearly.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StateLockedError, StateOpenFailedError } from '../errors.js';
import { STATE_LOCK_FILE, STATE_PID_FILE, StateDirLock } from './dir-lock.js';

let root: string;
let dir: string;
const held: StateDirLock[] = [];
beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'nhr-dirlock-'));
  dir = path.join(root, 'state');
});
afterEach(() => {
  for (const l of held.splice(0)) l.release();
  rmSync(root, { recursive: true, force: true });
});

const take = (): StateDirLock => {
  const l = StateDirLock.acquire(dir);
  held.push(l);
  return l;
};
const refusal = (): unknown => {
  try {
    take();
  } catch (err) {
    return err;
  }
  throw new Error('the second acquire succeeded');
};

describe('StateDirLock', () => {
  it('creates the directory (0700) and the lock file (0600), and records the holder', () => {
    const lock = take();
    expect(lock.held).toBe(true);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(path.join(dir, STATE_LOCK_FILE)).mode & 0o777).toBe(0o600);
    expect(readFileSync(path.join(dir, STATE_PID_FILE), 'utf8')).toBe(`${process.pid}\n`);
  });

  it('refuses a second holder at once, naming the directory and the holder, and changes nothing', () => {
    take();
    writeFileSync(path.join(dir, 'work-file'), 'x');
    const before = readdirSync(dir).sort().map((f) => [f, statSync(path.join(dir, f)).mtimeMs]);
    const err = refusal();
    expect(err).toBeInstanceOf(StateLockedError);
    expect(err).toMatchObject({
      code: 'NHR_ERR_STATE_LOCKED',
      path: dir,
      message: `the state directory ${dir} is in use by another daemon (pid ${process.pid}); nothing was changed`,
      hint: `Stop the other daemon (pid ${process.pid}) first, or give this one its own stateDir.`,
    });
    expect(readdirSync(dir).sort().map((f) => [f, statSync(path.join(dir, f)).mtimeMs])).toEqual(before);
  });

  it('says the pid is unknown when the pid file names no live process', () => {
    take();
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    writeFileSync(path.join(dir, STATE_PID_FILE), `${dead}\n`);
    expect((refusal() as Error).message).toBe(`the state directory ${dir} is in use by another daemon (pid unknown); nothing was changed`);
    writeFileSync(path.join(dir, STATE_PID_FILE), 'not a pid');
    expect((refusal() as StateLockedError).hint).toMatch(/^Only one daemon may use a state directory/);
  });

  it('is released by release() (idempotent), which removes the pid file; then another can take it', () => {
    const lock = take();
    lock.release();
    lock.release();
    expect(lock.held).toBe(false);
    expect(readdirSync(dir)).toEqual([STATE_LOCK_FILE]);
    expect(take().held).toBe(true);
  });

  it('refuses a lock file that is not a lock database, naming it', () => {
    take().release();
    writeFileSync(path.join(dir, STATE_LOCK_FILE), 'this is not a SQLite database, just some text of a fair length'.repeat(4));
    const err = refusal();
    expect(err).toBeInstanceOf(StateOpenFailedError);
    expect((err as Error).message).toContain(path.join(dir, STATE_LOCK_FILE));
  });
});
