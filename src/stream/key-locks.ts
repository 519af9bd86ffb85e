/**
 * Per-key locks of the change capture: two mutations of one key are never in flight at once, so the order in which the
 * change log numbers them is the order in which the NetHSM applied them. Mutations of different keys run concurrently
 * (their order does not matter to the result).
 *
 * Lock order (docs/concurrency.md): these locks come FIRST, before the device barrier. The gateway takes a write's
 * keys before it waits at the barrier's gate, so writes queued on a hot key wait outside the barrier and an exclusive
 * hold waits only for the one write per key actually in flight. Nothing that holds the barrier ever waits here: a
 * holder that finds a key it lacks uses `tryAcquire` (no wait) and refuses when the key is busy.
 */
export class KeyLocks {
  readonly #tails = new Map<string, Promise<void>>();
  #waiting = 0;

  /**
   * Waits until every named key is free, then holds them all; returns the release function (idempotent). Keys are
   * taken in sorted order, so two callers naming the same keys cannot deadlock. When `signal` aborts first, rejects
   * with its reason and holds nothing (the keys it already had are let go, and its place in each queue passes on to
   * the next caller in order).
   */
  async acquire(keys: readonly string[], signal?: AbortSignal): Promise<() => void> {
    const releases: (() => void)[] = [];
    this.#waiting++;
    try {
      for (const key of [...new Set(keys)].sort()) releases.push(await this.#one(key, signal));
    } catch (err) {
      for (const r of releases) r();
      throw err;
    } finally {
      this.#waiting--;
    }
    return once(releases);
  }

  /**
   * Holds every named key now if all of them are free (none held or waited for), without waiting; undefined (holding
   * nothing) otherwise. For callers that must not wait: holders of the device barrier.
   */
  tryAcquire(keys: readonly string[]): (() => void) | undefined {
    const unique = [...new Set(keys)];
    if (unique.some((k) => this.#tails.has(k))) return undefined;
    return once(unique.map((key) => this.#take(key, Promise.resolve()).free));
  }

  /** Keys held or waited for (tests, status). */
  get size(): number {
    return this.#tails.size;
  }

  /** Callers in `acquire` that do not hold their keys yet (tests, status). */
  get waiting(): number {
    return this.#waiting;
  }

  async #one(key: string, signal: AbortSignal | undefined): Promise<() => void> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const slot = this.#take(key, prev);
    if (signal === undefined) {
      await prev;
      return slot.free;
    }
    try {
      await untilAborted(prev, signal);
    } catch (err) {
      // Gone from the queue: the caller after us goes on once the holder before us is done (never earlier).
      slot.pass();
      throw err;
    }
    return slot.free;
  }

  /**
   * Queues a slot for `key` after `prev`. `free` ends it once held (prev done); `pass` gives it up while still waiting:
   * the key's entry is dropped only once everyone queued before it is done, so the key never looks free while held.
   */
  #take(key: string, prev: Promise<void>): { free: () => void; pass: () => void } {
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    const forget = (): void => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    };
    return {
      free: () => {
        release();
        forget();
      },
      pass: () => {
        release();
        void tail.then(forget);
      },
    };
  }
}

/** One idempotent release for several. */
function once(releases: readonly (() => void)[]): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    for (const r of releases) r();
  };
}

/** Resolves with `p`, or rejects with the signal's reason when it aborts first. */
function untilAborted(p: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}
