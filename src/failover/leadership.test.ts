import { describe, expect, it } from 'vitest';
import { leadershipLogLine, nextRenewalDelay, RENEWAL_RETRY_MS } from './leadership.js';

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

describe('leadershipLogLine', () => {
  it('says the namespace takes writes only when no administrator restore is pending', () => {
    expect(leadershipLogLine('resumed', undefined)).toEqual({ level: 'warn', msg: 'automatic failover: took the leader key back and takes writes again' });
    expect(leadershipLogLine('promoted', undefined)).toEqual({ level: 'warn', msg: 'automatic failover: promoted (the leader key had expired)' });
    for (const how of ['resumed', 'promoted'] as const) {
      const line = leadershipLogLine(how, { cause: "NHR_ERR_NETHSM_NOT_OPERATIONAL: this site's NetHSM is Locked" });
      expect(line.level).toBe('error');
      expect(line.msg).toMatch(/primary again, but writes are refused until its administrators are restored/);
      expect(line.msg).not.toMatch(/takes writes again/);
    }
  });
});
