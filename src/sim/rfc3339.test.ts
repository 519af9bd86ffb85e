import { describe, expect, it } from 'vitest';
import { decodeTime } from './rfc3339.js';

const time = (s: string): string => {
  const r = decodeTime(s);
  return r.ok ? r.value.toISOString() : r.error;
};

describe('timestamps as the firmware reads them (non-strict Ptime.of_rfc3339, offset 0)', () => {
  it('accepts T, t or a space, Z/z, +00:00, +0000, +00 and -00:00, and fractions (truncated to ms here)', () => {
    for (const s of ['2024-01-02T03:04:05Z', '2024-01-02t03:04:05z', '2024-01-02 03:04:05Z', '2024-01-02T03:04:05+00:00', '2024-01-02T03:04:05-00:00', '2024-01-02T03:04:05+0000', '2024-01-02T03:04:05+00']) {
      expect(time(s), s).toBe('2024-01-02T03:04:05.000Z');
    }
    expect(time('2026-05-12T10:00:43.123456+00:00')).toBe('2026-05-12T10:00:43.123Z');
    expect(time('2026-05-12T10:00:43.1234567890123456Z')).toBe('2026-05-12T10:00:43.123Z');
    expect(time('2016-12-31T23:59:60Z')).toBe('2017-01-01T00:00:00.000Z');
  });

  it('refuses a non-zero offset with the firmware text', () => {
    expect(time('2024-01-01T00:00:00+01:00')).toBe('Error while parsing timestamp. Offset must be 0.');
    expect(time('2024-01-01T00:00:00-05:30')).toBe('Error while parsing timestamp. Offset must be 0.');
  });

  it('answers syntax errors as "Failed to decode timestamp: <ptime> at position a to b."', () => {
    expect(time('')).toBe('Failed to decode timestamp: unexpected end of input at position 0 to 0.');
    expect(time('2024-01-01T00:00:00')).toBe('Failed to decode timestamp: unexpected end of input at position 18 to 18.');
    expect(time('2024-01-01T00:00:00.Z')).toBe(
      "Failed to decode timestamp: expected a character in: '0' '1' '2' '3' '4' '5'\n                            '6' '7' '8' '9' at position 20 to 20.",
    );
    expect(time('2024-01-01X00:00:00Z')).toBe("Failed to decode timestamp: expected a character in: 'T' 't' ' ' at position 10 to 10.");
    expect(time('2024-01-01T00:00:00Zjunk')).toBe('Failed to decode timestamp: trailing input at position 20 to 20.');
    expect(time('2024-02-30T00:00:00Z')).toBe('Failed to decode timestamp: invalid time stamp at position 0 to 19.');
    expect(time('2024-01-01T00:00:00+24:00')).toBe('Failed to decode timestamp: invalid time stamp at position 20 to 21.');
    expect(time('2024-01-01T00:00:00.5')).toBe('Failed to decode timestamp: unexpected end of input at position 20 to 20.');
  });
});
