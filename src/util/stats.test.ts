import { describe, expect, it } from 'vitest';
import { fitLinear, median, percentile, project } from './stats.js';

describe('percentile', () => {
  it('takes the nearest rank, whatever the order of the values', () => {
    const v = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
    expect(percentile(v, 50)).toBe(5);
    expect(percentile(v, 90)).toBe(9);
    expect(percentile(v, 99)).toBe(10);
    expect(percentile(v, 100)).toBe(10);
    expect(percentile([7], 1)).toBe(7);
    expect(v).toEqual([5, 1, 4, 2, 3, 10, 9, 8, 7, 6]);
  });

  it('is NaN for no values and refuses a p outside (0, 100]', () => {
    expect(percentile([], 50)).toBeNaN();
    expect(() => percentile([1], 0)).toThrow(RangeError);
    expect(() => percentile([1], 101)).toThrow(RangeError);
  });
});

describe('median', () => {
  it('takes the middle value, or the mean of the two middle ones', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });
});

describe('fitLinear', () => {
  it('recovers an exact line', () => {
    const f = fitLinear([
      [1000, 2.5],
      [10_000, 7],
      [100_000, 52],
    ]);
    expect(f.a).toBeCloseTo(2, 9);
    expect(f.b).toBeCloseTo(0.0005, 12);
    expect(f.r2).toBeCloseTo(1, 12);
    expect(project(f, 1_000_000)).toBeCloseTo(502, 6);
  });

  it('fits noisy points by least squares and reports a lower r²', () => {
    const f = fitLinear([
      [0, 1],
      [1, 3],
      [2, 2],
      [3, 5],
    ]);
    // Sxx = 5, Sxy = 5.5: b = 1.1, a = 2.75 − 1.1·1.5 = 1.1
    expect(f.b).toBeCloseTo(1.1, 12);
    expect(f.a).toBeCloseTo(1.1, 12);
    expect(f.r2).toBeGreaterThan(0.5);
    expect(f.r2).toBeLessThan(1);
  });

  it('leaves out points that are not finite and refuses fewer than two distinct x', () => {
    expect(fitLinear([[1, 1], [2, NaN], [3, 3]]).n).toBe(2);
    expect(() => fitLinear([[1, 1], [1, 2]])).toThrow(RangeError);
    expect(() => fitLinear([[1, 1]])).toThrow(RangeError);
  });
});
