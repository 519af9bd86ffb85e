/**
 * An optional capacity model of the simulated NetHSM (`--device-slots N`): at most N operations are in service at once,
 * each holding a slot for its configured latency; the others wait for a slot, first come first served. Without it
 * latency is a sleep with no contention, so no load (an anti-entropy pass, a backup) can slow another caller's
 * signatures, which a real appliance's few cores do. Off by default: nothing changes unless asked for.
 */
import { sleep } from './latency.js';

export const MAX_DEVICE_SLOTS = 1024;

export class DeviceSlots {
  #free: number;
  readonly #waiting: (() => void)[] = [];
  #head = 0;

  /** `slots`: a whole number from 1 to MAX_DEVICE_SLOTS; throws RangeError otherwise. */
  constructor(readonly slots: number) {
    if (!Number.isInteger(slots) || slots < 1 || slots > MAX_DEVICE_SLOTS) throw new RangeError(`device slots must be a whole number from 1 to ${MAX_DEVICE_SLOTS}, got ${slots}`);
    this.#free = slots;
  }

  /** Operations waiting for a slot now. */
  get queued(): number {
    return this.#waiting.length - this.#head;
  }

  /**
   * Waits for a slot (FIFO), holds it for `ms` (0: until the next turn of the event loop), then frees it. Resolves to
   * the time spent waiting for the slot (ms).
   */
  async hold(ms: number): Promise<number> {
    const asked = performance.now();
    if (this.#free > 0 && this.queued === 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    const waited = performance.now() - asked;
    try {
      await (ms > 0 ? sleep(ms) : new Promise<void>((r) => setImmediate(r)));
    } finally {
      this.#release();
    }
    return waited;
  }

  /** Hands the slot to the longest waiter, or frees it. */
  #release(): void {
    if (this.#head < this.#waiting.length) {
      const next = this.#waiting[this.#head++]!;
      if (this.#head > 1024 && this.#head * 2 > this.#waiting.length) {
        this.#waiting.splice(0, this.#head);
        this.#head = 0;
      }
      next();
    } else {
      this.#free++;
    }
  }
}
