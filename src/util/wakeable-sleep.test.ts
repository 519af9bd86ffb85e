import { describe, expect, it } from 'vitest';
import { sleepUnlessWoken } from './wakeable-sleep.js';

describe('sleepUnlessWoken', () => {
  it('resolves at once when woken, long before its timer', async () => {
    let wake: (() => void) | undefined;
    const t0 = performance.now();
    const p = sleepUnlessWoken(60_000, (w) => (wake = w));
    wake!();
    await p;
    expect(performance.now() - t0).toBeLessThan(30_000);
  });

  it('resolves by its timer when nobody wakes it, and a late wake is harmless', async () => {
    let wake: (() => void) | undefined;
    await sleepUnlessWoken(5, (w) => (wake = w));
    expect(() => wake!()).not.toThrow();
  });
});
