import { describe, expect, it } from 'vitest';
import { InternalError } from '../errors.js';
import { compareEpochs, INITIAL_EPOCH, isEpoch, nextEpoch } from './epoch.js';

describe('epochs', () => {
  it('compares epochs', () => {
    expect(compareEpochs(1, 2)).toBe(-1);
    expect(compareEpochs(2, 2)).toBe(0);
    expect(compareEpochs(3, 2)).toBe(1);
  });

  it('takes the highest known epoch plus one', () => {
    expect(nextEpoch([3, 7, undefined, 5])).toBe(8);
    expect(nextEpoch([])).toBe(INITIAL_EPOCH + 1);
    expect(nextEpoch([0])).toBe(INITIAL_EPOCH + 1);
  });

  it('refuses values that are not epochs, and overflow', () => {
    expect(() => nextEpoch([1.5])).toThrow(InternalError);
    expect(() => nextEpoch([-1])).toThrow(InternalError);
    expect(() => nextEpoch([Number.MAX_SAFE_INTEGER])).toThrow(/exhausted/);
    expect(isEpoch(0)).toBe(true);
    expect(isEpoch('1')).toBe(false);
    expect(isEpoch(Number.NaN)).toBe(false);
  });
});
