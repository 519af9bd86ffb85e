import { describe, expect, it } from 'vitest';
import { peerStatusSchema } from './messages.js';

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
