import { describe, expect, it } from 'vitest';
import { Mutex } from './mutex.js';

describe('Mutex', () => {
  it('runs critical sections one at a time in arrival order, even when one throws', async () => {
    const m = new Mutex();
    const log: string[] = [];
    const section = (name: string, fail = false) =>
      m.run(async () => {
        log.push(`${name}:in`);
        await new Promise((r) => setTimeout(r, 5));
        log.push(`${name}:out`);
        if (fail) throw new Error(name);
        return name;
      });
    const results = await Promise.allSettled([section('a'), section('b', true), section('c')]);
    expect(log).toEqual(['a:in', 'a:out', 'b:in', 'b:out', 'c:in', 'c:out']);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(m.busy).toBe(false);
  });

  it('lets a caller give up its wait: it does not run, and those behind it keep their order', async () => {
    const m = new Mutex();
    const log: string[] = [];
    let open!: () => void;
    const first = m.run(async () => {
      log.push('first');
      await new Promise<void>((r) => (open = r));
    });
    const stop = new AbortController();
    const reason = new Error('stopping');
    const second = m.run(async () => void log.push('second'), stop.signal).catch((e: unknown) => e);
    const third = m.run(async () => void log.push('third'));
    stop.abort(reason);
    expect(await second).toBe(reason);
    // The third waits for the first still.
    await new Promise((r) => setImmediate(r));
    expect(log).toEqual(['first']);
    open();
    await Promise.all([first, third]);
    expect(log).toEqual(['first', 'third']);
    expect(m.busy).toBe(false);
    await expect(m.run(async () => 'late', stop.signal)).rejects.toBe(reason);
    expect(m.busy).toBe(false);
  });
});
