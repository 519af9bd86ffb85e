/**
 * Every metric the replicator exports, created on one injected prom-client {@link Registry}
 * (never prom-client's global registry, so tests and several daemons in one process never collide).
 *
 * Naming: prefix `nethsm_replicator_`, counters end in `_total`, durations and ages in `_seconds`,
 * timestamps in `_timestamp_seconds` (Unix time). Labels are bounded: `namespace` and `member` come from the
 * config, `role`, `outcome`, `reason`, `status`, `kind` and `class` from the closed sets exported below. Key ids,
 * user names and error messages never become label values. `docs/metrics.md` lists every metric (a test checks it).
 */
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';
import { VERSION } from '../version.js';

export const METRIC_PREFIX = 'nethsm_replicator_';

/** Roles of a namespace at this site (ARCHITECTURE "Roles, epochs, failover"). */
export const ROLES = ['primary', 'replica', 'fenced'] as const;
export type Role = (typeof ROLES)[number];

/** Member states (ARCHITECTURE "Daemon surfaces": Luna-style HA member recovery). */
/** `locked`, `not-operational`: the own NetHSM answers but is Locked, or Unprovisioned/Failed. */
export const MEMBER_STATUSES = ['ok', 'unreachable', 'locked', 'not-operational', 'recovering', 'fenced'] as const;
export type MemberStatus = (typeof MEMBER_STATUSES)[number];

/** `skipped`: the sync found nothing to do (the primary's snapshot was the one already applied). */
export const SYNC_OUTCOMES = ['success', 'failure', 'skipped'] as const;
export type SyncOutcome = (typeof SYNC_OUTCOMES)[number];

/**
 * Why a sync failed: a closed set so the label stays bounded. {@link syncFailureReason} maps errors to it.
 * - `nethsm_unreachable`: the own NetHSM did not answer (network, timeout, TLS pin).
 * - `nethsm_not_operational`: the own NetHSM is Locked (or otherwise not Operational).
 * - `nethsm_credential_refused`: the own NetHSM refused one of the daemon's accounts (401/403).
 * - `nethsm_error`: the own NetHSM answered with an error or an invalid response.
 * - `peer_unreachable`, `peer_error`: the same for the primary's daemon (peer API).
 * - `backup_invalid`: a backup or namespace backup did not parse or authenticate.
 * - `wrong_passphrase`: the replication or backup passphrase does not open the file.
 * - `verify_failed`: the inventory after the restore does not match the snapshot.
 * - `restore_guard`: entries outside the namespace changed or vanished around the merge-restore, or device writes in
 *   flight did not drain before it (it did not start).
 * - `busy`: an operator's sync found another one still running past the answer bound.
 * - `epoch_conflict`: the peer speaks another epoch (fencing, stale primary).
 * - `config`: the configuration or a secret is unusable.
 * - `state_store`: the SQLite state store failed.
 * - `aborted`: shutdown or an operator's pause interrupted the sync.
 * - `other`: anything else (see the logs).
 */
export const SYNC_FAILURE_REASONS = [
  'nethsm_unreachable',
  'nethsm_not_operational',
  'nethsm_credential_refused',
  'nethsm_error',
  'peer_unreachable',
  'peer_error',
  'backup_invalid',
  'wrong_passphrase',
  'verify_failed',
  'restore_guard',
  'epoch_conflict',
  'busy',
  'config',
  'state_store',
  'aborted',
  'other',
] as const;
export type SyncFailureReason = (typeof SYNC_FAILURE_REASONS)[number];

/** Kinds of drift between a replica's inventory and its primary's. */
export const DRIFT_KINDS = ['missing', 'extra', 'differs'] as const;
export type DriftKind = (typeof DRIFT_KINDS)[number];

/** Outcomes of applying one stream change. `duplicate`: already applied (at-least-once delivery), skipped. */
export const STREAM_APPLY_OUTCOMES = ['applied', 'duplicate', 'failed'] as const;
export type StreamApplyOutcome = (typeof STREAM_APPLY_OUTCOMES)[number];

/** Gateway request classes and outcomes (issue 6). */
export const GATEWAY_CLASSES = ['read', 'crypto', 'mutation', 'other'] as const;
export type GatewayClass = (typeof GATEWAY_CLASSES)[number];
export const GATEWAY_OUTCOMES = [
  'forwarded', // answered by the own NetHSM (any status it gave)
  'refused_replica', // mutation refused: the namespace is a replica here
  'refused_fenced', // mutation refused: the namespace is fenced here
  'forwarded_primary', // mutation forwarded to the primary's gateway
  'refused_device', // a device-level call the gateway never forwards (restore, factory reset, …)
  'rejected_input', // malformed request (path, credentials, headers); not forwarded
  'refused_capture', // change capture refused the write (streaming); not forwarded
  'refused_replay', // writes a restore erased are still being re-applied to the namespace; not forwarded
  'refused_admins', // the namespace's administrators are not back on the NetHSM since its promote; 503, not forwarded
  'held_timeout', // held during a merge-restore past the bound; 503 Retry-After
  'rejected_too_large', // a write body (or one sent without credentials) over the limit; 413, not forwarded
  'cut_slow', // the client was too slow (TLS handshake, request head or body not in within its bound); cut
  'served_remote', // read or crypto served by a peer's gateway while this site's NetHSM is down
  'refused_local_down', // needs this site's NetHSM, which is down (a write for a namespace primary here, …); 503
  'refused_no_peer', // this site's NetHSM is down and no peer may serve the call (down, lagging past maxLag, …); 503
  'error', // the NetHSM could not be reached, or the gateway failed
] as const;
export type GatewayOutcome = (typeof GATEWAY_OUTCOMES)[number];

/** Label value for requests whose namespace is not configured here (keeps the label bounded). */
export const UNKNOWN_NAMESPACE = '_other';

/** Outcomes of a device restore (merge-restore or full restore). */
export const RESTORE_OUTCOMES = ['success', 'failure'] as const;
export type RestoreOutcome = (typeof RESTORE_OUTCOMES)[number];

/**
 * Why entries were exported to the quarantine folder: `foreign_writes` (written straight to a replica's NetHSM, about
 * to be removed by a snapshot's restore), `fenced` (what a fenced former primary held of the namespace).
 */
export const QUARANTINE_REASONS = ['foreign_writes', 'fenced'] as const;
export type QuarantineReason = (typeof QUARANTINE_REASONS)[number];

/** Why a re-apply of racing writes right after a merge-restore's hold did not run (`race_replays_not_run_total`). */
export const RACE_REPLAY_NOT_RUN_REASONS = ['role_changed', 'record_ended'] as const;

/** Sync durations: a device backup plus a restore takes seconds to many minutes on an appliance. */
export const SYNC_DURATION_BUCKETS = [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600];

export interface ReplicatorMetricsOptions {
  /** The registry to create every metric on. */
  registry: Registry;
  /** Also collect prom-client's default process metrics (prefixed). Default true. */
  processMetrics?: boolean;
  /** Clock in milliseconds, for tests. Default `Date.now`. */
  now?: () => number;
}

/** The handles; the helper methods below keep label values inside their closed sets. */
export interface ReplicatorMetrics {
  readonly registry: Registry;
  readonly buildInfo: Gauge<'version'>;
  readonly namespaceRole: Gauge<'namespace' | 'role'>;
  readonly epoch: Gauge<'namespace'>;
  readonly namespacePaused: Gauge<'namespace'>;
  readonly replicationLagSeconds: Gauge<'namespace'>;
  readonly lagLimitSeconds: Gauge<'namespace'>;
  readonly lastSuccessfulSyncTimestampSeconds: Gauge<'namespace'>;
  readonly syncInProgress: Gauge<'namespace'>;
  readonly syncDurationSeconds: Histogram<'namespace' | 'outcome'>;
  readonly syncsTotal: Counter<'namespace' | 'outcome'>;
  readonly syncFailuresTotal: Counter<'namespace' | 'reason'>;
  readonly memberUp: Gauge<'member'>;
  readonly memberStatus: Gauge<'member' | 'status'>;
  readonly memberConsecutiveFailures: Gauge<'member'>;
  readonly promotionsTotal: Counter<'namespace'>;
  readonly fencingsTotal: Counter<'namespace'>;
  /** Automatic failover: 1 while this daemon holds a safely valid etcd lease, 0 otherwise (absent without etcd). */
  readonly failoverLeaseValid: Gauge;
  readonly failoverStepDownsTotal: Counter<'namespace'>;
  readonly failoverPromotionsTotal: Counter<'namespace'>;
  readonly driftEntries: Gauge<'namespace' | 'kind'>;
  readonly restoresTotal: Counter<'namespace' | 'outcome'>;
  /** Device backups the daemon took of its own NetHSM (snapshots, merges, verification); concurrent snapshots share one. */
  readonly deviceBackupsTotal: Counter;
  /** Device requests anti-entropy made at this site (its passes and the inventories it served), each one paced. */
  readonly antiEntropyDeviceRequestsTotal: Counter;
  readonly restoreForeignEntriesLostTotal: Counter<'namespace'>;
  /** Snapshot syncs whose merge fell back to running inside the exclusive hold (writes kept racing it). */
  readonly syncHeldMergesTotal: Counter<'namespace'>;
  readonly syncRaceReplaysTotal: Counter<'namespace'>;
  readonly racingWritesReappliedTotal: Counter;
  readonly raceReplaysNotRunTotal: Counter<'namespace' | 'reason'>;
  readonly resealWorkerDeathsTotal: Counter;
  readonly raceReplaysPending: Gauge;
  /** Per namespace: 1 while this site is its primary and owes it its administrator restore (admin-restorer.ts). */
  readonly adminRestorePending: Gauge<'namespace'>;
  readonly adminRestoreFailedAttempts: Gauge<'namespace'>;
  /** Snapshot syncs whose restore could not be verified (writes kept passing the barrier after it). */
  readonly syncVerifySkippedTotal: Counter<'namespace'>;
  /** Merge-restores that carried the snapshots of several namespaces due at once (daemon/apply-batch.ts). */
  readonly syncCoalescedRestoresTotal: Counter;
  /** 1 while this site's syncs merge inside the exclusive hold at once because a recent one's every attempt raced. */
  readonly syncHeldMode: Gauge;
  /** 1 while the state database cannot be written (its last write failed for want of storage), else 0. */
  readonly stateWriteFailing: Gauge;
  /** 1 after a config reload that failed, until one succeeds. */
  readonly configReloadFailed: Gauge;
  /** 1 while the config the daemon loaded last has settings only a restart applies. */
  readonly configRestartNeeded: Gauge;
  /** Keys and users exported to a quarantine file (blobs, never decrypted), by reason. */
  readonly quarantinedEntriesTotal: Counter<'namespace' | 'reason'>;
  /** Quarantine files no operator has acknowledged yet (`quarantine ack`), counted at each scrape. */
  readonly quarantineFilesUnacknowledged: Gauge<'namespace'>;
  readonly streamPositionSeq: Gauge<'namespace'>;
  readonly streamChangesBehind: Gauge<'namespace'>;
  readonly streamLagSeconds: Gauge<'namespace'>;
  readonly streamLastHeartbeatTimestampSeconds: Gauge<'namespace'>;
  readonly streamChangesAppliedTotal: Counter<'namespace' | 'outcome'>;
  readonly streamFailing: Gauge<'namespace' | 'reason'>;
  /** Replicas: imports the adaptive apply window lets be in flight at the NetHSM (src/stream/apply-limit.ts). */
  readonly streamApplyWindow: Gauge<'namespace'>;
  /** Replicas: changes waiting for a pending catch-up snapshot (at least 1 while one is pending), 0 when none. */
  readonly streamCatchupPendingChanges: Gauge<'namespace'>;
  /** Replicas: the cost model's estimate of a snapshot sync and of its write hold (src/replicator/cost-model.ts). */
  readonly syncEstimatedSeconds: Gauge<'namespace'>;
  readonly syncEstimatedHoldSeconds: Gauge<'namespace'>;
  /** 1 while a snapshot's cost approaches a bound (schedule, hold, catch-up window), by kind; 0 otherwise. */
  readonly syncCostWarning: Gauge<'namespace' | 'kind'>;
  /** Replicas: 1 while the namespace's primary runs an older nethsm-replicator that lacks what `kind` names; else 0. */
  readonly primaryOutdated: Gauge<'namespace' | 'kind'>;
  readonly gatewayRequestsTotal: Counter<'namespace' | 'class' | 'outcome'>;
  /** Calls this gateway sent to a peer's gateway while its NetHSM was down, by peer (`none` when no peer could) and outcome. */
  readonly gatewayRemoteRequestsTotal: Counter<'peer' | 'outcome'>;
  /** 1 while this site's gateway serves reads and crypto from peers (its NetHSM is down), else 0. */
  readonly gatewayServingRemote: Gauge;

  /**
   * Sets `namespace_role` to 1 for `role` and 0 for the other roles, and the epoch. Also creates the namespace's
   * counters at 0, so that rate() and increase() see their first increment. Idempotent.
   */
  setRole(namespace: string, role: Role, epoch: number): void;
  /**
   * Records what point in the primary's time the replica's data reflects (Unix seconds: the time of the snapshot
   * or of the last stream change applied). `replication_lag_seconds` is computed from it at each scrape, so the
   * lag keeps growing while syncs fail. `null` (primary, or never synced) removes the series.
   */
  setReplicaDataTime(namespace: string, asOfSeconds: number | null): void;
  /** Counts a finished sync and observes its duration; `success` also sets the last-success timestamp. */
  observeSync(namespace: string, outcome: SyncOutcome, durationSeconds: number, reason?: SyncFailureReason): void;
  /** Sets `member_up` (1 only for `ok`), `member_status` (1 for the current status) and the failure streak. */
  setMemberStatus(member: string, status: MemberStatus, consecutiveFailures: number): void;
  /** Sets the drift counts found by the last verification or anti-entropy pass. */
  setDrift(namespace: string, counts: Partial<Record<DriftKind, number>>): void;
  /**
   * Sets `stream_failing` to 1 for the reason the namespace's change stream is failing now (a replica's last
   * connection, change or catch-up failed and nothing succeeded since) and 0 for the others; `null`: not failing.
   */
  setStreamFailing(namespace: string, reason: SyncFailureReason | null): void;
  /** Removes every series of a namespace (when it leaves the config). Idempotent. */
  removeNamespace(namespace: string): void;
  /** Removes every series of a member (when it leaves the config). Idempotent. */
  removeMember(member: string): void;
  /**
   * Where `quarantine_files_unacknowledged` comes from: called at each scrape, it returns the count per namespace
   * (`_other` for files of no configured namespace). A source that throws leaves the last values in place.
   */
  setQuarantineSource(source: () => Record<string, number>): void;
  /**
   * Where the sync cost gauges come from: called at each scrape, per namespace with an estimate, its sync and hold
   * seconds and the kinds of warning that stand. A source that throws leaves the last values in place.
   */
  setSyncCostSource(source: () => Record<string, SyncCostSample>): void;
  /** Where `sync_held_mode` comes from: called at each scrape. A source that throws leaves the last value in place. */
  setSyncHeldSource(source: () => boolean): void;
  /**
   * Where `primary_outdated` comes from: called at each scrape, per replica namespace the kinds that stand (an empty
   * list: none). A source that throws leaves the last values in place.
   */
  setPrimaryOutdatedSource(source: () => Record<string, readonly PrimaryOutdatedKind[]>): void;
  /** Where `state_write_failing` comes from: called at each scrape. A source that throws leaves the last value in place. */
  setStateWriteSource(source: () => boolean): void;
  /** Where the config gauges come from: called at each scrape. A source that throws leaves the last values in place. */
  setConfigSource(source: () => { reloadFailed: boolean; restartNeeded: boolean }): void;
}

/**
 * Kinds of `primary_outdated` (src/daemon/older-primary.ts): `restarts-unseen` (its peer status names no daemon
 * instance), `inventory-too-large` (no inventory ranges, and its one-answer inventory cannot carry the namespace).
 */
export const PRIMARY_OUTDATED_KINDS = ['restarts-unseen', 'inventory-too-large'] as const;
export type PrimaryOutdatedKind = (typeof PRIMARY_OUTDATED_KINDS)[number];

/** Kinds of `sync_cost_warning` (src/replicator/cost-model.ts). */
export const SYNC_COST_WARNING_KINDS = ['schedule', 'hold', 'catchup-window'] as const;
export interface SyncCostSample {
  syncSeconds: number;
  holdSeconds: number;
  warnings: readonly (typeof SYNC_COST_WARNING_KINDS)[number][];
}

type SeriesTable = Partial<Record<keyof ReplicatorMetrics, Record<string, readonly string[]>>>;

/**
 * For each per-namespace metric, the closed sets of its other labels, so removeNamespace() can remove every series
 * through prom-client's public remove() (removing a label set that was never set is a no-op).
 */
const NAMESPACE_SERIES: SeriesTable = {
  namespaceRole: { role: ROLES },
  epoch: {},
  namespacePaused: {},
  replicationLagSeconds: {},
  lagLimitSeconds: {},
  lastSuccessfulSyncTimestampSeconds: {},
  syncInProgress: {},
  syncDurationSeconds: { outcome: SYNC_OUTCOMES },
  syncsTotal: { outcome: SYNC_OUTCOMES },
  syncFailuresTotal: { reason: SYNC_FAILURE_REASONS },
  promotionsTotal: {},
  fencingsTotal: {},
  failoverStepDownsTotal: {},
  failoverPromotionsTotal: {},
  driftEntries: { kind: DRIFT_KINDS },
  restoresTotal: { outcome: RESTORE_OUTCOMES },
  restoreForeignEntriesLostTotal: {},
  syncHeldMergesTotal: {},
  syncRaceReplaysTotal: {},
  raceReplaysNotRunTotal: { reason: RACE_REPLAY_NOT_RUN_REASONS },
  syncVerifySkippedTotal: {},
  quarantinedEntriesTotal: { reason: QUARANTINE_REASONS },
  quarantineFilesUnacknowledged: {},
  streamPositionSeq: {},
  streamChangesBehind: {},
  streamLagSeconds: {},
  streamLastHeartbeatTimestampSeconds: {},
  streamChangesAppliedTotal: { outcome: STREAM_APPLY_OUTCOMES },
  streamFailing: { reason: SYNC_FAILURE_REASONS },
  streamApplyWindow: {},
  streamCatchupPendingChanges: {},
  syncEstimatedSeconds: {},
  syncEstimatedHoldSeconds: {},
  syncCostWarning: { kind: SYNC_COST_WARNING_KINDS },
  primaryOutdated: { kind: PRIMARY_OUTDATED_KINDS },
  gatewayRequestsTotal: { class: GATEWAY_CLASSES, outcome: GATEWAY_OUTCOMES },
};

const MEMBER_SERIES: SeriesTable = {
  memberUp: {},
  memberStatus: { status: MEMBER_STATUSES },
  memberConsecutiveFailures: {},
};

/** Every combination of the given closed label sets, each extended with `fixed`. */
function labelCombinations(fixed: Record<string, string>, dims: Record<string, readonly string[]>): Record<string, string>[] {
  let out: Record<string, string>[] = [{ ...fixed }];
  for (const [label, values] of Object.entries(dims)) {
    out = out.flatMap((partial) => values.map((v) => ({ ...partial, [label]: v })));
  }
  return out;
}

type AnyMetric = { remove(labels: Record<string, string>): void };

function removeSeries(handles: Record<string, unknown>, series: SeriesTable, fixed: Record<string, string>): void {
  for (const [key, dims] of Object.entries(series)) {
    const metric = handles[key] as AnyMetric;
    for (const labels of labelCombinations(fixed, dims)) metric.remove(labels);
  }
}

/**
 * prom-client's default `nodejs_active_{handles,requests,resources}_total` are gauges with a counter's suffix, which
 * `promtool check metrics` refuses. They are dropped: the per-type gauges without the suffix (`nodejs_active_handles`
 * …) carry the same counts.
 */
function dropActiveTotals(registry: Registry): void {
  for (const kind of ['handles', 'requests', 'resources']) registry.removeSingleMetric(`${METRIC_PREFIX}nodejs_active_${kind}_total`);
}

/**
 * Creates every replicator metric on `options.registry`.
 * Throws prom-client's Error when called twice on one registry (metric names already registered).
 */
export function createReplicatorMetrics(options: ReplicatorMetricsOptions): ReplicatorMetrics {
  const registers = [options.registry];
  const now = options.now ?? Date.now;
  const name = (n: string): string => `${METRIC_PREFIX}${n}`;
  // Replica data times, kept here so the lag is computed at scrape time (see setReplicaDataTime).
  const dataTimes = new Map<string, number>();
  let quarantineSource: (() => Record<string, number>) | undefined;
  let syncHeldSource: (() => boolean) | undefined;
  let stateWriteSource: (() => boolean) | undefined;
  let configSource: (() => { reloadFailed: boolean; restartNeeded: boolean }) | undefined;
  /** A 0/1 gauge's collect(): `read` at each scrape (undefined: no source set yet); a read that throws keeps the last value. */
  const flag = (read: () => boolean | undefined) =>
    function collect(this: Gauge) {
      try {
        const v = read();
        if (v !== undefined) this.set(v ? 1 : 0);
      } catch {
        // The last value stays.
      }
    };

  if (options.processMetrics !== false) {
    collectDefaultMetrics({ register: options.registry, prefix: METRIC_PREFIX });
    dropActiveTotals(options.registry);
  }

  const buildInfo = new Gauge({
    name: name('build_info'),
    help: 'Always 1; the version label names the running replicator.',
    labelNames: ['version'],
    registers,
  });
  buildInfo.set({ version: VERSION }, 1);

  const replicationLagSeconds = new Gauge({
    name: name('replication_lag_seconds'),
    help: 'Seconds between now and the point in the primary\'s time that this replica\'s data reflects (replicas only).',
    labelNames: ['namespace'],
    registers,
    collect() {
      const t = now() / 1000;
      for (const [namespace, asOf] of dataTimes) this.set({ namespace }, Math.max(0, t - asOf));
    },
  });

  const quarantineFilesUnacknowledged = new Gauge({
    name: name('quarantine_files_unacknowledged'),
    help: 'Quarantine files in the state directory no operator has acknowledged yet (quarantine ack), by namespace.',
    labelNames: ['namespace'],
    registers,
    collect() {
      if (!quarantineSource) return;
      let counts: Record<string, number>;
      try {
        counts = quarantineSource();
      } catch {
        return;
      }
      this.reset();
      for (const [namespace, n] of Object.entries(counts)) this.set({ namespace }, n);
    },
  });

  let syncCostSource: (() => Record<string, SyncCostSample>) | undefined;
  let primaryOutdatedSource: (() => Record<string, readonly PrimaryOutdatedKind[]>) | undefined;
  /** Each sync cost gauge's value per namespace, read from the source at scrape. */
  const costGauge = (metric: string, help: string, value: (s: SyncCostSample) => number) =>
    new Gauge({
      name: name(metric),
      help,
      labelNames: ['namespace'],
      registers,
      collect() {
        const samples = readCostSource();
        if (!samples) return;
        this.reset();
        for (const [namespace, s] of Object.entries(samples)) this.set({ namespace }, value(s));
      },
    });
  const readCostSource = (): Record<string, SyncCostSample> | undefined => {
    try {
      return syncCostSource?.();
    } catch {
      return undefined;
    }
  };

  const m = {
    registry: options.registry,
    buildInfo,
    namespaceRole: new Gauge({
      name: name('namespace_role'),
      help: 'Role of the namespace at this site: 1 for the current role, 0 for the others.',
      labelNames: ['namespace', 'role'],
      registers,
    }),
    epoch: new Gauge({
      name: name('epoch'),
      help: 'Current epoch of the namespace as known at this site.',
      labelNames: ['namespace'],
      registers,
    }),
    namespacePaused: new Gauge({
      name: name('namespace_paused'),
      help: '1 while replication of the namespace is paused by an operator, else 0.',
      labelNames: ['namespace'],
      registers,
    }),
    replicationLagSeconds,
    lagLimitSeconds: new Gauge({
      name: name('lag_limit_seconds'),
      help: 'Configured lag limit of the namespace (promote refuses beyond it; alerts compare the lag with it).',
      labelNames: ['namespace'],
      registers,
    }),
    lastSuccessfulSyncTimestampSeconds: new Gauge({
      name: name('last_successful_sync_timestamp_seconds'),
      help: 'Unix time of the last successful sync of the namespace at this site.',
      labelNames: ['namespace'],
      registers,
    }),
    syncInProgress: new Gauge({
      name: name('sync_in_progress'),
      help: '1 while a sync of the namespace runs at this site, else 0.',
      labelNames: ['namespace'],
      registers,
    }),
    syncDurationSeconds: new Histogram({
      name: name('sync_duration_seconds'),
      help: 'Duration of finished syncs (snapshot fetch, merge, restore, verify).',
      labelNames: ['namespace', 'outcome'],
      buckets: SYNC_DURATION_BUCKETS,
      registers,
    }),
    syncsTotal: new Counter({
      name: name('syncs_total'),
      help: 'Finished syncs by outcome (success, failure, skipped).',
      labelNames: ['namespace', 'outcome'],
      registers,
    }),
    syncFailuresTotal: new Counter({
      name: name('sync_failures_total'),
      help: 'Failed syncs by reason (a closed set; details are in the logs).',
      labelNames: ['namespace', 'reason'],
      registers,
    }),
    memberUp: new Gauge({
      name: name('member_up'),
      help: '1 when the member (own NetHSM or a peer) is ok, else 0.',
      labelNames: ['member'],
      registers,
    }),
    memberStatus: new Gauge({
      name: name('member_status'),
      help: 'Member status (ok, unreachable, locked, not-operational, recovering, fenced): 1 for the current status, 0 for the others.',
      labelNames: ['member', 'status'],
      registers,
    }),
    memberConsecutiveFailures: new Gauge({
      name: name('member_consecutive_failures'),
      help: 'Failed checks of the member since it was last ok.',
      labelNames: ['member'],
      registers,
    }),
    promotionsTotal: new Counter({
      name: name('promotions_total'),
      help: 'Promotions of the namespace to primary at this site.',
      labelNames: ['namespace'],
      registers,
    }),
    fencingsTotal: new Counter({
      name: name('fencings_total'),
      help: 'Times this site was fenced for the namespace (it met a higher epoch while primary).',
      labelNames: ['namespace'],
      registers,
    }),
    failoverLeaseValid: new Gauge({
      name: name('failover_lease_valid'),
      help: 'Automatic failover: 1 while this daemon holds an etcd lease it renewed in time (primaries take writes only then).',
      registers,
    }),
    failoverStepDownsTotal: new Counter({
      name: name('failover_step_downs_total'),
      help: 'Automatic failover: times a primary namespace here stopped taking writes because its etcd lease was not renewed in time or another site holds the leader key.',
      labelNames: ['namespace'],
      registers,
    }),
    failoverPromotionsTotal: new Counter({
      name: name('failover_promotions_total'),
      help: 'Automatic failover: promotions this site made by itself after the leader key expired.',
      labelNames: ['namespace'],
      registers,
    }),
    driftEntries: new Gauge({
      name: name('drift_entries'),
      help: 'Entries that differ from the primary, found by the last verification or anti-entropy pass, by kind.',
      labelNames: ['namespace', 'kind'],
      registers,
    }),
    antiEntropyDeviceRequestsTotal: new Counter({
      name: name('anti_entropy_device_requests_total'),
      help: 'Device requests anti-entropy made at this site (its passes and the inventories it served replicas), paced by antiEntropy.maxRequestsPerSecond.',
      registers,
    }),
    deviceBackupsTotal: new Counter({
      name: name('device_backups_total'),
      help: 'Device backups taken of the own NetHSM (for snapshots, merges and verification).',
      registers,
    }),
    restoresTotal: new Counter({
      name: name('restores_total'),
      help: 'Restores into the own NetHSM (merge-restores for a namespace) by outcome.',
      labelNames: ['namespace', 'outcome'],
      registers,
    }),
    restoreForeignEntriesLostTotal: new Counter({
      name: name('restore_foreign_entries_lost_total'),
      help: 'Entries outside the replicated namespace found missing or changed after a merge-restore (the kept backup holds them).',
      labelNames: ['namespace'],
      registers,
    }),
    syncHeldMergesTotal: new Counter({
      name: name('sync_held_merges_total'),
      help: 'Snapshot syncs whose backup and merge ran inside the exclusive hold, holding writes, because writes raced them outside it.',
      labelNames: ['namespace'],
      registers,
    }),
    syncRaceReplaysTotal: new Counter({
      name: name('sync_race_replays_total'),
      help: 'Snapshot syncs whose backup and merge outside the hold were raced by writes that were re-applied after the restore, inside the hold, instead of merging again.',
      labelNames: ['namespace'],
      registers,
    }),
    racingWritesReappliedTotal: new Counter({
      name: name('racing_writes_reapplied_total'),
      help: 'Writes that raced a merge-restore outside its hold and were made good after its restore (change-log replays and stream rewinds).',
      registers,
    }),
    raceReplaysNotRunTotal: new Counter({
      name: name('race_replays_not_run_total'),
      help: "Per namespace primary here: re-applies of racing writes due right after a merge-restore's hold that did not run (role_changed: abandoned, the record stays pending for the retries or a fence; record_ended: another hold ended the record first).",
      labelNames: ['namespace', 'reason'],
      registers,
    }),
    resealWorkerDeathsTotal: new Counter({
      name: name('reseal_worker_deaths_total'),
      help: "Times the snapshot merge's re-seal worker thread died (an error in it, or it exited: killed, out of memory): the merge it served failed, and the next merge starts a new thread. The warn log says why.",
      registers,
    }),
    raceReplaysPending: new Gauge({
      name: name('race_replays_pending'),
      help: 'Namespaces primary here whose writes a restore erased are not yet re-applied (their gateway writes are refused meanwhile); 0 when none.',
      registers,
    }),
    adminRestorePending: new Gauge({
      name: name('admin_restore_pending'),
      help: 'Per namespace: 1 while this site became its primary but its administrators are not back on the NetHSM yet (the restore failed and is retried; writes by its users are refused); 0 otherwise.',
      labelNames: ['namespace'],
      registers,
    }),
    adminRestoreFailedAttempts: new Gauge({
      name: name('admin_restore_failed_attempts'),
      help: 'Per namespace: failed attempts of the administrator restore still pending there (the first, in the role change, and each retry); at least 1 for a stored record that is not valid (never attempted). 0 when none is pending or none failed yet (the first attempt still running).',
      labelNames: ['namespace'],
      registers,
    }),
    syncCoalescedRestoresTotal: new Counter({
      name: name('sync_coalesced_restores_total'),
      help: 'Merge-restores that carried the snapshots of several namespaces due at once at this site (one device backup, restore and verification for all).',
      registers,
    }),
    syncHeldMode: new Gauge({
      name: name('sync_held_mode'),
      help: "1 while this site's snapshot syncs hold writes for their whole backup, merge and restore because a recent sync's attempts outside the hold raced writes (10 minutes after it), else 0.",
      registers,
      collect: flag(() => syncHeldSource?.()),
    }),
    stateWriteFailing: new Gauge({
      name: name('state_write_failing'),
      help: "1 while this site's state database cannot be written (its last write failed: disk full, read-only or failing) until a write succeeds again, else 0.",
      registers,
      collect: flag(() => stateWriteSource?.()),
    }),
    configReloadFailed: new Gauge({
      name: name('config_reload_failed'),
      help: 'Set to 1 by a config reload (SIGHUP) that failed: the daemon runs with the config it had, not the file. 0 once a reload succeeds.',
      registers,
      collect: flag(() => configSource?.().reloadFailed),
    }),
    configRestartNeeded: new Gauge({
      name: name('config_restart_needed'),
      help: 'Set to 1 while the config the daemon loaded last changes settings only a restart applies (peerApi.listen, …); 0 otherwise.',
      registers,
      collect: flag(() => configSource?.().restartNeeded),
    }),
    syncVerifySkippedTotal: new Counter({
      name: name('sync_verify_skipped_total'),
      help: 'Snapshot syncs whose restore was not verified because writes kept passing the device barrier while the check backup was taken.',
      labelNames: ['namespace'],
      registers,
    }),
    quarantineFilesUnacknowledged,
    quarantinedEntriesTotal: new Counter({
      name: name('quarantined_entries_total'),
      help: 'Keys and users exported to a quarantine file in the state directory, by reason (foreign_writes, fenced).',
      labelNames: ['namespace', 'reason'],
      registers,
    }),
    streamPositionSeq: new Gauge({
      name: name('stream_position_seq'),
      help: 'Sequence number of the last stream change applied (replica) or logged (primary) in the current epoch.',
      labelNames: ['namespace'],
      registers,
    }),
    streamChangesBehind: new Gauge({
      name: name('stream_changes_behind'),
      help: 'Changes the primary has logged that this replica has not applied yet.',
      labelNames: ['namespace'],
      registers,
    }),
    streamLagSeconds: new Gauge({
      name: name('stream_lag_seconds'),
      help: 'Age of the oldest change not yet applied (0 when caught up).',
      labelNames: ['namespace'],
      registers,
    }),
    streamLastHeartbeatTimestampSeconds: new Gauge({
      name: name('stream_last_heartbeat_timestamp_seconds'),
      help: 'Unix time of the last heartbeat or change received on the namespace\'s stream.',
      labelNames: ['namespace'],
      registers,
    }),
    streamChangesAppliedTotal: new Counter({
      name: name('stream_changes_applied_total'),
      help: 'Stream changes handled by outcome (applied, duplicate, failed).',
      labelNames: ['namespace', 'outcome'],
      registers,
    }),
    streamFailing: new Gauge({
      name: name('stream_failing'),
      help: "1 for the reason a replica's change stream is failing now (its last connection, change or catch-up failed and nothing succeeded since), 0 for the others.",
      labelNames: ['namespace', 'reason'],
      registers,
    }),
    streamApplyWindow: new Gauge({
      name: name('stream_apply_window'),
      help: 'Imports the replica keeps in flight at its NetHSM (adaptive: twice the rate the device delivers times its unloaded latency, at most nethsm.connections).',
      labelNames: ['namespace'],
      registers,
    }),
    streamCatchupPendingChanges: new Gauge({
      name: name('stream_catchup_pending_changes'),
      help: 'Changes waiting for a pending catch-up snapshot (at least 1 while one waits for its batch: stream.catchupWindow), 0 when none.',
      labelNames: ['namespace'],
      registers,
    }),
    syncEstimatedSeconds: costGauge('sync_estimated_seconds', "Estimated length of a snapshot sync of the namespace at this site (cost model; at least the last one's).", (s) => s.syncSeconds),
    syncEstimatedHoldSeconds: costGauge('sync_estimated_hold_seconds', "Estimated time a snapshot sync holds writes at this site's NetHSM (cost model; at least the last one's).", (s) => s.holdSeconds),
    syncCostWarning: new Gauge({
      name: name('sync_cost_warning'),
      help: "1 while a snapshot sync's estimated cost passes half its schedule period (schedule), half gateway.maxHold (hold) or the catch-up window (catchup-window).",
      labelNames: ['namespace', 'kind'],
      registers,
      collect() {
        const samples = readCostSource();
        if (!samples) return;
        this.reset();
        for (const [namespace, s] of Object.entries(samples)) for (const kind of SYNC_COST_WARNING_KINDS) this.set({ namespace, kind }, s.warnings.includes(kind) ? 1 : 0);
      },
    }),
    primaryOutdated: new Gauge({
      name: name('primary_outdated'),
      help: "1 while the namespace's primary runs an older nethsm-replicator lacking what kind names: restarts-unseen (no daemon instance in its status: no pass after its restarts), inventory-too-large (no inventory ranges: no pass can run); 0 otherwise.",
      labelNames: ['namespace', 'kind'],
      registers,
      collect() {
        let samples: Record<string, readonly PrimaryOutdatedKind[]> | undefined;
        try {
          samples = primaryOutdatedSource?.();
        } catch {
          return;
        }
        if (!samples) return;
        this.reset();
        for (const [namespace, kinds] of Object.entries(samples)) for (const kind of PRIMARY_OUTDATED_KINDS) this.set({ namespace, kind }, kinds.includes(kind) ? 1 : 0);
      },
    }),
    gatewayRequestsTotal: new Counter({
      name: name('gateway_requests_total'),
      help: 'Gateway requests by namespace (_other when not configured here), class and outcome.',
      labelNames: ['namespace', 'class', 'outcome'],
      registers,
    }),
    gatewayRemoteRequestsTotal: new Counter({
      name: name('gateway_remote_requests_total'),
      help: "Reads and crypto this site's gateway sent to a peer's gateway while its NetHSM was down, by peer (none: no peer could serve) and outcome (served, refused, error).",
      labelNames: ['peer', 'outcome'],
      registers,
    }),
    gatewayServingRemote: new Gauge({
      name: name('gateway_serving_remote'),
      help: "1 while this site's gateway serves reads and crypto from peer gateways because its NetHSM is down, else 0.",
      registers,
    }),
  };

  return {
    ...m,
    setRole(namespace, role, epoch) {
      for (const r of ROLES) m.namespaceRole.set({ namespace, role: r }, r === role ? 1 : 0);
      m.epoch.set({ namespace }, epoch);
      for (const outcome of SYNC_OUTCOMES) m.syncsTotal.inc({ namespace, outcome }, 0);
      for (const reason of SYNC_FAILURE_REASONS) m.syncFailuresTotal.inc({ namespace, reason }, 0);
      for (const outcome of RESTORE_OUTCOMES) m.restoresTotal.inc({ namespace, outcome }, 0);
      m.promotionsTotal.inc({ namespace }, 0);
      m.fencingsTotal.inc({ namespace }, 0);
      m.restoreForeignEntriesLostTotal.inc({ namespace }, 0);
      m.syncHeldMergesTotal.inc({ namespace }, 0);
      m.syncRaceReplaysTotal.inc({ namespace }, 0);
      for (const reason of RACE_REPLAY_NOT_RUN_REASONS) m.raceReplaysNotRunTotal.inc({ namespace, reason }, 0);
      m.syncVerifySkippedTotal.inc({ namespace }, 0);
      for (const reason of QUARANTINE_REASONS) m.quarantinedEntriesTotal.inc({ namespace, reason }, 0);
    },
    setReplicaDataTime(namespace, asOfSeconds) {
      if (asOfSeconds === null || !Number.isFinite(asOfSeconds)) {
        dataTimes.delete(namespace);
        replicationLagSeconds.remove({ namespace });
      } else {
        dataTimes.set(namespace, asOfSeconds);
      }
    },
    observeSync(namespace, outcome, durationSeconds, reason) {
      m.syncsTotal.inc({ namespace, outcome });
      if (Number.isFinite(durationSeconds) && durationSeconds >= 0) {
        m.syncDurationSeconds.observe({ namespace, outcome }, durationSeconds);
      }
      if (outcome === 'failure') m.syncFailuresTotal.inc({ namespace, reason: reason ?? 'other' });
      if (outcome === 'success') m.lastSuccessfulSyncTimestampSeconds.set({ namespace }, now() / 1000);
    },
    setStreamFailing(namespace, reason) {
      for (const r of SYNC_FAILURE_REASONS) m.streamFailing.set({ namespace, reason: r }, r === reason ? 1 : 0);
    },
    setMemberStatus(member, status, consecutiveFailures) {
      m.memberUp.set({ member }, status === 'ok' ? 1 : 0);
      for (const s of MEMBER_STATUSES) m.memberStatus.set({ member, status: s }, s === status ? 1 : 0);
      m.memberConsecutiveFailures.set({ member }, consecutiveFailures);
    },
    setDrift(namespace, counts) {
      for (const kind of DRIFT_KINDS) m.driftEntries.set({ namespace, kind }, counts[kind] ?? 0);
    },
    removeNamespace(namespace) {
      dataTimes.delete(namespace);
      removeSeries(m, NAMESPACE_SERIES, { namespace });
    },
    removeMember(member) {
      removeSeries(m, MEMBER_SERIES, { member });
    },
    setQuarantineSource(source) {
      quarantineSource = source;
    },
    setSyncCostSource(source) {
      syncCostSource = source;
    },
    setSyncHeldSource(source) {
      syncHeldSource = source;
    },
    setPrimaryOutdatedSource(source) {
      primaryOutdatedSource = source;
    },
    setStateWriteSource(source) {
      stateWriteSource = source;
    },
    setConfigSource(source) {
      configSource = source;
    },
  };
}

/**
 * Maps an error to a {@link SyncFailureReason} by its `NHR_ERR_<AREA>_<PROBLEM>` code, so new error classes in a
 * known area land in the right reason without touching this module. Never throws.
 */
export function syncFailureReason(err: unknown): SyncFailureReason {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  if (typeof code !== 'string') return 'other';
  const exact: Record<string, SyncFailureReason> = {
    NHR_ERR_NETHSM_UNREACHABLE: 'nethsm_unreachable',
    NHR_ERR_NETHSM_TIMEOUT: 'nethsm_unreachable',
    NHR_ERR_NETHSM_TLS_PIN_MISMATCH: 'nethsm_unreachable',
    NHR_ERR_NETHSM_TLS_UNTRUSTED: 'nethsm_unreachable',
    NHR_ERR_NETHSM_LOCKED: 'nethsm_not_operational',
    NHR_ERR_NETHSM_NOT_OPERATIONAL: 'nethsm_not_operational',
    NHR_ERR_NETHSM_CREDENTIAL_REFUSED: 'nethsm_credential_refused',
    NHR_ERR_BACKUP_WRONG_PASSPHRASE: 'wrong_passphrase',
    NHR_ERR_SYNC_RACE: 'restore_guard',
    NHR_ERR_GATEWAY_DRAIN_TIMEOUT: 'restore_guard',
    NHR_ERR_SYNC_VERIFY_FAILED: 'verify_failed',
    NHR_ERR_SYNC_BUSY: 'busy',
  };
  const hit = exact[code];
  if (hit) return hit;
  const prefixes: [string, SyncFailureReason][] = [
    ['NHR_ERR_NETHSM_', 'nethsm_error'],
    ['NHR_ERR_PEER_UNREACHABLE', 'peer_unreachable'],
    ['NHR_ERR_PEER_TIMEOUT', 'peer_unreachable'],
    ['NHR_ERR_PEER_', 'peer_error'],
    ['NHR_ERR_BACKUP_', 'backup_invalid'],
    ['NHR_ERR_VERIFY_', 'verify_failed'],
    ['NHR_ERR_RESTORE_', 'restore_guard'],
    ['NHR_ERR_ROLE_', 'epoch_conflict'],
    ['NHR_ERR_EPOCH_', 'epoch_conflict'],
    ['NHR_ERR_CONFIG_', 'config'],
    ['NHR_ERR_STATE_', 'state_store'],
    ['NHR_ERR_ABORTED', 'aborted'],
  ];
  for (const [prefix, reason] of prefixes) if (code.startsWith(prefix)) return reason;
  return 'other';
}
