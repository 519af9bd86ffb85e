import { describe, expect, it } from 'vitest';
import { overlap, rates } from '../../bench/lib/pass-timeline.mjs';

describe('bench pass timeline', () => {
  it('turns counter samples into per-site rates, less idle polling and the sampling read itself', () => {
    const rs = rates(
      [
        [0, 1000, 5000],
        [2, 1201, 5401],
        [4, 1203, 5803],
      ],
      { a: 0.5, b: 0 },
    );
    expect(rs).toEqual([
      { t: 2, a: 99.5, b: 200, dt: 2 },
      { t: 4, a: 0, b: 200.5, dt: 2 },
    ]);
  });

  it('skips an interval of no length instead of dividing by zero', () => {
    expect(rates([[1, 0, 0], [1, 5, 5], [2, 16, 6]], { a: 0, b: 0 })).toEqual([{ t: 2, a: 10, b: 0, dt: 1 }]);
  });

  it('counts the seconds in which both sites read, up to the end of the pass', () => {
    const rs = [
      { t: 5, a: 300, b: 280, dt: 5 },
      { t: 10, a: 310, b: 5, dt: 5 }, // B's read has ended: only A
      { t: 15, a: 2, b: 2, dt: 5 },
      { t: 20, a: 400, b: 400, dt: 5 }, // after the pass: not counted
    ];
    expect(overlap(rs, 14)).toEqual({ bothS: 5, busyAS: 10, busyBS: 5, share: 5 / 14 });
    expect(overlap(rs, 14, 1)).toMatchObject({ bothS: 15, busyAS: 15, busyBS: 15 });
  });
});
