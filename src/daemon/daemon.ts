/**
 * The daemon: one per site. Owns every long-lived part, starts them in order and closes them in reverse:
 *   state directory lock → work dir → state store → re-seal thread (the merges', src/backup/resealer.ts) → peer API →
 *   stream → leadership (automatic failover, with etcd) → gateway → admin API → health endpoint → member monitor →
 *   scheduler → key warm-up (in the background, not awaited: key-warmup.ts).
 * Leadership starts before the gateway: a restarted primary of an automatic namespace holds its etcd leader key again,
 * or has stepped down, before any write reaches it.
 * The lock comes before anything touches the state directory: a second daemon on it stops there, changing nothing.
 * `start()` and `close()` are idempotent; `close()` lets an in-flight sync or failover step finish (a restore is never
 * cut in half) before stopping.
 */
import { Resealer } from '../backup/resealer.js';
import { KeyCache } from '../backup/key-cache.js';
import { SnapshotKeyRing } from '../replicator/snapshot-keys.js';
import { RestartPasses } from './restart-pass.js';
import { warmKeys, type WarmupOutcome } from './key-warmup.js';
import { sealingGenerationRecord } from './sealing-generation.js';
import { DaemonRaceReplayer } from './race-replayer.js';
import { randomBytes } from 'node:crypto';
import { readConfigFileSync, readPeerTlsSync } from '../config/files.js';
import { Registry } from 'prom-client';
import { AdminServer } from '../admin/server.js';
import { PRODUCTION_SCRYPT, type ScryptParams } from '../backup/format.js';
import type { ReplicatorConfig } from '../config/schema.js';
import type { LoadedSecrets } from '../config/secrets.js';
import { AntiEntropyPrimaryTooOldError, AntiEntropySourceReplayingError, ConfigInvalidError, DaemonStoppingError, describeError, InternalError, NhrError, PeerRefusedError, StateWriteFailedError, SyncDaemonStoppingError } from '../errors.js';
import { planReload, type ReloadPlan } from '../config/reload-plan.js';
import { parseTrust } from '../nethsm/tls-trust.js';
import { ConfigReloader, type ReloadOutcome } from './config-reload.js';
import { CredentialHealth, DEVICE_BACKUP_PASSPHRASE, describeRefusal, SNAPSHOT_PASSPHRASE } from './credentials.js';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { assertTokenCurrent, tokenOf } from '../concurrency/fencing.js';
import { namespaceLocks } from '../concurrency/namespace-locks.js';
import { GatewayServer } from '../gateway/index.js';
import { HealthServer } from '../health/server.js';
import type { HealthSource } from '../health/source.js';
import { silentLogger, type Logger } from '../log.js';
import { MemberMonitor, type Member, type MemberState } from '../members/monitor.js';
import { GatewayServing } from './gateway-serving.js';
import { servingView } from './serving-view.js';
import { nethsmStateError } from '../members/nethsm-state.js';
import { MemberStateWriter } from '../members/state-writer.js';
import { createReplicatorMetrics, type PrimaryOutdatedKind, type ReplicatorMetrics } from '../metrics/metrics.js';
import { createNetHsmExporter } from '../metrics/nethsm-exporter.js';
import { PeerServer } from '../peer/server.js';
import { WorkDir } from '../replicator/workdir.js';
import { ensureNamespace } from '../roles/apply.js';
import { Scheduler } from '../scheduler/scheduler.js';
import { StateDirLock } from '../state/dir-lock.js';
import { StateStore } from '../state/store.js';
import { createAdminHandlers } from './admin-handlers.js';
import { StreamService } from '../stream/service.js';
import { antiEntropyPass, type AntiEntropyResult } from '../namespaces/antientropy.js';
import { DEFAULT_RANGE_SIZE, readItemLines, readRangeDigests } from '../namespaces/inventory-ranges.js';
import { rangePass } from '../namespaces/range-pass.js';
import { countedLimiter, RateLimiter, type Limiter } from '../util/rate-limiter.js';
import type { PeerClient } from '../peer/client.js';
import type { NamespaceRow } from '../state/roles-repo.js';
import {
  createDevice,
  createNetHsmClients,
  createPeerClients,
  isConfigured,
  NETHSM_MEMBER,
  replicatesFrom,
  nethsmTrust,
  replicationUserIds,
  type SiteContext,
} from './context.js';
import { Failover } from './failover.js';
import { Leadership } from '../failover/leadership.js';
import { createPeerHandlers } from './peer-handlers.js';
import { OneAnswerRefusals, readOneAnswerInventory, restartsUnseenView } from './older-primary.js';
import { nethsmReport, observePeerNethsm, observePeerStatus, peerRestarted, type PeerRestart } from './peer-watch.js';
import { unacknowledgedCounts } from './quarantine.js';
import { buildStatus, heldSyncsView, namespaceStatus, primaryNethsmDown, type StatusExtras } from './status-view.js';
import type { DaemonStatus } from './status.js';
import { NamespaceSync } from './sync.js';
import { SyncCostModel } from '../replicator/cost-model.js';
import { syncCostSamples, syncCostView } from './sync-cost.js';

/**
 * How long a restore's deferred verification waits at most for the streams that restore moved back to apply again what
 * it erased (StreamService.reapplied): their re-apply is a few hundred imports at most, and a stream that cannot make
 * progress (its primary unreachable) must not keep the check, and the next sync of the namespace, waiting longer.
 */
const VERIFY_WAITS_FOR_REAPPLY_MS = 10_000;

function peerIdentity(config: ReplicatorConfig): { certPem: string; keyPem: string } {
  const t = readPeerTlsSync(config.tls);
  return { certPem: t.certPem, keyPem: t.keyPem };
}

export interface DaemonOptions {
  config: ReplicatorConfig;
  secrets: LoadedSecrets;
  logger?: Logger;
  registry?: Registry;
  /** KDF parameters for device backups and snapshots; production unless a test or the demo says otherwise. */
  scrypt?: ScryptParams;
  /** Transport key size when the daemon creates it (default 3072; tests pass 2048 for speed). */
  transportKeyBits?: 2048 | 3072 | 4096;
  /**
   * The file `config` was read from (absolute path, SHA-256 of its bytes) and the environment it was parsed with: the
   * daemon can then reload it (`reloadConfig()`, SIGHUP) and `status` tells when the file differs from what it runs.
   */
  configFile?: { path: string; digest: string; env: Readonly<Record<string, string | undefined>> };
  /**
   * The logger's level is `logging.level` of the config (the daemon command made the logger for this daemon), so a
   * reload may change it. False by default: a logger handed in (tests, the demo) or set by NHR_LOG_LEVEL is left alone.
   */
  logLevelFromConfig?: boolean;
}

export class Daemon {
  readonly ctx: SiteContext;
  readonly syncer: NamespaceSync;
  readonly failover: Failover;
  readonly stream: StreamService;
  /** Automatic failover (undefined without an `etcd` section). */
  readonly leadership: Leadership | undefined;
  private readonly peerServer: PeerServer;
  private readonly adminServer: AdminServer;
  private readonly healthServer: HealthServer;
  private readonly scheduler: Scheduler;
  private readonly gateway: GatewayServer | undefined;
  /** Cross-site serving while this NetHSM is down (`gateway.remoteServing`; `serving.remote` undefined when off). */
  readonly serving: GatewayServing;
  private readonly log: Logger;
  /** Paces anti-entropy's device reads at this site: its own passes and the inventories it serves (one budget). */
  private readonly antiEntropyLimiter: Limiter;
  /**
   * Namespaces with a pass running: a paced pass of a large namespace outlives the scheduler's 15-minute run bound
   * (a million keys at 200 requests/s take hours), so a later tick must not start a second pass alongside.
   */
  private readonly antiEntropyRunning = new Set<string>();
  /**
   * Every anti-entropy pass in flight (scheduled, restart, a test's), as a promise that never rejects: close() awaits
   * them, once the stop cut them, before it closes the state store and the NetHSM pool they use.
   */
  private readonly passesInFlight = new Set<Promise<unknown>>();
  /**
   * Peers whose restart a failed resume saw (resumeMember): the retry (MemberMonitor.resumeFailed) handles it as a
   * restart still, the peer's own flag having been read by the failed attempt.
   */
  private readonly restartUnhandled = new Set<string>();
  /**
   * Namespaces whose passes the primary deferred (mid-restore), or whose pass queued after the primary's restart did
   * not complete (restart-pass.ts), since the first; cleared by a pass that completes.
   */
  private readonly antiEntropyDeferred = new Map<string, { since: number; primary: string; cause: string; try: string }>();
  /** Namespaces whose older primary cannot serve a pass (older-primary.ts): not asked again until it is upgraded. */
  private readonly oneAnswerRefusals: OneAnswerRefusals;
  /** Passes queued after a primary's daemon restarted (`replication.afterPrimaryRestart: stream`; restart-pass.ts). */
  readonly restartPasses: RestartPasses;
  private readonly reloader: ConfigReloader | undefined;
  private startedAt = 0;
  private dirLock: StateDirLock | undefined;
  private state: 'new' | 'started' | 'closed' = 'new';
  private starting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: DaemonOptions) {
    const { config, secrets } = options;
    this.log = options.logger ?? silentLogger;
    const registry = options.registry ?? new Registry();
    const metrics = createReplicatorMetrics({ registry });
    const credentials = new CredentialHealth(this.log);
    const nethsm = createNetHsmClients(config, secrets, this.log, credentials.observe);
    const store = StateStore.inDir(config.stateDir, { logger: this.log });
    const monitor = this.createMonitor(config, nethsm.admin, metrics, store);
    const scrypt = options.scrypt;
    // The one barrier in front of this NetHSM (docs/concurrency.md); its bounds are the gateway's hold settings.
    const barrier = new DeviceBarrier({
      ...(config.gateway ? { maxWaitMs: config.gateway.maxHoldMs, drainTimeoutMs: config.gateway.drainTimeoutMs } : {}),
      check: (token) => assertTokenCurrent((ns) => (store.isOpen ? store.roles.get(ns) : undefined), token),
    });
    this.antiEntropyLimiter = countedLimiter(new RateLimiter({ perSecond: config.antiEntropy.maxRequestsPerSecond }), metrics.antiEntropyDeviceRequestsTotal);
    this.ctx = {
      config,
      site: config.site,
      instance: randomBytes(8).toString('hex'),
      log: this.log,
      store,
      work: new WorkDir(config.stateDir),
      barrier,
      device: createDevice(
        nethsm,
        secrets,
        barrier,
        () => metrics.deviceBackupsTotal.inc(),
        // A merge-restore names the namespaces it restores: the rows of the others stay true; and within them, when it
        // vouches for its keys, the rows of the keys it writes back as they were (key-certs-repo.ts).
        (namespaces, certs) => store.keyCerts.forgetForRestore(namespaces, certs),
      ),
      nethsm,
      peers: createPeerClients(config),
      monitor,
      credentials,
      metrics,
      // The device's backups all use its one backup salt (FACTS.md: `backup-salt`, set with the backup passphrase), so
      // the derived key is kept for the daemon's life: a derivation is about a second with the firmware's scrypt, and
      // each sync opened device backups two to four times. It is no more than the passphrase the daemon holds anyway;
      // zeroed at close.
      // Its salt (public: in every backup's header) is remembered, so the next start derives the key in the background
      // (key-warmup.ts) instead of the first sync on its path.
      deviceOpen: {
        passphrase: secrets.replication.backupPassphrase,
        scrypt: scrypt ?? 'auto',
        passphraseSetting: DEVICE_BACKUP_PASSPHRASE,
        keyCache: new KeyCache(Number.POSITIVE_INFINITY, { onLearnt: (salt, params) => this.rememberBackupSalt(salt, params) }),
      },
      // Primaries seal snapshots under a key kept for a bounded number of snapshots (src/replicator/snapshot-keys.ts), so
      // a replica meets few salts: it keeps the keys of the latest few.
      snapshotOpen: { passphrase: secrets.replication.passphrase, scrypt: scrypt ?? 'auto', passphraseSetting: SNAPSHOT_PASSPHRASE, keyCache: new KeyCache(8) },
      // A dead thread fails the merge it served (that sync fails and says so) and is replaced at the next merge; the
      // metric and this line say it died, and why.
      resealer: new Resealer({
        onDied: (err) => {
          metrics.resealWorkerDeathsTotal.inc();
          this.log.warn({ err }, "the merge's re-seal worker thread died: the merge it served failed; the next merge starts a new thread");
        },
      }),
      // Its generation (salt, birth, uses; public) is recorded in SQLite, so a restart keeps the salt while within the
      // ring's limits and the replicas' keys for it stay good (sealing-generation.ts).
      snapshotKeys: new SnapshotKeyRing(secrets.replication.passphrase, scrypt ?? PRODUCTION_SCRYPT, undefined, undefined, sealingGenerationRecord(store, this.log)),
      replicationPassphrase: secrets.replication.passphrase,
      ...(scrypt ? { snapshotScrypt: scrypt } : {}),
      replicationUserIds: replicationUserIds(config),
      applyLock: namespaceLocks(),
      costModel: new SyncCostModel(),
    };
    this.stream = new StreamService({
      ctx: this.ctx,
      secrets,
      lock: this.ctx.applyLock,
      snapshot: async (ns, reason) => void (await this.syncer.sync(ns, { actor: `stream (${reason.slice(0, 80)})` })),
      ...(options.transportKeyBits ? { transportKeyBits: options.transportKeyBits } : {}),
    });
    this.ctx.roleChanged = (ns) => {
      this.stream.roleChanged(ns);
      // A record kept across the change may be replayable now (primary again at a new epoch), or a retry's token stale.
      this.ctx.raceReplayer?.kick();
      // An administrator restore owed under the old row is forgotten (superseded), or one waiting may run now.
      this.ctx.adminRestorer?.kick();
    };
    this.ctx.streamReapplied = () => this.stream.reapplied(VERIFY_WAITS_FOR_REAPPLY_MS);
    this.ctx.streamRestored = (ns) => this.stream.restored(ns);
    this.ctx.streamRewind = { canRewind: (ns, source, seq) => this.stream.canRewind(ns, source, seq), rewind: (ns, source, seq) => this.stream.rewind(ns, source, seq) };
    this.ctx.raceReplayer = new DaemonRaceReplayer({
      store,
      barrier: this.ctx.barrier,
      log: this.log,
      logs: this.stream.logReplay,
      streams: this.ctx.streamRewind,
      dropOwnEnvelopes: (stop) => this.stream.logReplay.dropOwnEnvelopes(stop),
      isPrimary: (ns) => {
        const row = store.isOpen ? store.roles.get(ns) : undefined;
        // Primary, or stepped down (demote) with the hand-off pending: its snapshot must hold the erased changes.
        return row?.primarySite === this.ctx.site && (row.role === 'primary' || row.role === 'replica');
      },
      onPending: (n) => metrics.raceReplaysPending.set(n),
    });
    // Counted at each scrape from the folder and the acknowledgements: a file removed by hand stops counting too.
    metrics.setQuarantineSource(() => (store.isOpen ? unacknowledgedCounts(this.ctx) : {}));
    this.ctx.streamStatus = (ns) => {
      const s = this.stream.status(ns);
      if (!s) return null;
      return {
        state: s.state,
        position: s.position,
        onDevice: s.onDevice,
        head: s.head,
        changesBehind: s.changesBehind,
        lagSeconds: s.lagSeconds,
        lastHeartbeat: s.lastHeartbeatAt === null ? null : new Date(s.lastHeartbeatAt).toISOString(),
        lastErrorCode: s.lastError?.code ?? null,
        lastError: s.lastError?.message ?? null,
        pendingCatchup: s.pendingCatchup
          ? {
              since: new Date(s.pendingCatchup.since).toISOString(),
              changes: s.pendingCatchup.changes,
              dueAt: new Date(s.pendingCatchup.dueAt).toISOString(),
              reason: s.pendingCatchup.reason,
            }
          : null,
      };
    };
    metrics.setSyncCostSource(() => (store.isOpen ? syncCostSamples(this.ctx) : {}));
    metrics.setPrimaryOutdatedSource(() => (store.isOpen ? this.primaryOutdated() : {}));
    this.serving = new GatewayServing(config, this.ctx.peers, metrics, this.log);
    this.ctx.gatewayServing = () => this.serving.view();
    this.gateway = config.gateway ? this.createGateway(config, config.gateway) : undefined;
    this.failover = new Failover(this.ctx, () => this.syncer);
    this.syncer = new NamespaceSync(this.ctx, async (ns, claim) => void (await this.failover.observe(ns, claim)));
    metrics.setSyncHeldSource(() => this.syncer.racedSync() !== null);
    metrics.setStateWriteSource(() => this.ctx.store.isOpen && this.ctx.store.writeFailure !== undefined);
    this.leadership = config.etcd ? new Leadership(this.ctx, this.failover, config.etcd) : undefined;
    this.failover.leaderGate = this.leadership;
    this.ctx.failoverStatus = (ns) => this.leadership?.status(ns) ?? null;
    this.scheduler = new Scheduler({
      jobs: config.namespaces.flatMap((n) => [
        { name: n.name, schedule: n.schedule, run: () => this.scheduledSync(n.name) },
        { name: `anti-entropy:${n.name}`, schedule: config.antiEntropy.schedule, run: () => this.scheduledAntiEntropy(n.name) },
      ]),
      logger: this.log,
    });
    this.oneAnswerRefusals = new OneAnswerRefusals(this.ctx);
    this.restartPasses = new RestartPasses({
      store,
      log: this.log,
      timing: () => ({ retryIntervalMs: this.ctx.config.recovery.retryIntervalMs, heartbeatIntervalMs: this.ctx.config.stream.heartbeatIntervalMs }),
      pass: (ns) => this.antiEntropy(ns),
      running: (ns) => this.antiEntropyRunning.has(ns),
      configured: (ns) => isConfigured(this.ctx, ns),
      stream: (ns) => this.stream.status(ns),
      defer: (ns, primary, cause, tryHint) => this.deferPass(ns, primary, cause, tryHint),
      snapshotInstead: (ns, primary) => this.snapshotAfterRestart(ns, primary),
      sync: async (ns) => {
        const r = await this.syncer.sync(ns, { actor: 'recovery' });
        return r.outcome === 'applied' ? undefined : r.outcome === 'skipped' ? `skipped: ${r.reason}` : 'not a replica here';
      },
    });
    this.reloader = options.configFile
      ? new ConfigReloader({ ...options.configFile, running: () => this.ctx.config, apply: (next) => this.applyConfig(next), log: this.log })
      : undefined;
    const reloader = this.reloader;
    if (reloader) metrics.setConfigSource(() => reloader.health);
    this.peerServer = new PeerServer({
      host: config.peerApi.listen.host,
      port: config.peerApi.listen.port,
      tls: readPeerTlsSync(config.tls),
      peers: config.peers.map((p) => ({ name: p.name, ...(p.fingerprint256 ? { fingerprint256: p.fingerprint256 } : {}) })),
      handlers: {
        ...createPeerHandlers(this.ctx, this.failover, this.syncer, this.stream, this.antiEntropyLimiter),
        serving: async () =>
          servingView({
            ctx: this.ctx,
            stream: this.stream,
            nethsmServes: this.ctx.monitor.available(NETHSM_MEMBER) && this.serving.remote?.remote !== true,
            gateway: this.gateway !== undefined,
          }),
        nethsm: async () => nethsmReport(this.ctx),
      },
      logger: this.log,
    });
    this.adminServer = new AdminServer({
      socketPath: config.admin.socket,
      handlers: createAdminHandlers(this.ctx, this.failover, this.syncer, this.statusExtras()),
      logger: this.log,
    });
    const exporter = nethsm.metrics ? createNetHsmExporter({ registry, fetch: () => nethsm.metrics!.metrics(), logger: this.log }) : registry;
    this.healthServer = new HealthServer({
      host: config.health.listen.host,
      port: config.health.listen.port,
      source: this.healthSource(),
      metrics: exporter,
      ...(config.health.tls
        ? { tls: { certPem: readConfigFileSync('health.tls.certFile', config.health.tls.certFile), keyPem: readConfigFileSync('health.tls.keyFile', config.health.tls.keyFile) } }
        : {}),
      logger: this.log,
    });
  }

  /** What `nethsm-replicator status` shows (the admin API's answer). */
  status(): Promise<DaemonStatus> {
    return buildStatus(this.ctx, this.syncer, this.statusExtras());
  }

  private statusExtras(): StatusExtras {
    return {
      startedAt: () => this.startedAt || Date.now(),
      nextRun: (n) => this.scheduler.nextRun(n),
      ...(this.reloader ? { configFile: () => this.reloader!.status() } : {}),
      antiEntropyDeferred: (n) => this.deferredPass(n),
      restartPass: (n) => this.restartPasses.view(n),
    };
  }

  /** The bound ports (useful with port 0). */
  get ports(): { peer: number; health: number; gateway: number | undefined } {
    return { peer: this.peerServer.port, health: this.healthPort, gateway: this.gateway?.port };
  }
  private healthPort = 0;

  /** Starts every part in order. Idempotent. Throws (and closes what it started) when a part cannot start. */
  start(): Promise<void> {
    this.starting ??= this.doStart();
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const { ctx } = this;
    try {
      // First: a daemon already on this state directory makes this one stop here (NHR_ERR_STATE_LOCKED).
      this.dirLock = StateDirLock.acquire(ctx.config.stateDir);
      await ctx.work.prepare();
      ctx.store.open();
      // Started now, not at the first merge: its start-up (tens of ms of CPU) would compete with that merge.
      ctx.resealer?.start();
      for (const n of ctx.config.namespaces) {
        const row = ensureNamespace(ctx.store, n.name, ctx.site, n.primary);
        ctx.metrics.setRole(n.name, row.role, row.epoch);
        ctx.metrics.lagLimitSeconds.set({ namespace: n.name }, n.maxLagForPromoteMs / 1000);
        ctx.metrics.namespacePaused.set({ namespace: n.name }, row.paused ? 1 : 0);
        const pos = row.role === 'primary' ? undefined : ctx.store.positions.get(n.name, row.primarySite);
        ctx.metrics.setReplicaDataTime(n.name, pos?.positionTakenAt !== undefined ? pos.positionTakenAt / 1000 : null);
      }
      // Writes made straight to this NetHSM while its daemon was down may have changed certificates the table knows, and
      // a replica's pass after this restart stands in for a snapshot (resumeMember): before the peer API serves an
      // inventory, the namespaces this site is primary of read every certificate once from the device again.
      const own = ctx.store.roles.list().filter((r) => r.role === 'primary' && r.primarySite === ctx.site).map((r) => r.namespace);
      if (own.length > 0) ctx.store.keyCerts.forgetNamespaces(own);
      // Before the peer API and the stream: a namespace that moved away from here with erased writes not re-applied is
      // fenced, and its fence (which exports them) is requested once the stream made the transport key available,
      // before pending replays and the gateway.
      const movedAway = this.failover.fenceMovedAway();
      await this.peerServer.start();
      await this.stream.start();
      this.failover.exportFenced(movedAway);
      // Before the gateway: a replay left pending (a crash after a restore) holds the barrier before any write comes.
      ctx.raceReplayer?.start();
      // A promote's administrator restore left pending (the NetHSM refused it, a crash): retried from now on.
      await this.failover.removeLeftoverHandoffs();
      this.failover.admins.start();
      await this.leadership?.start();
      await this.gateway?.start();
      await this.adminServer.start();
      this.healthPort = (await this.healthServer.start()).port;
      await ctx.monitor.start();
      // Passes queued after a primary's restart that a stop cut short: the primary answers as `ok` now, so no restart
      // would be seen again (restart-pass.ts). After the members' first probe, so a pass finds them as they are.
      this.restartPasses.resume();
      await this.scheduler.start();
      // In the background: start-up and readiness never wait for it, and a sync that comes first joins its derivations.
      this.warmup = warmKeys(ctx);
      this.startedAt = Date.now();
      this.state = 'started';
      // The bound ports (a listener configured with port 0 gets one from the system): what a supervisor reads.
      this.log.info(
        { site: ctx.site, peerPort: this.peerServer.port, healthPort: this.healthPort, gatewayPort: this.gateway?.port, namespaces: ctx.config.namespaces.map((n) => n.name) },
        'daemon started',
      );
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /**
   * The start-up key warm-up (key-warmup.ts): settles once the keys it derives ahead are in the caches; undefined
   * before start. Never rejects. For tests and the log: nothing waits for it.
   */
  warmup: Promise<WarmupOutcome> | undefined;

  /** Remembers the device's backup salt (public) for the next start's warm-up; a failure is only logged. */
  private rememberBackupSalt(salt: Buffer, params: ScryptParams): void {
    try {
      if (this.ctx.store.isOpen) this.ctx.store.backupSalt.remember(salt, params);
    } catch (err) {
      this.log.warn({ err }, 'could not remember the device backup salt; the next start derives its key on the first sync');
    }
  }

  /**
   * Stops in reverse order, after in-flight syncs and fence steps end. Idempotent.
   *
   * Bound: first of all, snapshot downloads in flight are cut and no sync starts one after (NamespaceSync.stop: such
   * syncs are abandoned, answering NHR_ERR_SYNC_DAEMON_STOPPING, not failed), so a primary that stalls its snapshot
   * does not hold the stop for its 30 min idle timeout. So are the device backups only read before any device write of
   * their step (NHR_ERR_DAEMON_STOPPING, never a device fault), running or still waiting at the device barrier or for
   * their turn at the device: an early B1, an apply's B1 (and the last resort's B1 and B2) before its restore, and a
   * backup serving a peer's snapshot or device backup; and an apply's wait for its restore's exclusive hold
   * (docs/concurrency.md, "Waits the stop gives up"). So are the anti-entropy passes' waits (rate limiter, barrier,
   * namespace lock) and device reads; close() awaits the passes, abandoned (DaemonStoppingError, info), before the
   * state store and the NetHSM pool close, a repair already admitted finishing first. What close() still waits
   * for, each bounded by its own step's timeout, and what may take minutes on a large appliance (systemd kills after
   * TimeoutStopSec=15min, deploy/): a sync whose restore began (its exclusive hold granted: the restore, the log replay
   * after it and the verification's backup B3: a restore is never cut in half, nor the check that it is whole), an
   * administrator restore, a fence or demote step already running (its backups included), and a device call's own
   * timeout.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const { ctx } = this;
    // Each stage logged at debug: a stop that hangs shows where.
    const stage = async (name: string, fn: () => Promise<unknown> | unknown) => {
      this.log.debug({ stage: name }, 'stopping');
      await fn();
    };
    await stage('scheduler', () => this.scheduler.close());
    this.restartPasses.close();
    // Before anything waits (the admin socket for an operator's `sync`, the stream for its catch-up snapshot, the peer
    // API for a snapshot being served): cut the snapshot downloads, which may otherwise wait out a stalled primary's
    // idle timeout (stop-fetch), and the device backups only read, which take minutes on a large device (stop-backup).
    await stage('sync downloads and device backups only read', () => this.syncer.stop());
    // The same signal cut the anti-entropy passes' waits and reads (a repair already begun ends first): awaited here,
    // before the store and the pool they use close under them (a pass that failed against those was logged as failed).
    await stage('anti-entropy passes', () => Promise.all([...this.passesInFlight]));
    await stage('health', () => this.healthServer.close().catch(() => undefined));
    await stage('admin', () => this.adminServer.close());
    await stage('gateway', () => this.gateway?.close());
    await stage('racing-write replays', () => ctx.raceReplayer?.close());
    await stage('administrator restores', () => this.failover.admins.close());
    await stage('leadership', () => this.leadership?.close());
    await stage('stream', () => this.stream.close());
    await stage('peer API', () => this.peerServer.close());
    await stage('syncs', () => this.syncer.drain());
    await stage('failover', () => this.failover.drain());
    await stage('members', () => ctx.monitor.close());
    await stage('peer clients', () => Promise.all([...ctx.peers.values()].map((p) => p.close())));
    await stage('NetHSM pool', () => ctx.nethsm.pool.close());
    await stage('re-seal thread', () => ctx.resealer?.close());
    ctx.deviceOpen.keyCache?.clear();
    ctx.snapshotOpen.keyCache?.clear();
    ctx.snapshotKeys?.close();
    if (ctx.store.isOpen) ctx.store.close();
    // Last: nothing of this daemon touches the state directory any more.
    this.dirLock?.release();
    if (this.state === 'started') this.log.info({ site: ctx.site }, 'daemon stopped');
    this.state = 'closed';
  }

  /** The cron job of one namespace: pull at a replica, finish a fence, nothing at the primary. */
  private async scheduledSync(namespace: string): Promise<void> {
    const row = this.ctx.store.roles.get(namespace);
    if (!row || row.paused || row.role === 'primary') return;
    if (!this.ctx.monitor.available(NETHSM_MEMBER) || !this.ctx.monitor.available(row.primarySite)) return;
    try {
      if (row.role === 'fenced') await this.failover.resumeFenced(namespace);
      else await this.syncer.sync(namespace, { actor: 'schedule' });
    } catch (err) {
      // The daemon's stop cut the sync: abandoned, not failed (the sync logged it at info); it runs after the start.
      if (!(err instanceof SyncDaemonStoppingError)) throw err;
    }
  }

  /**
   * Reads the config file again and applies what a running daemon can change (SIGHUP). Never throws: a file that does
   * not validate, or a setting that cannot be applied, changes nothing and is reported in the outcome, the log and
   * `status`. Throws InternalError when the daemon was not given its file (`configFile`).
   */
  async reloadConfig(): Promise<ReloadOutcome> {
    if (!this.reloader) throw new InternalError('this daemon was started from a config object, not a file: nothing to reload');
    await this.starting?.catch(() => undefined);
    return this.reloader.reload();
  }

  /**
   * Applies `next`'s reloadable settings (src/config/reload-plan.ts) to the running parts: the NetHSM's TLS trust (the
   * daemon's pool and the gateway's), the peers' pins (peer API server and clients), the schedules, the log level.
   * Everything that can fail (reading a CA file) is done before anything changes, so a failure changes nothing.
   */
  private async applyConfig(next: ReplicatorConfig): Promise<ReloadPlan> {
    const { ctx } = this;
    const plan = planReload(ctx.config, next);
    const eff = plan.effective;
    const trust = nethsmTrust(eff);
    try {
      parseTrust(trust);
    } catch (err) {
      throw new ConfigInvalidError(`nethsm.tls cannot be used: ${(err as Error).message}`, { path: 'nethsm.tls', cause: err });
    }
    const changed = [...plan.changed];
    if (ctx.nethsm.pool.setTrust(trust)) {
      this.gateway?.setNethsmTrust(trust);
      // Same setting, new content: the CA file was replaced.
      if (!changed.includes('nethsm.tls')) changed.push('nethsm.tls.caFile (its content)');
      void ctx.monitor.retryNow(NETHSM_MEMBER);
    }
    for (const p of eff.peers) {
      if (ctx.peers.get(p.name)?.setPin(p.fingerprint256)) void ctx.monitor.retryNow(p.name);
    }
    this.peerServer.setPeers(eff.peers.map((p) => ({ name: p.name, ...(p.fingerprint256 ? { fingerprint256: p.fingerprint256 } : {}) })));
    for (const n of eff.namespaces) {
      await this.scheduler.reschedule(n.name, n.schedule);
      await this.scheduler.reschedule(`anti-entropy:${n.name}`, eff.antiEntropy.schedule);
    }
    if (this.options.logLevelFromConfig) {
      this.log.level = eff.logging.level;
      this.gateway?.setLogLevel(eff.logging.level);
    } else if (changed.includes('logging.level')) {
      this.log.warn({ level: eff.logging.level }, 'logging.level not applied: the log level is set from outside the config (NHR_LOG_LEVEL)');
    }
    ctx.config = eff;
    return { ...plan, changed };
  }

  /**
   * The gateway: forwards applications' calls to this site's NetHSM, refuses writes to replica namespaces (naming the
   * primary), and holds writes while the daemon restores: every forwarded write is a shared holder of the device
   * barrier, which the daemon's merge-restores and fence exports hold exclusively.
   */
  private createGateway(config: ReplicatorConfig, g: NonNullable<ReplicatorConfig['gateway']>): GatewayServer {
    const peerGateways = new Map(config.peers.filter((p) => p.gatewayUrl).map((p) => [p.name, p.gatewayUrl!]));
    const remoteServing = this.serving.remote;
    return new GatewayServer({
      site: config.site,
      host: g.listen.host,
      port: g.listen.port,
      tls: { certPem: readConfigFileSync('gateway.certFile', g.certFile), keyPem: readConfigFileSync('gateway.keyFile', g.keyFile) },
      nethsm: { url: config.nethsm.url, tls: nethsmTrust(config), connections: g.nethsmConnections },
      maxWriteBodyBytes: g.maxWriteBodyBytes,
      writeBodyTimeoutMs: g.writeBodyTimeoutMs,
      requestTimeoutMs: g.requestTimeoutMs,
      handshakeTimeoutMs: g.handshakeTimeoutMs,
      gate: this.ctx.barrier,
      observer: this.stream.capture,
      // A re-apply running after its merge-restore's hold holds only the writes that could meet it (race-replayer.ts).
      replays: { running: (namespace) => this.ctx.raceReplayer?.running(namespace) },
      roles: {
        roleOf: (namespace) => {
          const row = this.ctx.store.isOpen ? this.ctx.store.roles.get(namespace) : undefined;
          if (!row) return undefined;
          const url = g.forwardToPrimary ? peerGateways.get(row.primarySite) : undefined;
          // The gateway lets a write that meets a pending replay while a hold runs wait at the gate (that hold may be
          // the one replaying) and decides again once it is admitted (server.ts).
          const replay = row.role === 'primary' && this.ctx.raceReplayer!.isPending(namespace);
          const admins = row.role === 'primary' && this.failover.admins.isPending(namespace);
          return {
            role: row.role,
            epoch: row.epoch,
            primarySite: row.primarySite,
            ...(url ? { primaryGatewayUrl: url } : {}),
            ...(replay ? { replayPending: true } : {}),
            ...(admins ? { adminsPending: true } : {}),
          };
        },
      },
      // Other sites' gateways present certificates of the group CA.
      // They check this gateway's certificate in turn: it presents the site's peer certificate (mutual TLS).
      ...(g.forwardToPrimary || remoteServing
        ? { primaryGateways: { tls: { caPem: readConfigFileSync('tls.caFile', config.tls.caFile) }, clientIdentity: peerIdentity(config) } }
        : {}),
      ...(remoteServing ? { remoteServing } : {}),
      // Calls forwarded by other gateways (remote serving, writes for the primary) must come with a group certificate.
      ...(g.forwardToPrimary || remoteServing ? { peerCaPem: readConfigFileSync('tls.caFile', config.tls.caFile) } : {}),
      // With remote serving, a forwarded call that could not reach the NetHSM marks it down at once (the next probe may
      // be a retry interval away), so the calls after it are served by a peer.
      ...(remoteServing
        ? {
            onNethsmUnreachable: (err: Error) => {
              if (this.ctx.monitor.available(NETHSM_MEMBER)) this.ctx.monitor.reportFailure(NETHSM_MEMBER, err);
            },
            // A 412 to a namespace call: the NetHSM is not Operational (Locked, …); check its state now.
            onNethsmNotOperational: () => {
              if (this.ctx.monitor.available(NETHSM_MEMBER)) void this.ctx.monitor.checkNow(NETHSM_MEMBER);
            },
          }
        : {}),
      onRequest: (e) => {
        const known = e.namespace && config.namespaces.some((n) => n.name === e.namespace) ? e.namespace : '_other';
        this.ctx.metrics.gatewayRequestsTotal.inc({ namespace: known, class: e.class, outcome: e.outcome });
        this.serving.countRequest(e.outcome, e.peer);
      },
      logger: this.log,
    });
  }

  /**
   * One anti-entropy pass at a replica: compare the namespace's inventory with the primary's by ranges, repair what
   * the API can (tags, labels, certificates, replica-only keys), and take a snapshot for the rest. Both sites read at
   * once, without locks (reads only); the re-read of differing keys and the repair run inside the barrier (shared:
   * single-key writes) and the namespace's lock, so no sync or stream apply of the namespace runs alongside them.
   * A primary without the range routes (an older version) gets the old one-answer pass; when that cannot carry the
   * namespace (AntiEntropyPrimaryTooOldError) the passes show as deferred and do not ask that primary again until it
   * answers as another version. Returns what it found; undefined when no pass runs here (not a replica, paused,
   * primary or device unavailable, or a pass of the namespace still running).
   */
  async antiEntropy(namespace: string): Promise<AntiEntropyResult | undefined> {
    const { ctx } = this;
    const row = ctx.store.roles.get(namespace);
    if (!row || row.paused || row.role !== 'replica' || row.primarySite === ctx.site) return undefined;
    const peer = ctx.peers.get(row.primarySite);
    if (!peer || !ctx.monitor.available(row.primarySite) || !ctx.monitor.available(NETHSM_MEMBER)) return undefined;
    if (this.antiEntropyRunning.has(namespace)) {
      ctx.log.info({ namespace }, 'anti-entropy pass still running; this one skipped');
      return undefined;
    }
    this.antiEntropyRunning.add(namespace);
    const pass = this.runAntiEntropy(namespace, row, peer);
    const settled = pass.then(
      () => undefined,
      () => undefined,
    );
    this.passesInFlight.add(settled);
    void settled.then(() => this.passesInFlight.delete(settled));
    return pass;
  }

  /**
   * One pass of `antiEntropy`, which checked that it may run. The daemon's stop abandons it (DaemonStoppingError,
   * logged at info): nothing is shown as deferred or failed, and a restart pass keeps its record for the next start.
   */
  private async runAntiEntropy(namespace: string, row: NamespaceRow, peer: PeerClient): Promise<AntiEntropyResult> {
    const { ctx } = this;
    const stop = this.syncer.stopping;
    const startedAt = Date.now();
    try {
      stop.throwIfAborted();
      this.oneAnswerRefusals.check(namespace, peer.name);
      const result = await this.antiEntropyPass(namespace, row, peer);
      this.antiEntropyDeferred.delete(namespace);
      this.oneAnswerRefusals.clear(namespace);
      this.restartPasses.completed(namespace, startedAt);
      return result;
    } catch (err) {
      if (stop.aborted) throw this.passAbandoned(namespace, peer.name, err, stop);
      if (err instanceof AntiEntropyPrimaryTooOldError) throw this.primaryTooOld(namespace, peer.name, err);
      const replaying = sourceReplaying(err, namespace, peer.name);
      if (!replaying) {
        this.antiEntropyDeferred.delete(namespace);
        throw err;
      }
      this.deferPass(
        namespace,
        peer.name,
        `anti-entropy passes do not complete (nothing repaired): its primary ${peer.name} is re-applying writes a restore erased there, so its inventory cannot be trusted yet (${replaying.code})`,
        replaying.hint,
      );
      // Transient, and nothing was repaired: said as such (cause and remedy), not as a failure to look into.
      ctx.log.info(
        { namespace, peer: peer.name, code: replaying.code, cause: replaying.message, try: replaying.hint },
        'anti-entropy pass not completed: the primary is re-applying writes a restore erased, so its inventory cannot be trusted yet; nothing was repaired, the next pass compares again',
      );
      throw replaying;
    } finally {
      this.antiEntropyRunning.delete(namespace);
    }
  }

  /**
   * A pass the daemon's stop cut (its wait given up, its reads stopped, or the snapshot it asked for abandoned): logged
   * at info, with the error it ended on when that was not the stop itself (an error as the stop came is not looked
   * into: the next pass after the start compares again). Returns the error the pass rejects with.
   */
  private passAbandoned(namespace: string, primary: string, err: unknown, stop: AbortSignal): DaemonStoppingError {
    // The stop's own reason, possibly wrapped (a peer transfer it cut is PeerUnreachableError with it as cause).
    let cut = false;
    for (let e = err, depth = 0; e !== undefined && !cut && depth < 4; e = (e as { cause?: unknown } | null)?.cause, depth++) {
      cut = e === stop.reason || e instanceof SyncDaemonStoppingError;
    }
    this.ctx.log.info(
      { namespace, peer: primary, ...(cut ? {} : { cause: describeError(err) }) },
      'anti-entropy pass abandoned: the daemon is stopping (a repair already begun was finished); the next pass after the start compares again',
    );
    return new DaemonStoppingError(`anti-entropy pass of namespace ${namespace} abandoned: the daemon is stopping`, { namespace });
  }

  /**
   * A pass the namespace's older primary cannot serve: shown as deferred (cause and "upgrade the primary"), logged at
   * warn when first found (a pass refused for it again, without asking the primary, at debug). Returns the error.
   */
  private primaryTooOld(namespace: string, primary: string, err: AntiEntropyPrimaryTooOldError): AntiEntropyPrimaryTooOldError {
    const known = this.antiEntropyDeferred.get(namespace)?.cause === err.message;
    this.oneAnswerRefusals.note(namespace, primary, err);
    this.deferPass(namespace, primary, err.message, err.hint);
    const fields = { namespace, peer: primary, code: err.code, cause: err.message, try: err.hint };
    if (known) this.ctx.log.debug(fields, 'anti-entropy pass not run: its primary cannot serve it until upgraded');
    else this.ctx.log.warn(fields, 'anti-entropy pass cannot run against this primary: no pass of the namespace asks it again until it answers as another version');
    return err;
  }

  /** For `primary_outdated`: per replica namespace here, what its older primary lacks (an empty list: nothing). */
  private primaryOutdated(): Record<string, PrimaryOutdatedKind[]> {
    const out: Record<string, PrimaryOutdatedKind[]> = {};
    for (const n of this.ctx.config.namespaces) {
      const row = this.ctx.store.roles.get(n.name);
      if (row?.role !== 'replica' || row.primarySite === this.ctx.site) continue;
      out[n.name] = [
        ...(restartsUnseenView(this.ctx, row) ? (['restarts-unseen'] as const) : []),
        ...(this.oneAnswerRefusals.stands(n.name, row.primarySite) ? (['inventory-too-large'] as const) : []),
      ];
    }
    return out;
  }

  /** Shows the namespace's passes as deferred (status, /health/ready), keeping the time of the first deferral. */
  private deferPass(namespace: string, primary: string, cause: string, tryHint: string): void {
    const since = this.antiEntropyDeferred.get(namespace)?.since ?? Date.now();
    this.antiEntropyDeferred.set(namespace, { since, primary, cause, try: tryHint });
  }

  /**
   * The namespace's passes deferred by its primary mid-restore, while this site is still a replica of that primary
   * (status, /health/ready); a site that stopped being one runs no pass that would clear it, so it is dropped then.
   */
  private deferredPass(namespace: string): { since: number; cause: string; try: string } | undefined {
    const d = this.antiEntropyDeferred.get(namespace);
    if (!d) return undefined;
    const row = this.ctx.store.isOpen ? this.ctx.store.roles.get(namespace) : undefined;
    if (row?.role === 'replica' && row.primarySite === d.primary) return d;
    this.antiEntropyDeferred.delete(namespace);
    return undefined;
  }

  /** The scheduled pass: a primary mid-restore is logged by `antiEntropy` and waits for the next tick, not a failure. */
  private async scheduledAntiEntropy(namespace: string): Promise<AntiEntropyResult | undefined> {
    try {
      return await this.antiEntropy(namespace);
    } catch (err) {
      // Or the pass was cut by the daemon's stop (abandoned, not failed: logged at info by antiEntropy).
      // Or a primary that cannot serve the pass until upgraded: status shows that (antiEntropy), not an error per tick.
      if (err instanceof AntiEntropySourceReplayingError || err instanceof DaemonStoppingError || err instanceof AntiEntropyPrimaryTooOldError) return undefined;
      throw err;
    }
  }

  private async antiEntropyPass(namespace: string, row: NamespaceRow, peer: PeerClient): Promise<AntiEntropyResult> {
    const { ctx } = this;
    const token = tokenOf(row, 'anti-entropy repair');
    // The daemon's stop gives up the waits for the barrier and the namespace's lock (nothing written yet); once both
    // are held, the pass's repair runs whole (rangePass, `signal`).
    const signal = this.syncer.stopping;
    const exclusive = <T>(fn: () => Promise<T>): Promise<T> =>
      ctx.barrier.shared(() => ctx.applyLock(namespace).run(fn, signal), { tokens: [token], wait: 'unbounded', scope: namespace, signal, purpose: `anti-entropy ${namespace}` });
    const common = {
      namespace,
      replica: this.stream.client(namespace),
      fetchCert: (id: string) => peer.certificate(namespace, id),
      setDrift: (c: { missing: number; extra: number; differs: number }) => ctx.metrics.setDrift(namespace, c),
      knownKey: (id: string) => ctx.store.applied.knowsKey(namespace, id) || ctx.store.changelog.knowsKey(namespace, id),
      signal,
    };
    const site = { namespace, site: peer.name };
    let result: AntiEntropyResult;
    try {
      result = await rangePass({
        ...common,
        limiter: this.antiEntropyLimiter,
        exclusive,
        workDir: ctx.work.work,
        certs: { repo: ctx.store.keyCerts, scrubPasses: ctx.config.antiEntropy.certScrubPasses },
        primaryRanges: async (signal) => readRangeDigests(await peer.inventoryRanges(namespace, DEFAULT_RANGE_SIZE, { signal }), { ...site, rangeSize: DEFAULT_RANGE_SIZE }),
        primaryItems: (ranges) => ({
          [Symbol.asyncIterator]: async function* () {
            yield* readItemLines(await peer.inventoryItems(namespace, ranges, { signal }), ranges, site);
          },
        }),
      });
    } catch (err) {
      if (!(err instanceof PeerRefusedError && err.status === 404 && err.remoteCode === 'NHR_ERR_PEER_MESSAGE_INVALID')) throw err;
      ctx.log.warn({ namespace, peer: peer.name }, 'primary serves no inventory ranges (older version): one-answer anti-entropy pass');
      result = await exclusive(() => antiEntropyPass({ ...common, primary: () => readOneAnswerInventory(peer, namespace) }));
    }
    ctx.log.info(
      {
        namespace,
        missing: result.diff.missing.length,
        extra: result.diff.extra.length,
        differs: result.diff.differs.length,
        repaired: result.repaired,
        snapshot: result.needsSnapshot,
        // Certificates of this site's read: from the table, read for want of a row, read by the scrub.
        ...('certReads' in result && result.certReads ? { certs: result.certReads } : {}),
      },
      'anti-entropy pass',
    );
    if (result.needsSnapshot) await this.syncer.sync(namespace, { actor: 'anti-entropy' });
    return result;
  }

  private createMonitor(config: ReplicatorConfig, admin: SiteContext['nethsm']['admin'], metrics: ReplicatorMetrics, store: StateStore): MemberMonitor {
    const members: Member[] = [
      {
        name: NETHSM_MEMBER,
        probe: async () => {
          // Locked, Unprovisioned, Failed: named as such (member status locked / not-operational), not "unreachable".
          const notOperational = nethsmStateError(await admin.healthState());
          if (notOperational) throw notOperational;
          // /health/state needs no login: log in as the root Administrator too, so a refused credential shows at start
          // (NetHsmCredentialRefusedError, seen by CredentialHealth) and not first in a sync.
          await admin.systemInfo();
        },
      },
      ...config.peers.map((p) => ({
        name: p.name,
        probe: async () => {
          const peer = this.ctx.peers.get(p.name)!;
          await observePeerStatus(this.ctx, this.failover, peer, await peer.status());
          await observePeerNethsm(this.ctx, peer);
          if (this.ctx.monitor.available(NETHSM_MEMBER)) this.failover.retryFenced(p.name);
        },
      })),
    ];
    // Through the group commit: a member's row is written at every probe, and a synchronous commit fsyncs on the event loop.
    const saved = new MemberStateWriter(store, this.log);
    return new MemberMonitor({
      members,
      retryIntervalMs: config.recovery.retryIntervalMs,
      maxAttempts: config.recovery.maxAttempts,
      logger: this.log,
      onChange: (s: Readonly<MemberState>) => {
        metrics.setMemberStatus(s.name, s.status, s.consecutiveFailures);
        if (s.name === NETHSM_MEMBER) this.serving.nethsmChecked(s);
        saved.save(s);
      },
      onRecovered: (name) => {
        // This site's NetHSM is back: an administrator restore it failed need not wait out its backoff.
        if (name === NETHSM_MEMBER) this.failover.admins.kick();
        void this.resumeMember(name);
      },
    });
  }

  /**
   * A member answered again: resume its work, then mark it ok. After this site's own NetHSM comes back a replica takes a
   * snapshot of each namespace: its device may have lost or gained anything. From a primary, the stream resumes from
   * the replica's position by itself (a catch-up snapshot only if the log no longer covers it): every change the
   * primary acknowledged is in its change log, even across a restart of its daemon (an intent open at a crash is
   * settled from its device at start and enters the log; a lost state directory is a new log, `snapshot-required`).
   * What no stream carries are writes made straight to its NetHSM around its daemon: when the daemon restarted
   * meanwhile, an anti-entropy pass of each namespace is queued (restart-pass.ts) to find those at its own pace,
   * without holding writes; `replication.afterPrimaryRestart: snapshot` takes a full snapshot sync instead (a device
   * backup at both sites and a restore here, with writes held: at millions of keys, per replica and per restart), and
   * so does a namespace never synced from that primary (snapshotAfterRestart). A primary of an older version names no
   * instance, so its restarts cannot be told from blips: its recovery resumes the stream only, as after a blip (a pass
   * or snapshot at each blip would cost a read of every namespace, or a restore, for what the scheduled passes find;
   * its upgrade's own restart is seen, older-primary.ts), and status says so.
   */
  private async resumeMember(name: string): Promise<void> {
    const { ctx } = this;
    let restarted = false;
    try {
      const seen: PeerRestart = name === NETHSM_MEMBER ? 'same' : await this.peerRestartedNow(name);
      // A restart a failed attempt saw counts for its retry too (restartUnhandled).
      restarted = name !== NETHSM_MEMBER && (seen === 'restarted' || this.restartUnhandled.has(name));
      if (seen === 'unknown' && replicatesFrom(ctx, name)) {
        ctx.log.info({ member: name }, "the primary's peer status names no daemon instance (an older nethsm-replicator): a restart cannot be told from a blip, so its namespaces resume streaming without an anti-entropy pass or snapshot");
      }
      // Started together, so the syncs of several namespaces coalesce into one merge-restore (apply-batch.ts).
      const syncs: Promise<unknown>[] = [];
      for (const row of ctx.store.roles.list()) {
        const fromIt = name === NETHSM_MEMBER || row.primarySite === name;
        // A namespace removed from the config keeps its row: it is no longer replicated here (no sync, no pass).
        if (!fromIt || row.role !== 'replica' || row.primarySite === ctx.site || !isConfigured(ctx, row.namespace)) continue;
        if (row.paused) {
          // Nothing runs while paused, but the writes around the primary's daemon are still there after the resume:
          // the pass, or the snapshot sync where one stands in for it, is queued (it waits while the namespace is
          // paused, and which of the two runs is decided then: restart-pass.ts), not skipped.
          if (restarted) {
            ctx.log.info({ namespace: row.namespace, member: name }, "the primary's daemon restarted while it was down; the namespace is paused here: the check for writes made around its daemon (anti-entropy pass or snapshot sync, as replication.afterPrimaryRestart says then) is queued for its resume");
            this.restartPasses.queue(row.namespace, name);
          }
          continue;
        }
        const snapshot = name === NETHSM_MEMBER ? 'its own NetHSM came back' : restarted ? this.snapshotAfterRestart(row.namespace, name) : undefined;
        if (snapshot === undefined) this.resumeStream(row.namespace, name, restarted);
        else {
          if (restarted) ctx.log.info({ namespace: row.namespace, member: name, reason: snapshot }, `the primary's daemon restarted while it was down: snapshot sync (${snapshot})`);
          syncs.push(this.syncer.sync(row.namespace, { actor: 'recovery' }));
        }
      }
      // Every sync is awaited (none may reject unheard); the first failure is this resume's, as before.
      const failed = (await Promise.allSettled(syncs)).find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      for (const row of ctx.store.roles.list()) {
        const fromIt = name === NETHSM_MEMBER || row.primarySite === name;
        if (!row.paused && fromIt && row.role === 'fenced') await this.failover.resumeFenced(row.namespace);
      }
      this.restartUnhandled.delete(name);
      ctx.monitor.markOk(name);
    } catch (err) {
      if (err instanceof SyncDaemonStoppingError) return ctx.log.info({ member: name }, 'resuming a recovered member not finished: the daemon is stopping; it runs again after the start');
      ctx.log.warn({ member: name, err }, 'resuming a recovered member failed; retried at recovery.retryInterval');
      if (restarted) this.restartUnhandled.add(name);
      ctx.monitor.resumeFailed(name, err);
    }
  }

  /**
   * Why a namespace replicated from `primary`, whose daemon restarted, takes a snapshot sync rather than the stream and
   * a pass; undefined for the stream. A replica with no position from it was never synced from it: its namespace
   * account may not exist on this NetHSM yet, so no pass could read it (and its stream would start with a snapshot).
   */
  private snapshotAfterRestart(namespace: string, primary: string): string | undefined {
    if (this.ctx.config.replication.afterPrimaryRestart === 'snapshot') return 'replication.afterPrimaryRestart: snapshot';
    const pos = this.ctx.store.positions.get(namespace, primary);
    if (pos?.epoch === undefined || pos.seq === undefined) return 'no position from it yet: never synced from it, so no anti-entropy pass can stand in';
    return undefined;
  }

  /** Wakes the namespace's stream from `primary`; after its daemon restarted, also queues an anti-entropy pass. */
  private resumeStream(namespace: string, primary: string, restarted: boolean): void {
    this.stream.resume(namespace);
    if (!restarted) return;
    const pos = this.ctx.store.positions.get(namespace, primary);
    const from = `${pos?.epoch}.${pos?.seq}`;
    this.ctx.log.info(
      { namespace, member: primary, position: from },
      `the primary's daemon restarted while it was down: stream resumed from ${from}; anti-entropy pass queued to find writes made around its daemon while it was down (once the stream has applied the primary's head)`,
    );
    this.restartPasses.queue(namespace, primary);
  }

  /**
   * Whether peer `name` restarted while it was away, from its status asked now: recovery may have come from a real
   * call (the stream reconnecting) with no status read since the peer came back. No answer counts as a restart.
   */
  private async peerRestartedNow(name: string): Promise<PeerRestart> {
    const peer = this.ctx.peers.get(name);
    if (!peer) return 'restarted';
    try {
      await observePeerStatus(this.ctx, this.failover, peer, await peer.status());
    } catch {
      return 'restarted';
    }
    return peerRestarted(this.ctx, name);
  }

  /**
   * Why this site cannot serve reads and crypto now: its NetHSM is down (Locked, unreachable, not Operational) and its
   * gateway does not serve from a peer instead (`gateway.remoteServing`). Undefined when it can.
   */
  private unavailableHere(): string | undefined {
    if (this.ctx.monitor.available(NETHSM_MEMBER) || this.serving.view()?.serving === 'remote') return undefined;
    const m = this.ctx.monitor.get(NETHSM_MEMBER);
    return `this site's NetHSM is ${m?.status ?? 'unavailable'}${m?.lastErrorCode ? ` (${m.lastErrorCode})` : ''}: its gateway cannot serve reads or signing`;
  }

  /** `/health/ready` warnings: one per configured namespace whose role row `view` finds something in. */
  private namespaceWarnings(view: (row: NamespaceRow) => { cause: string; try: string } | null | undefined, prefix: string): string[] {
    if (!this.ctx.store.isOpen) return [];
    return this.ctx.store.roles.list().flatMap((row) => {
      const v = isConfigured(this.ctx, row.namespace) ? view(row) : undefined;
      return v ? [`namespace ${row.namespace}: ${prefix}${v.cause}. Try: ${v.try}`] : [];
    });
  }

  private healthSource(): HealthSource {
    return {
      ready: async () => {
        const checks: Record<string, { ok: boolean; detail?: string }> = {};
        try {
          const notOperational = nethsmStateError(await this.ctx.nethsm.admin.healthState());
          checks.nethsm = notOperational ? { ok: false, detail: `${notOperational.message.replace(/^the /, '')}. Try: ${notOperational.hint}` } : { ok: true };
        } catch (err) {
          // Like the Locked case above: the cause and what to do (an unreachable NetHSM's error carries its hint).
          const hint = err instanceof NhrError ? ` Try: ${err.hint}` : '';
          checks.nethsm = { ok: false, detail: `${err instanceof Error ? err.message : 'unreachable'}.${hint}` };
        }
        const serving = this.serving.view();
        if (serving?.serving === 'remote') checks.gateway = { ok: false, detail: `serving remotely: ${serving.cause}. Try: ${serving.try}` };
        const refused = this.ctx.credentials.refused().filter((c) => c.critical);
        checks.credentials = refused.length === 0 ? { ok: true } : { ok: false, detail: refused.map(describeRefusal).join('; ') };
        try {
          this.ctx.store.transaction(() => this.ctx.store.db.prepare('SELECT 1').get());
          // The store answers, but its last write may have failed for want of storage (a full or read-only disk):
          // that stands until a write succeeds again.
          const failed = this.ctx.store.writeFailure;
          checks.state = failed ? { ok: false, detail: `${failed.message} (since ${new Date(failed.at).toISOString()}). Try: ${StateWriteFailedError.defaultHint}` } : { ok: true };
        } catch (err) {
          checks.state = { ok: false, detail: err instanceof Error ? err.message : 'state store not writable' };
        }
        // Costs near their bounds, and syncs holding writes for their whole sequence after one raced, are warnings: the
        // site still replicates, so they never make it unready.
        const costs = this.ctx.store.isOpen
          ? this.ctx.config.namespaces.flatMap((n) => (syncCostView(this.ctx, n.name)?.warnings ?? []).map((w) => `${w.cause}. Try: ${w.try}`))
          : [];
        const replays = this.ctx.raceReplayer?.view();
        if (replays) checks.replays = { ok: false, detail: `${replays.cause}. Try: ${replays.try}` };
        const admins = this.ctx.store.isOpen ? this.ctx.config.namespaces.flatMap((n) => {
          const v = this.failover.admins.view(n.name);
          return v ? [`namespace ${n.name}: ${v.cause}. Try: ${v.try}`] : [];
        }) : [];
        if (admins.length > 0) checks.administrators = { ok: false, detail: admins.join('; ') };
        const held = heldSyncsView(this.syncer);
        // Passes deferred by a primary mid-restore or queued after its restart and not completed: a warning (never unready).
        const deferred = [...this.antiEntropyDeferred.keys()].flatMap((ns) => {
          const d = this.deferredPass(ns);
          return d ? [`namespace ${ns}: ${d.cause}. Try: ${d.try}`] : [];
        });
        // A primary of an older version whose restarts cannot be seen: a warning while the rolling upgrade goes on.
        const unseen = this.namespaceWarnings((row) => restartsUnseenView(this.ctx, row), '');
        // A replica's primary whose NetHSM is down: writes fail there, but this site serves reads (a warning).
        const primaryDown = this.namespaceWarnings((row) => primaryNethsmDown(this.ctx, row), 'no writable primary: ');
        const all = [...costs, ...deferred, ...unseen, ...primaryDown];
        const warnings = held ? [...all, `${held.cause}. Try: ${held.try}`] : all;
        return { ready: Object.values(checks).every((c) => c.ok), checks, ...(warnings.length > 0 ? { warnings } : {}) };
      },
      namespaceRole: (namespace) => {
        const s = this.ctx.store.isOpen ? namespaceStatus(this.ctx, this.syncer, undefined, namespace) : undefined;
        if (!s) return undefined;
        const unavailable = this.unavailableHere();
        return { role: s.role, lagSeconds: s.lagSeconds, lagLimitSeconds: s.lagLimitSeconds, epoch: s.epoch, ...(unavailable ? { unavailable } : {}) };
      },
    };
  }
}

/**
 * The primary refused a pass's inventory (or certificate) because a restore there erased writes of the namespace (503
 * before its answer began, or an error line cutting it off): as AntiEntropySourceReplayingError; undefined otherwise.
 */
function sourceReplaying(err: unknown, namespace: string, site: string): AntiEntropySourceReplayingError | undefined {
  if (err instanceof AntiEntropySourceReplayingError) return err;
  if (err instanceof PeerRefusedError && err.remoteCode === AntiEntropySourceReplayingError.code) {
    return new AntiEntropySourceReplayingError(`the primary ${site} refused the inventory of namespace ${namespace}: ${err.message}`, { namespace, site, cause: err });
  }
  return undefined;
}
