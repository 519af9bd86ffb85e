import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RateLimiter, unlimited } from './rate-limiter.js';

describe('RateLimiter', () => {
  // Fake timers move Date.now() with the timers they fire.
  const now = (): number => Date.now();
  beforeEach(() => vi.useFakeTimers({ now: 0 }));
  afterEach(() => vi.useRealTimers());

  const advance = (ms: number): Promise<void> => vi.advanceTimersByTimeAsync(ms).then(() => undefined);

  it('grants a burst at once, then at most perSecond a second, in FIFO order', async () => {
    const l = new RateLimiter({ perSecond: 10, burst: 2, now });
    const order: number[] = [];
    const all = Array.from({ length: 7 }, (_, i) => l.take().then(() => order.push(i)));
    await advance(0);
    expect(order).toEqual([0, 1]);
    await advance(100);
    expect(order).toEqual([0, 1, 2]);
    await advance(400);
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6]);
    await Promise.all(all);
    expect(l.granted).toBe(7);
  });

  // Regression (a real anti-entropy pass at 1M keys paced at 200/s got about 140/s): with a burst of 1 the grant a
  // late timer had accrued beyond one was dropped every period, so the rate fell by the timer's lateness.
  it('keeps its average rate when its timer fires late', async () => {
    const late = (fn: () => void, ms: number): NodeJS.Timeout => setTimeout(fn, ms + 3);
    const l = new RateLimiter({ perSecond: 200, now, setTimer: late });
    for (let i = 0; i < 400; i++) void l.take();
    await advance(1_000);
    expect(l.granted).toBeGreaterThanOrEqual(195);
    expect(l.granted).toBeLessThanOrEqual(202);
  });

  it('grants no more than burst + 1 at once after a very late timer', async () => {
    const late = (fn: () => void, ms: number): NodeJS.Timeout => setTimeout(fn, ms + 50);
    const l = new RateLimiter({ perSecond: 200, now, setTimer: late });
    for (let i = 0; i < 10; i++) void l.take();
    await advance(0);
    expect(l.granted).toBe(1);
    await advance(55);
    expect(l.granted).toBe(3);
  });

  it('does not save up more than the burst while idle', async () => {
    const l = new RateLimiter({ perSecond: 10, burst: 3, now });
    await advance(10_000);
    let got = 0;
    for (let i = 0; i < 5; i++) void l.take().then(() => got++);
    await advance(0);
    expect(got).toBe(3);
  });

  it('rejects a waiter whose signal aborts, and serves the next one in its place', async () => {
    const l = new RateLimiter({ perSecond: 10, burst: 1, now });
    await l.take();
    const abort = new AbortController();
    const first = l.take(abort.signal);
    let second = false;
    void l.take().then(() => (second = true));
    abort.abort(new Error('pass cancelled'));
    await expect(first).rejects.toThrow('pass cancelled');
    await advance(100);
    expect(second).toBe(true);
    expect(l.granted).toBe(2);
  });

  it('refuses a rate that is not a positive number', () => {
    expect(() => new RateLimiter({ perSecond: 0 })).toThrow(/positive/);
    expect(() => new RateLimiter({ perSecond: Number.NaN })).toThrow(/positive/);
  });

  it('unlimited() never waits but counts', async () => {
    const l = unlimited();
    await Promise.all([l.take(), l.take()]);
    expect(l.granted).toBe(2);
  });
});
