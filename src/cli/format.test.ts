import { describe, expect, it } from 'vitest';
import { relativeTime, scalar, shortDuration, table } from './format.js';

describe('operator text formatting', () => {
  it('shortens durations to the two largest units', () => {
    expect([0, 0.44, 9.96, 12, 59.6, 90, 3600, 3725, 90_061].map(shortDuration)).toEqual(['0s', '0.4s', '10s', '12s', '1m', '1m30s', '1h', '1h2m', '1d1h']);
    expect(shortDuration(-48)).toBe('48s');
  });

  it('says how long ago or how soon, and leaves unparsable text as it is', () => {
    const now = new Date('2025-01-01T12:00:00Z');
    expect(relativeTime('2025-01-01T11:59:48Z', now)).toBe('12s ago');
    expect(relativeTime('2025-01-01T12:00:48Z', now)).toBe('in 48s');
    expect(relativeTime('2025-01-01T12:00:00.300Z', now)).toBe('now');
    expect(relativeTime(null, now)).toBe('-');
    expect(relativeTime('soon', now)).toBe('soon');
  });

  it('aligns table columns without trailing blanks', () => {
    expect(table([['A', 'BB', 'C'], ['long', 'x', '']])).toBe('A     BB  C\nlong  x');
  });

  it('quotes values that would not read as one word', () => {
    expect([scalar('alpha'), scalar('two words'), scalar(3), scalar(null), scalar({ a: 1 })]).toEqual(['alpha', '"two words"', '3', '-', '{"a":1}']);
  });
});
