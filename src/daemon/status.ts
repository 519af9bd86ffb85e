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
  /** Automatic failover (docs/failover.md): the lease, the leader key, and why this site does what it does. */
  failover?: FailoverStatusView | null;
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
  /** Replica: the primary's head at the last heartbeat. */
  head: { epoch: number; seq: number } | null;
  changesBehind: number | null;
  lagSeconds: number | null;
  /** Replica: the last line (heartbeat or change) received from the primary. */
  lastHeartbeat: string | null;
  lastErrorCode: string | null;
  lastError: string | null;
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

export interface DaemonStatus {
  site: string;
  version: string;
  startedAt: string;
  namespaces: NamespaceStatus[];
  members: MemberStatusView[];
}
