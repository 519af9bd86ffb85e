/**
 * Group commit: many small writes share one SQLite transaction and one fsync. The gateway writes two rows per key
 * mutation (the intent before forwarding, the change after the NetHSM's 2xx) and a replica one per applied change;
 * with a transaction each, every write costs an fsync, and since better-sqlite3 is synchronous that fsync blocks the
 * event loop (~1–5 ms on ordinary disks), which then bounds the whole daemon.
 *
 * Grouping: a write queued with `run(fn)` waits for the end of the current event-loop turn (`setImmediate`: every
 * request whose I/O arrived in this turn has queued its write by then), or at most `maxDelayMs` when that is set. Then
 * every queued write runs, in queue order, each in its own savepoint of one IMMEDIATE transaction, and the transaction
 * commits. Writes queued meanwhile form the next group.
 * A write nobody waits on to go on (a replica's applied-change records, members' states) may say so: `run(fn,
 * { lingerMs })` lets it wait up to that long for other writes. It joins the first group that fires (its lingering
 * never delays a write queued without it), and fires one itself when its time is up. On a disk each group costs a
 * transaction and a WAL sync (measured here: ~80 µs of CPU per group on tmpfs, ~250 µs with the fdatasync of a virtual
 * disk), so writes that arrive one per turn are far cheaper grouped a few milliseconds later than one group each.
 *
 * Durability, two ways (the caller is told nothing before its write is durable in either):
 * - without `walSync`: the group commits with the connection's synchronous=FULL, so COMMIT returns after the fsync
 *   (blocking the event loop for it);
 * - with `walSync` (the store's default): the group commits with synchronous=NORMAL, which in WAL mode writes the
 *   frames without an fsync, and then `walSync()` (an fdatasync of the WAL file on libuv's thread pool) makes them
 *   durable while the event loop goes on. A sync covers every frame written before it started, so a group is durable
 *   once any sync that started after its commit returned: its own, started at once while fewer than MAX_SYNCS run,
 *   else the next one to start, or one started for a later group that returned first. This
 *   is the durability of synchronous=FULL, which fsyncs the same file at COMMIT, moved off the event loop. Until the
 *   sync returns, the group's rows are visible to this process but may not survive a power
 *   loss: nothing outside the process may learn of them before then (the change log's readers stop at its durable
 *   head, changelog-repo.ts; every other grouped write is read only inside the daemon or acted on after its caller
 *   resumed).
 * A caller's promise settles only then: resolved with its `fn`'s result, rejected with `fn`'s own error (its savepoint
 * rolled back, the others unaffected), with the commit's error (nothing of the group written), or with a
 * StateSyncFailedError when the sync failed. After a failed sync the store accepts no grouped write any more (the
 * frames' fate is unknown, and a retried fsync can report success for pages the kernel already dropped): the daemon
 * needs a restart, which reads back what reached the disk and settles open intents from the device.
 *
 * Contract: `fn` is synchronous and only writes through the store (it runs later, inside someone else's transaction);
 * what it reads is the state as of its turn in the queue, so checks that must hold at write time belong in `fn`.
 */
import type { Database, Statement } from 'better-sqlite3';
import { InternalError, StateSyncFailedError } from '../errors.js';
import { prepare } from './sqlite.js';

export interface GroupCommitOptions {
  /** Longest a write waits for others (default 0: the end of the current event-loop turn). */
  maxDelayMs?: number;
  /** Most writes in one transaction; the rest go in the next (default 512). */
  maxBatch?: number;
  /** Makes the WAL durable without blocking (an fdatasync of it); absent: groups commit with synchronous=FULL. */
  walSync?: () => Promise<void>;
}

/** What group commits did since the store opened (for benchmarks and status). */
export interface GroupCommitStats {
  /** Transactions committed. */
  commits: number;
  /** Writes committed in them. */
  writes: number;
  /** The largest group. */
  largest: number;
  /** WAL syncs (fdatasync) that made groups durable; 0 when groups commit with synchronous=FULL. */
  syncs: number;
  /** Milliseconds those syncs took, summed (each from its start to its return). */
  syncMs: number;
}

/** How a group ended for the rows it wrote: durable, not written at all, or written but not known to be durable. */
export type GroupEnd = 'durable' | 'rolled-back' | 'sync-failed';

/** How long a write may wait for others (`run`'s options). */
export interface RunOptions {
  /** At most this long (ms) before its group fires (default: the store's `maxDelayMs`, normally the end of the turn). */
  lingerMs?: number;
}

interface Item {
  fn: () => unknown;
  resolve(v: unknown): void;
  reject(err: unknown): void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * WAL syncs at once. Two, not one: a group committed just after a sync started would otherwise wait for that sync and
 * then for its own (measured here: a write's wait until durable halves with two); not more, since they run on libuv's
 * thread pool (four threads), shared with every other file operation.
 */
const MAX_SYNCS = 2;

interface Waiting {
  no: number;
  durable(): void;
  failed(err: StateSyncFailedError): void;
}

export class GroupCommit {
  readonly #db: () => Database;
  readonly #maxDelayMs: number;
  readonly #maxBatch: number;
  readonly #walSync: (() => Promise<void>) | undefined;
  #queue: Item[] = [];
  #timer: { kind: 'immediate'; handle: NodeJS.Immediate } | { kind: 'timeout'; handle: NodeJS.Timeout; at: number } | undefined;
  readonly #stats: GroupCommitStats = { commits: 0, writes: 0, largest: 0, syncs: 0, syncMs: 0 };
  /** Set while a group's transaction runs: writes made now become durable only after the group's sync. */
  #ends: ((end: GroupEnd) => void)[] | undefined;
  /** WAL syncs running (at most MAX_SYNCS). */
  readonly #syncing = new Set<Promise<void>>();
  /** Deferred groups committed so far (numbered from 1), the highest a running sync covers, the highest durable. */
  #committed = 0;
  #coveredByRunning = 0;
  #durableUpTo = 0;
  /** Deferred groups not durable yet, in commit order. */
  #waiting: Waiting[] = [];
  #failed: StateSyncFailedError | undefined;
  #pragmas: { normal: Statement; full: Statement } | undefined;

  /** `db`: the open connection (throws when the store is closed; queued writes are then rejected with that error). */
  constructor(db: () => Database, options: GroupCommitOptions = {}) {
    this.#db = db;
    this.#maxDelayMs = Math.max(0, options.maxDelayMs ?? 0);
    this.#maxBatch = Math.max(1, Math.trunc(options.maxBatch ?? 512));
    this.#walSync = options.walSync;
  }

  get stats(): GroupCommitStats {
    return { ...this.#stats };
  }

  /** Writes queued and not yet committed. */
  get pending(): number {
    return this.#queue.length;
  }

  /**
   * From inside a grouped write: whether the rows written now are durable only once their group's sync returns
   * (readers outside the process must not see them before `whenEnded` says so).
   */
  get deferring(): boolean {
    return this.#ends !== undefined;
  }

  /** From inside a grouped write (`deferring`): calls `fn` once the group is durable, rolled back, or its sync failed. */
  whenEnded(fn: (end: GroupEnd) => void): void {
    if (!this.#ends) throw new InternalError('whenEnded() called outside a deferred group');
    this.#ends.push(fn);
  }

  /**
   * Queues `fn` for the next group; settles after that group is durable (or failed). The group fires at the end of the
   * turn (or after `maxDelayMs`), or, for a write queued with `lingerMs`, at most that long from now; whichever of the
   * queued writes' times comes first.
   */
  run<T>(fn: () => T, options: RunOptions = {}): Promise<T> {
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      this.#schedule(Math.max(0, options.lingerMs ?? this.#maxDelayMs));
    });
  }

  /**
   * Commits everything queued now, synchronously, with synchronous=FULL (the store calls it before it closes, so no
   * queued write is lost to a clean shutdown; groups still waiting for their WAL sync settle when it returns).
   */
  flush(): void {
    this.#cancelTimer();
    while (this.#queue.length > 0) this.#commit(this.#queue.splice(0, this.#maxBatch), false);
  }

  #cancelTimer(): void {
    const t = this.#timer;
    if (t === undefined) return;
    if (t.kind === 'timeout') clearTimeout(t.handle);
    else clearImmediate(t.handle);
    this.#timer = undefined;
  }

  /** Makes the next group fire at most `delayMs` from now (0: at the end of this turn); an earlier firing stays. */
  #schedule(delayMs: number): void {
    const t = this.#timer;
    const at = performance.now() + delayMs;
    if (t !== undefined && (t.kind === 'immediate' || t.at <= at)) return;
    this.#cancelTimer();
    const fire = () => {
      this.#timer = undefined;
      while (this.#queue.length > 0) this.#commit(this.#queue.splice(0, this.#maxBatch), this.#walSync !== undefined);
    };
    this.#timer = delayMs > 0 ? { kind: 'timeout', handle: setTimeout(fire, delayMs), at } : { kind: 'immediate', handle: setImmediate(fire) };
  }

  /** One transaction for `items`, one savepoint each; settles every item after the commit (and the sync, if deferred). */
  #commit(items: Item[], deferred: boolean): void {
    const ends: ((end: GroupEnd) => void)[] = [];
    let outcomes: Outcome[];
    try {
      if (this.#failed) throw this.#failed;
      const db = this.#db();
      if (db.inTransaction) throw new InternalError('a group commit ran inside another transaction');
      const savepoint = db.transaction((fn: () => unknown) => fn());
      const group = db.transaction((): Outcome[] =>
        items.map((item): Outcome => {
          try {
            return { ok: true, value: savepoint(item.fn) };
          } catch (error) {
            // SQLite rolls the whole transaction back on some errors (SQLITE_FULL, SQLITE_IOERR, …): the group is gone,
            // and the next savepoint would BEGIN a transaction of its own, committed outside the group while its
            // caller is told the group failed. The group fails with this error instead (caught below: all rejected).
            if (!db.inTransaction) throw error;
            return { ok: false, error };
          }
        }),
      );
      const pragmas = deferred ? this.#syncPragmas(db) : undefined;
      pragmas?.normal.run();
      this.#ends = deferred ? ends : undefined;
      try {
        outcomes = group.immediate();
      } finally {
        this.#ends = undefined;
        pragmas?.full.run();
      }
    } catch (error) {
      // The transaction did not commit (closed store, I/O error at COMMIT, a failed sync before): nothing is there.
      for (const end of ends) end('rolled-back');
      for (const item of items) item.reject(error);
      return;
    }
    this.#stats.commits++;
    this.#stats.writes += outcomes.filter((o) => o.ok).length;
    this.#stats.largest = Math.max(this.#stats.largest, items.length);
    const settle = () => outcomes.forEach((o, i) => (o.ok ? items[i]!.resolve(o.value) : items[i]!.reject(o.error)));
    if (!deferred) return settle();
    this.#awaitDurable({
      no: ++this.#committed,
      durable: () => {
        for (const end of ends) end('durable');
        settle();
      },
      failed: (err) => {
        for (const end of ends) end('sync-failed');
        for (const item of items) item.reject(err);
      },
    });
  }

  #syncPragmas(db: Database): { normal: Statement; full: Statement } {
    this.#pragmas ??= { normal: prepare(db, 'PRAGMA synchronous = NORMAL'), full: prepare(db, 'PRAGMA synchronous = FULL') };
    return this.#pragmas;
  }

  /**
   * Settles the group once a WAL sync that started after its commit returned. A sync covers every frame written before
   * it started, so one sync makes every group committed before it durable, whichever sync each of them waited for.
   */
  #awaitDurable(group: Waiting): void {
    this.#waiting.push(group);
    this.#startSyncIfNeeded();
  }

  /** Starts a sync when a committed group is covered by no running sync and fewer than MAX_SYNCS run. */
  #startSyncIfNeeded(): void {
    if (this.#failed || this.#syncing.size >= MAX_SYNCS || this.#committed <= this.#coveredByRunning) return;
    const covers = this.#committed;
    this.#coveredByRunning = covers;
    this.#stats.syncs++;
    const started = performance.now();
    const running: Promise<void> = this.#walSync!().then(
      () => {
        this.#stats.syncMs += performance.now() - started;
        this.#syncing.delete(running);
        this.#durableUpTo = Math.max(this.#durableUpTo, covers);
        while (this.#waiting.length > 0 && this.#waiting[0]!.no <= this.#durableUpTo) this.#waiting.shift()!.durable();
        this.#startSyncIfNeeded();
      },
      (err: unknown) => {
        this.#syncing.delete(running);
        // Whatever another sync may still cover, nothing waiting is known to be durable: the store stops here.
        this.#failed ??= new StateSyncFailedError(`the state database's write-ahead log could not be synced to disk: ${(err as Error).message ?? String(err)}`, { cause: err });
        for (const w of this.#waiting.splice(0)) w.failed(this.#failed);
      },
    );
    this.#syncing.add(running);
  }
}
