import { describe, expect, it } from 'vitest';
import { ApplyLimit, type ApplyLimitOptions } from './apply-limit.js';

/** An ApplyLimit on a fake clock, and one round of imports at its current limit. */
function limit(o: Omit<ApplyLimitOptions, 'now'>) {
  let t = 0;
  const l = new ApplyLimit({ ...o, now: () => t });
  /**
   * One round: `n` imports of `ms` each. With the window full they finish `ms / inFlight` apart (Little's law), the
   * rate a full window of that size gets; otherwise one at a time (demand below the window).
   */
  const round = (ms: number, opts: { full?: boolean; failed?: number; inFlight?: number; slowShare?: number } = {}): number => {
    const full = opts.full ?? true;
    const n = Math.max(l.current, 8);
    const spacing = full ? ms / (opts.inFlight ?? l.current) : ms;
    if (full) l.full();
    for (let i = 0; i < n; i++) {
      t += spacing;
      l.sample(i < n * (opts.slowShare ?? 0) ? ms * 10 : ms, i < (opts.failed ?? 0));
    }
    return l.current;
  };
  return { l, round };
}

describe('ApplyLimit (AIMD on latency and rate)', () => {
  it('doubles while the device keeps its latency and the window is full, up to the pool size', () => {
    const { l, round } = limit({ initial: 8, max: 32 });
    expect(l.current).toBe(8);
    expect(round(50)).toBe(16);
    expect(round(52)).toBe(32);
    expect(round(51)).toBe(32);
    expect(l.lastChange).toBe('slow-start');
  });

  it('keeps its size while demand is below it (nothing proves more would help)', () => {
    const { round } = limit({ initial: 8, max: 32 });
    expect(round(50, { full: false })).toBe(8);
    expect(round(50, { full: false })).toBe(8);
  });

  it('halves when imports take 1.5 × longer without more being done, then grows by one', () => {
    const { l, round } = limit({ initial: 8, max: 64 });
    expect(round(50)).toBe(16); // 8 in flight: 160 imports/s
    expect(round(75)).toBe(32); // 16 in flight, 1.5 × the latency: still within the tolerance
    expect(round(160)).toBe(16); // 32 in flight, 200/s: not 1.2 × what 16 got (213/s), each import slower: queueing
    expect(l.lastChange).toBe('latency');
    expect(round(55)).toBe(17); // the first shrink ended slow start: additive from here
    expect(round(55)).toBe(18);
    expect(l.lastChange).toBe('increase');
  });

  it('keeps a size whose imports are slower but get more done than half of it did (not a queue)', () => {
    // Latency grows with the square root of the window (a busy CPU or device): twice the window, 1.41 × the rate.
    const { l, round } = limit({ initial: 8, max: 64 });
    const latency = (inFlight: number) => 50 * Math.sqrt(inFlight / 8);
    for (let i = 0; i < 10; i++) round(latency(l.current));
    expect(l.current).toBe(64);
    expect(l.lastChange).toBe('slow-start');
  });

  it('settles where the latency starts to grow, against a device that serves k at a time', () => {
    // A device with 12 parallel slots and 50 ms per import: beyond 12 in flight, imports queue and the rate stays.
    const { l, round } = limit({ initial: 8, max: 64 });
    const latency = (inFlight: number) => 50 * Math.max(1, inFlight / 12);
    const seen: number[] = [];
    for (let i = 0; i < 80; i++) seen.push(round(latency(l.current)));
    const tail = seen.slice(-50);
    // The limit saws between about 1.5–1.7 × the slots and half of that, and most rounds keep the 12 slots busy.
    expect(Math.max(...tail)).toBeLessThanOrEqual(22);
    expect(Math.min(...tail)).toBeGreaterThanOrEqual(9);
    const busy = tail.reduce((sum, n) => sum + Math.min(n, 12) / 12, 0) / tail.length;
    expect(busy).toBeGreaterThan(0.9);
  });

  it('halves once per round that saw a transient failure, never below the minimum', () => {
    const { l, round } = limit({ initial: 16, max: 32 });
    expect(round(50, { failed: 16 })).toBe(8); // every import of the round failed: one halving
    expect(round(50, { failed: 1 })).toBe(4);
    expect(l.lastChange).toBe('failure');
    for (let i = 0; i < 5; i++) round(50, { failed: 4 });
    expect(l.current).toBe(1);
  });

  it('stops halving when half the window did not shorten the imports (a process short of CPU, not a queue)', () => {
    // Every import takes three times as long whatever the window (CPU wait on a loaded machine, not the device).
    const { l, round } = limit({ initial: 8, max: 32 });
    expect(round(50)).toBe(16);
    expect(round(50)).toBe(32);
    expect(round(150)).toBe(16); // slower and no more done: looks like a queue, halved once
    expect(l.lastChange).toBe('latency');
    // At half the window they take as long: the wait is not the window's. The baseline restarts, the window grows.
    expect(round(150)).toBe(17);
    expect(round(150)).toBe(18);
    // A queue the window does make is still met by halving, against the new baseline.
    expect(round(300)).toBe(9);
  });

  it('follows a device that becomes slower for good: the baseline is the fastest of recent rounds only', () => {
    const { l, round } = limit({ initial: 8, max: 8, history: 5 });
    round(10, { full: false });
    expect(round(100, { full: false })).toBe(4); // ten times slower and no more done: looks like queueing at first
    for (let i = 0; i < 6; i++) round(100, { full: false });
    const after = l.current;
    // Once the fast rounds left the history, 100 ms is the baseline, and a full window grows again.
    expect(round(100)).toBe(after + 1);
  });

  it('does not read a few slow imports (a pause of its own process) as congestion', () => {
    const { l, round } = limit({ initial: 8, max: 64 });
    expect(round(50)).toBe(16);
    // A quarter of the round's imports took ten times as long, the others as before: the device did not queue.
    expect(round(50, { slowShare: 0.25 })).toBe(32);
    // Every import twice as slow at twice the window, so no more done than half of it got: that is queueing.
    expect(round(100)).toBe(16);
    expect(l.lastChange).toBe('latency');
  });

  it('starts within its bounds and refuses bounds that are not whole numbers with 1 ≤ min ≤ max', () => {
    expect(new ApplyLimit({ initial: 8, max: 4 }).current).toBe(4);
    expect(new ApplyLimit({ initial: 0, max: 4 }).current).toBe(1);
    expect(() => new ApplyLimit({ initial: 8, max: 0 })).toThrow(RangeError);
    expect(() => new ApplyLimit({ initial: 8, max: 4, min: 5 })).toThrow(/1 ≤ min ≤ max/);
    expect(() => new ApplyLimit({ initial: 8, max: 2.5 })).toThrow(RangeError);
  });
});
