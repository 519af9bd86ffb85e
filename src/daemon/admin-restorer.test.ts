import { describe, expect, it } from 'vitest';
import type { PendingAdminRestore } from '../state/admin-restores-repo.js';
import { pendingView } from './admin-restorer.js';

const record = (over: Partial<PendingAdminRestore> = {}): PendingAdminRestore => ({
  namespace: 'alpha',
  epoch: 3,
  kind: 'promote',
  source: '/work/alpha.handoff',
  createdAt: Date.UTC(2026, 10, 29, 21, 0, 0),
  attempts: 0,
  lastError: null,
  ...over,
});

describe('pendingView (status of a pending administrator restore)', () => {
  it('while no attempt has failed, says writes wait for the attempt, not that they are refused', () => {
    const v = pendingView('alpha', record());
    expect(v.cause).toContain('an attempt is under way; none has failed');
    expect(v.cause).toContain('wait for it at the gateway');
    expect(v.cause).not.toContain('are refused (401 at the NetHSM, 503 at the gateway)');
    expect(v).toMatchObject({ epoch: 3, attempts: 0, lastError: null, since: '2026-11-29T21:00:00.000Z' });
    expect(v.try).toContain('nethsm-replicator admins restore alpha');
  });

  it('after a failed attempt, says writes are refused and names the attempts and the last error', () => {
    const v = pendingView('alpha', record({ attempts: 2, lastError: 'NHR_ERR_NETHSM_NOT_OPERATIONAL: Locked' }));
    expect(v.cause).toBe(
      "primary at epoch 3 without its administrators: writes by the namespace's users are refused (401 at the NetHSM, 503 at the gateway) until they are restored (2 attempts failed; last: NHR_ERR_NETHSM_NOT_OPERATIONAL: Locked)",
    );
  });

  it('a row that is not valid is shown as such, with no epoch and a hand-repair Try:', () => {
    const v = pendingView('alpha', record({ invalid: 'epoch is not a positive integer' }));
    expect(v.epoch).toBeNull();
    expect(v.cause).toContain('is not valid: epoch is not a positive integer');
    expect(v.try).toContain('admin_restores');
    expect(v.try).toContain('`nethsm-replicator admins restore alpha --forget`');
  });

  it('a source file that is gone is shown as such: no attempt can restore, and the Try: says how to restore by hand and forget', () => {
    const lastError = 'NHR_ERR_ROLE_ADMINS_SOURCE_MISSING: namespace alpha: the fence\'s quarantine file … is gone: /q/alpha-epoch2.nsbackup; nothing was restored';
    const v = pendingView('alpha', record({ kind: 'resume', source: '/q/alpha-epoch2.nsbackup', attempts: 2, lastError }));
    expect(v).toMatchObject({ epoch: 3, attempts: 2, lastError });
    expect(v.cause).toBe(
      "primary at epoch 3 without its users: the file they are to come back from is gone (/q/alpha-epoch2.nsbackup), so no attempt can restore them (2 attempts failed); writes by the namespace's users are refused (401 at the NetHSM, 503 at the gateway)",
    );
    expect(v.try).toMatch(/^Put the file back at \/q\/alpha-epoch2\.nsbackup .*`PUT \/api\/v1\/users\/alpha~<user>`.*then `nethsm-replicator admins restore alpha --forget`/);
  });
});
