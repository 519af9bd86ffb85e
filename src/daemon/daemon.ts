/**
 * The daemon: one per site. Owns every long-lived part, starts them in order and closes them in reverse:
 *   state directory lock → work dir → state store → peer API → stream → gateway → admin API → health endpoint →
 *   member monitor → scheduler.
 * The lock comes before anything touches the state directory: a second daemon on it stops there, changing nothing.
 * `start()` and `close()` are idempotent; `close()` lets an in-flight sync or failover step finish (a restore is never
 * cut in half) before stopping.
 */
import { readConfigFileSync, readPeerTlsSync } from '../config/files.js';
import { Registry } from 'prom-client';
import { AdminServer } from '../admin/server.js';
import type { ScryptParams } from '../backup/format.js';
import type { ReplicatorConfig } from '../config/schema.js';
import type { LoadedSecrets } from '../config/secrets.js';
import { NetHsmUnreachableError } from '../errors.js';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { assertTokenCurrent, tokenOf } from '../concurrency/fencing.js';
import { namespaceLocks } from '../concurrency/namespace-locks.js';
import { GatewayServer } from '../gateway/index.js';
import { HealthServer } from '../health/server.js';
import type { HealthSource } from '../health/source.js';
import { silentLogger, type Logger } from '../log.js';
import { MemberMonitor, type Member, type MemberState } from '../members/monitor.js';
import { createReplicatorMetrics, type ReplicatorMetrics } from '../metrics/metrics.js';
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
import { parseNamespaceInventory } from '../namespaces/inventory.js';
import { createDevice, createNetHsmClients, createPeerClients, NETHSM_MEMBER, nethsmTrust, replicationUserIds, type SiteContext } from './context.js';
import { Failover } from './failover.js';
import { createPeerHandlers } from './peer-handlers.js';
import { observePeerStatus } from './peer-watch.js';
import { namespaceStatus } from './status-view.js';
import { NamespaceSync } from './sync.js';

export interface DaemonOptions {
  config: ReplicatorConfig;
  secrets: LoadedSecrets;
  logger?: Logger;
  registry?: Registry;
  /** KDF parameters for device backups and snapshots; production unless a test or the demo says otherwise. */
  scrypt?: ScryptParams;
  /** Transport key size when the daemon creates it (default 3072; tests pass 2048 for speed). */
  transportKeyBits?: 2048 | 3072 | 4096;
}

export class Daemon {
  readonly ctx: SiteContext;
  readonly syncer: NamespaceSync;
  readonly failover: Failover;
  readonly stream: StreamService;
  private readonly peerServer: PeerServer;
  private readonly adminServer: AdminServer;
  private readonly healthServer: HealthServer;
  private readonly scheduler: Scheduler;
  private readonly gateway: GatewayServer | undefined;
  private readonly log: Logger;
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
    const nethsm = createNetHsmClients(config, secrets, this.log);
    const store = StateStore.inDir(config.stateDir, { logger: this.log });
    const monitor = this.createMonitor(config, nethsm.admin, metrics, store);
    const scrypt = options.scrypt;
    // The one barrier in front of this NetHSM (docs/concurrency.md); its bounds are the gateway's hold settings.
    const barrier = new DeviceBarrier({
      ...(config.gateway ? { maxWaitMs: config.gateway.maxHoldMs, drainTimeoutMs: config.gateway.drainTimeoutMs } : {}),
      check: (token) => assertTokenCurrent((ns) => (store.isOpen ? store.roles.get(ns) : undefined), token),
    });
    this.ctx = {
      config,
      site: config.site,
      log: this.log,
      store,
      work: new WorkDir(config.stateDir),
      barrier,
      device: createDevice(nethsm, secrets, barrier, () => metrics.deviceBackupsTotal.inc()),
      nethsm,
      peers: createPeerClients(config),
      monitor,
      metrics,
      deviceOpen: { passphrase: secrets.replication.backupPassphrase, scrypt: scrypt ?? 'auto' },
      snapshotOpen: { passphrase: secrets.replication.passphrase, scrypt: scrypt ?? 'auto' },
      replicationPassphrase: secrets.replication.passphrase,
      ...(scrypt ? { snapshotScrypt: scrypt } : {}),
      replicationUserIds: replicationUserIds(config),
      applyLock: namespaceLocks(),
    };
    this.stream = new StreamService({
      ctx: this.ctx,
      secrets,
      lock: this.ctx.applyLock,
      snapshot: async (ns, reason) => void (await this.syncer.sync(ns, { actor: `stream (${reason.slice(0, 80)})` })),
      ...(options.transportKeyBits ? { transportKeyBits: options.transportKeyBits } : {}),
    });
    this.ctx.roleChanged = (ns) => this.stream.roleChanged(ns);
    this.ctx.streamStatus = (ns) => {
      const s = this.stream.status(ns);
      if (!s) return null;
      return {
        state: s.state,
        position: s.position,
        head: s.head,
        changesBehind: s.changesBehind,
        lagSeconds: s.lagSeconds,
        lastHeartbeat: s.lastHeartbeatAt === null ? null : new Date(s.lastHeartbeatAt).toISOString(),
        lastErrorCode: s.lastError?.code ?? null,
        lastError: s.lastError?.message ?? null,
      };
    };
    this.gateway = config.gateway ? this.createGateway(config, config.gateway) : undefined;
    this.failover = new Failover(this.ctx, () => this.syncer);
    this.syncer = new NamespaceSync(this.ctx, async (ns, claim) => void (await this.failover.observe(ns, claim)));
    this.scheduler = new Scheduler({
      jobs: config.namespaces.flatMap((n) => [
        { name: n.name, schedule: n.schedule, run: () => this.scheduledSync(n.name) },
        { name: `anti-entropy:${n.name}`, schedule: config.antiEntropy.schedule, run: () => this.antiEntropy(n.name) },
      ]),
      logger: this.log,
    });
    this.peerServer = new PeerServer({
      host: config.peerApi.listen.host,
      port: config.peerApi.listen.port,
      tls: readPeerTlsSync(config.tls),
      peers: config.peers.map((p) => ({ name: p.name, ...(p.fingerprint256 ? { fingerprint256: p.fingerprint256 } : {}) })),
      handlers: createPeerHandlers(this.ctx, this.failover, this.syncer, this.stream),
      logger: this.log,
    });
    this.adminServer = new AdminServer({
      socketPath: config.admin.socket,
      handlers: createAdminHandlers(this.ctx, this.failover, this.syncer, { startedAt: () => this.startedAt || Date.now(), nextRun: (n) => this.scheduler.nextRun(n) }),
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
      for (const n of ctx.config.namespaces) {
        const row = ensureNamespace(ctx.store, n.name, ctx.site, n.primary);
        ctx.metrics.setRole(n.name, row.role, row.epoch);
        ctx.metrics.lagLimitSeconds.set({ namespace: n.name }, n.maxLagForPromoteMs / 1000);
        ctx.metrics.namespacePaused.set({ namespace: n.name }, row.paused ? 1 : 0);
        const pos = row.role === 'primary' ? undefined : ctx.store.positions.get(n.name, row.primarySite);
        ctx.metrics.setReplicaDataTime(n.name, pos?.positionTakenAt !== undefined ? pos.positionTakenAt / 1000 : null);
      }
      await this.peerServer.start();
      await this.stream.start();
      await this.gateway?.start();
      await this.adminServer.start();
      this.healthPort = (await this.healthServer.start()).port;
      await ctx.monitor.start();
      await this.scheduler.start();
      this.startedAt = Date.now();
      this.state = 'started';
      this.log.info({ site: ctx.site, peerPort: this.peerServer.port, healthPort: this.healthPort, namespaces: ctx.config.namespaces.map((n) => n.name) }, 'daemon started');
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Stops in reverse order, after in-flight syncs and fence steps end. Idempotent. */
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
    await stage('health', () => this.healthServer.close().catch(() => undefined));
    await stage('admin', () => this.adminServer.close());
    await stage('gateway', () => this.gateway?.close());
    await stage('stream', () => this.stream.close());
    await stage('peer API', () => this.peerServer.close());
    await stage('syncs', () => this.syncer.drain());
    await stage('failover', () => this.failover.drain());
    await stage('members', () => ctx.monitor.close());
    await stage('peer clients', () => Promise.all([...ctx.peers.values()].map((p) => p.close())));
    await stage('NetHSM pool', () => ctx.nethsm.pool.close());
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
    if (row.role === 'fenced') await this.failover.resumeFenced(namespace);
    else await this.syncer.sync(namespace, { actor: 'schedule' });
  }

  /**
   * The gateway: forwards applications' calls to this site's NetHSM, refuses writes to replica namespaces (naming the
   * primary), and holds writes while the daemon restores: every forwarded write is a shared holder of the device
   * barrier, which the daemon's merge-restores and fence exports hold exclusively.
   */
  private createGateway(config: ReplicatorConfig, g: NonNullable<ReplicatorConfig['gateway']>): GatewayServer {
    const peerGateways = new Map(config.peers.filter((p) => p.gatewayUrl).map((p) => [p.name, p.gatewayUrl!]));
    return new GatewayServer({
      site: config.site,
      host: g.listen.host,
      port: g.listen.port,
      tls: { certPem: readConfigFileSync('gateway.certFile', g.certFile), keyPem: readConfigFileSync('gateway.keyFile', g.keyFile) },
      nethsm: { url: config.nethsm.url, tls: nethsmTrust(config), connections: config.nethsm.connections },
      maxWriteBodyBytes: g.maxWriteBodyBytes,
      writeBodyTimeoutMs: g.writeBodyTimeoutMs,
      requestTimeoutMs: g.requestTimeoutMs,
      handshakeTimeoutMs: g.handshakeTimeoutMs,
      gate: this.ctx.barrier,
      observer: this.stream.capture,
      roles: {
        roleOf: (namespace) => {
          const row = this.ctx.store.isOpen ? this.ctx.store.roles.get(namespace) : undefined;
          if (!row) return undefined;
          const url = g.forwardToPrimary ? peerGateways.get(row.primarySite) : undefined;
          return { role: row.role, epoch: row.epoch, primarySite: row.primarySite, ...(url ? { primaryGatewayUrl: url } : {}) };
        },
      },
      // Other sites' gateways present certificates of the group CA.
      ...(g.forwardToPrimary ? { primaryGateways: { tls: { caPem: readConfigFileSync('tls.caFile', config.tls.caFile) } } } : {}),
      onRequest: (e) => {
        const known = e.namespace && config.namespaces.some((n) => n.name === e.namespace) ? e.namespace : '_other';
        this.ctx.metrics.gatewayRequestsTotal.inc({ namespace: known, class: e.class, outcome: e.outcome });
      },
      logger: this.log,
    });
  }

  /**
   * One anti-entropy pass at a replica: compare the namespace's inventory with the primary's, repair what the API can
   * (tags, labels, certificates, replica-only keys), and take a snapshot for the rest. Never overlaps a sync or a
   * stream apply of the same namespace (barrier, then the namespace's lock). Returns what it found (tests, `status`).
   */
  async antiEntropy(namespace: string): Promise<AntiEntropyResult | undefined> {
    const { ctx } = this;
    const row = ctx.store.roles.get(namespace);
    if (!row || row.paused || row.role !== 'replica' || row.primarySite === ctx.site) return undefined;
    const peer = ctx.peers.get(row.primarySite);
    if (!peer || !ctx.monitor.available(row.primarySite) || !ctx.monitor.available(NETHSM_MEMBER)) return undefined;
    // Barrier (shared: repairs are single-key writes) then the namespace's lock, for the whole pass: the comparison
    // and its repairs must see one state of the replica, with no stream change or snapshot in between.
    const token = tokenOf(row, 'anti-entropy repair');
    const result = await ctx.barrier.shared(
      () =>
        ctx.applyLock(namespace).run(() =>
          antiEntropyPass({
            namespace,
            primary: async () => parseNamespaceInventory(await peer.inventory(namespace), { namespace, site: peer.name }),
            replica: this.stream.client(namespace),
            fetchCert: (id) => peer.certificate(namespace, id),
            setDrift: (c) => ctx.metrics.setDrift(namespace, c),
          }),
        ),
      { tokens: [token], wait: 'unbounded' },
    );
    ctx.log.info(
      { namespace, missing: result.diff.missing.length, extra: result.diff.extra.length, differs: result.diff.differs.length, repaired: result.repaired, snapshot: result.needsSnapshot },
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
          const state = await admin.healthState();
          if (state !== 'Operational') throw new NetHsmUnreachableError(`the NetHSM is ${state}`, { operation: 'GET /health/state' });
        },
      },
      ...config.peers.map((p) => ({
        name: p.name,
        probe: async () => {
          const peer = this.ctx.peers.get(p.name)!;
          await observePeerStatus(this.ctx, this.failover, peer, await peer.status());
        },
      })),
    ];
    return new MemberMonitor({
      members,
      retryIntervalMs: config.recovery.retryIntervalMs,
      maxAttempts: config.recovery.maxAttempts,
      logger: this.log,
      onChange: (s: Readonly<MemberState>) => {
        metrics.setMemberStatus(s.name, s.status, s.consecutiveFailures);
        if (store.isOpen) store.members.save(s);
      },
      onRecovered: (name) => void this.resumeMember(name),
    });
  }

  /** A member answered again: resume its work (replica syncs from it), then mark it ok. */
  private async resumeMember(name: string): Promise<void> {
    const { ctx } = this;
    try {
      for (const row of ctx.store.roles.list()) {
        if (row.paused) continue;
        const fromIt = name === NETHSM_MEMBER || row.primarySite === name;
        if (fromIt && row.role === 'replica' && row.primarySite !== ctx.site) await this.syncer.sync(row.namespace, { actor: 'recovery' });
        if (fromIt && row.role === 'fenced') await this.failover.resumeFenced(row.namespace);
      }
      ctx.monitor.markOk(name);
    } catch (err) {
      ctx.log.warn({ member: name, err }, 'resuming a recovered member failed; retried at the next schedule');
    }
  }

  private healthSource(): HealthSource {
    return {
      ready: async () => {
        const checks: Record<string, { ok: boolean; detail?: string }> = {};
        try {
          const state = await this.ctx.nethsm.admin.healthState();
          checks.nethsm = state === 'Operational' ? { ok: true } : { ok: false, detail: `NetHSM is ${state}` };
        } catch (err) {
          checks.nethsm = { ok: false, detail: err instanceof Error ? err.message : 'unreachable' };
        }
        try {
          this.ctx.store.transaction(() => this.ctx.store.db.prepare('SELECT 1').get());
          checks.state = { ok: true };
        } catch (err) {
          checks.state = { ok: false, detail: err instanceof Error ? err.message : 'state store not writable' };
        }
        return { ready: Object.values(checks).every((c) => c.ok), checks };
      },
      namespaceRole: (namespace) => {
        const s = this.ctx.store.isOpen ? namespaceStatus(this.ctx, this.syncer, undefined, namespace) : undefined;
        return s ? { role: s.role, lagSeconds: s.lagSeconds, lagLimitSeconds: s.lagLimitSeconds, epoch: s.epoch } : undefined;
      },
    };
  }
}
