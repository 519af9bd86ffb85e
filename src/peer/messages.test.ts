import { describe, expect, it } from 'vitest';
import { peerNethsmSchema, peerStatusSchema } from './messages.js';

describe('peer status message', () => {
  const base = { site: 'a', version: '1.0.0', namespaces: [{ namespace: 'alpha', role: 'primary', epoch: 1, primarySite: 'a' }] };

  it('takes a daemon instance id, and a status without one (an older daemon)', () => {
    expect(peerStatusSchema.parse({ ...base, instance: '0123456789abcdef' }).instance).toBe('0123456789abcdef');
    expect(peerStatusSchema.parse(base).instance).toBeUndefined();
  });

  it('refuses a malformed instance id, naming the field', () => {
    for (const instance of ['', 'xyz', '0123', 'ABCDEF0123456789', 42, '0'.repeat(65)]) {
      const r = peerStatusSchema.safeParse({ ...base, instance });
      expect(r.success).toBe(false);
      expect(r.error?.issues[0]?.path).toEqual(['instance']);
    }
  });
});

describe("a peer's report of its own NetHSM (GET /peer/v1/nethsm)", () => {
  const ok = { site: 'a', status: 'locked', errorCode: 'NHR_ERR_NETHSM_LOCKED' };

  it('takes a report, and one with no error code', () => {
    expect(peerNethsmSchema.parse(ok)).toEqual(ok);
    expect(peerNethsmSchema.parse({ site: 'a', status: 'ok', errorCode: null }).errorCode).toBeNull();
  });

  it('refuses a malformed report, naming the field (the replica then shows the report as not known)', () => {
    const bad: [Record<string, unknown>, string][] = [
      [{ ...ok, status: 'on fire' }, 'status'],
      [{ ...ok, errorCode: 'LOCKED' }, 'errorCode'],
      [{ ...ok, errorCode: `NHR_ERR_${'X'.repeat(81)}` }, 'errorCode'],
      [{ ...ok, site: '' }, 'site'],
      [{ ...ok, detail: 'the passphrase is hunter2' }, ''],
    ];
    for (const [report, field] of bad) {
      const r = peerNethsmSchema.safeParse(report);
      expect(r.success, JSON.stringify(report)).toBe(false);
      expect(r.error?.issues[0]?.path.join('.') ?? '', JSON.stringify(report)).toBe(field);
    }
  });
});
