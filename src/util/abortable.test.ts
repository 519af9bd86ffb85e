import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { unlessAborted } from './abortable.js';

describe('unlessAborted', () => {
  it('settles as the promise does while the signal stays quiet, and leaves no listener behind', async () => {
    const ac = new AbortController();
    expect(await unlessAborted(Promise.resolve(7), ac.signal)).toBe(7);
    await expect(unlessAborted(Promise.reject(new Error('no')), ac.signal)).rejects.toThrow('no');
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
  });

  it("rejects with the signal's reason once it aborts first, or at once when it already has", async () => {
    const ac = new AbortController();
    const reason = new Error('stopping');
    const never = new Promise<number>(() => undefined);
    const waiting = unlessAborted(never, ac.signal);
    ac.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    await expect(unlessAborted(Promise.resolve(1), ac.signal)).rejects.toBe(reason);
  });

  it('is the promise itself without a signal', () => {
    const p = Promise.resolve(1);
    expect(unlessAborted(p, undefined)).toBe(p);
  });
});
