/**
 * The state directory's lock: one daemon per state directory. Two daemons on one directory would each clear `work/`
 * under the other's running sync, write one state.db with two views of the roles, and fight over the admin socket.
 *
 * The lock is an OS-level file lock that dies with the process: a SQLite connection to `<stateDir>/daemon.lock` (a
 * database used for nothing else) holding an open `BEGIN EXCLUSIVE` transaction. SQLite takes it with fcntl() byte
 * locks on Unix, which the kernel drops when the process exits in any way (SIGKILL included), so a crash never leaves
 * a stale lock and no PID-liveness guess is needed; SQLite also refuses a second connection of the same process.
 * node:fs offers no flock(), and better-sqlite3 is already a dependency.
 *
 * `daemon.pid` next to it names the holder (its pid, written after the lock is taken, removed before it is released),
 * only so that the refusal can say who holds it: it is never used to decide.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Database } from 'better-sqlite3';
import { StateLockedError, StateOpenFailedError } from '../errors.js';
import { openDatabase } from './sqlite.js';

export const STATE_LOCK_FILE = 'daemon.lock';
export const STATE_PID_FILE = 'daemon.pid';

export class StateDirLock {
  #db: Database | undefined;

  private constructor(
    readonly stateDir: string,
    db: Database,
  ) {
    this.#db = db;
  }

  /**
   * Takes the lock at once or throws: StateLockedError when another process (or another daemon in this process) holds
   * it, naming the directory and the holder's pid when known; StateOpenFailedError when the directory or the lock file
   * cannot be used. Creates the directory (0700) and the lock file (0600) when absent; touches nothing else in it.
   */
  static acquire(stateDir: string): StateDirLock {
    const dir = path.resolve(stateDir);
    const file = path.join(dir, STATE_LOCK_FILE);
    let db: Database;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      db = openDatabase(file, { timeoutMs: 0 });
      chmodSync(file, 0o600);
    } catch (err) {
      throw new StateOpenFailedError(`cannot open the state directory's lock file ${file}: ${(err as Error).message}`, { path: file, cause: err });
    }
    try {
      db.exec('BEGIN EXCLUSIVE');
    } catch (err) {
      db.close();
      if ((err as { code?: unknown }).code === 'SQLITE_BUSY') {
        const pid = readHolderPid(dir);
        throw new StateLockedError(`the state directory ${dir} is in use by another daemon (${pid === undefined ? 'pid unknown' : `pid ${pid}`}); nothing was changed`, {
          path: dir,
          ...(pid !== undefined ? { hint: `Stop the other daemon (pid ${pid}) first, or give this one its own stateDir.` } : {}),
        });
      }
      throw new StateOpenFailedError(`cannot lock the state directory's lock file ${file}: ${(err as Error).message}`, { path: file, cause: err });
    }
    const lock = new StateDirLock(dir, db);
    writeHolderPid(dir);
    return lock;
  }

  get held(): boolean {
    return this.#db !== undefined;
  }

  /** Releases the lock (removing `daemon.pid` first, so it never names a later holder wrongly). Idempotent. */
  release(): void {
    const db = this.#db;
    if (!db) return;
    this.#db = undefined;
    try {
      unlinkSync(path.join(this.stateDir, STATE_PID_FILE));
    } catch {
      // Already gone: it only informs.
    }
    // Closing rolls the empty transaction back and drops the file lock.
    db.close();
  }
}

/** Best effort: the pid is only for the refusal's message. */
function writeHolderPid(dir: string): void {
  const file = path.join(dir, STATE_PID_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, `${process.pid}\n`, { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    try {
      unlinkSync(tmp);
    } catch {
      // nothing to clean up
    }
  }
}

function readHolderPid(dir: string): number | undefined {
  try {
    const text = readFileSync(path.join(dir, STATE_PID_FILE), 'utf8').trim();
    const pid = /^\d{1,10}$/.test(text) ? Number(text) : undefined;
    return pid !== undefined && pid > 0 && alive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a process with this pid exists (EPERM: it does, under another user). A stale file from a crash names none. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
