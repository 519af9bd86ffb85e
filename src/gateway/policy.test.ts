import { describe, expect, it } from 'vitest';
import { GatewayCallRefusedError, GatewayReadOnlyError, GatewayAdminsPendingError, GatewayReplayPendingError, GatewayRequestInvalidError } from '../errors.js';
import type { CallerIdentity } from './basic-auth.js';
import { classify } from './classify.js';
import { decide, type NamespaceRole, type NamespaceRoles } from './policy.js';

const ROLES: Record<string, NamespaceRole> = {
  alpha: { role: 'primary', epoch: 3, primarySite: 'a' },
  beta: { role: 'replica', epoch: 4, primarySite: 'b' },
  gamma: { role: 'fenced', epoch: 7, primarySite: 'c' },
  delta: { role: 'replica', epoch: 2, primarySite: 'b', primaryGatewayUrl: 'https://gw-b:8443' },
  omega: { role: 'primary', epoch: 5, primarySite: 'a', replayPending: true },
  sigma: { role: 'primary', epoch: 6, primarySite: 'a', adminsPending: true },
};
const roles: NamespaceRoles = { roleOf: (ns) => ROLES[ns] };

const user = (u: string): CallerIdentity => {
  const t = u.indexOf('~');
  return { kind: 'user', user: u, namespace: t < 0 ? undefined : u.slice(0, t) };
};
const call = (method: string, path: string, caller: CallerIdentity, viaGateway?: string) =>
  decide({ classification: classify(method, path.split('/').filter(Boolean)), caller, site: 'a', ...(viaGateway ? { viaGateway } : {}) }, roles);

describe('decide', () => {
  it('forwards reads and crypto for every role, never held', () => {
    for (const ns of ['alpha', 'beta', 'gamma', 'delta', 'unknown']) {
      for (const [m, p] of [['GET', '/keys'], ['POST', '/keys/k/sign'], ['POST', '/keys/k/decrypt'], ['GET', '/keys/k/public.pem'], ['GET', '/users']]) {
        expect(call(m!, p!, user(`${ns}~operator`))).toEqual({ action: 'forward', hold: false });
      }
    }
    expect(call('POST', '/system/backup', user('backup'))).toEqual({ action: 'forward', hold: false });
  });

  it('refuses replica-namespace mutations with 403 naming the primary site and epoch', () => {
    const d = call('POST', '/keys/generate', user('beta~admin'));
    expect(d).toMatchObject({ action: 'refuse', status: 403, outcome: 'refused_replica' });
    if (d.action !== 'refuse') throw new Error('expected refusal');
    expect(d.error).toBeInstanceOf(GatewayReadOnlyError);
    expect(d.error.message).toBe('namespace beta is a read-only replica at site a (epoch 4); its primary is site b');
    expect(d.error).toMatchObject({ namespace: 'beta', site: 'b', epoch: 4, operation: 'POST /keys/generate' });
  });

  it('refuses mutations of a primary namespace whose erased writes are still being re-applied, with 503 and Retry-After; reads go on', () => {
    const d = call('PUT', '/keys/k1/restrictions/tags/t', user('omega~admin'));
    expect(d).toMatchObject({ action: 'refuse', status: 503, outcome: 'refused_replay', retryAfter: true });
    if (d.action !== 'refuse') throw new Error('expected refusal');
    expect(d.error).toBeInstanceOf(GatewayReplayPendingError);
    expect(d.error.message).toBe('namespace omega takes no writes at site a until the writes a merge-restore erased are re-applied from its change log');
    expect(call('POST', '/keys/k1/sign', user('omega~operator'))).toEqual({ action: 'forward', hold: false });
  });

  it('refuses mutations of a primary whose administrators are not restored yet with 503 naming why; reads and crypto pass', () => {
    const d = call('POST', '/keys/generate', user('sigma~admin'));
    expect(d).toMatchObject({ action: 'refuse', status: 503, outcome: 'refused_admins', retryAfter: true });
    if (d.action !== 'refuse') throw new Error('expected refusal');
    expect(d.error).toBeInstanceOf(GatewayAdminsPendingError);
    expect(d.error.code).toBe('NHR_ERR_GATEWAY_ADMINS_PENDING');
    expect(d.error.message).toBe(
      'namespace sigma is primary at site a (epoch 6) but its administrators are not restored on the NetHSM yet (the restore failed and is being retried); the NetHSM would refuse its users',
    );
    expect(call('POST', '/keys/k1/sign', user('sigma~operator'))).toEqual({ action: 'forward', hold: false });
  });

  it('refuses fenced-namespace mutations, including user passphrase changes', () => {
    const d = call('POST', '/users/gamma~operator/passphrase', user('gamma~operator'));
    expect(d).toMatchObject({ action: 'refuse', status: 403, outcome: 'refused_fenced' });
    if (d.action === 'refuse') expect(d.error.message).toMatch(/namespace gamma is fenced .* \(epoch 7\); its primary is site c/);
  });

  it('forwards replica mutations to the primary gateway when its URL is known, but never twice', () => {
    expect(call('DELETE', '/keys/k1', user('delta~admin'))).toMatchObject({ action: 'forward-primary', namespace: 'delta', url: 'https://gw-b:8443' });
    const loop = call('DELETE', '/keys/k1', user('delta~admin'), 'b');
    expect(loop).toMatchObject({ action: 'refuse', status: 403 });
    if (loop.action === 'refuse') expect(loop.error.message).toContain('already came through the gateway of site b');
  });

  it('refuses instead of forwarding when this gateway cannot reach other gateways', () => {
    const d = decide(
      { classification: classify('DELETE', ['keys', 'k1']), caller: user('delta~admin'), site: 'a', canForwardToPrimary: false },
      roles,
    );
    expect(d).toMatchObject({ action: 'refuse', status: 403 });
    if (d.action === 'refuse') expect(d.error.message).toBe('namespace delta is a read-only replica at site a (epoch 2); its primary is site b');
  });

  it('forwards, holds and observes primary-namespace mutations', () => {
    expect(call('PUT', '/keys/k1/cert', user('alpha~admin'))).toEqual({ action: 'forward', hold: true, observe: 'alpha' });
  });

  it('forwards and holds root and unreplicated mutations without observing them', () => {
    expect(call('POST', '/keys', user('admin'))).toEqual({ action: 'forward', hold: true });
    expect(call('POST', '/keys', user('other~admin'))).toEqual({ action: 'forward', hold: true });
    expect(call('POST', '/keys', { kind: 'none' })).toEqual({ action: 'forward', hold: true });
  });

  it('judges a user target by the namespace in its path too', () => {
    expect(call('PUT', '/users/beta~eve', user('admin'))).toMatchObject({ action: 'refuse', outcome: 'refused_replica' });
    expect(call('PUT', '/users/alpha~eve', user('admin'))).toEqual({ action: 'forward', hold: true, observe: 'alpha' });
    // A caller from another namespace touching a replica: refused (the NetHSM would refuse it anyway).
    expect(call('DELETE', '/users/beta~eve', user('alpha~admin'))).toMatchObject({ action: 'refuse' });
    // Two namespaces touched: no forwarding to a primary, only a refusal.
    expect(call('DELETE', '/users/delta~eve', user('alpha~admin'))).toMatchObject({ action: 'refuse' });
  });

  it('refuses namespace mutations with credentials it cannot read, with an empty 401', () => {
    const d = call('DELETE', '/keys/k1', { kind: 'unparsable', reason: 'more than one Authorization header' });
    expect(d).toMatchObject({ action: 'refuse', status: 401, emptyBody: true, outcome: 'rejected_input' });
    if (d.action === 'refuse') expect(d.error).toBeInstanceOf(GatewayRequestInvalidError);
    // Reads with such credentials go to the NetHSM, which answers them.
    expect(call('GET', '/keys', { kind: 'unparsable', reason: 'x' })).toEqual({ action: 'forward', hold: false });
  });

  it('refuses restore, factory reset, backup passphrase, cluster changes and replicated namespace lifecycle', () => {
    for (const [m, p] of [
      ['POST', '/system/restore'],
      ['POST', '/system/factory-reset'],
      ['PUT', '/config/backup-passphrase'],
      ['POST', '/cluster/members'],
      ['DELETE', '/cluster/members/m1'],
      ['DELETE', '/namespaces/alpha'],
      ['PUT', '/namespaces/beta'],
    ]) {
      const d = call(m!, p!, user('admin'));
      expect(d, `${m} ${p}`).toMatchObject({ action: 'refuse', status: 403, outcome: 'refused_device' });
      if (d.action === 'refuse') expect(d.error).toBeInstanceOf(GatewayCallRefusedError);
    }
    // Even without credentials (restore is public on an unprovisioned NetHSM).
    expect(call('POST', '/system/restore', { kind: 'none' })).toMatchObject({ action: 'refuse', status: 403 });
  });

  it('forwards other device writes, held', () => {
    for (const [m, p] of [['POST', '/lock'], ['POST', '/unlock'], ['PUT', '/config/time'], ['PUT', '/namespaces/newns'], ['POST', '/system/reboot']]) {
      expect(call(m!, p!, user('admin')), `${m} ${p}`).toEqual({ action: 'forward', hold: true });
    }
  });
});
