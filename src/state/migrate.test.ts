import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { StateMigrationFailedError } from '../errors.js';
import { applyMigrations, defaultMigrationsDir, loadMigrations } from './migrate.js';
import { openDatabase, prepare, pragma, pragmaRows } from './sqlite.js';
import { StateStore } from './store.js';

const dirs: string[] = [];
function tempDir(prefix = 'nhr-state-'): string {
  const d = mkdtempSync(path.join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A copy of the real migrations plus `extra` files, so a test can add a failing migration. */
function migrationsWith(extra: Record<string, string>): string {
  const dir = tempDir('nhr-migrations-');
  for (const f of readdirSync(defaultMigrationsDir())) copyFileSync(path.join(defaultMigrationsDir(), f), path.join(dir, f));
  for (const [name, sql] of Object.entries(extra)) writeFileSync(path.join(dir, name), sql);
  return dir;
}

function columns(store: StateStore, table: string): string[] {
  return (prepare(store.db, `SELECT name FROM pragma_table_info(?)`).all(table) as { name: string }[]).map((r) => r.name);
}

describe('migrations', () => {
  it('finds the package migrations, numbered from 001 without gaps', () => {
    const migs = loadMigrations(defaultMigrationsDir());
    expect(migs.length).toBeGreaterThan(0);
    expect(migs.map((m) => m.version)).toEqual(migs.map((_, i) => i + 1));
    for (const m of migs) expect(m.checksum).toMatch(/^[0-9a-f]{64}$/);
  });

  it('applies every migration to an empty database and yields the documented schema', () => {
    const store = StateStore.inDir(tempDir()).open();
    try {
      expect(store.schemaVersion()).toBe(loadMigrations(defaultMigrationsDir()).length);
      const tables = (prepare(store.db, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map(
        (r) => r.name,
      );
      expect(tables).toEqual(expect.arrayContaining(['audit_log', 'epochs', 'member_health', 'namespaces', 'replica_positions', 'schema_migrations']));
      expect(columns(store, 'namespaces')).toEqual(['name', 'role', 'epoch', 'primary_site', 'paused', 'created_at', 'updated_at']);
      expect(columns(store, 'epochs')).toEqual(['namespace', 'epoch', 'primary_site', 'learned_from', 'learned_at']);
      expect(columns(store, 'replica_positions')).toEqual(
        expect.arrayContaining(['namespace', 'source_site', 'epoch', 'seq', 'snapshot_id', 'snapshot_digest', 'last_sync_outcome', 'last_error_code']),
      );
      expect(columns(store, 'member_health')).toEqual(
        expect.arrayContaining(['member', 'status', 'consecutive_failures', 'attempts', 'last_error_code', 'last_ok_at', 'next_retry_at']),
      );
      expect(columns(store, 'audit_log')).toEqual([
        'id', 'at', 'actor', 'action', 'namespace', 'from_epoch', 'to_epoch', 'from_role', 'to_role', 'detail',
      ]);
      expect(pragma(store.db, 'journal_mode')).toBe('wal');
      expect(pragma(store.db, 'synchronous')).toBe(2); // FULL
      expect(pragma(store.db, 'foreign_keys')).toBe(1);
      expect(pragmaRows(store.db, 'foreign_key_check')).toEqual([]);
    } finally {
      store.close();
    }
  });

  it('applies nothing twice when the database is reopened', () => {
    const dir = tempDir();
    const first = StateStore.inDir(dir).open();
    const before = prepare(first.db, 'SELECT version, applied_at FROM schema_migrations ORDER BY version').all();
    first.close();
    const again = StateStore.inDir(dir, { now: () => 42 }).open();
    try {
      expect(prepare(again.db, 'SELECT version, applied_at FROM schema_migrations ORDER BY version').all()).toEqual(before);
    } finally {
      again.close();
    }
  });

  it('applies a new migration on reopen, once', () => {
    const dir = tempDir();
    StateStore.inDir(dir).open().close();
    const migrationsDir = migrationsWith({ '900_placeholder.sql': '' });
    // 900 leaves a gap: refused before anything is applied.
    expect(() => StateStore.inDir(dir, { migrationsDir }).open()).toThrow(/without gaps/);
    rmSync(path.join(migrationsDir, '900_placeholder.sql'));
    const next = String(loadMigrations(migrationsDir).length + 1).padStart(3, '0');
    writeFileSync(path.join(migrationsDir, `${next}_add_note.sql`), 'CREATE TABLE note (x INTEGER) STRICT;');
    const store = StateStore.inDir(dir, { migrationsDir }).open();
    expect(store.schemaVersion()).toBe(Number(next));
    store.close();
    const reopened = StateStore.inDir(dir, { migrationsDir }).open();
    expect((prepare(reopened.db, 'SELECT count(*) AS n FROM schema_migrations WHERE version = ?').get(Number(next)) as { n: number }).n).toBe(1);
    reopened.close();
  });

  it('leaves the database at the previous version when a migration fails', () => {
    const dir = tempDir();
    const base = loadMigrations(defaultMigrationsDir()).length;
    const next = String(base + 1).padStart(3, '0');
    const migrationsDir = migrationsWith({
      // The first statement succeeds, the second fails: the whole migration must roll back.
      [`${next}_broken.sql`]: 'CREATE TABLE half_done (x INTEGER) STRICT;\nINSERT INTO no_such_table VALUES (1);',
    });
    let err: unknown;
    try {
      StateStore.inDir(dir, { migrationsDir }).open();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateMigrationFailedError);
    expect((err as Error).message).toContain(`migration ${next}_broken failed`);
    expect((err as Error).message).toContain(`stays at schema version ${base}`);

    const store = StateStore.inDir(dir).open();
    try {
      expect(store.schemaVersion()).toBe(base);
      expect(prepare(store.db, "SELECT name FROM sqlite_schema WHERE name = 'half_done'").get()).toBeUndefined();
    } finally {
      store.close();
    }
  });

  it('refuses a database newer than the known migrations', () => {
    const dir = tempDir();
    const base = loadMigrations(defaultMigrationsDir()).length;
    const next = String(base + 1).padStart(3, '0');
    StateStore.inDir(dir, { migrationsDir: migrationsWith({ [`${next}_future.sql`]: 'CREATE TABLE future (x INTEGER) STRICT;' }) })
      .open()
      .close();
    expect(() => StateStore.inDir(dir).open()).toThrow(/newer than this nethsm-replicator knows/);
  });

  it('refuses when an applied migration file was edited', () => {
    const dir = tempDir();
    StateStore.inDir(dir).open().close();
    const migrationsDir = migrationsWith({});
    const first = readdirSync(migrationsDir).find((f) => f.startsWith('001_'))!;
    writeFileSync(path.join(migrationsDir, first), '-- edited\n', { flag: 'a' });
    expect(() => StateStore.inDir(dir, { migrationsDir }).open()).toThrow(/was changed after it was applied/);
  });

  it('003 keys applied changes by change log and drops the records a position moved back no longer covers', () => {
    const dir = tempDir();
    const v2 = tempDir('nhr-migrations-');
    for (const f of readdirSync(defaultMigrationsDir()).filter((f) => /^00[12]_/.test(f))) copyFileSync(path.join(defaultMigrationsDir(), f), path.join(v2, f));
    // The repositories speak the current schema: the version-2 database is written with SQL.
    const old = openDatabase(path.join(dir, 'state.db'));
    applyMigrations(old, loadMigrations(v2));
    prepare(old, "INSERT INTO namespaces (name, role, epoch, primary_site, created_at, updated_at) VALUES ('payments', 'replica', 1, 'berlin', 1, 1)").run();
    const rec = prepare(old, "INSERT INTO applied_changes (namespace, epoch, seq, source_site, kind, outcome, applied_at) VALUES ('payments', 1, ?, 'berlin', 'key-deleted', 'applied', 1)");
    for (let seq = 1; seq <= 4; seq++) rec.run(seq);
    // A snapshot moved the position back to 1.2 before this version: 1.3 and 1.4 are not on the device any more.
    prepare(old, "INSERT INTO replica_positions (namespace, source_site, epoch, seq, updated_at) VALUES ('payments', 'berlin', 1, 2, 1)").run();
    old.close();
    const store = StateStore.inDir(dir).open();
    try {
      expect(prepare(store.db, "SELECT source_site, log_id, epoch, seq FROM applied_changes ORDER BY seq").all()).toEqual([
        { source_site: 'berlin', log_id: '', epoch: 1, seq: 1 },
        { source_site: 'berlin', log_id: '', epoch: 1, seq: 2 },
      ]);
      expect(store.positions.get('payments', 'berlin')).toMatchObject({ epoch: 1, seq: 2, logId: undefined });
      expect(columns(store, 'stream_logs')).toEqual(['namespace', 'log_id', 'created_at']);
      expect(pragmaRows(store.db, 'foreign_key_check')).toEqual([]);
    } finally {
      store.close();
    }
  });

  it('004 keeps every audit row, its id and the append-only rule, and lets member health say locked', () => {
    const dir = tempDir();
    const v3 = tempDir('nhr-migrations-');
    for (const f of readdirSync(defaultMigrationsDir()).filter((f) => /^00[123]_/.test(f))) copyFileSync(path.join(defaultMigrationsDir(), f), path.join(v3, f));
    const old = openDatabase(path.join(dir, 'state.db'));
    applyMigrations(old, loadMigrations(v3));
    const audit = prepare(old, "INSERT INTO audit_log (at, actor, action, namespace, detail) VALUES (?, 'daemon', 'sync', 'payments', '{\"n\":1}')");
    for (let at = 1; at <= 3; at++) audit.run(at);
    prepare(old, "INSERT INTO member_health (member, status, consecutive_failures, updated_at) VALUES ('nethsm', 'unreachable', 4, 1)").run();
    expect(() => prepare(old, "INSERT INTO member_health (member, status, updated_at) VALUES ('x', 'locked', 1)").run()).toThrow(/CHECK/);
    old.close();
    const store = StateStore.inDir(dir).open();
    try {
      expect(store.audit.list({}).map((e) => [e.id, e.at, e.action])).toEqual([[1, 1, 'sync'], [2, 2, 'sync'], [3, 3, 'sync']]);
      expect(store.audit.append({ actor: 'op@host', action: 'quarantine-ack', detail: { file: 'x.nsbackup' } })).toBe(4);
      expect(() => prepare(store.db, 'DELETE FROM audit_log').run()).toThrow(/append-only/);
      expect(() => prepare(store.db, "UPDATE audit_log SET actor = 'x'").run()).toThrow(/append-only/);
      expect(store.members.get('nethsm')).toMatchObject({ status: 'unreachable', consecutiveFailures: 4 });
      store.members.save({ ...store.members.get('nethsm')!, status: 'locked' });
      expect(store.members.get('nethsm')?.status).toBe('locked');
      expect(columns(store, 'quarantine_acks')).toEqual(['file', 'acked_at', 'actor']);
      expect(() => prepare(store.db, "INSERT INTO quarantine_acks (file, acked_at, actor) VALUES ('../x', 1, 'op')").run()).toThrow(/CHECK/);
      expect(pragmaRows(store.db, 'foreign_key_check')).toEqual([]);
    } finally {
      store.close();
    }
  });

  it('refuses badly named migration files', () => {
    const migrationsDir = migrationsWith({ '2_oops.sql': '' });
    expect(() => loadMigrations(migrationsDir)).toThrow(/is not named NNN_name\.sql/);
  });
});
