/**
 * The one barrier in front of a site's NetHSM. Every mutation of the device passes it (docs/concurrency.md):
 *
 * - **shared**: single-key changes that do not interact with each other — gateway writes, stream applies,
 *   anti-entropy repairs, transport-key creation — and device backups taken only to be read (snapshots served to
 *   peers). Many at once.
 * - **exclusive**: a restore and what must not be raced by it (a snapshot apply's restore; administrator strip and
 *   restore with their backup) and quarantine exports. One at a time, alone: it waits for the shared holders already admitted to finish
 *   (bounded by `drainTimeoutMs`), and shared callers arriving meanwhile wait until no exclusive is pending or
 *   running (gateway writes bounded by `maxWaitMs`, then 503).
 *
 * A merge-restore replaces every user, key and namespace with its file's, so anything that reached the device after
 * its backup and before its restore would be wiped. Either the hold spans backup to restore, or (snapshot sync) the
 * backup is taken under a read-only shared hold and a tracker tells, inside the exclusive hold, which writes passed
 * the barrier since (`trackWrites`): the restore is safe without a new backup only when there were none, or when each
 * can be re-applied after it (its WriteTicket). The write generation (`markWrites`, `scopesWrittenSince`) tells the
 * verification after the restore which namespaces were written since.
 *
 * Fencing: each caller passes the tokens of what it was decided under. They are checked once admitted (before the
 * first device call) and the exclusive holder re-checks them (`guard.check()`) right before its restore; a stale token
 * throws FenceTokenStaleError and the step is abandoned with nothing written.
 *
 * Re-entry: a shared or exclusive call made from inside an exclusive hold runs at once (its holder is alone), and a
 * shared call from inside a shared hold runs at once (it would otherwise wait for a pending exclusive that waits for
 * its caller). An exclusive call from inside a shared hold is a lock-order violation and throws.
 *
 * Exclusive holders queue in arrival order. The device's backup and restore calls themselves are serialised again one
 * level down (`Device`), because backups taken under shared holds may overlap each other.
 *
 * Giving up a wait: a caller with a `signal` (shared: SharedOptions; exclusive: ExclusiveOptions) stops waiting when
 * it aborts, rejecting with its reason, and is never admitted after (no hold, nothing counted). The others keep their
 * order: an exclusive caller that leaves the queue hands its turn on only once the holds before it ended, and shared
 * callers waiting behind it are admitted as soon as no other exclusive hold is pending or running. Once admitted
 * (`fn` runs, or `enter` resolved), the signal no longer concerns the barrier.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { GatewayDrainTimeoutError, GatewayHoldTimeoutError, InternalError } from '../errors.js';
import type { FencingToken } from './fencing.js';
import { unlessAborted } from '../util/abortable.js';

export interface BarrierOptions {
  /** Longest a bounded shared caller (a gateway write) waits for exclusive holds to end. Default 30 s. */
  maxWaitMs?: number;
  /** Longest an exclusive holder waits for shared holders to finish before giving up. Default 60 s. */
  drainTimeoutMs?: number;
  /** `Retry-After` the gateway sends with a 503 after `maxWaitMs`. Default 5 s. */
  retryAfterSeconds?: number;
  /** Throws FenceTokenStaleError when a token no longer matches the namespace's role row. Default: accepts all. */
  check?: (token: FencingToken) => void;
}

/** Ends one shared hold. Idempotent. */
export type Release = () => void;

export interface SharedOptions {
  /**
   * Aborts the wait (the client went away, the puller stops, the daemon stops for a backup only read); the caller is
   * then not admitted. Ignored once admitted.
   */
  signal?: AbortSignal;
  /** Wait bound for exclusive holds to end: a number (ms), `'default'` (`maxWaitMs`), or `'unbounded'`. */
  wait?: number | 'default' | 'unbounded';
  /** The tokens the step was decided under, checked once admitted. */
  tokens?: readonly FencingToken[];
  /**
   * The holder only reads the device (a backup served to a peer, a merge-restore's base backup): it is not counted in
   * the write generation, so it never makes a merge-restore merge again. Default false: counted as a write.
   */
  readOnly?: boolean;
  /**
   * The one namespace this holder writes in (its keys and users), e.g. a stream apply, an anti-entropy pass or a
   * gateway write confined to one namespace (src/gateway/write-scope.ts). A
   * merge-restore of that very namespace need not merge again for it (the restore replaces the namespace and the
   * stream re-applies past the snapshot's position), and its verification leaves that namespace out. Absent: the
   * write may touch anything.
   */
  scope?: string;
  /**
   * Filled in by the holder before it releases: what it wrote, so a merge-restore that it raced can re-apply it after
   * its restore instead of backing the device up again (docs/concurrency.md, "Racing writes re-applied"). Absent or
   * left `unknown`: the write cannot be re-applied.
   */
  ticket?: WriteTicket;
  /**
   * The holder is one client call through the gateway (ends within the gateway's bounds): an early B1 lets such writes
   * in flight end before it opens its tracker (early-backup.ts), whatever their scope. Default false.
   */
  gateway?: boolean;
  /**
   * What the holder is, for the logs only (e.g. `transport key creation`, `gateway POST /namespaces/{id}`): a
   * verification skipped for an unscoped write names it (`unscopedSince`). Never a secret. Default `unlabelled`.
   */
  purpose?: string;
}

/**
 * What a write holder did, as far as making it good after a restore that erased it goes:
 * - `unknown`: anything (the default): it cannot be re-applied;
 * - `none`: it changed nothing on the device (a call the NetHSM refused with a 4xx, a duplicate stream change); once
 *   it released, the write counts (`writesSince`, `scopesWrittenSince`) leave it out, so set it only when that is sure;
 * - `log`: a change this site logged as primary of `namespace` under `seq`; re-applied from the change log (with the
 *   import's envelope sealed to this site's own transport key);
 * - `stream`: a stream change from `source` applied here to replica namespace `namespace` at `seq`; re-applied by
 *   moving the namespace's position back before it (the stream applies it again).
 */
export type WriteReplay =
  | { readonly kind: 'unknown' }
  | { readonly kind: 'none' }
  | { readonly kind: 'log'; readonly namespace: string; readonly seq: number }
  | { readonly kind: 'stream'; readonly namespace: string; readonly source: string; readonly seq: number };

/** A write holder's note of what it wrote (SharedOptions.ticket); the holder sets `replay` before it releases. */
export interface WriteTicket {
  replay: WriteReplay;
}

/** A new ticket: `unknown` until its holder says what it wrote. */
export function writeTicket(): WriteTicket {
  return { replay: { kind: 'unknown' } };
}

/**
 * One write holder as a tracker saw it: its scope (`null`: unscoped), its ticket (final once it released), and whether
 * it is a gateway write (SharedOptions.gateway).
 */
export interface TrackedWrite {
  readonly scope: string | null;
  readonly ticket: WriteTicket;
  readonly gateway?: boolean;
  /** SharedOptions.purpose / ExclusiveOptions.purpose. */
  readonly purpose?: string;
}

/**
 * The write holders in flight when it was made and every one admitted since (exclusive holds too, one entry per scope,
 * `unknown`), until closed. A merge-restore makes one before its base backup; inside its exclusive hold every holder
 * it lists has released, so their tickets are final.
 */
export interface WriteTracker {
  writes(): readonly TrackedWrite[];
  /** Stops collecting. Idempotent. */
  close(): void;
}

/**
 * The barrier's write bookkeeping at one moment (`markWrites`): how many write holders had been admitted, and how many
 * were in flight. A merge-restore marks before its base backup is requested and compares inside its exclusive hold.
 */
export interface WriteMark {
  readonly generation: number;
  readonly inFlight: number;
  /** Write holders released so far whose ticket said `none` (they changed nothing). */
  readonly idle: number;
  /** Per scope (a namespace; `null`: unscoped writes): admitted so far, in flight and released idle at the mark. */
  readonly scopes: ReadonlyMap<string | null, ScopeCounts>;
  /** The unscoped write holders in flight at the mark (for `unscopedSince`). */
  readonly unscoped: readonly TrackedWrite[];
}

/** One scope's write holders (WriteMark.scopes). */
export interface ScopeCounts {
  readonly admitted: number;
  readonly inFlight: number;
  readonly idle: number;
}

export interface ExclusiveOptions {
  /**
   * The one namespace the holder changes (a snapshot apply's restore; a promote's, demote's, fence's or retry's
   * administrator strip or restore and the re-apply of erased writes, src/daemon/failover.ts). Every exclusive hold
   * counts as a write in the write generation when it starts (a restore changes the device under any merge built
   * before it); with a scope, a merge-restore of another namespace sees which, and a restore's verification leaves only
   * that namespace out instead of skipping itself. Give a scope only when the holder provably changes nothing else
   * that a verification compares: a backup-rewrite-restore inside the hold does (every entry outside the namespace is
   * restored as the hold's own backup held it; device configuration is re-sealed, and not compared). A merge-restore
   * of that same namespace does not merge again for such a hold (it treats it as its own stream's writes), which is
   * safe for the holds scoped so (docs/concurrency.md, "Snapshot sync"): a promote, resume or demote changes the
   * namespace's role row, so the merge-restore's fencing token (single sync) or its part's check (coalesced) drops it
   * inside its hold; an administrator restore retry or an erased-write re-apply runs only for a namespace primary
   * here, which no merge-restore restores; a fence's export comes before any sync of the fenced namespace is allowed
   * (sync.ts), and its administrator strip does what a replica's merge does to the namespace anyway (drops its
   * administrators). Absent: may change anything.
   */
  scope?: string;
  /**
   * The namespaces a coalesced merge-restore changes (apply-batch.ts): counted as `scope` is, once per namespace (the
   * write generation counts the hold once). Takes precedence over `scope`.
   */
  scopes?: readonly string[];
  /** As SharedOptions.purpose. */
  purpose?: string;
  /**
   * Aborts the wait for the hold (queued behind other exclusive holds, or draining the shared holders): the caller is
   * then not admitted, `fn` does not run, and the call rejects with the signal's reason (the daemon's stop: a
   * merge-restore that has written nothing yet). Ignored once `fn` runs: a hold is never cut.
   */
  signal?: AbortSignal;
}

/** Given to an exclusive holder: re-checks its tokens right before an irreversible device call. */
export interface ExclusiveGuard {
  check(): void;
}

interface Waiter {
  admit(): void;
}

type Scope = 'shared' | 'exclusive';

export class DeviceBarrier {
  readonly maxWaitMs: number;
  readonly drainTimeoutMs: number;
  readonly retryAfterSeconds: number;
  readonly #check: (token: FencingToken) => void;
  /** Exclusive holds pending or running. */
  #exclusives = 0;
  #shared = 0;
  /**
   * Write holders (shared, not read-only; and exclusive holds, counted as they start) admitted since the barrier was
   * made, and the shared ones not yet released.
   */
  #generation = 0;
  #writers = 0;
  /** Write holders released with a `none` ticket: admitted and counted above, but they changed nothing. */
  #idle = 0;
  /** The same per scope (`null`: unscoped). */
  readonly #scopes = new Map<string | null, { admitted: number; inFlight: number; idle: number }>();
  /** The last unscoped write holders admitted (generation at admission, purpose): what `unscopedSince` names. */
  readonly #recentUnscoped: { generation: number; write: TrackedWrite }[] = [];
  /** Write holders admitted and not yet released (what a new tracker starts with). */
  readonly #writing = new Set<TrackedWrite>();
  readonly #trackers = new Set<TrackedWrite[]>();
  #exclusiveRuns = 0;
  readonly #waiters = new Set<Waiter>();
  readonly #drainWaiters = new Set<() => void>();
  /** writesEnded callers: the write holders each still waits for. */
  readonly #endWaiters = new Set<{ left: Set<TrackedWrite>; resolve: () => void }>();
  #queue: Promise<void> = Promise.resolve();
  readonly #scope = new AsyncLocalStorage<Scope>();

  /** Throws RangeError for a non-positive or non-finite bound. */
  constructor(options: BarrierOptions = {}) {
    this.maxWaitMs = positive(options.maxWaitMs ?? 30_000, 'maxWaitMs');
    this.drainTimeoutMs = positive(options.drainTimeoutMs ?? 60_000, 'drainTimeoutMs');
    this.retryAfterSeconds = Math.ceil(positive(options.retryAfterSeconds ?? 5, 'retryAfterSeconds'));
    this.#check = options.check ?? (() => undefined);
  }

  /** Whether an exclusive hold is pending or running (shared callers wait). */
  get held(): boolean {
    return this.#exclusives > 0;
  }

  /** Shared holders admitted and not yet released. */
  get inFlight(): number {
    return this.#shared;
  }

  /**
   * Runs `fn` (and everything it starts) outside any hold's context. For work started from inside a hold that must
   * take holds of its own later, after that one ended (a retry loop): from inside, its calls would re-enter the hold
   * it was started in and run at once, unexcluded, even after that hold ended.
   */
  detached<T>(fn: () => T): T {
    return this.#scope.exit(fn);
  }

  /** Whether the caller runs inside an exclusive hold (its own device calls go through at once). */
  get insideExclusive(): boolean {
    return this.#scope.getStore() === 'exclusive';
  }

  /** Exclusive holds that have started running (their `fn` was called) since the barrier was made. */
  get exclusiveRuns(): number {
    return this.#exclusiveRuns;
  }

  /** Write holders admitted since the barrier was made (the write generation). */
  get writeGeneration(): number {
    return this.#generation;
  }

  /** Where the write bookkeeping stands now; compare with `writesSince`/`quietSince`. */
  markWrites(): WriteMark {
    const scopes = new Map([...this.#scopes].map(([k, v]) => [k, { ...v }] as const));
    const unscoped = [...this.#writing].filter((w) => w.scope === null);
    return { generation: this.#generation, inFlight: this.#writers, idle: this.#idle, scopes, unscoped };
  }

  /**
   * Starts listing write holders (WriteTracker): those in flight now and every one admitted until `close()`. Close it
   * in a `finally`: an open tracker keeps every holder's entry.
   */
  trackWrites(): WriteTracker {
    const list = [...this.#writing];
    this.#trackers.add(list);
    return {
      writes: () => list,
      close: () => {
        this.#trackers.delete(list);
      },
    };
  }

  /**
   * Resolves once every write holder in flight now for which `which` holds (default: all) has released; holders
   * admitted later are not waited for. No bound of its own: a caller that cannot wait long races it with a timer.
   */
  writesEnded(which: (w: TrackedWrite) => boolean = () => true): Promise<void> {
    const left = new Set([...this.#writing].filter(which));
    if (left.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#endWaiters.add({ left, resolve }));
  }

  /** Whether a tracker is open: a merge-restore may have to re-apply what writes now do (capture seals for it). */
  get tracking(): boolean {
    return this.#trackers.size > 0;
  }

  /**
   * Contract: true only when no write holder (outside the scopes in `except`) was in flight at `mark` and none has
   * been admitted since, so nothing that passed this barrier can have changed the device (outside those namespaces)
   * after the mark. Writes that bypass the daemon (a client talking straight to the NetHSM) are invisible here
   * (docs/concurrency.md, "Snapshot sync").
   */
  quietSince(mark: WriteMark, except?: ReadonlySet<string>): boolean {
    return this.writesSince(mark, except) === 0;
  }

  /**
   * Write holders (outside `except`) that may have changed the device since `mark`: admitted since + in flight at it,
   * less those of them that released saying they changed nothing (a `none` ticket: a call the NetHSM refused, a
   * duplicate stream change, a transport key found present). Each holder in the first two terms is subtracted at most
   * once, and only once its ticket is final (it released), so a holder still in flight always counts.
   */
  writesSince(mark: WriteMark, except?: ReadonlySet<string>): number {
    if (!except || except.size === 0) return this.#generation - mark.generation + mark.inFlight - (this.#idle - mark.idle);
    let n = 0;
    for (const [scope, c] of this.#scopeCounts(mark)) if (scope === null || !except.has(scope)) n += c;
    return n;
  }

  /**
   * The scopes written since `mark` (admitted since or in flight at it, as `writesSince` counts them: not those that
   * released having changed nothing); `null` stands for unscoped writes.
   */
  scopesWrittenSince(mark: WriteMark): Set<string | null> {
    return new Set([...this.#scopeCounts(mark)].filter(([, c]) => c > 0).map(([scope]) => scope));
  }

  /**
   * For the logs: the unscoped write holders in flight at `mark` or admitted since (the last 32 admitted at most;
   * unscoped exclusive holds too), each its purpose, `(changed nothing)` once it released with a `none` ticket, or
   * `(in flight)`. Empty when there were none.
   */
  unscopedSince(mark: WriteMark): string[] {
    const since = this.#recentUnscoped.filter((u) => u.generation > mark.generation).map((u) => u.write);
    return [...mark.unscoped, ...since].map((w) => {
      const note = this.#writing.has(w) ? ' (in flight)' : w.ticket.replay.kind === 'none' ? ' (changed nothing)' : '';
      return purposeOf(w) + note;
    });
  }

  #scopeCounts(mark: WriteMark): Map<string | null, number> {
    const out = new Map<string | null, number>();
    for (const [scope, now] of this.#scopes) {
      const then = mark.scopes.get(scope);
      out.set(scope, now.admitted - (then?.admitted ?? 0) + (then?.inFlight ?? 0) - (now.idle - (then?.idle ?? 0)));
    }
    return out;
  }

  /** Shared callers waiting for exclusive holds to end. */
  get waiting(): number {
    return this.#waiters.size;
  }

  /**
   * Runs `fn` under a shared hold (see the module comment). Rejects with GatewayHoldTimeoutError past the wait bound,
   * the signal's reason on abort, FenceTokenStaleError for a stale token (fn not run), or whatever `fn` throws.
   */
  async shared<T>(fn: () => Promise<T>, options: SharedOptions = {}): Promise<T> {
    if (this.#scope.getStore() !== undefined) {
      this.#checkAll(options.tokens);
      return fn();
    }
    const release = await this.enter(options);
    try {
      return await this.#scope.run('shared', fn);
    } finally {
      release();
    }
  }

  /**
   * Admits one shared holder and resolves with its release: at once when no exclusive hold is pending or running,
   * else when they end. The gateway uses this form (it releases when the response is done). Rejects as `shared` does;
   * a rejected caller is not in flight.
   */
  async enter(options: SharedOptions = {}): Promise<Release> {
    const release = await this.#admission(options);
    try {
      this.#checkAll(options.tokens);
    } catch (err) {
      release();
      throw err;
    }
    return release;
  }

  /**
   * Runs `fn` alone: after earlier exclusive holders, with every shared holder drained and new ones waiting. Tokens are
   * checked before the drain and again after it; `fn` gets a guard to check them before its restore. Rejects with
   * GatewayDrainTimeoutError when shared holders do not finish in time (fn not run), FenceTokenStaleError, the
   * signal's reason when it aborts before `fn` runs (ExclusiveOptions.signal), or what `fn` throws. Shared callers are
   * admitted again when the last exclusive hold ends (or the last one waiting gives up).
   */
  async exclusive<T>(tokens: readonly FencingToken[], fn: (guard: ExclusiveGuard) => Promise<T>, options: ExclusiveOptions = {}): Promise<T> {
    const guard: ExclusiveGuard = { check: () => this.#checkAll(tokens) };
    const scope = this.#scope.getStore();
    if (scope === 'exclusive') {
      guard.check();
      return fn(guard);
    }
    if (scope === 'shared') throw new InternalError('lock order violation: an exclusive device hold was requested from inside a shared one');
    const { signal } = options;
    signal?.throwIfAborted();
    this.#exclusives++;
    const previous = this.#queue;
    let done!: () => void;
    this.#queue = new Promise<void>((resolve) => (done = resolve));
    // Whether the holds before this one have ended: a caller that gives up earlier hands its turn on only then.
    let reached = false;
    try {
      await unlessAborted(previous, signal);
      reached = true;
      guard.check();
      await this.#drain(signal);
      guard.check();
      // The drain may have ended in the same turn as the abort: a caller that gave up is not admitted.
      signal?.throwIfAborted();
      this.#exclusiveRuns++;
      // Counted before `fn` runs, so a mark the holder takes inside its own hold does not see its own hold.
      const scopes = options.scopes && options.scopes.length > 0 ? options.scopes : [options.scope ?? null];
      const purpose = options.purpose ?? UNLABELLED;
      for (const sc of new Set(scopes)) {
        this.#scopeOf(sc).admitted++;
        const held: TrackedWrite = { scope: sc, ticket: writeTicket(), purpose };
        this.#tracked(held);
        if (sc === null) this.#noteUnscoped(this.#generation + 1, held);
      }
      this.#generation++;
      return await this.#scope.run('exclusive', () => fn(guard));
    } finally {
      if (reached) done();
      else void previous.then(done);
      this.#exclusives--;
      if (this.#exclusives === 0) for (const w of [...this.#waiters]) w.admit();
    }
  }

  /**
   * Checks `token` as admission does (the same check, throwing FenceTokenStaleError): for a shared holder that makes
   * many device calls under one hold (the stream's apply window) and must check again right before each.
   */
  checkToken(token: FencingToken): void {
    this.#check(token);
  }

  #checkAll(tokens: readonly FencingToken[] | undefined): void {
    for (const t of tokens ?? []) this.#check(t);
  }

  #admission(options: SharedOptions): Promise<Release> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    const write =
      options.readOnly === true
        ? undefined
        : {
            scope: options.scope ?? null,
            ticket: options.ticket ?? writeTicket(),
            ...(options.gateway === true ? { gateway: true } : {}),
            ...(options.purpose !== undefined ? { purpose: options.purpose } : {}),
          };
    if (this.#exclusives === 0) return Promise.resolve(this.#admitOne(write));
    const bound = options.wait === 'unbounded' ? undefined : options.wait === undefined || options.wait === 'default' ? this.maxWaitMs : options.wait;
    return new Promise<Release>((resolve, reject) => {
      const started = Date.now();
      const cleanup = (): void => {
        this.#waiters.delete(waiter);
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      // Admission counts the holder synchronously, so an exclusive hold starting right after waits for it.
      const waiter: Waiter = {
        admit: () => {
          cleanup();
          resolve(this.#admitOne(write));
        },
      };
      const timer =
        bound === undefined
          ? undefined
          : setTimeout(() => {
              cleanup();
              reject(
                new GatewayHoldTimeoutError(
                  `writes are held while a merge-restore runs at this site; waited ${Date.now() - started} ms (limit ${bound} ms)`,
                ),
              );
            }, bound);
      const onAbort = (): void => {
        cleanup();
        reject(signal!.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  /** `write`: a write holder's scope (`null`: unscoped) and ticket, undefined for a read-only one. */
  #admitOne(write: TrackedWrite | undefined): Release {
    this.#shared++;
    const counts = write === undefined ? undefined : this.#scopeOf(write.scope);
    if (counts) {
      this.#generation++;
      this.#writers++;
      counts.admitted++;
      counts.inFlight++;
      this.#writing.add(write!);
      this.#tracked(write!);
      if (write!.scope === null) this.#noteUnscoped(this.#generation, write!);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#shared--;
      if (counts) {
        this.#writers--;
        counts.inFlight--;
        // Its ticket is final now: a holder that says it changed nothing no longer counts as a write (writesSince).
        if (write!.ticket.replay.kind === 'none') {
          this.#idle++;
          counts.idle++;
        }
        this.#writing.delete(write!);
        for (const w of [...this.#endWaiters]) {
          if (w.left.delete(write!) && w.left.size === 0) {
            this.#endWaiters.delete(w);
            w.resolve();
          }
        }
      }
      if (this.#shared === 0) for (const wake of [...this.#drainWaiters]) wake();
    };
  }

  #tracked(w: TrackedWrite): void {
    for (const list of this.#trackers) list.push(w);
  }

  #scopeOf(scope: string | null): { admitted: number; inFlight: number; idle: number } {
    let c = this.#scopes.get(scope);
    if (!c) this.#scopes.set(scope, (c = { admitted: 0, inFlight: 0, idle: 0 }));
    return c;
  }

  #noteUnscoped(generation: number, write: TrackedWrite): void {
    this.#recentUnscoped.push({ generation, write });
    if (this.#recentUnscoped.length > RECENT_UNSCOPED) this.#recentUnscoped.shift();
  }

  /** Waits for the shared holders to end, at most `drainTimeoutMs`; `signal` gives the wait up. */
  #drain(signal: AbortSignal | undefined): Promise<void> {
    if (this.#shared === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const end = (): void => {
        clearTimeout(timer);
        this.#drainWaiters.delete(wake);
        signal?.removeEventListener('abort', onAbort);
      };
      const wake = (): void => {
        end();
        resolve();
      };
      const onAbort = (): void => {
        end();
        reject(signal!.reason as Error);
      };
      const timer = setTimeout(() => {
        end();
        reject(
          new GatewayDrainTimeoutError(
            `${this.#shared} device write(s) (gateway, stream or repair) still in flight after ${this.drainTimeoutMs} ms; the restore did not start`,
          ),
        );
      }, this.drainTimeoutMs);
      this.#drainWaiters.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

const UNLABELLED = 'unlabelled';
/** How many unscoped write holders `unscopedSince` can name (a log field, not a count anything relies on). */
const RECENT_UNSCOPED = 32;

function purposeOf(w: TrackedWrite): string {
  return w.purpose ?? UNLABELLED;
}

function positive(n: number, name: string): number {
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`${name} must be a positive number of milliseconds/seconds, got ${n}`);
  return n;
}
