/**
 * Per-key locks of the change capture: two mutations of one key are never in flight at once, so the order in which the
 * change log numbers them is the order in which the NetHSM applied them. Mutations of different keys run concurrently
 * (their order does not matter to the result).
 */
export class KeyLocks {
  readonly #tails = new Map<string, Promise<void>>();

  /**
   * Waits until every named key is free, then holds them all; returns the release function (idempotent). Keys are
   * taken in sorted order, so two callers naming the same keys cannot deadlock.
   */
  async acquire(keys: readonly string[]): Promise<() => void> {
    const releases: (() => void)[] = [];
    for (const key of [...new Set(keys)].sort()) releases.push(await this.#one(key));
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const r of releases) r();
    };
  }

  /** Keys held or waited for (tests, status). */
  get size(): number {
    return this.#tails.size;
  }

  async #one(key: string): Promise<() => void> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.#tails.set(key, tail);
    await prev;
    return () => {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    };
  }
}
