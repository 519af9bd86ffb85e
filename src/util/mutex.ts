/**
 * A FIFO async mutex. Used for "one restore at a time per device" and to serialise a namespace's syncs.
 * `run` releases the lock however `fn` ends; it never deadlocks on a throwing `fn`.
 */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  private held = 0;

  /** Whether someone holds or waits for the lock. */
  get busy(): boolean {
    return this.held > 0;
  }

  /** Callers waiting for the lock behind the one that holds it. */
  get waiting(): number {
    return Math.max(0, this.held - 1);
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    this.held++;
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    try {
      return await fn();
    } finally {
      this.held--;
      release();
    }
  }
}
