import { describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import {
  METRIC_PREFIX,
  SYNC_FAILURE_REASONS,
  createReplicatorMetrics,
  syncFailureReason,
  type ReplicatorMetrics,
} from './metrics.js';
import { BackupCorruptedError, BackupWrongPassphraseError, ConfigInvalidError, NetHsmCredentialRefusedError, NetHsmHttpError, NetHsmNotOperationalError, NetHsmTimeoutError } from '../errors.js';

function setup(nowMs = 1_000_000): { m: ReplicatorMetrics; clock: { t: number } } {
  const clock = { t: nowMs };
  const m = createReplicatorMetrics({ registry: new Registry(), processMetrics: false, now: () => clock.t });
  return { m, clock };
}

/** The value of one series in the registry, or undefined when the series does not exist. */
async function valueOf(m: ReplicatorMetrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = m.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const data = await metric.get();
  const hit = data.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val) &&
    Object.keys(v.labels).length === Object.keys(labels).length);
  return hit?.value;
}

describe('replicator metrics', () => {
  it('uses only the injected registry, never the global one', async () => {
    const { register } = await import('prom-client');
    const before = register.getMetricsAsArray().length;
    const { m } = setup();
    expect(m.registry.getMetricsAsArray().length).toBeGreaterThan(20);
    expect(register.getMetricsAsArray().length).toBe(before);
  });

  it('names every metric with the prefix and the conventional suffixes', async () => {
    const registry = new Registry();
    createReplicatorMetrics({ registry });
    for (const metric of await registry.getMetricsAsJSON()) {
      expect(metric.name.startsWith(METRIC_PREFIX)).toBe(true);
      if (String(metric.type) === 'counter') expect(metric.name).toMatch(/_total$/);
      if (String(metric.type) === 'histogram') expect(metric.name).toMatch(/_seconds$/);
    }
  });

  it('refuses to be created twice on one registry', () => {
    const registry = new Registry();
    createReplicatorMetrics({ registry, processMetrics: false });
    expect(() => createReplicatorMetrics({ registry, processMetrics: false })).toThrow(/already been registered/);
  });

  it('sets the current role to 1 and every other role to 0, with the epoch', async () => {
    const { m } = setup();
    m.setRole('alpha', 'primary', 3);
    m.setRole('alpha', 'fenced', 4);
    const role = (r: string): Promise<number | undefined> =>
      valueOf(m, 'nethsm_replicator_namespace_role', { namespace: 'alpha', role: r });
    expect(await role('fenced')).toBe(1);
    expect(await role('primary')).toBe(0);
    expect(await role('replica')).toBe(0);
    expect(await valueOf(m, 'nethsm_replicator_epoch', { namespace: 'alpha' })).toBe(4);
  });

  it('creates the namespace counters at 0 so the first increment is visible to rate()', async () => {
    const { m } = setup();
    m.setRole('alpha', 'replica', 1);
    expect(await valueOf(m, 'nethsm_replicator_syncs_total', { namespace: 'alpha', outcome: 'failure' })).toBe(0);
    expect(await valueOf(m, 'nethsm_replicator_sync_failures_total', { namespace: 'alpha', reason: 'verify_failed' })).toBe(0);
    expect(await valueOf(m, 'nethsm_replicator_promotions_total', { namespace: 'alpha' })).toBe(0);
    m.observeSync('alpha', 'failure', 1, 'verify_failed');
    m.setRole('alpha', 'replica', 1);
    expect(await valueOf(m, 'nethsm_replicator_syncs_total', { namespace: 'alpha', outcome: 'failure' })).toBe(1);
  });

  it('computes the replication lag at scrape time, so it grows while syncs fail', async () => {
    const { m, clock } = setup(1_000_000);
    m.setReplicaDataTime('beta', 990);
    expect(await valueOf(m, 'nethsm_replicator_replication_lag_seconds', { namespace: 'beta' })).toBe(10);
    clock.t = 1_060_000;
    expect(await valueOf(m, 'nethsm_replicator_replication_lag_seconds', { namespace: 'beta' })).toBe(70);
    m.setReplicaDataTime('beta', null);
    expect(await valueOf(m, 'nethsm_replicator_replication_lag_seconds', { namespace: 'beta' })).toBeUndefined();
  });

  it('never reports a negative lag when the peer clock runs ahead', async () => {
    const { m } = setup(1_000_000);
    m.setReplicaDataTime('beta', 2000);
    expect(await valueOf(m, 'nethsm_replicator_replication_lag_seconds', { namespace: 'beta' })).toBe(0);
  });

  it('counts syncs by outcome, failures by reason, and stamps the last success', async () => {
    const { m } = setup(5_000_000);
    m.observeSync('alpha', 'success', 12);
    m.observeSync('alpha', 'failure', 3, 'peer_unreachable');
    m.observeSync('alpha', 'failure', 4);
    expect(await valueOf(m, 'nethsm_replicator_syncs_total', { namespace: 'alpha', outcome: 'success' })).toBe(1);
    expect(await valueOf(m, 'nethsm_replicator_syncs_total', { namespace: 'alpha', outcome: 'failure' })).toBe(2);
    expect(await valueOf(m, 'nethsm_replicator_sync_failures_total', { namespace: 'alpha', reason: 'peer_unreachable' })).toBe(1);
    expect(await valueOf(m, 'nethsm_replicator_sync_failures_total', { namespace: 'alpha', reason: 'other' })).toBe(1);
    expect(await valueOf(m, 'nethsm_replicator_last_successful_sync_timestamp_seconds', { namespace: 'alpha' })).toBe(5000);
    const text = await m.registry.metrics();
    expect(text).toContain('nethsm_replicator_sync_duration_seconds_count{namespace="alpha",outcome="failure"} 2');
    expect(text).toContain('nethsm_replicator_sync_duration_seconds_sum{namespace="alpha",outcome="success"} 12');
  });

  it('ignores a negative or non-finite sync duration instead of corrupting the histogram', async () => {
    const { m } = setup();
    m.observeSync('alpha', 'success', -1);
    m.observeSync('alpha', 'success', Number.NaN);
    const text = await m.registry.metrics();
    expect(text).not.toContain('sync_duration_seconds_count{namespace="alpha"');
    expect(await valueOf(m, 'nethsm_replicator_syncs_total', { namespace: 'alpha', outcome: 'success' })).toBe(2);
  });

  it('reports a member up only when its status is ok', async () => {
    const { m } = setup();
    m.setMemberStatus('site-b', 'recovering', 4);
    expect(await valueOf(m, 'nethsm_replicator_member_up', { member: 'site-b' })).toBe(0);
    expect(await valueOf(m, 'nethsm_replicator_member_status', { member: 'site-b', status: 'recovering' })).toBe(1);
    expect(await valueOf(m, 'nethsm_replicator_member_status', { member: 'site-b', status: 'ok' })).toBe(0);
    expect(await valueOf(m, 'nethsm_replicator_member_consecutive_failures', { member: 'site-b' })).toBe(4);
    m.setMemberStatus('site-b', 'ok', 0);
    expect(await valueOf(m, 'nethsm_replicator_member_up', { member: 'site-b' })).toBe(1);
  });

  it('sets every drift kind, zero where not given', async () => {
    const { m } = setup();
    m.setDrift('alpha', { missing: 2 });
    expect(await valueOf(m, 'nethsm_replicator_drift_entries', { namespace: 'alpha', kind: 'missing' })).toBe(2);
    expect(await valueOf(m, 'nethsm_replicator_drift_entries', { namespace: 'alpha', kind: 'extra' })).toBe(0);
  });

  it('removes every series of a namespace and leaves the others', async () => {
    const { m } = setup();
    for (const ns of ['alpha', 'beta']) {
      m.setRole(ns, 'replica', 1);
      m.setReplicaDataTime(ns, 1);
      m.lagLimitSeconds.set({ namespace: ns }, 300);
      m.namespacePaused.set({ namespace: ns }, 0);
      m.syncInProgress.set({ namespace: ns }, 0);
      m.observeSync(ns, 'failure', 1, 'verify_failed');
      m.observeSync(ns, 'success', 1);
      m.promotionsTotal.inc({ namespace: ns });
      m.fencingsTotal.inc({ namespace: ns });
      m.setDrift(ns, { differs: 1 });
      m.restoresTotal.inc({ namespace: ns, outcome: 'success' });
      m.restoreForeignEntriesLostTotal.inc({ namespace: ns });
      m.quarantinedEntriesTotal.inc({ namespace: ns, reason: 'foreign_writes' });
      m.streamPositionSeq.set({ namespace: ns }, 7);
      m.streamChangesBehind.set({ namespace: ns }, 0);
      m.streamLagSeconds.set({ namespace: ns }, 0);
      m.streamLastHeartbeatTimestampSeconds.set({ namespace: ns }, 1);
      m.streamChangesAppliedTotal.inc({ namespace: ns, outcome: 'duplicate' });
      m.gatewayRequestsTotal.inc({ namespace: ns, class: 'crypto', outcome: 'forwarded' });
    }
    m.removeNamespace('alpha');
    m.removeNamespace('alpha');
    const json = await m.registry.getMetricsAsJSON();
    const withNs = (ns: string): string[] =>
      json.flatMap((metric) => metric.values.filter((v) => v.labels.namespace === ns).map(() => metric.name));
    expect(withNs('alpha')).toEqual([]);
    // Every per-namespace metric still has beta's series: removal is targeted, and the test above covers them all.
    const namespaced = json.filter((metric) => metric.values.some((v) => 'namespace' in v.labels)).map((x) => x.name);
    expect(new Set(withNs('beta'))).toEqual(new Set(namespaced));
    expect(namespaced.length).toBe(26);
  });

  it('removes every series of a member', async () => {
    const { m } = setup();
    m.setMemberStatus('site-b', 'unreachable', 1);
    m.setMemberStatus('site-c', 'ok', 0);
    m.removeMember('site-b');
    const text = await m.registry.metrics();
    expect(text).not.toContain('site-b');
    expect(text).toContain('member="site-c"');
  });

  it('exports the build version as an info metric', async () => {
    const { m } = setup();
    const text = await m.registry.metrics();
    expect(text).toMatch(/nethsm_replicator_build_info\{version="\d+\.\d+\.\d+[^"]*"\} 1/);
  });
});

describe('sync failure reasons', () => {
  it('maps errors to the closed set by their code', () => {
    expect(syncFailureReason(new NetHsmTimeoutError('slow'))).toBe('nethsm_unreachable');
    expect(syncFailureReason(new NetHsmHttpError(500, 'boom', {}))).toBe('nethsm_error');
    expect(syncFailureReason(new BackupWrongPassphraseError('no'))).toBe('wrong_passphrase');
    expect(syncFailureReason(new BackupCorruptedError('bad', { offset: 1, entryIndex: 0 }))).toBe('backup_invalid');
    expect(syncFailureReason(new ConfigInvalidError('bad'))).toBe('config');
    expect(syncFailureReason({ code: 'NHR_ERR_PEER_UNREACHABLE' })).toBe('peer_unreachable');
    expect(syncFailureReason({ code: 'NHR_ERR_PEER_IDENTITY' })).toBe('peer_error');
    expect(syncFailureReason({ code: 'NHR_ERR_ROLE_STALE_EPOCH' })).toBe('epoch_conflict');
    expect(syncFailureReason({ code: 'NHR_ERR_STATE_OPEN_FAILED' })).toBe('state_store');
    expect(syncFailureReason(new NetHsmNotOperationalError('locked'))).toBe('nethsm_not_operational');
    expect(syncFailureReason(new NetHsmCredentialRefusedError({ setting: 'nethsm.credentials.operator', name: 'root Operator' }, {}))).toBe('nethsm_credential_refused');
    expect(syncFailureReason({ code: 'NHR_ERR_SYNC_RACE' })).toBe('restore_guard');
    expect(syncFailureReason({ code: 'NHR_ERR_GATEWAY_DRAIN_TIMEOUT' })).toBe('restore_guard');
    expect(syncFailureReason({ code: 'NHR_ERR_SYNC_VERIFY_FAILED' })).toBe('verify_failed');
  });

  it('answers other for anything without a known code, never a free-form string', () => {
    for (const err of [new Error('x'), null, undefined, 'text', { code: 42 }, { code: 'ECONNRESET' }]) {
      expect(syncFailureReason(err)).toBe('other');
    }
    expect(SYNC_FAILURE_REASONS).toContain('other');
  });
});
