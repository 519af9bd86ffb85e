/**
 * The one barrier in front of a site's NetHSM. Every mutation of the device passes it (docs/concurrency.md):
 *
 * - **shared**: single-key changes that do not interact with each other — gateway writes, stream applies,
 *   anti-entropy repairs, transport-key creation — and device backups taken only to be read (snapshots served to
 *   peers). Many at once.
 * - **exclusive**: a device backup that will be restored (merge-restores: snapshot apply, administrator strip and
 *   restore) and quarantine exports. One at a time, alone: it waits for the shared holders already admitted to finish
 *   (bounded by `drainTimeoutMs`), and shared callers arriving meanwhile wait until no exclusive is pending or
 *   running (gateway writes bounded by `maxWaitMs`, then 503).
 *
 * A merge-restore replaces every user, key and namespace with its file's, so anything that reached the device after
 * its backup and before its restore would be wiped: that is why the hold spans backup to restore.
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
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { GatewayDrainTimeoutError, GatewayHoldTimeoutError, InternalError } from '../errors.js';
import type { FencingToken } from './fencing.js';

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
  /** Aborts the wait (the client went away, the puller stops); the caller is then not admitted. */
  signal?: AbortSignal;
  /** Wait bound for exclusive holds to end: a number (ms), `'default'` (`maxWaitMs`), or `'unbounded'`. */
  wait?: number | 'default' | 'unbounded';
  /** The tokens the step was decided under, checked once admitted. */
  tokens?: readonly FencingToken[];
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
  readonly #waiters = new Set<Waiter>();
  readonly #drainWaiters = new Set<() => void>();
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

  /** Whether the caller runs inside an exclusive hold (its own device calls go through at once). */
  get insideExclusive(): boolean {
    return this.#scope.getStore() === 'exclusive';
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
   * GatewayDrainTimeoutError when shared holders do not finish in time (fn not run), FenceTokenStaleError, or what
   * `fn` throws. Shared callers are admitted again when the last exclusive hold ends.
   */
  async exclusive<T>(tokens: readonly FencingToken[], fn: (guard: ExclusiveGuard) => Promise<T>): Promise<T> {
    const guard: ExclusiveGuard = { check: () => this.#checkAll(tokens) };
    const scope = this.#scope.getStore();
    if (scope === 'exclusive') {
      guard.check();
      return fn(guard);
    }
    if (scope === 'shared') throw new InternalError('lock order violation: an exclusive device hold was requested from inside a shared one');
    this.#exclusives++;
    const previous = this.#queue;
    let done!: () => void;
    this.#queue = new Promise<void>((resolve) => (done = resolve));
    try {
      await previous;
      guard.check();
      await this.#drain();
      guard.check();
      return await this.#scope.run('exclusive', () => fn(guard));
    } finally {
      done();
      this.#exclusives--;
      if (this.#exclusives === 0) for (const w of [...this.#waiters]) w.admit();
    }
  }

  #checkAll(tokens: readonly FencingToken[] | undefined): void {
    for (const t of tokens ?? []) this.#check(t);
  }

  #admission(options: SharedOptions): Promise<Release> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (this.#exclusives === 0) return Promise.resolve(this.#admitOne());
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
          resolve(this.#admitOne());
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

  #admitOne(): Release {
    this.#shared++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#shared--;
      if (this.#shared === 0) for (const wake of [...this.#drainWaiters]) wake();
    };
  }

  #drain(): Promise<void> {
    if (this.#shared === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#drainWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#drainWaiters.delete(wake);
        reject(
          new GatewayDrainTimeoutError(
            `${this.#shared} device write(s) (gateway, stream or repair) still in flight after ${this.drainTimeoutMs} ms; the restore did not start`,
          ),
        );
      }, this.drainTimeoutMs);
      this.#drainWaiters.add(wake);
    });
  }
}

function positive(n: number, name: string): number {
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`${name} must be a positive number of milliseconds/seconds, got ${n}`);
  return n;
}
