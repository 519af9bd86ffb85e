import { describe, expect, it } from 'vitest';
import { RewindTrace } from './rewind-trace.js';

describe('RewindTrace', () => {
  it('sums up once the position is back where it was, with each part in ms after the rewind', () => {
    const t = new RewindTrace(20, 10, 1_000);
    t.reconnected(1_010);
    t.reconnected(1_500); // only the first counts
    t.admitted(1_200);
    t.admitted(1_300);
    expect(t.recorded(11, 'applied', 1_250)).toBeUndefined();
    expect(t.recorded(12, 'present', 1_260)).toBeUndefined();
    for (let seq = 13; seq < 20; seq++) expect(t.recorded(seq, 'applied', 1_270)).toBeUndefined();
    expect(t.recorded(20, 'applied', 1_400)).toEqual({
      from: 20,
      rewoundTo: 10,
      ms: { reconnected: 10, admitted: 200, firstRecord: 250, regained: 400 },
      applied: 9,
      present: 1,
    });
  });

  it('says which parts did not happen (null) and counts no duplicates', () => {
    const t = new RewindTrace(5, 4, 0);
    expect(t.recorded(5, 'duplicate', 7)).toEqual({ from: 5, rewoundTo: 4, ms: { reconnected: null, admitted: null, firstRecord: 7, regained: 7 }, applied: 0, present: 0 });
  });
});
