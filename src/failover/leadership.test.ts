import { describe, expect, it } from 'vitest';
import { nextRenewalDelay, RENEWAL_RETRY_MS } from './leadership.js';

describe('nextRenewalDelay', () => {
  it('keeps a fixed cadence from the starts of successful renewals', () => {
    expect(nextRenewalDelay(2_333, 10, 0)).toBe(2_323);
    expect(nextRenewalDelay(2_333, 2_500, 0)).toBe(0);
  });

  it('retries a failed renewal soon after it started, at once when it hung for its bound', () => {
    expect(nextRenewalDelay(2_333, 20, 1)).toBe(RENEWAL_RETRY_MS - 20);
    expect(nextRenewalDelay(2_333, 2_333, 1)).toBe(0);
  });

  it('backs off after failures in a row, never beyond the interval', () => {
    expect(nextRenewalDelay(2_333, 0, 2)).toBe(2 * RENEWAL_RETRY_MS);
    expect(nextRenewalDelay(2_333, 0, 3)).toBe(4 * RENEWAL_RETRY_MS);
    expect(nextRenewalDelay(2_333, 0, 4)).toBe(8 * RENEWAL_RETRY_MS);
    expect(nextRenewalDelay(2_333, 0, 5)).toBe(2_333);
    expect(nextRenewalDelay(2_333, 0, 1_000)).toBe(2_333);
  });
});
