/**
 * The daemon's state store: one SQLite database (`<stateDir>/state.db`) through better-sqlite3.
 *
 * Durability: WAL with `synchronous=FULL`. In WAL mode NORMAL never corrupts the database but may lose the last
 * committed transactions on power loss; a role or epoch change must not be lost once anything acted on it (peers
 * told, writes accepted). So every write is durable before anyone acts on it: `transaction()` commits with FULL, and
 * the per-key-mutation hot paths use group commit (below), whose sync gives the same guarantee.
 * Group commit (`groupCommit`): the hot paths (the gateway's intents and change-log rows, a replica's applied changes)
 * share one transaction, and so one fsync, per event-loop turn instead of paying one each (group-commit.ts); by
 * default that fsync (an fdatasync of the WAL, what FULL does at COMMIT) runs off the event loop. Each caller resumes
 * only after its write is durable; until then the change log's readers do not see it (changelog-repo.ts).
 * At open the WAL is synced once: a previous process may have committed without a sync before it died, and the page
 * cache would show those rows as if they were on disk.
 * Concurrency: one connection per process; `busy_timeout` covers another process (the CLI reading status offline).
 * Foreign keys are on. Transactions are IMMEDIATE (take the write lock at BEGIN, so they never fail half-way on lock
 * upgrade); a `transaction()` inside another becomes a savepoint.
 */
import { chmodSync, closeSync, existsSync, fdatasyncSync, mkdirSync, openSync } from 'node:fs';
import { open as openFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Database } from 'better-sqlite3';
import { InternalError, NhrError, StateOpenFailedError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { AppliedRepo } from './applied-repo.js';
import { AuditRepo } from './audit-repo.js';
import { BackupSaltRepo } from './backup-salt-repo.js';
import { RaceReplaysRepo } from './race-replays-repo.js';
import { AdminRestoresRepo } from './admin-restores-repo.js';
import { SealingGenerationRepo } from './sealing-generation-repo.js';
import { ChangeLogRepo } from './changelog-repo.js';
import { EpochsRepo } from './epochs-repo.js';
import { GroupCommit, type GroupCommitStats, type RunOptions } from './group-commit.js';
import { MembersRepo } from './members-repo.js';
import { applyMigrations, defaultMigrationsDir, loadMigrations, schemaVersion } from './migrate.js';
import { PositionsRepo } from './positions-repo.js';
import { IntentsRepo } from './intents-repo.js';
import { KeyCertsRepo } from './key-certs-repo.js';
import { QuarantineAcksRepo } from './quarantine-acks-repo.js';
import { RestartPassesRepo } from './restart-passes-repo.js';
import { RolesRepo } from './roles-repo.js';
import { openDatabase, pragma, prepare } from './sqlite.js';
import { asStateWriteError, isStorageError } from './write-failure.js';
import { TransportKeysRepo } from './transport-keys-repo.js';


/** The state database's page cache (KiB, one connection). */
export const PAGE_CACHE_KIB = 4096;
export const STATE_DB_FILE = 'state.db';

export interface StateStoreOptions {
  /** The database file; see {@link StateStore.inDir}. */
  file: string;
  /** Default: the package's `migrations/`. */
  migrationsDir?: string;
  /** How long to wait for another connection's lock (default 5000 ms). */
  busyTimeoutMs?: number;
  now?: () => number;
  logger?: Logger;
  /**
   * How group commits become durable (group-commit.ts): `async` (default) commits without an fsync and then
   * fdatasyncs the WAL off the event loop; `full` commits with synchronous=FULL. Tests may pass a function wrapping the
   * async sync (to hold it).
   */
  groupSync?: 'async' | 'full' | ((sync: () => Promise<void>) => Promise<void>);
}

interface Open {
  db: Database;
  group: GroupCommit;
  /** The WAL file, opened at the first deferred group's sync. */
  wal: { handle?: Promise<FileHandle> };
  roles: RolesRepo;
  epochs: EpochsRepo;
  positions: PositionsRepo;
  members: MembersRepo;
  audit: AuditRepo;
  changelog: ChangeLogRepo;
  intents: IntentsRepo;
  applied: AppliedRepo;
  transportKeys: TransportKeysRepo;
  quarantineAcks: QuarantineAcksRepo;
  keyCerts: KeyCertsRepo;
  backupSalt: BackupSaltRepo;
  sealingGeneration: SealingGenerationRepo;
  raceReplays: RaceReplaysRepo;
  adminRestores: AdminRestoresRepo;
  restartPasses: RestartPassesRepo;
}

/** A write that failed for want of storage (write-failure.ts): when, and SQLite's message and code. */
export interface StateWriteFailure {
  at: number;
  message: string;
}

export class StateStore {
  private state: Open | undefined;
  #writeFailure: StateWriteFailure | undefined;
  #totalChanges: (() => number) | undefined;
  readonly file: string;
  private readonly now: () => number;
  private readonly log: Logger;

  constructor(private readonly options: StateStoreOptions) {
    this.file = options.file;
    this.now = options.now ?? Date.now;
    this.log = options.logger ?? silentLogger;
  }

  /** A store for `<stateDir>/state.db`. */
  static inDir(stateDir: string, options: Omit<StateStoreOptions, 'file'> = {}): StateStore {
    return new StateStore({ ...options, file: path.join(stateDir, STATE_DB_FILE) });
  }

  /**
   * Opens the database (creating its directory with mode 0700 and the file with mode 0600 when absent), sets the
   * pragmas and applies pending migrations. Idempotent: a second call on an open store does nothing.
   * Throws {@link StateOpenFailedError} or {@link StateMigrationFailedError}; the store stays closed then.
   */
  open(): this {
    if (this.state) return this;
    const created = !existsSync(this.file);
    let db: Database;
    try {
      mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
      db = openDatabase(this.file);
    } catch (err) {
      throw new StateOpenFailedError(`cannot open the state database ${this.file}: ${(err as Error).message}`, { path: this.file, cause: err });
    }
    try {
      if (created) chmodSync(this.file, 0o600);
      pragma(db, `busy_timeout = ${Math.max(0, Math.trunc(this.options.busyTimeoutMs ?? 5000))}`);
      const mode = pragma(db, 'journal_mode = WAL');
      if (mode !== 'wal') throw new Error(`the file system does not support WAL (journal_mode is ${String(mode)})`);
      pragma(db, 'synchronous = FULL');
      pragma(db, 'foreign_keys = ON');
      // better-sqlite3 builds SQLite with a 16 MB page cache per connection, and an anti-entropy pass at a million keys
      // (the certificate table's rows learnt, paged through) fills it: resident memory the daemon's 200 MB budget
      // cannot spare. The hot pages (the B-trees' inner nodes, the log's tail) fit in 4 MiB; the rest comes from the
      // OS page cache (docs/benchmarks.md, "SQLite's page cache").
      pragma(db, `cache_size = -${PAGE_CACHE_KIB}`);
      const migrations = loadMigrations(this.options.migrationsDir ?? defaultMigrationsDir());
      const applied = applyMigrations(db, migrations, this.now);
      if (applied.length > 0) this.log.info({ file: this.file, applied, version: schemaVersion(db) }, 'state database migrated');
      syncIfPresent(`${this.file}-wal`);
    } catch (err) {
      db.close();
      if (err instanceof NhrError) throw err;
      throw new StateOpenFailedError(`cannot open the state database ${this.file}: ${(err as Error).message}`, { path: this.file, cause: err });
    }
    const wal: Open['wal'] = {};
    const group = new GroupCommit(() => this.open_.db, { ...this.walSync(wal) });
    this.state = {
      db,
      group,
      wal,
      roles: new RolesRepo(db, this.now),
      epochs: new EpochsRepo(db, this.now),
      positions: new PositionsRepo(db, this.now),
      members: new MembersRepo(db, this.now),
      audit: new AuditRepo(db, this.now),
      changelog: new ChangeLogRepo(db, this.now, group),
      intents: new IntentsRepo(db, this.now),
      applied: new AppliedRepo(db, this.now),
      transportKeys: new TransportKeysRepo(db, this.now),
      quarantineAcks: new QuarantineAcksRepo(db, this.now),
      keyCerts: new KeyCertsRepo(db, this.now),
      backupSalt: new BackupSaltRepo(db, this.now),
      sealingGeneration: new SealingGenerationRepo(db, this.now),
      raceReplays: new RaceReplaysRepo(db, this.now),
      adminRestores: new AdminRestoresRepo(db, this.now),
      restartPasses: new RestartPassesRepo(db, this.now),
    };
    return this;
  }

  /**
   * Commits the writes queued for a group commit, then closes the database (checkpointing the WAL, with a sync).
   * Groups still waiting for their WAL sync settle when it returns. Idempotent.
   */
  close(): void {
    const s = this.state;
    if (!s) return;
    s.group.flush();
    this.state = undefined;
    this.#totalChanges = undefined;
    s.db.close();
    // FileHandle.close waits for a sync in flight on it.
    void s.wal.handle?.then((h) => h.close()).catch(() => undefined);
  }

  /** The group commit's durability (StateStoreOptions.groupSync). */
  private walSync(wal: Open['wal']): { walSync?: () => Promise<void> } {
    const mode = this.options.groupSync ?? 'async';
    if (mode === 'full') return {};
    const sync = async () => {
      // The WAL exists from the first write on and keeps its inode while this connection is open.
      wal.handle ??= openFile(`${this.file}-wal`, 'r');
      await (await wal.handle).datasync();
    };
    return { walSync: typeof mode === 'function' ? () => mode(sync) : sync };
  }

  get isOpen(): boolean {
    return this.state !== undefined;
  }

  private get open_(): Open {
    if (!this.state) throw new InternalError(`state store ${this.file} is used while closed`);
    return this.state;
  }

  /** The raw connection, for the streaming issue's repositories and for tests. */
  get db(): Database {
    return this.open_.db;
  }
  get roles(): RolesRepo {
    return this.open_.roles;
  }
  get epochs(): EpochsRepo {
    return this.open_.epochs;
  }
  get positions(): PositionsRepo {
    return this.open_.positions;
  }
  get members(): MembersRepo {
    return this.open_.members;
  }
  get audit(): AuditRepo {
    return this.open_.audit;
  }
  /** Streaming: the primary's change log and stream heads. */
  get changelog(): ChangeLogRepo {
    return this.open_.changelog;
  }
  /** Streaming: mutations forwarded by the gateway whose outcome is not recorded yet. */
  get intents(): IntentsRepo {
    return this.open_.intents;
  }
  /** Streaming: the replica's applied changes and stream position. */
  get applied(): AppliedRepo {
    return this.open_.applied;
  }
  /** Streaming: peers' published transport keys. */
  get transportKeys(): TransportKeysRepo {
    return this.open_.transportKeys;
  }

  /** Anti-entropy: what this site knows of each key's certificate (key-certs-repo.ts). */
  get keyCerts(): KeyCertsRepo {
    return this.open_.keyCerts;
  }

  /** The salt of this site's device backups, for the key warm-up at start (backup-salt-repo.ts). */
  get backupSalt(): BackupSaltRepo {
    return this.open_.backupSalt;
  }
  get sealingGeneration(): SealingGenerationRepo {
    return this.open_.sealingGeneration;
  }

  /** Racing writes a merge-restore still has to re-apply (race-replays-repo.ts). */
  get raceReplays(): RaceReplaysRepo {
    return this.open_.raceReplays;
  }

  /** Administrator restores owed to namespaces this site became primary of (admin-restores-repo.ts). */
  get adminRestores(): AdminRestoresRepo {
    return this.open_.adminRestores;
  }

  /** Anti-entropy passes queued after a primary's daemon restarted, not completed yet (restart-passes-repo.ts). */
  get restartPasses(): RestartPassesRepo {
    return this.open_.restartPasses;
  }

  /** Quarantine files an operator has acknowledged (`quarantine ack`). */
  get quarantineAcks(): QuarantineAcksRepo {
    return this.open_.quarantineAcks;
  }

  /** Current schema version (the highest applied migration). */
  schemaVersion(): number {
    return schemaVersion(this.open_.db);
  }

  /**
   * Runs `fn` in one IMMEDIATE transaction: all its writes commit together (durably, synchronous=FULL) or, when it
   * throws, none do and the error propagates. Nested calls become savepoints. `fn` must be synchronous: an async
   * function would commit at its first await.
   */
  transaction<T>(fn: () => T): T {
    const db = this.open_.db;
    const run = db.transaction(fn);
    if (db.inTransaction) return run();
    // Only while a failure stands: a transaction that wrote nothing (a read) says nothing about the disk.
    const before = this.#writeFailure ? this.totalChanges() : undefined;
    let out: T;
    try {
      out = run.immediate();
    } catch (err) {
      throw this.noteWriteError(err);
    }
    if (before !== undefined && this.totalChanges() !== before) this.#writeFailure = undefined;
    return out;
  }

  /**
   * The last write that failed because the disk under the state directory is full, read-only or failing, until a
   * write succeeds again (`/health/ready` fails its `state` check meanwhile). Writes through transaction() and
   * groupCommit() are watched; a caller that catches the error of a write made outside them reports it
   * ({@link noteWriteError}).
   */
  get writeFailure(): StateWriteFailure | undefined {
    return this.#writeFailure;
  }

  /**
   * Records `err` when it is storage trouble (write-failure.ts) and returns it as a StateWriteFailedError; any other
   * error is returned as is. For writes made outside transaction() and groupCommit().
   */
  noteWriteError(err: unknown): unknown {
    if (!isStorageError(err)) return err;
    const wrapped = asStateWriteError(err) as Error;
    this.#writeFailure = { at: this.now(), message: wrapped.message };
    return wrapped;
  }

  /** SQLite's count of rows this connection changed since it opened. */
  private totalChanges(): number {
    this.#totalChanges ??= ((stmt) => () => Number(stmt.pluck().get()))(prepare(this.open_.db, 'SELECT total_changes()'));
    return this.#totalChanges();
  }

  /**
   * Runs `fn` in a transaction shared with the other grouped writes of this event-loop turn (group-commit.ts) and
   * resolves with its result once that transaction is durable; rejects with `fn`'s error (its own writes undone, the
   * group's others kept), with the commit's (nothing written), or with StateSyncFailedError (after which grouped
   * writes are refused until a restart). `fn` must be synchronous and must not assume it runs now: it runs at the end
   * of the turn, after the writes queued before it. Throws InternalError when the store is closed.
   * `lingerMs`: a write nothing waits on to go on may wait that long for others to share its group (group-commit.ts).
   */
  groupCommit<T>(fn: () => T, options?: RunOptions): Promise<T> {
    return this.open_.group.run(fn, options).then(
      (value) => {
        // Grouped writes are writes (intents, change-log rows, applied changes): one that is durable clears a failure.
        this.#writeFailure = undefined;
        return value;
      },
      (err: unknown) => {
        throw this.noteWriteError(err);
      },
    );
  }

  /** Group commits since the store opened: transactions, writes in them, largest group, WAL syncs. */
  get groupCommitStats(): GroupCommitStats {
    return this.open_.group.stats;
  }
}

/** fdatasync of `file` when it exists (the WAL before the first write of a fresh database does not). */
function syncIfPresent(file: string): void {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
