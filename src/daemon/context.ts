/**
 * Everything a running daemon's parts share, built once from the config and its secrets. Owned by `Daemon`.
 */
import type { Resealer } from '../backup/resealer.js';
import type { AdminRestorer } from './admin-restorer.js';
import type { SnapshotKeyRing } from '../replicator/snapshot-keys.js';
import { readConfigFileSync, readPeerTlsSync } from '../config/files.js';
import type { ScryptParams } from '../backup/format.js';
import type { OpenBackupOptions } from '../backup/reader.js';
import type { ReplicatorConfig } from '../config/schema.js';
import type { LoadedSecrets } from '../config/secrets.js';
import type { Logger } from '../log.js';
import type { MemberMonitor } from '../members/monitor.js';
import type { ReplicatorMetrics } from '../metrics/metrics.js';
import { NetHsmClient, type TlsTrust } from '../nethsm/client.js';
import { splitUserId } from '../nethsm/ids.js';
import { PeerClient } from '../peer/client.js';
import { Device, type RestoredKeys } from '../replicator/device.js';
import type { SyncCostModel } from '../replicator/cost-model.js';
import type { WorkDir } from '../replicator/workdir.js';
import type { StateStore } from '../state/store.js';
import type { FailoverStatusView, GatewayServingView, StreamStatusView } from './status.js';
import type { DeviceBarrier } from '../concurrency/barrier.js';
import type { CredentialObserver } from '../nethsm/client.js';
import { ROOT_CREDENTIALS, type CredentialHealth } from './credentials.js';
import type { Mutex } from '../util/mutex.js';
import type { DaemonRaceReplayer, StreamRewinder } from './race-replayer.js';

export interface SiteContext {
  /**
   * The config the daemon runs with. A reload replaces it with one that differs only in reloadable settings
   * (src/config/reload-plan.ts), so a part that read a setting at start still agrees with it everywhere else.
   */
  config: ReplicatorConfig;
  readonly site: string;
  /**
   * This daemon process's identity (random, per start), in its peer status: a peer that answers again with the same
   * instance did not restart meanwhile, so what it streams still covers what it acknowledged (daemon.resumeMember).
   */
  readonly instance: string;
  readonly log: Logger;
  readonly store: StateStore;
  readonly work: WorkDir;
  readonly device: Device;
  /** `pool` owns the connections (close it to close all); the others are accounts on it. */
  readonly nethsm: { readonly pool: NetHsmClient; readonly admin: NetHsmClient; readonly backup: NetHsmClient; readonly metrics?: NetHsmClient };
  readonly peers: ReadonlyMap<string, PeerClient>;
  readonly monitor: MemberMonitor;
  /** Which of the daemon's NetHSM credentials the NetHSM refused (from every call made with them). */
  readonly credentials: CredentialHealth;
  readonly metrics: ReplicatorMetrics;
  /** Opens this device's backups. */
  readonly deviceOpen: OpenBackupOptions;
  /** Opens snapshots (the replication passphrase). */
  readonly snapshotOpen: OpenBackupOptions;
  /** The thread a snapshot merge re-seals the snapshot's entries on (src/backup/resealer.ts); started and closed by the daemon. */
  readonly resealer?: Resealer;
  /** Seals the snapshots this site serves (one derived key per generation; src/replicator/snapshot-keys.ts). */
  readonly snapshotKeys?: SnapshotKeyRing;
  readonly replicationPassphrase: string;
  readonly snapshotScrypt?: ScryptParams;
  /** The one barrier every mutation of this site's NetHSM passes (docs/concurrency.md); also `device.barrier`. */
  readonly barrier: DeviceBarrier;
  /** Namespace → replication account id without the `<ns>~` prefix. */
  readonly replicationUserIds: ReadonlyMap<string, string>;
  /**
   * The namespace's lock (src/concurrency/namespace-locks.ts): snapshot applies, stream changes and anti-entropy take
   * it, always after the barrier, so they never interleave.
   */
  readonly applyLock: (namespace: string) => Mutex;
  /** What snapshot syncs at this site cost, learnt from each sync (in memory; defaults until the first). */
  readonly costModel: SyncCostModel;
  /** The stream's view of a namespace, for status (set by the daemon). */
  streamStatus?: (namespace: string) => StreamStatusView | null;
  /** Automatic failover's view of a namespace, for status (set by the daemon; null for manual failover). */
  failoverStatus?: (namespace: string) => FailoverStatusView | null;
  /** Where the gateway serves from, for status (set by the daemon; null without a gateway). */
  gatewayServing?: () => GatewayServingView | null;
  /** Re-applies writes that race a merge-restore (set by the daemon; src/daemon/race-replayer.ts). */
  raceReplayer?: DaemonRaceReplayer;
  /** Administrator restores a promote still owes (set by Failover; src/daemon/admin-restorer.ts). */
  adminRestorer?: AdminRestorer;
  /**
   * Makes stream applies that a merge-restore's restore erases good again (set by the daemon; StreamService): for a
   * write ticket's `stream` replay, `canRewind` says whether the replica namespace's position can be moved back before
   * that change, and `rewind` moves it (durably; the puller applies the change and every later one again). Call both
   * inside the exclusive hold, before the restore, asking `canRewind` for every raced change before any `rewind`.
   */
  streamRewind?: StreamRewinder;
  /**
   * Resolves once the streams a merge-restore moved back have applied again what its restore erased, bounded in time,
   * never rejecting (set by the daemon; StreamService.reapplied). A restore's deferred verification waits for it.
   */
  streamReapplied?: () => Promise<void>;
  /**
   * Told by a snapshot sync right after it recorded a replica namespace's position, inside its exclusive hold (set by
   * the daemon; StreamService.restored): the stream reconnects from that position.
   */
  streamRestored?: (namespace: string) => void;
  /** Told after every role change of a namespace (the stream re-checks its connections). */
  roleChanged?: (namespace: string) => void;
}

/** The member name of this site's own NetHSM in the member monitor and metrics. */
export const NETHSM_MEMBER = 'nethsm';

export function nethsmTrust(config: ReplicatorConfig): TlsTrust {
  const t = config.nethsm.tls;
  if ('caFile' in t) return { caPem: readConfigFileSync('nethsm.tls.caFile', t.caFile) };
  if ('fingerprint256' in t) return { fingerprint256: t.fingerprint256 };
  return { insecure: true };
}

/**
 * The pool to this site's NetHSM and its root accounts, each labelled with its config setting: a refusal (401) names
 * the setting and is told to `onCredential` (the daemon's CredentialHealth).
 */
export function createNetHsmClients(config: ReplicatorConfig, secrets: LoadedSecrets, log: Logger, onCredential?: CredentialObserver): SiteContext['nethsm'] {
  const pool = new NetHsmClient({ url: config.nethsm.url, tls: nethsmTrust(config), logger: log, timeoutMs: 120_000, connections: config.nethsm.connections, ...(onCredential ? { onCredential } : {}) });
  const m = secrets.nethsm.metrics;
  return {
    pool,
    admin: pool.withAuth(secrets.nethsm.admin.username, secrets.nethsm.admin.password, ROOT_CREDENTIALS.admin),
    backup: pool.withAuth(secrets.nethsm.backup.username, secrets.nethsm.backup.password, ROOT_CREDENTIALS.backup),
    ...(m ? { metrics: pool.withAuth(m.username, m.password, ROOT_CREDENTIALS.metrics) } : {}),
  };
}


export function createPeerClients(config: ReplicatorConfig): Map<string, PeerClient> {
  const tls = readPeerTlsSync(config.tls);
  const peers = new Map<string, PeerClient>();
  for (const p of config.peers) {
    peers.set(p.name, new PeerClient({ url: p.url, identity: { name: p.name, ...(p.fingerprint256 ? { fingerprint256: p.fingerprint256 } : {}) }, tls }));
  }
  return peers;
}

export function createDevice(clients: SiteContext['nethsm'], secrets: LoadedSecrets, barrier: DeviceBarrier, onBackup?: () => void, onRestore?: (namespaces?: readonly string[], certs?: RestoredKeys) => void): Device {
  return new Device({ admin: clients.admin, backup: clients.backup }, barrier, secrets.replication.backupPassphrase, onBackup, onRestore);
}

export function replicationUserIds(config: ReplicatorConfig): Map<string, string> {
  const out = new Map<string, string>();
  for (const ns of config.namespaces) out.set(ns.name, splitUserId(ns.replicationUser.user)?.id ?? ns.replicationUser.user);
  return out;
}

/**
 * Whether `namespace` is in the running config. A namespace removed from it (a restart takes that) keeps its role row,
 * position and history in the state store, but nothing replicates it at this site any more: no sync restores it and no
 * pass reads it (those would change, or report on, what the operator took out of replication).
 */
export function isConfigured(ctx: Pick<SiteContext, 'config'>, namespace: string): boolean {
  return ctx.config.namespaces.some((n) => n.name === namespace);
}

/** Whether this site replicates any namespace from `peer` (a replica of it, by the role rows). */
export function replicatesFrom(ctx: Pick<SiteContext, 'store'>, peer: string): boolean {
  return ctx.store.roles.list().some((r) => r.role === 'replica' && r.primarySite === peer);
}
