import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration, tryParseDuration } from './duration.js';
import { InputInvalidError } from '../errors.js';

describe('durations', () => {
  it('reads each unit', () => {
    expect(tryParseDuration('1500ms')).toBe(1500);
    expect(tryParseDuration('30s')).toBe(30_000);
    expect(tryParseDuration('5m')).toBe(300_000);
    expect(tryParseDuration('1h')).toBe(3_600_000);
    expect(tryParseDuration('2d')).toBe(172_800_000);
    expect(tryParseDuration('0s')).toBe(0);
  });

  it('adds up compound durations', () => {
    expect(tryParseDuration('1h30m')).toBe(5_400_000);
    expect(tryParseDuration('1m500ms')).toBe(60_500);
  });

  it('refuses bare numbers, unknown units, negatives, fractions and empty text', () => {
    for (const bad of ['60', '5 minutes', '-5m', '1.5h', '', 'm', '5M', '5mm', '99999999999999999999d']) {
      expect(tryParseDuration(bad), bad).toBeUndefined();
    }
  });

  it('throws an input error naming the argument', () => {
    expect(() => parseDuration('soon', '--max-lag')).toThrow(InputInvalidError);
    expect(() => parseDuration('soon', '--max-lag')).toThrow(/--max-lag "soon" is not a duration/);
  });

  it('formats milliseconds back into the shortest spelling', () => {
    expect(formatDuration(90_000)).toBe('1m30s');
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(1500)).toBe('1s500ms');
    expect(tryParseDuration(formatDuration(93_784_005))).toBe(93_784_005);
  });
});
