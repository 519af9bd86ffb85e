/**
 * An optional capacity model of the simulated NetHSM (`--device-slots N`): at most N operations are in service at once,
 * each holding a slot for its configured latency; the others wait for a slot, first come first served. Without it
 * latency is a sleep with no contention, so no load (an anti-entropy pass, a backup) can slow another caller's
 * signatures, which a real appliance's few cores do. Off by default: nothing changes unless asked for.
 *
 * The device keeps its own time, as an appliance doing its crypto on its own hardware does: each operation is given its
 * slot and its service interval when it arrives (start = when the earliest slot frees, end = start + latency), and the
 * next one in that slot starts at that end, not when this process's event loop next gets round to it. Handing slots
 * over from timer callbacks instead made the device slower whenever the machine running the simulator was busy (each
 * hand-over late by the process's wait for a CPU: at 5–8 ms per operation on a loaded 2-core machine, 10–15 % of a
 * 50 ms import), so a benchmark that loads the machine more on one path than on the other measured the simulator's CPU
 * share, not the device. A late event loop still delays the answers, but not the device's schedule.
 */
import { sleep } from './latency.js';

export const MAX_DEVICE_SLOTS = 1024;

export class DeviceSlots {
  /** When each slot is free again (performance.now time; in the past: free now). */
  readonly #freeAt: number[];
  /** Start times of operations that have not started yet (their slot is still busy). */
  readonly #pendingStarts = new Set<{ at: number }>();

  /** `slots`: a whole number from 1 to MAX_DEVICE_SLOTS; throws RangeError otherwise. */
  constructor(readonly slots: number) {
    if (!Number.isInteger(slots) || slots < 1 || slots > MAX_DEVICE_SLOTS) throw new RangeError(`device slots must be a whole number from 1 to ${MAX_DEVICE_SLOTS}, got ${slots}`);
    this.#freeAt = Array.from({ length: slots }, () => Number.NEGATIVE_INFINITY);
  }

  /** Operations waiting for a slot now. */
  get queued(): number {
    const now = performance.now();
    let n = 0;
    for (const p of this.#pendingStarts) if (p.at > now) n++;
    return n;
  }

  /**
   * Takes the slot that frees first (FIFO: arrivals are scheduled in call order) for `ms` of device time from when it
   * frees, and resolves once that service has ended (0 ms: at the earliest in the next turn of the event loop).
   * Resolves to the time spent waiting for the slot (ms), from the device's schedule.
   */
  async hold(ms: number): Promise<number> {
    const asked = performance.now();
    let slot = 0;
    for (let i = 1; i < this.#freeAt.length; i++) if (this.#freeAt[i]! < this.#freeAt[slot]!) slot = i;
    const start = Math.max(asked, this.#freeAt[slot]!);
    const end = start + Math.max(0, ms);
    this.#freeAt[slot] = end;
    const pending = { at: start };
    if (start > asked) this.#pendingStarts.add(pending);
    try {
      const left = end - performance.now();
      await (left > 0 ? sleep(left) : new Promise<void>((r) => setImmediate(r)));
      // A timer may fire early by a fraction of a millisecond: the service ends at `end`, not before.
      const rest = end - performance.now();
      if (rest > 0) await sleep(rest);
    } finally {
      this.#pendingStarts.delete(pending);
    }
    return start - asked;
  }
}
