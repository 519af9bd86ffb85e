import { describe, expect, it } from 'vitest';
import { RewindTrace } from './rewind-trace.js';

describe('RewindTrace', () => {
  it('sums up once the position is back where it was, with each part in ms after the rewind', () => {
    const t = new RewindTrace(20, 10, 1_000);
    t.reconnected(1_010);
    t.reconnected(1_500); // only the first counts
    t.admitted(1_200);
    t.admitted(1_300);
    t.reached(11, 30, 1_220, 4);
    t.reached(21, 25, 1_230); // a new change (past `from`) reached the device before the span was recorded
    t.reached(12, 40, 1_240); // only the first counts
    expect(t.recorded(11, 'applied', 1_250)).toBeUndefined();
    expect(t.recorded(12, 'present', 1_260)).toBeUndefined();
    for (let seq = 13; seq < 20; seq++) expect(t.recorded(seq, 'applied', 1_270)).toBeUndefined();
    expect(t.recorded(20, 'applied', 1_400)).toEqual({
      from: 20,
      rewoundTo: 10,
      ms: { reconnected: 10, admitted: 200, firstEffect: 220, firstEffectMs: 30, firstUnwrapMs: 4, firstRecord: 250, firstNew: 230, regained: 400 },
      applied: 9,
      present: 1,
    });
  });

  it('says which parts did not happen (null) and counts no duplicates', () => {
    const t = new RewindTrace(5, 4, 0);
    expect(t.recorded(5, 'duplicate', 7)).toEqual({ from: 5, rewoundTo: 4, ms: { reconnected: null, admitted: null, firstEffect: null, firstEffectMs: null, firstUnwrapMs: null, firstRecord: 7, firstNew: null, regained: 7 }, applied: 0, present: 0 });
  });
});
