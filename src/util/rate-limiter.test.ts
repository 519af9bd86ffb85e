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
