/**
 * The sites of a fault run, wired through proxies. Built from the lab (`src/lab/lab.ts`: CA, certificates, secrets,
 * configs, site 1 provisioned and the others bootstrapped from its backup as `init-replica` does), then switched to
 * real processes: the lab's in-process simulators are stopped (their state flushed) and each site's simulator and
 * daemon run as `bin/nethsm-replicator` processes on the same data. Each site is primary for its own namespace and
 * replica for the others'.
 *
 * Links (each a {@link LinkProxy}): `peer X→Y` (X's daemon to Y's peer API, one per ordered pair), `gateway X`
 * (applications to X's gateway) and `device X` (X's daemon and gateway to X's NetHSM).
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { parseDocument, type YAMLMap, type YAMLSeq } from 'yaml';
import { Lab, type LabNamespace } from '../../src/lab/lab.js';
import { cliError, runCli } from './cli.js';
import { ETCD_LEASE_TTL_MS, ETCD_PREFIX, ETCD_SAFETY_MARGIN_MS, EtcdSide, WITNESS } from './etcd.js';
import { LinkProxy } from './proxy.js';
import { Site } from './site.js';

export interface NamespacePlan extends LabNamespace {
  generate: 'device' | 'replicated';
}

/** The namespaces of a run: one per site, alternating replicated and device generation. */
export function namespacesFor(siteNames: readonly string[]): NamespacePlan[] {
  const names = ['alpha', 'beta', 'gamma'];
  return siteNames.map((s, i) => ({ name: names[i]!, primary: s, generate: i % 2 === 0 ? 'replicated' : 'device' }));
}

export interface ClusterOptions {
  /** Automatic failover: a real etcd cluster (sites plus witness) and every namespace `failover: automatic`. */
  etcd?: boolean;
}

export class Cluster {
  readonly sites: Site[] = [];
  readonly peerLinks = new Map<string, LinkProxy>();
  caPem = '';

  private constructor(
    readonly lab: Lab,
    readonly namespaces: NamespacePlan[],
    readonly logDir: string,
    /** The etcd cluster and its proxies (`--etcd`), else undefined. */
    readonly etcd: EtcdSide | undefined,
  ) {}

  site(name: string): Site {
    const s = this.sites.find((x) => x.name === name);
    if (!s) throw new Error(`no site ${name}`);
    return s;
  }

  /** The proxy of X's daemon's connections to Y's peer API. */
  peerLink(from: string, to: string): LinkProxy {
    const l = this.peerLinks.get(`${from}>${to}`);
    if (!l) throw new Error(`no link ${from}→${to}`);
    return l;
  }

  get proxies(): LinkProxy[] {
    return [...this.peerLinks.values(), ...this.sites.flatMap((s) => [s.proxies.gateway, s.proxies.device]), ...(this.etcd?.proxies ?? [])];
  }

  /**
   * Builds the lab, starts every proxy, simulator and daemon, and makes each replica's first sync (a merge-restore)
   * through the CLI. `say` reports progress. Throws (after closing what it started) when a step fails.
   */
  static async create(siteNames: string[], logDir: string, say: (line: string) => void, options: ClusterOptions = {}): Promise<Cluster> {
    const namespaces = namespacesFor(siteNames).map((n) => (options.etcd ? { ...n, failover: 'automatic' as const } : n));
    say(`lab: ${siteNames.length} sites, namespaces ${namespaces.map((n) => `${n.name}@${n.primary}(${n.generate})`).join(', ')}`);
    const etcd = options.etcd ? await EtcdSide.start(siteNames, logDir) : undefined;
    if (etcd) say(`etcd: members ${[...siteNames, WITNESS].join(', ')} (lease ${ETCD_LEASE_TTL_MS} ms, margin ${ETCD_SAFETY_MARGIN_MS} ms), every link through a proxy`);
    let lab: Lab;
    try {
      lab = await Lab.create({
        sites: siteNames,
        namespaces,
        gateway: true,
        ...(etcd ? { etcd: (site: string) => ({ endpoints: etcd.endpointsOf(site), leaseTtl: `${ETCD_LEASE_TTL_MS / 1000}s`, safetyMargin: `${ETCD_SAFETY_MARGIN_MS / 1000}s`, prefix: ETCD_PREFIX }) } : {}),
      });
    } catch (err) {
      await etcd?.close();
      throw err;
    }
    say(`lab directory ${lab.dir} (configs, state, simulator data; removed at the end unless --keep)`);
    const cluster = new Cluster(lab, namespaces, logDir, etcd);
    try {
      cluster.caPem = lab.caPem;
      for (const n of siteNames) await lab.site(n).stopSim();
      await cluster.wire(siteNames);
      for (const s of cluster.sites) await s.startSim();
      for (const s of cluster.sites) await cluster.rewriteConfig(s);
      for (const s of cluster.sites) await s.startDaemon();
      say('processes: ' + cluster.sites.map((s) => `sim ${s.name} pid ${s.sim.pid}, daemon ${s.name} pid ${s.daemon.pid}`).join('; '));
      await cluster.firstSyncs(say);
      return cluster;
    } catch (err) {
      await cluster.close(false);
      throw err;
    }
  }

  /**
   * Starts every proxy (each on a port the system picks). Their targets are set as the processes behind them start
   * and say where they listen (Site.startSim, Site.startDaemon).
   */
  private async wire(siteNames: string[]): Promise<void> {
    for (const n of siteNames) {
      const proxies = { gateway: new LinkProxy(`gateway ${n}`), device: new LinkProxy(`device ${n}`) };
      this.sites.push(new Site(n, this.lab.site(n).dir, proxies, this.logDir));
    }
    for (const from of siteNames) {
      for (const to of siteNames) {
        if (from === to) continue;
        const link = new LinkProxy(`peer ${from}→${to}`);
        this.peerLinks.set(`${from}>${to}`, link);
        this.site(to).inboundPeerLinks.push(link);
      }
    }
    const etcdProxies = new Set(this.etcd?.proxies ?? []); // already listening (started with the etcd cluster)
    for (const p of this.proxies) if (!etcdProxies.has(p)) await p.start();
  }

  /**
   * Points the lab's config of `site` at the proxies and the simulator process's certificate, and makes every listener
   * of its daemon take a port from the system (the daemon names them when it starts; Site.startDaemon).
   */
  private async rewriteConfig(site: Site): Promise<void> {
    const doc = parseDocument(await readFile(site.configPath, 'utf8'));
    doc.setIn(['nethsm', 'url'], `https://127.0.0.1:${site.proxies.device.port}`);
    doc.setIn(['nethsm', 'tls', 'fingerprint256'], site.simFingerprint);
    doc.setIn(['peerApi', 'listen'], '127.0.0.1:0');
    doc.setIn(['gateway', 'listen'], '127.0.0.1:0');
    doc.setIn(['health', 'listen'], '127.0.0.1:0');
    for (const peer of (doc.get('peers') as YAMLSeq<YAMLMap>).items) {
      peer.set('url', `https://127.0.0.1:${this.peerLink(site.name, String(peer.get('name'))).port}`);
    }
    await writeFile(site.configPath, doc.toString(), { mode: 0o600 });
  }

  /** Each replica's first sync of each namespace (CLI `sync`), then waits for every replica's stream to run. */
  private async firstSyncs(say: (line: string) => void): Promise<void> {
    for (const ns of this.namespaces) {
      for (const s of this.sites.filter((x) => x.name !== ns.primary)) {
        const r = await runCli(['sync', ns.name, '--config', s.configPath], 120_000);
        if (r.code !== 0) throw new Error(`first sync of ${ns.name} at ${s.name} failed: ${cliError(r)}`);
      }
    }
    const deadline = Date.now() + 60_000;
    for (;;) {
      const waiting: string[] = [];
      for (const s of this.sites) {
        const st = await s.status(5_000).catch(() => undefined);
        for (const n of st?.namespaces ?? [{ name: '(no status)', role: 'replica', stream: null }]) {
          if (n.role === 'replica' && n.stream?.state !== 'streaming') waiting.push(`${n.name}@${s.name}`);
        }
      }
      if (waiting.length === 0) return say('first syncs done; every replica streams');
      if (Date.now() > deadline) return say(`WARNING: replicas not streaming after 60 s: ${waiting.join(', ')} (continuing)`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /**
   * Undoes every fault still in effect: links healed, stopped processes continued, dead ones restarted, NetHSMs unlocked.
   * Returns what it had to do (empty when the nemesis had already healed everything).
   */
  async healAll(): Promise<string[]> {
    const did: string[] = [];
    for (const p of this.proxies) {
      const b = p.blocked;
      if (b.up || b.down) did.push(`healed ${p.name}`);
      p.heal();
    }
    for (const m of this.etcd ? [...this.sites.map((s) => s.name), WITNESS] : []) {
      if (!this.etcd!.running(m)) {
        await this.etcd!.restart(m);
        did.push(`restarted etcd ${m}`);
      }
    }
    for (const s of this.sites) {
      for (const c of [s.sim, s.daemon]) {
        if (c.stopped) {
          c.resume();
          did.push(`continued ${c.name}`);
        }
      }
      if (!s.sim.running) {
        await s.startSim();
        did.push(`restarted ${s.sim.name}`);
      }
      if (s.lockedByNemesis) {
        s.lockedByNemesis = false;
        await s.unlock();
        did.push(`unlocked ${s.name}`);
      }
      if (!s.daemon.running) {
        await s.startDaemon();
        did.push(`restarted ${s.daemon.name}`);
      }
    }
    return did;
  }

  /** Stops every process and proxy; removes the lab's directory unless `keep`. */
  async close(keep: boolean): Promise<void> {
    for (const s of this.sites) {
      await s.daemon.terminate().catch(() => undefined);
      await s.sim.terminate().catch(() => undefined);
      await s.daemon.closeLog();
      await s.sim.closeLog();
    }
    for (const p of this.proxies) await p.close();
    await this.etcd?.close();
    if (keep) return;
    await rm(this.lab.dir, { recursive: true, force: true });
  }
}
