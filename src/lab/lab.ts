/**
 * A lab of replicating sites on loopback: one NetHSM simulator and one daemon per site, with a group CA, peer
 * certificates, configs and secrets in a temporary directory. The demo (`nethsm-replicator demo`) and the multi-site
 * tests run on it. Site B (C, …) joins the replication domain as an operator would: full restore of A's device
 * backup onto an unprovisioned NetHSM (init-replica), unlock with A's unlock passphrase.
 * Everything listens on 127.0.0.1; nothing outlives `close()`.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { TEST_SCRYPT } from '../backup/format.js';
import { configDigest } from '../config/load.js';
import { parseConfig } from '../config/parse.js';
import { loadSecrets } from '../config/secrets.js';
import type { ReplicatorConfig } from '../config/schema.js';
import { Daemon } from '../daemon/daemon.js';
import { WorkDir } from '../replicator/workdir.js';
import { pino } from 'pino';
import { parseDocument, type YAMLMap, type YAMLSeq } from 'yaml';
import { createLogger, silentLogger, type Logger } from '../log.js';
import { NetHsmClient } from '../nethsm/client.js';
import { startSimulator, type RunningSimulator } from '../sim/server.js';
import { createCa, issueCert } from '../tls/index.js';

export interface LabNamespace {
  name: string;
  primary: string;
  /** `replicated`: the gateway generates keys in the daemon and streams them. */
  generate?: 'device' | 'replicated';
  failover?: 'manual' | 'automatic';
}

export interface LabOptions {
  sites?: string[];
  namespaces?: LabNamespace[];
  /** Cron schedule of every namespace; default: once a year (tests sync explicitly). */
  schedule?: string;
  /**
   * `antiEntropy.schedule`; default: once a year (tests run passes explicitly). The daemon's own default (minute 23 of
   * every hour) would start a pass in whatever test is running then, and change what it counts.
   */
  antiEntropySchedule?: string;
  maxLagForPromote?: string;
  retryInterval?: string;
  /**
   * `stream.catchupWindow` (default 0s: tests that generate keys on a device see each catch-up at once; the daemon's
   * default batches them, at most one per 30 s).
   */
  catchupWindow?: string;
  logger?: (site: string) => Logger;
  /** Run a gateway at every site (certificate from the lab CA). */
  gateway?: boolean;
  /**
   * With `gateway`: the `gateway.remoteServing` section as YAML (e.g. `{ maxLag: 30s, recoverAfter: 2 }`); the gateways
   * then listen on fixed ports, named in each peer's `gatewayUrl`.
   */
  remoteServing?: string;
  /** With `remoteServing`: `gateway.routing`. */
  routing?: 'local-first' | 'nearest-healthy';
  /**
   * Simulator latency per operation (ms), as `nethsm-replicator sim --latency`: one table for every site, or one per
   * site. The simulator reads the table at each call, so a test may change it while the lab runs.
   */
  latency?: Partial<Record<string, number>> | ((site: string) => Partial<Record<string, number>>);
  /** The `etcd` section per site (automatic failover): its endpoints (e.g. through a test proxy), lease and margin. */
  etcd?: (site: string) => { endpoints: string[]; leaseTtl: string; safetyMargin: string; prefix?: string };
  /**
   * `false`: the simulators keep their state in memory only, so a restarted simulator starts empty. For benchmarks: a
   * NetHSM does not write to the daemons' disk, and a simulator persisting every change there (its whole store, every
   * 50 ms under writes) slows the daemons' fsyncs. Default true.
   */
  simPersistence?: boolean;
  /**
   * Starts a site's simulator in place of the in-process one (the stream benchmark runs each simulator as its own
   * process, `nethsm-replicator sim`). Gets the site, the port to listen on and its latency table (ms per operation);
   * the simulator must keep its state while it runs, since the lab bootstraps the devices through it. The port is 0 at
   * the first start (bind any free port and return its `url`: nothing can take a port between a pick and the bind) and
   * the port of that `url` at a restart (the daemon's config names it).
   */
  startSimulator?: (site: string, port: number, latency: Partial<Record<string, number>>) => Promise<LabSimulator>;
}

/** What the lab needs of a site's simulator: where it listens, its certificate's fingerprint, and how to stop it. */
export type LabSimulator = Pick<RunningSimulator, 'url' | 'fingerprint256' | 'close'>;

export const LAB_PASSPHRASES = {
  unlock: 'lab-unlock-passphrase',
  admin: 'lab-admin-passphrase',
  backupUser: 'lab-backup-user-passphrase',
  metrics: 'lab-metrics-passphrase',
  operator: 'lab-root-operator-passphrase',
  backup: 'lab-device-backup-passphrase',
  replication: 'lab-replication-passphrase',
  nsAdmin: 'lab-namespace-admin-passphrase',
  nsOperator: 'lab-namespace-operator-passphrase',
  replicator: 'lab-replicator-passphrase',
} as const;

export class LabSite {
  sim: LabSimulator | undefined;
  daemon: Daemon | undefined;
  config!: ReplicatorConfig;
  registry = new Registry();

  constructor(
    readonly name: string,
    readonly dir: string,
    private readonly lab: Lab,
  ) {}

  get simDir(): string {
    return path.join(this.dir, 'sim');
  }

  get stateDir(): string {
    return path.join(this.dir, 'state');
  }

  /** A client of this site's gateway (the daemon must run with `gateway: true`). Close it when done. */
  gatewayClient(user: string, password: string): NetHsmClient {
    const port = this.daemon?.ports.gateway;
    if (!port) throw new Error(`site ${this.name}: no gateway running`);
    return new NetHsmClient({ url: `https://127.0.0.1:${port}`, tls: { caPem: this.lab.caPem }, auth: { username: user, password } });
  }

  /** A client of this site's NetHSM as `user` (default: root admin). Close it when done. */
  client(user = 'admin', password: string = LAB_PASSPHRASES.admin): NetHsmClient {
    if (!this.sim) throw new Error(`site ${this.name}: simulator not running`);
    return new NetHsmClient({ url: this.sim.url, tls: { fingerprint256: this.sim.fingerprint256 }, auth: { username: user, password } });
  }

  nsAdmin(ns: string): NetHsmClient {
    return this.client(`${ns}~admin`, LAB_PASSPHRASES.nsAdmin);
  }

  nsOperator(ns: string): NetHsmClient {
    return this.client(`${ns}~operator`, LAB_PASSPHRASES.nsOperator);
  }

  /**
   * Starts (or restarts, with its data) the simulator: on a port the system picks at the first start, on that same
   * port at a restart (the daemon's config names it; another process may have taken it meanwhile, then this throws).
   */
  async startSim(): Promise<void> {
    if (this.sim) return;
    const o = this.lab.options;
    const latency = typeof o.latency === 'function' ? o.latency(this.name) : o.latency;
    const port = this.lab.simPorts.get(this.name) ?? 0;
    this.sim = o.startSimulator ? await o.startSimulator(this.name, port, latency ?? {}) : await this.startInProcessSim(port, latency);
    this.lab.simPorts.set(this.name, Number(new URL(this.sim.url).port));
  }

  private startInProcessSim(port: number, latency: Partial<Record<string, number>> | undefined): Promise<RunningSimulator> {
    const o = this.lab.options;
    return startSimulator({
      port,
      ...(o.simPersistence === false ? {} : { dataDir: this.simDir }),
      backupScrypt: TEST_SCRYPT,
      unlockScrypt: TEST_SCRYPT,
      ...(latency ? { latency } : {}),
    });
  }

  async stopSim(): Promise<void> {
    const s = this.sim;
    this.sim = undefined;
    await s?.close();
  }

  /**
   * Starts the daemon. Its peer API (and, with `remoteServing`, its gateway) listens on a port the lab picked when it
   * wrote the configs, since the peers name it in theirs; another process may bind it before the daemon does (parallel
   * tests, a fault run). Then the lab moves this site to fresh ports, restarts the daemons that name the old ones, and
   * tries again, at most PORT_CLASH_RETRIES times, saying so on stderr.
   */
  async startDaemon(): Promise<Daemon> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startDaemonOnce();
      } catch (err) {
        if (!isAddressInUse(err) || attempt > PORT_CLASH_RETRIES) throw err;
        process.stderr.write(`lab: site ${this.name}'s daemon could not listen (${errorText(err)}); moving it to fresh ports, attempt ${attempt + 1}\n`);
        await this.lab.movePorts(this.name);
      }
    }
  }

  private async startDaemonOnce(): Promise<Daemon> {
    if (this.daemon) return this.daemon;
    const secrets = await loadSecrets(this.config, {});
    this.registry = new Registry();
    const logger = this.lab.options.logger?.(this.name) ?? labLogFile(this.name) ?? silentLogger;
    // The daemon knows its file (config.yaml, as written by the lab or edited by a test): reloadConfig() reads it.
    const file = path.join(this.dir, 'config.yaml');
    const configFile = { path: file, digest: configDigest(await readFile(file)), env: {} };
    const daemon = new Daemon({ config: this.config, secrets, logger, registry: this.registry, scrypt: TEST_SCRYPT, transportKeyBits: 2048, configFile });
    await daemon.start();
    this.daemon = daemon;
    return daemon;
  }

  async stopDaemon(): Promise<void> {
    const d = this.daemon;
    this.daemon = undefined;
    await d?.close();
  }

  /** Stops daemon and simulator: the site is lost (its data stays on disk). */
  async stop(): Promise<void> {
    await this.stopDaemon();
    await this.stopSim();
  }
}

export class Lab {
  readonly sites = new Map<string, LabSite>();
  readonly simPorts = new Map<string, number>();
  caPem = '';
  private readonly peerPorts = new Map<string, number>();
  private readonly gatewayPorts = new Map<string, number>();

  private constructor(
    readonly dir: string,
    readonly options: LabOptions,
  ) {}

  site(name: string): LabSite {
    const s = this.sites.get(name);
    if (!s) throw new Error(`no site ${name} in the lab`);
    return s;
  }

  /**
   * Builds the lab: certificates, simulators (the first provisioned, the others bootstrapped from its backup), the
   * namespaces at their primaries, configs. Daemons are not started: call `startDaemons()`.
   */
  static async create(options: LabOptions = {}): Promise<Lab> {
    const names = options.sites ?? ['a', 'b'];
    const lab = new Lab(await mkdtemp(path.join(tmpdir(), 'nhr-lab-')), options);
    try {
      for (const n of names) {
        lab.sites.set(n, new LabSite(n, path.join(lab.dir, n), lab));
        lab.peerPorts.set(n, await freePort());
        if (options.gateway && options.remoteServing) lab.gatewayPorts.set(n, await freePort());
        await mkdir(path.join(lab.dir, n), { recursive: true, mode: 0o700 });
      }
      await lab.writeCertificates(names);
      await lab.bootstrapDevices(names);
      for (const n of names) lab.site(n).config = await lab.writeConfig(n, names);
      return lab;
    } catch (err) {
      await lab.close();
      throw err;
    }
  }

  /**
   * Starts every site's daemon, then (by default) waits until the lab is quiet (`settle`): a daemon started before its
   * peers found them unreachable, and their recovery syncs would otherwise run under the test's first steps. A test
   * that writes straight to a NetHSM then would lose the write to such a sync's restore (writes around the daemon,
   * docs/concurrency.md). `settle: false` for a test that starts with a member down on purpose.
   */
  async startDaemons(options: { settle?: boolean } = {}): Promise<void> {
    for (const s of this.sites.values()) await s.startDaemon();
    if (options.settle !== false) await this.settle();
  }

  /**
   * Waits (at most `timeoutMs`) until the lab is quiet after a start: every running daemon sees every member ok and no
   * sync runs. A daemon started before its peers found them unreachable; each such member's recovery syncs its
   * namespaces (daemon.ts, resumeMember) a retry interval later, after `startDaemons()` returned, or queues an
   * anti-entropy pass of them (restart-pass.ts). A test that counts syncs, restores or passes must not count those: call
   * this first.
   */
  async settle(timeoutMs = 60_000): Promise<void> {
    const daemons = () => [...this.sites.values()].flatMap((s) => (s.daemon ? [s.daemon] : []));
    // A pass queued after a peer first heard from as down (counted as a primary's restart) runs after its resume too.
    const quiet = () =>
      daemons().every(
        (d) => d.ctx.monitor.all().every((m) => m.status === 'ok') && d.ctx.config.namespaces.every((n) => !d.syncer.isBusy(n.name)) && d.restartPasses.pending().length === 0,
      );
    const deadline = Date.now() + timeoutMs;
    // A recovery marks its member ok only after its syncs ended; quiet twice in a row, drains apart, to be sure.
    for (let streak = 0; streak < 2; ) {
      await Promise.all(daemons().map((d) => d.syncer.drain()));
      streak = quiet() ? streak + 1 : 0;
      if (streak === 2) return;
      if (Date.now() > deadline) {
        const down = daemons().flatMap((d) => d.ctx.monitor.all().filter((m) => m.status !== 'ok').map((m) => `${d.ctx.site} sees ${m.name} ${m.status}`));
        throw new Error(`the lab did not settle within ${timeoutMs} ms (${down.join(', ') || 'syncs still running'})`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops everything and removes the lab's directory. Idempotent. */
  async close(): Promise<void> {
    for (const s of this.sites.values()) await s.stop().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }

  /**
   * Gives site `name` fresh fixed ports (peer API; gateway with `remoteServing`) after another process took one: edits
   * its config.yaml and each peer's (keeping a test's own edits), re-reads them, and restarts the peers' running
   * daemons, which name the old ports (a peer list is not reloadable).
   */
  async movePorts(name: string): Promise<void> {
    const peer = await freePort();
    const gateway = this.gatewayPorts.has(name) ? await freePort() : undefined;
    this.peerPorts.set(name, peer);
    if (gateway !== undefined) this.gatewayPorts.set(name, gateway);
    for (const site of this.sites.values()) {
      await editConfig(site, (doc) => {
        if (site.name === name) {
          doc.setIn(['peerApi', 'listen'], `127.0.0.1:${peer}`);
          if (gateway !== undefined) doc.setIn(['gateway', 'listen'], `127.0.0.1:${gateway}`);
          return;
        }
        for (const p of (doc.get('peers') as YAMLSeq<YAMLMap>).items.filter((x) => x.get('name') === name)) {
          p.set('url', `https://127.0.0.1:${peer}`);
          if (gateway !== undefined) p.set('gatewayUrl', `https://127.0.0.1:${gateway}`);
        }
      });
    }
    for (const site of this.sites.values()) {
      if (site.name === name || !site.daemon) continue;
      await site.stopDaemon();
      await site.startDaemon();
    }
  }

  private async writeCertificates(names: string[]): Promise<void> {
    const ca = await createCa({ commonName: 'nethsm-replicator lab CA' });
    this.caPem = ca.certPem;
    await writeFile(path.join(this.dir, 'ca.pem'), ca.certPem);
    for (const n of names) {
      const leaf = await issueCert(ca, { commonName: n, usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
      await writeFile(path.join(this.dir, n, 'peer.crt'), leaf.certPem);
      await writeFile(path.join(this.dir, n, 'peer.key'), leaf.keyPem, { mode: 0o600 });
      const gw = await issueCert(ca, { commonName: `${n}-gateway`, usages: ['serverAuth'], ipAddresses: ['127.0.0.1'] });
      await writeFile(path.join(this.dir, n, 'gateway.crt'), gw.certPem);
      await writeFile(path.join(this.dir, n, 'gateway.key'), gw.keyPem, { mode: 0o600 });
    }
  }

  /** Site 1: provisioned with its namespaces. Others: full restore of site 1's backup, unlock, their own namespaces. */
  private async bootstrapDevices(names: string[]): Promise<void> {
    const [first, ...rest] = names.map((n) => this.site(n));
    await first!.startSim();
    const root = first!.client();
    try {
      await root.provision({ unlockPassphrase: LAB_PASSPHRASES.unlock, adminPassphrase: LAB_PASSPHRASES.admin, systemTime: nowRfc3339() });
      await root.createUser({ realName: 'Backup', role: 'Backup', passphrase: LAB_PASSPHRASES.backupUser }, 'backup');
      await root.createUser({ realName: 'Metrics', role: 'Metrics', passphrase: LAB_PASSPHRASES.metrics }, 'metrics');
      // The root Operator unwraps stream envelopes with the site's transport key.
      await root.createUser({ realName: 'Operator', role: 'Operator', passphrase: LAB_PASSPHRASES.operator }, 'operator');
      await root.setBackupPassphrase(LAB_PASSPHRASES.backup, '');
      await this.createNamespaces(root, first!.name);
    } finally {
      await root.close();
    }
    const backupFile = path.join(this.dir, 'bootstrap-backup.bin');
    const backupUser = first!.client('backup', LAB_PASSPHRASES.backupUser);
    try {
      await backupUser.backupToFile(backupFile);
    } finally {
      await backupUser.close();
    }
    const bootstrapped = (this.options.namespaces ?? []).filter((n) => n.primary === first!.name).map((n) => n.name);
    for (const site of rest) {
      await site.startSim();
      const fresh = site.client();
      try {
        await fresh.restore(backupFile, { backupPassphrase: LAB_PASSPHRASES.backup, systemTime: nowRfc3339() });
        await fresh.unlock(LAB_PASSPHRASES.unlock);
        await this.createNamespaces(fresh, site.name);
      } finally {
        await fresh.close();
      }
      await new WorkDir(site.stateDir).recordBootstrap(bootstrapped, first!.name);
    }
    await rm(backupFile, { force: true });
  }

  private async createNamespaces(root: NetHsmClient, site: string): Promise<void> {
    for (const ns of (this.options.namespaces ?? []).filter((n) => n.primary === site)) {
      await root.createUser({ realName: `${ns.name} admin`, role: 'Administrator', passphrase: LAB_PASSPHRASES.nsAdmin }, `${ns.name}~admin`);
      await root.createUser({ realName: `${ns.name} operator`, role: 'Operator', passphrase: LAB_PASSPHRASES.nsOperator }, `${ns.name}~operator`);
      await root.createUser({ realName: `${ns.name} replicator`, role: 'Administrator', passphrase: LAB_PASSPHRASES.replicator }, `${ns.name}~replicator`);
      await root.createNamespace(ns.name);
    }
  }

  private async writeConfig(name: string, names: string[]): Promise<ReplicatorConfig> {
    const site = this.site(name);
    const o = this.options;
    const secret = (v: string) => JSON.stringify(v);
    const yaml = `
site: ${name}
insecureInline: true
nethsm:
  url: ${site.sim!.url}
  tls: { fingerprint256: "${site.sim!.fingerprint256}" }
  credentials:
    backup: { user: backup, passphrase: ${secret(LAB_PASSPHRASES.backupUser)} }
    admin: { user: admin, passphrase: ${secret(LAB_PASSPHRASES.admin)} }
    metrics: { user: metrics, passphrase: ${secret(LAB_PASSPHRASES.metrics)} }
    operator: { user: operator, passphrase: ${secret(LAB_PASSPHRASES.operator)} }
peers:${names.length > 1 ? '' : ' []'}
${names
  .filter((n) => n !== name)
  .map((n) => `  - { name: ${n}, url: "https://127.0.0.1:${this.peerPorts.get(n)}"${this.gatewayPorts.has(n) ? `, gatewayUrl: "https://127.0.0.1:${this.gatewayPorts.get(n)}"` : ''} }`)
  .join('\n')}
tls:
  certFile: ${path.join(site.dir, 'peer.crt')}
  keyFile: ${path.join(site.dir, 'peer.key')}
  caFile: ${path.join(this.dir, 'ca.pem')}
peerApi: { listen: "127.0.0.1:${this.peerPorts.get(name)}" }
health: { listen: "127.0.0.1:0" }
${o.gateway ? `gateway: { listen: "127.0.0.1:${this.gatewayPorts.get(name) ?? 0}", certFile: ${path.join(site.dir, 'gateway.crt')}, keyFile: ${path.join(site.dir, 'gateway.key')}, maxHold: 20s${o.remoteServing ? `, remoteServing: ${o.remoteServing}` : ''}${o.routing ? `, routing: ${o.routing}` : ''} }` : ''}
stateDir: ${site.stateDir}
replication:
  passphrase: ${secret(LAB_PASSPHRASES.replication)}
  backupPassphrase: ${secret(LAB_PASSPHRASES.backup)}
namespaces:
${(o.namespaces ?? [])
  .map(
    (n) => `  - name: ${n.name}
    primary: ${n.primary}
    schedule: "${o.schedule ?? '0 0 1 1 *'}"
    maxLagForPromote: ${o.maxLagForPromote ?? '1h'}
    replicationUser: { user: "${n.name}~replicator", passphrase: ${secret(LAB_PASSPHRASES.replicator)} }${n.generate ? `\n    generate: ${n.generate}` : ''}${n.failover ? `\n    failover: ${n.failover}` : ''}`,
  )
  .join('\n')}
${etcdYaml(o.etcd?.(name))}
recovery: { retryInterval: ${o.retryInterval ?? '1s'} }
stream: { heartbeatInterval: 1s, catchupDebounce: 100ms, catchupWindow: ${o.catchupWindow ?? '0s'} }
antiEntropy: { schedule: "${o.antiEntropySchedule ?? '0 0 1 1 *'}" }
logging: { level: info }
`;
    await writeFile(path.join(site.dir, 'config.yaml'), yaml, { mode: 0o600 });
    return parseConfig(yaml, {}, { baseDir: site.dir });
  }
}

/** Rewrites a site's config.yaml through `edit` and re-reads it into `site.config`. */
async function editConfig(site: LabSite, edit: (doc: ReturnType<typeof parseDocument>) => void): Promise<void> {
  const file = path.join(site.dir, 'config.yaml');
  const doc = parseDocument(await readFile(file, 'utf8'));
  edit(doc);
  const yaml = doc.toString();
  await writeFile(file, yaml, { mode: 0o600 });
  site.config = parseConfig(yaml, {}, { baseDir: site.dir });
}

/** Daemon starts retried with fresh ports after a clash (see LabSite.startDaemon). */
const PORT_CLASH_RETRIES = 3;

/** Whether `err` (or a cause of it: the health listener wraps its error) is a listener's EADDRINUSE. */
function isAddressInUse(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') return true;
  }
  return false;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function etcdYaml(e: ReturnType<NonNullable<LabOptions['etcd']>> | undefined): string {
  if (!e) return '';
  return `etcd: { endpoints: ${JSON.stringify(e.endpoints)}, leaseTtl: ${e.leaseTtl}, safetyMargin: ${e.safetyMargin}${e.prefix ? `, prefix: "${e.prefix}"` : ''} }`;
}

/** NHR_LAB_LOG=<file>: every lab daemon logs at debug to that file (diagnosing a multi-site test). */
function labLogFile(site: string): Logger | undefined {
  const file = process.env.NHR_LAB_LOG;
  if (!file) return undefined;
  return createLogger({ name: `lab-${site}`, level: 'debug', destination: pino.destination({ dest: file, append: true, sync: true }) });
}

/**
 * A port free right now on 127.0.0.1, for the lab's fixed ports (peers must know each other's port before they start).
 * Nothing holds it: another process may bind it before the caller does, which the caller must survive (the lab moves
 * a daemon whose start clashes, LabSite.startDaemon; prefer listening on port 0 and asking what was bound). Chosen below Linux's ephemeral range (32768–60999), from which every
 * outgoing connection of a parallel test takes its local port: a port from there could be taken by one before the lab
 * binds it.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await canBind(port)) return port;
  }
  throw new Error('no free port found for the lab in 20000-31999');
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function nowRfc3339(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}
