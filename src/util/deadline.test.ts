import { describe, expect, it } from 'vitest';
import { withDeadline } from './deadline.js';

describe('withDeadline', () => {
  it('passes the outcome of work that ends in time, value or error', async () => {
    await expect(withDeadline(Promise.resolve(7), 1_000, () => new Error('late'))).resolves.toBe(7);
    await expect(withDeadline(Promise.reject(new Error('own')), 1_000, () => new Error('late'))).rejects.toThrow('own');
  });

  it("rejects with late()'s error past the bound, and the work's later failure goes unheard", async () => {
    let fail: (e: Error) => void = () => undefined;
    const work = new Promise<number>((_, reject) => (fail = reject));
    await expect(withDeadline(work, 20, () => new Error('too slow'))).rejects.toThrow('too slow');
    fail(new Error('after the bound')); // no unhandled rejection
  });
});
