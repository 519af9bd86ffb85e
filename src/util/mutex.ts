/**
 * A FIFO async mutex. Used for "one restore at a time per device" and to serialise a namespace's syncs.
 * `run` releases the lock however `fn` ends; it never deadlocks on a throwing `fn`.
 */
import { unlessAborted } from './abortable.js';

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

  /**
   * Runs `fn` once the callers before it are done. `signal` gives up the wait: the call then rejects with its reason,
   * `fn` does not run, and the callers behind it keep their order (the turn passes on when the one before ends).
   */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    this.held++;
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => next);
    try {
      await unlessAborted(prev, signal);
    } catch (err) {
      this.held--;
      release();
      throw err;
    }
    try {
      return await fn();
    } finally {
      this.held--;
      release();
    }
  }
}
