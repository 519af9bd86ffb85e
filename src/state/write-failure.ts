/**
 * Telling a state database write that failed for want of storage (the disk full, read-only or failing) from one that
 * failed for a bug, so the operator sees the cause and its remedy (NHR_ERR_STATE_WRITE_FAILED) instead of an internal
 * error, and readiness says the store cannot write.
 */
import { StateWriteFailedError } from '../errors.js';

/** SQLite result codes (better-sqlite3's `SqliteError.code`, extended codes included) that mean storage trouble. */
const STORAGE_CODES = ['SQLITE_FULL', 'SQLITE_READONLY', 'SQLITE_IOERR', 'SQLITE_CANTOPEN'];

/** Whether `err` is a SQLite error saying the database's storage cannot take a write. */
export function isStorageError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && STORAGE_CODES.some((c) => code === c || code.startsWith(`${c}_`));
}

/** `err` as a StateWriteFailedError when it is storage trouble (the SQLite error as its cause); any other error as is. */
export function asStateWriteError(err: unknown): unknown {
  if (!isStorageError(err)) return err;
  const e = err as Error & { code: string };
  return new StateWriteFailedError(`the state database cannot be written: ${e.message} (${e.code})`, { cause: err });
}
