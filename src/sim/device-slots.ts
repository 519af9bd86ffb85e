/**
 * An optional capacity model of the simulated NetHSM (`--device-slots N`): at most N operations are in service at once,
 * each holding a slot for its configured latency; the others wait for a slot, first come first served. Without it
 * latency is a sleep with no contention, so no load (an anti-entropy pass, a backup) can slow another caller's
 * signatures, which a real appliance's few cores do. Off by default: nothing changes unless asked for.
 *
 * The device keeps its own time, as an appliance doing its crypto on its own hardware does: a slot passes to the next
 * operation at the moment the previous one's service was due to end, and the next one's service ends its latency after
 * that moment, however late this process's event loop got round to the hand-over. Timing the next service from the
 * late timer instead made the device slower whenever the machine running the simulator was busy (each hand-over late by
 * the process's wait for a CPU: 5–8 ms per operation on a loaded 2-core machine, 10–15 % of a 50 ms import), so a
 * benchmark that loads the machine more on one path than on the other measured the simulator's share of the CPU, not
 * the device. A late event loop still delays the answers, but not the device's schedule; the order of service and of
 * the answers stays first come, first served.
 */
import { sleep } from './latency.js';

export const MAX_DEVICE_SLOTS = 1024;

export class DeviceSlots {
  #free: number;
  /** Waiters, each told the moment its slot became free by the device's schedule. */
  readonly #waiting: ((freedAt: number) => void)[] = [];
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
   * Waits for a slot (FIFO), holds it for `ms` of device time from the moment it became free (0: until the next turn of
   * the event loop), then frees it. Resolves to the time spent waiting for the slot (ms), by the device's schedule.
   */
  async hold(ms: number): Promise<number> {
    const asked = performance.now();
    let start = asked;
    if (this.#free > 0 && this.queued === 0) this.#free--;
    else start = Math.max(asked, await new Promise<number>((resolve) => this.#waiting.push(resolve)));
    const end = start + Math.max(0, ms);
    try {
      // A slot taken at once sleeps exactly `ms` (operations that start together end in the order they started, in one
      // timer list); one handed over sleeps until its end by the device's schedule, possibly not at all.
      const left = start === asked ? ms : end - performance.now();
      await (left > 0 ? sleep(left) : new Promise<void>((r) => setImmediate(r)));
    } finally {
      this.#release(end);
    }
    return start - asked;
  }

  /** Hands the slot, free since `freedAt` by the device's schedule, to the longest waiter, or frees it. */
  #release(freedAt: number): void {
    if (this.#head < this.#waiting.length) {
      const next = this.#waiting[this.#head++]!;
      if (this.#head > 1024 && this.#head * 2 > this.#waiting.length) {
        this.#waiting.splice(0, this.#head);
        this.#head = 0;
      }
      next(freedAt);
    } else {
      this.#free++;
    }
  }
}
