import { describe, expect, it } from 'vitest';
import type { ApplyResult, PartOutcome } from '../replicator/snapshot-apply.js';
import { ApplyBatch } from './apply-batch.js';

interface E {
  namespace: string;
}

/** A runner that records each batch it is given and answers every entry (or as `answer` says). */
function recorder(answer?: (ns: string) => PartOutcome | 'throw' | undefined) {
  const batches: string[][] = [];
  const run = (entries: readonly E[]) => {
    batches.push(entries.map((e) => e.namespace));
    const out = new Map<string, PartOutcome>();
    for (const e of entries) {
      const a = answer?.(e.namespace) ?? { ok: true as const, result: { batch: entries.map((x) => x.namespace) } as unknown as ApplyResult };
      if (a === 'throw') return Promise.reject(new Error('device failed'));
      out.set(e.namespace, a);
    }
    return Promise.resolve(out);
  };
  return { batches, run };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('ApplyBatch', () => {
  it('runs a lone join at once', async () => {
    const r = recorder();
    const b = new ApplyBatch<E>(r.run);
    b.fetching('alpha');
    await b.join({ namespace: 'alpha' }, 10_000);
    expect(r.batches).toEqual([['alpha']]);
  });

  it('waits for a fetch still running and runs both in one batch', async () => {
    const r = recorder();
    // A long bound: only the second join may start the batch.
    const b = new ApplyBatch<E>(r.run, 60_000);
    b.fetching('alpha');
    b.fetching('beta');
    const first = b.join({ namespace: 'alpha' }, 60_000);
    await tick();
    expect(r.batches).toEqual([]);
    const second = b.join({ namespace: 'beta' }, 1);
    await Promise.all([first, second]);
    expect(r.batches).toEqual([['alpha', 'beta']]);
  });

  it('starts without a fetch that failed (its release), and the joined one is applied', async () => {
    const r = recorder();
    const b = new ApplyBatch<E>(r.run, 60_000);
    b.fetching('alpha');
    const leave = b.fetching('beta');
    const first = b.join({ namespace: 'alpha' }, 60_000);
    await tick();
    expect(r.batches).toEqual([]);
    leave();
    await first;
    expect(r.batches).toEqual([['alpha']]);
  });

  it('starts after the bound when another fetch never ends', async () => {
    const r = recorder();
    const b = new ApplyBatch<E>(r.run, 300);
    b.fetching('alpha');
    b.fetching('slow');
    await b.join({ namespace: 'alpha' }, 1);
    expect(r.batches).toEqual([['alpha']]);
  });

  it("rejects only the entry that dropped out, and every entry when the batch's device step fails", async () => {
    const dropped = recorder((ns) => (ns === 'beta' ? { ok: false, error: new Error('stale token') } : undefined));
    const b = new ApplyBatch<E>(dropped.run, 60_000);
    b.fetching('alpha');
    b.fetching('beta');
    const [x, y] = await Promise.allSettled([b.join({ namespace: 'alpha' }, 1), b.join({ namespace: 'beta' }, 1)]);
    expect(x.status).toBe('fulfilled');
    expect(y).toMatchObject({ status: 'rejected', reason: { message: 'stale token' } });

    const failing = recorder(() => 'throw');
    const c = new ApplyBatch<E>(failing.run, 60_000);
    c.fetching('alpha');
    c.fetching('beta');
    const all = await Promise.allSettled([c.join({ namespace: 'alpha' }, 1), c.join({ namespace: 'beta' }, 1)]);
    expect(all.map((s) => s.status)).toEqual(['rejected', 'rejected']);
  });
});

describe('ApplyBatch while a batch runs', () => {
  it('starts the next batch only once the running one returned, with every join made meanwhile', async () => {
    const batches: string[][] = [];
    let finishFirst!: () => void;
    const first = new Promise<void>((r) => (finishFirst = r));
    const run = async (entries: readonly E[]) => {
      batches.push(entries.map((e) => e.namespace));
      if (batches.length === 1) await first;
      return new Map<string, PartOutcome>(entries.map((e) => [e.namespace, { ok: true, result: {} as ApplyResult }] as const));
    };
    const b = new ApplyBatch<E>(run, 60_000);
    const x = b.join({ namespace: 'alpha' }, 1);
    await tick();
    const y = b.join({ namespace: 'beta' }, 1);
    const z = b.join({ namespace: 'gamma' }, 1);
    await tick();
    expect(batches).toEqual([['alpha']]);
    finishFirst();
    await Promise.all([x, y, z]);
    expect(batches).toEqual([['alpha'], ['beta', 'gamma']]);
  });
});

describe('ApplyBatch early work (the B1 taken while snapshots download)', () => {
  /** Early work that records what was started and discarded; the runner records which work each batch got. */
  function earlyRecorder() {
    let n = 0;
    const started: number[] = [];
    const discarded: number[] = [];
    const given: (number | undefined)[] = [];
    const early = {
      start: () => {
        started.push(++n);
        return n;
      },
      discard: (w: number) => void discarded.push(w),
    };
    const run = (entries: readonly E[], w: number | undefined) => {
      given.push(w);
      return Promise.resolve(new Map<string, PartOutcome>(entries.map((e) => [e.namespace, { ok: true, result: {} as ApplyResult }] as const)));
    };
    return { early, run, started, discarded, given };
  }

  it('starts once, at the first download of a group, and hands it to the batch that applies the group', async () => {
    const r = earlyRecorder();
    const b = new ApplyBatch<E, number>(r.run, 60_000, r.early);
    b.fetching('alpha');
    b.fetching('beta');
    // Announced only: nothing starts before a download does.
    expect(r.started).toEqual([]);
    b.prefetch('alpha');
    b.prefetch('beta');
    expect(r.started).toEqual([1]);
    await Promise.all([b.join({ namespace: 'alpha' }, 1), b.join({ namespace: 'beta' }, 1)]);
    expect(r.given).toEqual([1]);
    expect(r.discarded).toEqual([]);
  });

  it('is discarded when every download of its group fails, and a later group gets its own', async () => {
    const r = earlyRecorder();
    const b = new ApplyBatch<E, number>(r.run, 60_000, r.early);
    const leaveA = b.fetching('alpha');
    const leaveB = b.fetching('beta');
    b.prefetch('alpha');
    leaveA();
    // beta still downloads: the work is still the group's.
    expect(r.discarded).toEqual([]);
    leaveB();
    expect(r.discarded).toEqual([1]);
    b.fetching('alpha');
    b.prefetch('alpha');
    await b.join({ namespace: 'alpha' }, 1);
    expect(r.given).toEqual([2]);
  });

  it('stays with a group one of whose fetches joined when another fails', async () => {
    const r = earlyRecorder();
    const b = new ApplyBatch<E, number>(r.run, 60_000, r.early);
    b.fetching('alpha');
    const leaveB = b.fetching('beta');
    b.prefetch('alpha');
    b.prefetch('beta');
    const joined = b.join({ namespace: 'alpha' }, 60_000);
    leaveB();
    await joined;
    expect(r.given).toEqual([1]);
    expect(r.discarded).toEqual([]);
  });

  it('does not start while a batch runs (its restore would make it stale), but for downloads still running when it ends', async () => {
    const r = earlyRecorder();
    let finishFirst!: () => void;
    const first = new Promise<void>((res) => (finishFirst = res));
    const run = async (entries: readonly E[], w: number | undefined) => {
      const out = r.run(entries, w);
      if (r.given.length === 1) await first;
      return out;
    };
    const b = new ApplyBatch<E, number>(run, 60_000, r.early);
    b.fetching('alpha');
    b.prefetch('alpha');
    const x = b.join({ namespace: 'alpha' }, 1);
    await tick();
    expect(r.given).toEqual([1]);
    b.fetching('beta');
    b.prefetch('beta');
    expect(r.started).toEqual([1]);
    finishFirst();
    await x;
    await tick();
    expect(r.started).toEqual([1, 2]);
    await b.join({ namespace: 'beta' }, 1);
    expect(r.given).toEqual([1, 2]);
  });

  it('runs without it when none is wanted (start gives nothing) or the fetch did not ask', async () => {
    const r = earlyRecorder();
    const b = new ApplyBatch<E, number>(r.run, 60_000, { start: () => undefined, discard: r.early.discard });
    b.fetching('alpha');
    b.prefetch('alpha');
    await b.join({ namespace: 'alpha' }, 1);
    const c = new ApplyBatch<E, number>(r.run, 60_000, r.early);
    c.fetching('beta');
    await c.join({ namespace: 'beta' }, 1);
    expect(r.given).toEqual([undefined, undefined]);
    expect(r.started).toEqual([]);
  });
});
