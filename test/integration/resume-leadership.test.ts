/**
 * Automatic failover: a primary that stepped down (lease lost) and was fenced meanwhile (its administrators stripped)
 * takes its own leader key back with no other term since. It must be writable again at once: the fault suite's etcd
 * mode saw 401s at such a primary (no administrators left). The etcd side is in src/failover/leadership.ts; the role
 * change and the device work it calls are exercised here without etcd.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { applyRoleChange } from '../../src/roles/apply.js';
import { stepDown } from '../../src/roles/role-machine.js';
import { leadershipLogLine } from '../../src/failover/leadership.js';
import { use } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';

describe('resuming leadership after a step-down and a fence', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('puts the administrators the fence stripped back before any write, from the fence quarantine file', async () => {
    const a = lab.site('a');
    const d = a.daemon!;
    const admins = async () => (await d.ctx.device.namespaceUsers('alpha')).administrators.filter((id) => id !== 'replicator').sort();
    const before = await admins();
    expect(before.length).toBeGreaterThan(0);
    // The lease was lost: a steps down (fenced, still naming itself), and a fence runs (quarantine, strip).
    const row = d.ctx.store.roles.require('alpha');
    applyRoleChange(d.ctx.store, stepDown(row, { localSite: 'a', reason: 'test: lease lost' }), 'daemon');
    await d.failover.fence('alpha', row.epoch);
    expect(await admins()).toEqual([]);

    const r = await d.failover.resumeLeadership('alpha', row.epoch + 1);
    expect(r.row).toMatchObject({ role: 'primary', primarySite: 'a', epoch: row.epoch + 1 });
    expect(await admins()).toEqual(before);
    // Writable by the namespace's administrator again.
    await use(a.nsAdmin('alpha'), (c) => c.generateKey({ id: 'after-resume', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    expect(await use(a.nsOperator('alpha'), (c) => c.listKeys())).toContain('after-resume');
  });

  // Before: resumeLeadership answered the same whether the administrators came back or not, and leadership.ts logged
  // "takes writes again" while the gateway refused every write of the namespace (503 NHR_ERR_GATEWAY_ADMINS_PENDING).
  it('says when the administrators could not be put back (NetHSM Locked): the role stands, the restore is pending, and the log line says writes are refused', async () => {
    const a = lab.site('a');
    const d = a.daemon!;
    const row = d.ctx.store.roles.require('alpha');
    applyRoleChange(d.ctx.store, stepDown(row, { localSite: 'a', reason: 'test: lease lost again' }), 'daemon');
    await d.failover.fence('alpha', row.epoch);
    await use(a.client(), (c) => c.lock());
    try {
      const r = await d.failover.resumeLeadership('alpha', row.epoch + 1);
      expect(r.row).toMatchObject({ role: 'primary', primarySite: 'a', epoch: row.epoch + 1 });
      expect(r.restored).toBe(0);
      expect(r.pending).toMatchObject({ code: 'NHR_ERR_ROLE_ADMINS_NOT_RESTORED', retrying: true });
      expect(d.failover.admins.isPending('alpha')).toBe(true);
      const line = leadershipLogLine('resumed', r.pending);
      expect(line.level).toBe('error');
      expect(line.msg).toMatch(/writes are refused until its administrators are restored/);
      expect(line.msg).not.toMatch(/takes writes again/);
    } finally {
      await use(a.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    }
    await waitFor(() => !d.failover.admins.isPending('alpha'), 'the retry to restore the administrators', 20_000);
  });
});
