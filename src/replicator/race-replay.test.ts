import { describe, expect, it } from 'vitest';
import type { TrackedWrite, WriteReplay } from '../concurrency/barrier.js';
import { planReplay, replayedNamespaces, type ReplayChecks } from './race-replay.js';

const w = (replay: WriteReplay, scope: string | null = null): TrackedWrite => ({ scope, ticket: { replay } });
const ok: ReplayChecks = { checkLog: () => undefined, canRewind: () => true };

describe('planReplay', () => {
  it('groups logged changes by namespace from their first seq, and streams by namespace and source from their first change', () => {
    const r = planReplay(
      [
        w({ kind: 'log', namespace: 'beta', seq: 9 }),
        w({ kind: 'log', namespace: 'beta', seq: 7 }),
        w({ kind: 'none' }),
        w({ kind: 'stream', namespace: 'gamma', source: 'a', seq: 40 }, 'gamma'),
        w({ kind: 'stream', namespace: 'gamma', source: 'a', seq: 38 }, 'gamma'),
        w({ kind: 'log', namespace: 'delta', seq: 1 }),
      ],
      ok,
    );
    expect('plan' in r).toBe(true);
    if (!('plan' in r)) return;
    expect([...r.plan.logs]).toEqual([['beta', 7], ['delta', 1]]);
    expect(r.plan.streams).toEqual([{ namespace: 'gamma', source: 'a', seq: 38 }]);
    expect(r.plan.writes).toBe(6);
    expect(replayedNamespaces(r.plan)).toEqual(['beta', 'delta', 'gamma']);
  });

  it('refuses when one write cannot be re-applied, naming it', () => {
    expect(planReplay([w({ kind: 'log', namespace: 'beta', seq: 1 }), w({ kind: 'unknown' })], ok)).toEqual({ refused: 'a write that may touch anything' });
    expect(planReplay([w({ kind: 'unknown' }, 'gamma')], ok)).toEqual({ refused: 'a write in namespace gamma that cannot be re-applied' });
  });

  it('refuses when the change log or a stream position says no', () => {
    const log = planReplay([w({ kind: 'log', namespace: 'beta', seq: 3 })], { ...ok, checkLog: (ns, from) => `change ${from + 1} of ${ns} is a catch-up` });
    expect(log).toEqual({ refused: "namespace beta's change log from 3: change 4 of beta is a catch-up" });
    const stream = planReplay([w({ kind: 'stream', namespace: 'gamma', source: 'a', seq: 5 }, 'gamma')], { ...ok, canRewind: () => false });
    expect(stream).toEqual({ refused: 'the stream of namespace gamma from a cannot move back before 5' });
  });

  it('plans nothing to do for writes that changed nothing', () => {
    const r = planReplay([w({ kind: 'none' }), w({ kind: 'none' }, 'x')], ok);
    expect(r).toEqual({ plan: { logs: new Map(), streams: [], writes: 2 } });
  });
});
