/**
 * The write hold around merge-restores. A merge-restore replaces every user, key and namespace on the device with the
 * merged file's, so a write that lands between the daemon's last backup and the end of the restore would be lost. The
 * daemon wraps each merge-restore in `gate.hold(fn)`; the gateway wraps each locally forwarded write in `enter()`/release.
 *
 * - While any hold is pending or running, `enter()` waits (bounded by `maxWaitMs`, then GatewayHoldTimeoutError).
 * - `hold(fn)` first stops new writes, then waits for writes already in flight to finish (bounded by `drainTimeoutMs`,
 *   then GatewayDrainTimeoutError and `fn` never runs), then runs `fn`.
 * - Holds queue: overlapping holds run their `fn`s one after another and writes wait for all of them. A `hold` called
 *   from inside a running hold's `fn` (nested) runs at once, so a restore helper may hold on its own.
 * Reads and crypto never come here.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { GatewayDrainTimeoutError, GatewayHoldTimeoutError } from '../errors.js';

export interface WriteGateOptions {
  /** Longest a write waits for holds to end before it is answered 503. Default 30 s. */
  maxWaitMs?: number;
  /** Longest a hold waits for in-flight writes before giving up. Default 60 s. */
  drainTimeoutMs?: number;
  /** `Retry-After` sent with the 503. Default 5 s. */
  retryAfterSeconds?: number;
}

/** Ends one write's stay in flight. Idempotent. */
export type GateRelease = () => void;

interface Waiter {
  admit(): void;
}

export class WriteGate {
  readonly maxWaitMs: number;
  readonly drainTimeoutMs: number;
  readonly retryAfterSeconds: number;
  #holds = 0;
  #inFlight = 0;
  readonly #waiters = new Set<Waiter>();
  readonly #drainWaiters = new Set<() => void>();
  #queue: Promise<void> = Promise.resolve();
  readonly #inside = new AsyncLocalStorage<true>();

  /** Throws RangeError for a non-positive or non-finite bound. */
  constructor(options: WriteGateOptions = {}) {
    this.maxWaitMs = positive(options.maxWaitMs ?? 30_000, 'maxWaitMs');
    this.drainTimeoutMs = positive(options.drainTimeoutMs ?? 60_000, 'drainTimeoutMs');
    this.retryAfterSeconds = Math.ceil(positive(options.retryAfterSeconds ?? 5, 'retryAfterSeconds'));
  }

  /** Whether writes are held now (a hold is pending or running). */
  get held(): boolean {
    return this.#holds > 0;
  }

  /** Writes admitted and not yet released. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Writes waiting for the holds to end. */
  get waiting(): number {
    return this.#waiters.size;
  }

  /**
   * Runs `fn` with writes held (see the module comment). Rejects with GatewayDrainTimeoutError when in-flight writes do
   * not finish in time (`fn` not run), or with whatever `fn` throws. Writes resume when the last hold ends.
   */
  async hold<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#inside.getStore() === true) return fn();
    this.#holds++;
    const previous = this.#queue;
    let done!: () => void;
    this.#queue = new Promise<void>((resolve) => (done = resolve));
    try {
      await previous;
      await this.#drain();
      return await this.#inside.run(true, fn);
    } finally {
      done();
      this.#holds--;
      if (this.#holds === 0) this.#admitAll();
    }
  }

  /**
   * Admits one write: at once when nothing is held, else when the holds end. Resolves with its release (call it when the
   * NetHSM has answered and the response is done). Rejects with GatewayHoldTimeoutError past `maxWaitMs`, or with the
   * signal's reason when `signal` aborts (the client went away) — in both cases the write is not in flight.
   */
  enter(signal?: AbortSignal): Promise<GateRelease> {
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (this.#holds === 0) return Promise.resolve(this.#admitOne());
    return new Promise<GateRelease>((resolve, reject) => {
      const started = Date.now();
      const cleanup = (): void => {
        this.#waiters.delete(waiter);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      // Admission increments the in-flight count synchronously, so a hold starting right after sees this write.
      const waiter: Waiter = {
        admit: () => {
          cleanup();
          resolve(this.#admitOne());
        },
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new GatewayHoldTimeoutError(
            `writes are held while a merge-restore runs at this site; waited ${Date.now() - started} ms (limit ${this.maxWaitMs} ms)`,
          ),
        );
      }, this.maxWaitMs);
      const onAbort = (): void => {
        cleanup();
        reject(signal!.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  #admitOne(): GateRelease {
    this.#inFlight++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#inFlight--;
      if (this.#inFlight === 0) {
        for (const wake of [...this.#drainWaiters]) wake();
      }
    };
  }

  #admitAll(): void {
    for (const w of [...this.#waiters]) w.admit();
  }

  #drain(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
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
            `${this.#inFlight} write(s) through the gateway still in flight after ${this.drainTimeoutMs} ms; the restore did not start`,
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
