/**
 * Schema migrations: numbered SQL files `migrations/NNN_name.sql`, applied in order, each in its own transaction,
 * recorded in `schema_migrations` (version, name, SHA-256 of the file, time). A failed migration leaves the
 * database at the last version that applied completely.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Database } from 'better-sqlite3';
import { StateMigrationFailedError } from '../errors.js';
import { prepare } from './sqlite.js';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
  /** Hex SHA-256 of the file's bytes. */
  readonly checksum: string;
}

const FILE = /^(\d{3})_([a-z0-9_]+)\.sql$/;

/**
 * The `migrations/` folder of the installed package: found by walking up from this module (the same from `src/`
 * under vitest and from `dist/src/` after a build) to the directory holding `package.json`.
 */
export function defaultMigrationsDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'migrations'))) return path.join(dir, 'migrations');
    const up = path.dirname(dir);
    if (up === dir) throw new StateMigrationFailedError('cannot find the migrations/ folder of nethsm-replicator');
    dir = up;
  }
}

/**
 * Reads and orders the migration files in `dir`. Throws {@link StateMigrationFailedError} for a `.sql` file with a
 * malformed name, or versions that are not exactly 1, 2, 3, … (a duplicate or a gap is a packaging mistake).
 */
export function loadMigrations(dir: string): Migration[] {
  const out: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith('.sql')) continue;
    const m = FILE.exec(file);
    if (!m) throw new StateMigrationFailedError(`migration file ${file} is not named NNN_name.sql`, { path: path.join(dir, file) });
    const bytes = readFileSync(path.join(dir, file));
    out.push({ version: Number(m[1]), name: m[2]!, sql: bytes.toString('utf8'), checksum: createHash('sha256').update(bytes).digest('hex') });
  }
  out.sort((a, b) => a.version - b.version);
  out.forEach((mig, i) => {
    if (mig.version !== i + 1) {
      throw new StateMigrationFailedError(`migrations must be numbered 001, 002, … without gaps or duplicates; found ${label(mig)} at position ${i + 1}`, {
        path: dir,
      });
    }
  });
  return out;
}

export function label(m: Pick<Migration, 'version' | 'name'>): string {
  return `${String(m.version).padStart(3, '0')}_${m.name}`;
}

/** The highest applied version (0 for an empty database). */
export function schemaVersion(db: Database): number {
  ensureTable(db);
  const row = prepare(db, 'SELECT max(version) AS v FROM schema_migrations').get() as { v: number | null };
  return row.v ?? 0;
}

function ensureTable(db: Database): void {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
}

/**
 * Applies the pending migrations in order; returns the versions applied (empty when up to date). Idempotent.
 * Throws {@link StateMigrationFailedError} when a migration fails (the database stays at the version before it),
 * when the database is newer than `migrations`, or when an applied migration's file has changed.
 */
export function applyMigrations(db: Database, migrations: readonly Migration[], now: () => number = Date.now): number[] {
  ensureTable(db);
  const applied = prepare(db, 'SELECT version, name, checksum FROM schema_migrations ORDER BY version').all() as {
    version: number;
    name: string;
    checksum: string;
  }[];
  const known = new Map(migrations.map((m) => [m.version, m]));
  for (const row of applied) {
    const mig = known.get(row.version);
    if (!mig) {
      throw new StateMigrationFailedError(
        `the state database is at schema version ${row.version} (${label(row)}), newer than this nethsm-replicator knows (${migrations.length}); ` +
          'run the newer version or restore an older state directory',
      );
    }
    if (mig.checksum !== row.checksum) {
      throw new StateMigrationFailedError(`migration ${label(mig)} was changed after it was applied to this database`, {
        hint: 'Released migrations are never edited: restore the original file and add the change as a new migration.',
      });
    }
  }
  const done = new Set(applied.map((r) => r.version));
  const record = prepare(db, 'INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)');
  const out: number[] = [];
  let current = applied.at(-1)?.version ?? 0;
  for (const mig of migrations) {
    if (done.has(mig.version)) continue;
    try {
      db.transaction(() => {
        db.exec(mig.sql);
        record.run(mig.version, mig.name, mig.checksum, now());
      }).immediate();
    } catch (err) {
      throw new StateMigrationFailedError(
        `migration ${label(mig)} failed: ${(err as Error).message}; the database stays at schema version ${current}`,
        { cause: err },
      );
    }
    current = mig.version;
    out.push(mig.version);
  }
  return out;
}
