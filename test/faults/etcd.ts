/**
 * The etcd side of a fault run in automatic-failover mode (`--etcd`): a real three-member etcd cluster on loopback,
 * one member per site plus a witness (docs/failover.md's topology), with every etcd link passing a {@link LinkProxy}
 * so the nemesis can cut it:
 *   `etcd X→M`  site X's daemon (and its CLI) to member M's client port; X's endpoints list its own member first, then
 *               the witness, then the other sites' members;
 *   `etcd-peer M` the other members to M's peer port (M advertises the proxy's port as its peer URL).
 *
 * Cutting a site off from the etcd majority blocks every `etcd X→*` link and `etcd-peer X`. A member's outbound raft
 * messages ride the stream connections the others dial to it, so a black-holed `etcd-peer X` silences X towards the
 * majority; what X still hears (a follower's heartbeats) does not let its daemon renew, because that daemon reaches no
 * member at all. Deviation from a real site partition: there the daemon could still reach its own member, which would
 * refuse (no leader quorum) what our daemon here simply never gets an answer to; both end in no renewal.
 */
import { EtcdCluster, etcdBinary } from '../helpers/etcd-cluster.js';
import { LinkProxy } from './proxy.js';

export const WITNESS = 'witness';
/**
 * Lease and margin of the fault runs: the production defaults (docs/configuration.md), and etcd's own raft defaults
 * (100 ms heartbeat, 1 s election). The tighter test values (6 s / 2 s, 50 ms / 500 ms) made quorum flap on the loaded
 * 2-core machine, where every etcd peer message also crosses the runner's userland proxies: a 10-minute run saw the
 * surviving members lose quorum for 30 s after one member was killed, and primaries step down with it.
 */
export const ETCD_LEASE_TTL_MS = 10_000;
export const ETCD_SAFETY_MARGIN_MS = 3_000;
const HEARTBEAT_MS = 100;
const ELECTION_MS = 1_000;
export const ETCD_PREFIX = '/nhr-faults';

export class EtcdSide {
  readonly clientLinks = new Map<string, LinkProxy>();
  readonly peerLinks = new Map<string, LinkProxy>();

  private constructor(
    readonly cluster: EtcdCluster,
    readonly siteNames: readonly string[],
  ) {}

  /** Starts the members (sites plus witness) behind their peer proxies, then the client proxies of every site. */
  static async start(siteNames: readonly string[], logDir: string): Promise<EtcdSide> {
    if (!etcdBinary) throw new Error('--etcd needs an etcd binary on PATH (apt-get install etcd-server)');
    const peerLinks = new Map<string, LinkProxy>();
    const cluster = await EtcdCluster.start([...siteNames, WITNESS], {
      logDir,
      heartbeatMs: HEARTBEAT_MS,
      electionMs: ELECTION_MS,
      advertisePeerPort: async (name, peerPort) => {
        await peerLinks.get(name)?.close(); // a retried start (port clash) replaces the proxy
        const p = new LinkProxy(`etcd-peer ${name}`, peerPort);
        await p.start();
        peerLinks.set(name, p);
        return p.port;
      },
      // A member restarted by the nemesis whose port was taken meanwhile comes back elsewhere: its links follow.
      onMemberMoved: (m) => {
        peerLinks.get(m.name)!.targetPort = m.peerPort;
        for (const [key, link] of side.clientLinks) if (key.endsWith(`>${m.name}`)) link.targetPort = m.clientPort;
      },
    });
    const side = new EtcdSide(cluster, siteNames);
    for (const [n, p] of peerLinks) side.peerLinks.set(n, p);
    for (const x of siteNames) {
      for (const m of [...siteNames, WITNESS]) {
        const p = new LinkProxy(`etcd ${x}→${m}`, cluster.member(m).clientPort);
        await p.start();
        side.clientLinks.set(`${x}>${m}`, p);
      }
    }
    return side;
  }

  get proxies(): LinkProxy[] {
    return [...this.clientLinks.values(), ...this.peerLinks.values()];
  }

  /** Site X's `etcd.endpoints`: its own member, the witness, then the others, all through X's proxies. */
  endpointsOf(site: string): string[] {
    const order = [site, WITNESS, ...this.siteNames.filter((s) => s !== site)];
    return order.map((m) => `http://127.0.0.1:${this.clientLinks.get(`${site}>${m}`)!.port}`);
  }

  /** Cuts site X (its daemon's every etcd link and its member's peer link) off from the etcd majority. Returns the undo. */
  isolate(site: string): () => void {
    const links = [...this.siteNames, WITNESS].map((m) => this.clientLinks.get(`${site}>${m}`)!).concat(this.peerLinks.get(site)!);
    for (const l of links) l.block({ up: true, down: true });
    return () => {
      for (const l of links) l.heal();
    };
  }

  running(member: string): boolean {
    return this.cluster.running(member);
  }

  kill(member: string): Promise<void> {
    return this.cluster.kill(member);
  }

  restart(member: string): Promise<void> {
    return this.cluster.restart(member);
  }

  /** Stops the members (data removed) and closes the proxies. */
  async close(): Promise<void> {
    await this.cluster.stop();
    for (const p of this.proxies) await p.close();
  }
}
