/**
 * The daemon's status view: what `nethsm-replicator status [--json]` prints and the admin API's `GET /v1/status`
 * returns. Times are ISO 8601 strings (or null), durations seconds. Contains no secret.
 */
import type { MemberStatus } from '../members/monitor.js';
import type { Role } from '../roles/role.js';

export interface NamespaceStatus {
  name: string;
  role: Role;
  epoch: number;
  primarySite: string;
  paused: boolean;
  /** A sync (or failover step) is running now. */
  busy: boolean;
  /** The running sync: who started it, the step it is at (e.g. `fetching the snapshot from a`), since when. */
  syncRunning?: { actor: string; startedAt: string; step: string; stepSince: string } | null;
  /** Replica only: the last sync attempt from the current primary. */
  lastSync: { at: string; outcome: 'ok' | 'failed'; durationSeconds: number; errorCode: string | null } | null;
  /** Replica only: the state applied: epoch, sequence, and when the primary took it. */
  position: { epoch: number; seq: number; takenAt: string } | null;
  /** Replica only: now − position.takenAt; null when never synced (and for a primary). */
  lagSeconds: number | null;
  lagLimitSeconds: number;
  nextScheduledSync: string | null;
  /** The change stream: at a replica its puller, at the primary the head of the change log. */
  stream?: StreamStatusView | null;
  /**
   * Set when no reachable site is primary for the namespace: this site stepped down and nobody took over, or its
   * primary is unreachable, or answers but is not primary. `cause` in words, `try` the remedy. Absent from older daemons.
   */
  noPrimary?: { cause: string; try: string } | null;
  /** Automatic failover (docs/failover.md): the lease, the leader key, and why this site does what it does. */
  failover?: FailoverStatusView | null;
  /**
   * Replica, once this site has synced: what a snapshot sync costs (docs/benchmarks.md, "Cost model") and the warnings
   * that stand. Absent from older daemons; null for a primary or before the first sync.
   */
  syncCost?: SyncCostView | null;
  /**
   * Replica: set while this site's anti-entropy passes of the namespace do not complete because its primary is
   * re-applying writes a restore erased there (NHR_ERR_ANTIENTROPY_SOURCE_REPLAYING), or because the pass queued after
   * its primary's daemon restarted could not run or complete (src/daemon/restart-pass.ts): since the first such pass,
   * why, and the remedy. A warning; null once a pass completes. Absent from older daemons.
   */
  antiEntropyDeferred?: { since: string; cause: string; try: string } | null;
  /**
   * Replica: the anti-entropy pass queued after its primary's daemon restarted (src/daemon/restart-pass.ts), from when,
   * and what it waits for; null when none is queued. Information, not a problem: writes made straight to the primary's
   * NetHSM while its daemon was down are not looked for until it completes. Absent from older daemons.
   */
  restartPass?: { primary: string; since: string; state: string; action?: 'anti-entropy pass' | 'snapshot sync' } | null;
  /**
   * Replica: its primary names no daemon instance in its peer status (an older nethsm-replicator), so a restart of it
   * cannot be told from a blip and queues no pass (src/daemon/older-primary.ts): the primary, the version it runs, why
   * that matters and the remedy. A warning; null otherwise. Absent from older daemons.
   */
  restartsUnseen?: { primary: string; version: string; cause: string; try: string } | null;
  /**
   * Primary here: set while the namespace's administrators are not back on the NetHSM since this site became primary
   * (the restore failed and is retried: admin-restorer.ts). A problem; null otherwise. Absent from older daemons.
   */
  administratorsPending?: AdminsPendingView | null;
}

/** An administrator restore still owed (AdminRestorer.view): since when, under which epoch, its attempts, why, the remedy. */
export interface AdminsPendingView {
  since: string;
  /** Null for a stored record that is not valid. */
  epoch: number | null;
  attempts: number;
  lastError: string | null;
  cause: string;
  try: string;
}

export interface SyncCostView {
  /** `default`: no device timings measured yet, the conservative default figures. */
  source: 'default' | 'measured';
  /** This NetHSM's size in entries, as the last sync's backups show. */
  deviceEntries: number;
  /** The next snapshot sync's estimate, never below the last one's. */
  estimatedSeconds: number;
  /** How long it holds writes at this site's NetHSM. */
  holdSeconds: number;
  lastSyncSeconds: number | null;
  lastHoldSeconds: number | null;
  /** A cost near a bound (schedule period, gateway.maxHold, catch-up window), with its cause and a remedy. */
  warnings: { kind: 'schedule' | 'hold' | 'catchup-window'; cause: string; try: string }[];
}

export interface FailoverStatusView {
  mode: 'automatic';
  leaseValid: boolean;
  leaseValidForMs: number | null;
  leader: { site: string; epoch: number } | null;
  /** The last decision, or why nothing happens (e.g. "stepped down: the etcd lease was not renewed in time …"). */
  state: string;
  lastError: string | null;
}

export interface StreamStatusView {
  state: 'idle' | 'connecting' | 'streaming' | 'catching-up' | 'waiting';
  /** Replica: the position applied; primary: the change log's head. */
  position: { epoch: number; seq: number } | null;
  /**
   * Replica: the highest change whose effect reached this site's NetHSM on the stream's connection (from the stored
   * position it connected from: a cut connection's effects above it may have been erased since); ahead of
   * `position` while effects wait for their in-order records (docs/streaming.md, "Rewind"). Primary: the head, or
   * just before the first change a restore erased and a pending re-apply has not put back (race-replayer.ts). Null
   * before the stream connected; absent from older daemons.
   */
  onDevice?: { epoch: number; seq: number } | null;
  /** Replica: the primary's head at the last heartbeat. */
  head: { epoch: number; seq: number } | null;
  changesBehind: number | null;
  lagSeconds: number | null;
  /** Replica: the last line (heartbeat or change) received from the primary. */
  lastHeartbeat: string | null;
  /**
   * Replica: why the stream is failing now (its last connection, change or catch-up failed and nothing was applied
   * since); null when it is not. `status` reports a replica with one as needing attention.
   */
  lastErrorCode: string | null;
  lastError: string | null;
  /**
   * Replica: a catch-up snapshot waiting for its batch (docs/streaming.md, "Catch-ups in batches"): since when, how many
   * changes wait (null: not known yet), when it is due, and why. Null when none waits; absent from older daemons.
   */
  pendingCatchup?: { since: string; changes: number | null; dueAt: string; reason: string } | null;
}

export interface MemberStatusView {
  name: string;
  kind: 'nethsm' | 'peer';
  status: MemberStatus;
  consecutiveFailures: number;
  attempts: number;
  gaveUp: boolean;
  lastErrorCode: string | null;
  lastError: string | null;
  lastOkAt: string | null;
  nextRetryAt: string | null;
}

/** A credential of the config the NetHSM refused (401) at its last use; it stays until the NetHSM accepts it again. */
export interface CredentialProblemView {
  /** Config path: `nethsm.credentials.admin`. */
  setting: string;
  /** `nethsm-admin` (the shipped unit's systemd credential). */
  name: string;
  user: string;
  /** Without it the daemon cannot replicate; `/health/ready` fails while it is refused. */
  critical: boolean;
  since: string;
  error: string;
}

/** The config file on disk against what the daemon runs with. */
export interface ConfigStatusView {
  path: string;
  /** SHA-256 of the file as the daemon last loaded it (at start or at the last successful reload). */
  loadedDigest: string;
  loadedAt: string;
  /** SHA-256 of the file now; null when it cannot be read. */
  fileDigest: string | null;
  /** The file differs from what the daemon loaded: a reload (SIGHUP) would read it. */
  changedOnDisk: boolean;
  /** Settings whose value in the file differs from the running one and that only a restart applies (`peerApi.listen`). */
  restartNeededFor: string[];
  lastReload: {
    at: string;
    outcome: 'ok' | 'failed';
    changed: string[];
    restartNeededFor: string[];
    errorCode: string | null;
    error: string | null;
  } | null;
}

export interface DaemonStatus {
  site: string;
  version: string;
  startedAt: string;
  namespaces: NamespaceStatus[];
  members: MemberStatusView[];
  /**
   * Quarantine files (`<stateDir>/quarantine/`) nobody has acknowledged with `quarantine ack` yet, by file name and
   * the namespace their name tells. Absent from daemons that predate it.
   */
  quarantine?: { directory: string; unacknowledged: { file: string; namespace: string | null }[] };
  /** Credentials the NetHSM refused (empty when it accepts every one it was asked about). */
  credentials?: CredentialProblemView[];
  /** The config file; absent when the daemon was started from a config object (tests, the demo). */
  config?: ConfigStatusView;
  /** Where the gateway serves from; absent without a gateway (or from daemons that predate it). */
  gateway?: GatewayServingView;
  /**
   * Set while this site's snapshot syncs hold writes for their whole backup, merge and restore because a recent sync's
   * every attempt outside the hold raced writes (docs/concurrency.md, "Snapshot sync"). A warning, never a problem.
   * Null otherwise; absent from daemons that predate it.
   */
  heldSyncs?: HeldSyncsView | null;
  /**
   * Set while writes a restore erased are not yet re-applied to namespaces primary here (their gateway writes are
   * refused meanwhile; docs/concurrency.md, "Racing writes re-applied"): a problem. Null otherwise; absent from
   * daemons that predate it.
   */
  replaysPending?: ReplaysPendingView | null;
  /**
   * Set while the state database cannot be written (its disk full, read-only or failing) since its last failed write,
   * until a write succeeds again: a problem. Null otherwise; absent from daemons that predate it.
   */
  stateWriteFailure?: { since: string; cause: string; try: string } | null;
}

/** Re-applies of racing writes still pending (DaemonRaceReplayer): which namespaces, since when, why, and the remedy. */
export interface ReplaysPendingView {
  namespaces: string[];
  since: string;
  attempts: number;
  lastError: string | null;
  /**
   * One per record: which epoch's seqs are not on the device and where they stand (`retrying` here, `awaiting-fence`,
   * `moved-away` (not primary, not fenced yet: transient, the site is fenced to export them at start or at the next status probe
   * of the new primary; a fenced site's record is `awaiting-fence` until its export), `not-in-quarantine` (a fence's file lacks them:
   * `quarantine`), `invalid` stored row). Absent from older daemons.
   */
  records?: {
    namespace: string;
    epoch: number | null;
    fromSeq: number | null;
    toSeq: number | null;
    state: 'retrying' | 'awaiting-fence' | 'moved-away' | 'not-in-quarantine' | 'invalid';
    quarantine: string | null;
  }[];
  cause: string;
  try: string;
}

/** Syncs going straight to the held sequence (NamespaceSync.racedSync): since and until when, why, and the remedy. */
export interface HeldSyncsView {
  since: string;
  until: string;
  /** The namespaces of the sync whose attempts raced. */
  namespaces: string[];
  cause: string;
  try: string;
}

/** `serving: remote` while this site's NetHSM is down and its gateway serves reads and crypto from peers. */
export interface GatewayServingView {
  serving: 'local' | 'remote';
  /** `gateway.remoteServing` is configured. */
  remoteServing: boolean;
  cause: string | null;
  try: string | null;
  since: string | null;
}
