/**
 * The one place that creates better-sqlite3 objects.
 *
 * Why: better-sqlite3 12.x wraps Statement and Database in node::ObjectWrap; on Node >= 24.19 the wrapper's
 * destructor asserts that a JavaScript context is entered, and a garbage collection that finalises one of these
 * objects outside a context aborts the whole process (SIGABRT, "Assertion failed: (env) != nullptr" in
 * node::RemoveEnvironmentCleanupHook). better-sqlite3 13 (node-addon-api) fixes it. Until the dependency is
 * upgraded, every Database and Statement is pinned for the life of the process so the GC never finalises one.
 * The cost is a few prepared statements per opened store, and the daemon opens its store once.
 * Contract: never call `db.prepare()` or `db.pragma()` directly (pragma prepares a throw-away statement); use
 * {@link prepare} and {@link pragma}.
 */
import BetterSqlite3, { type Database, type Statement } from 'better-sqlite3';

const pinned: object[] = [];

function pin<T extends object>(o: T): T {
  pinned.push(o);
  return o;
}

/** Opens (creating when absent) a database file. `timeoutMs`: how long a statement waits for another's lock (default 5000). */
export function openDatabase(file: string, options: { timeoutMs?: number } = {}): Database {
  return pin(new BetterSqlite3(file, options.timeoutMs === undefined ? {} : { timeout: options.timeoutMs }));
}

// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- the same constraint as better-sqlite3's own typings
export function prepare<P extends unknown[] | {} = unknown[], R = unknown>(db: Database, sql: string): Statement<P, R> {
  return pin(db.prepare<P, R>(sql));
}

/** Runs `PRAGMA <text>` and returns its first column of the first row (like `db.pragma(text, { simple: true })`). */
export function pragma(db: Database, text: string): unknown {
  const stmt = prepare(db, `PRAGMA ${text}`);
  return stmt.reader ? stmt.pluck().get() : (stmt.run(), undefined);
}

/** All rows of `PRAGMA <text>` (e.g. `foreign_key_check`). */
export function pragmaRows(db: Database, text: string): unknown[] {
  return prepare(db, `PRAGMA ${text}`).all();
}
