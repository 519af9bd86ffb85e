/**
 * The daemon's side of cross-site serving (`gateway.remoteServing`, docs/gateway.md "Serving from a peer"): builds the
 * gateway's RemoteServing from the config, feeds it every check of this site's NetHSM (one healthy report per check),
 * and tells status, health and metrics whether this site serves from peers.
 */
import { RemoteServing } from '../gateway/remote-serving.js';
import type { Logger } from '../log.js';
import { isDown, type MemberState } from '../members/monitor.js';
import type { ReplicatorMetrics } from '../metrics/metrics.js';
import type { PeerClient } from '../peer/client.js';
import type { ReplicatorConfig } from '../config/schema.js';
import type { GatewayServingView } from './status.js';

/** How long the gateway waits for a peer's serving view (it is asked at most once per view TTL). */
const VIEW_TIMEOUT_MS = 3_000;

type GatewayConfig = NonNullable<ReplicatorConfig['gateway']>;

export class GatewayServing {
  /** Undefined when `gateway.remoteServing` is not configured. */
  readonly remote: RemoteServing | undefined;
  #lastOkAt: number | null = null;

  constructor(
    private readonly config: ReplicatorConfig,
    peers: ReadonlyMap<string, PeerClient>,
    private readonly metrics: ReplicatorMetrics,
    private readonly log: Logger,
  ) {
    const g: GatewayConfig | undefined = config.gateway;
    const rs = g?.remoteServing;
    if (!g || !rs) return;
    for (const p of config.peers) metrics.gatewayRemoteRequestsTotal.inc({ peer: p.name, outcome: 'served' }, 0);
    metrics.gatewayServingRemote.set(0);
    this.remote = new RemoteServing({
      peers: config.peers.filter((p) => p.gatewayUrl).map((p) => ({ name: p.name, gatewayUrl: p.gatewayUrl! })),
      fetchView: (peer) => peers.get(peer)!.serving(VIEW_TIMEOUT_MS),
      maxLagMs: rs.maxLagMs,
      recoverAfter: rs.recoverAfter,
      viewTtlMs: rs.viewTtlMs,
      routing: g.routing,
    });
  }

  /**
   * Each change the member monitor reports for this site's NetHSM. Healthy reports count once per check, at least half
   * a probe interval apart: a recovery is reported twice (recovering, then ok) for one check, and a retry and the
   * periodic probe may run close together.
   */
  nethsmChecked(s: Readonly<MemberState>): void {
    const rs = this.remote;
    if (!rs) return;
    const down = isDown(s.status);
    if (!down) {
      const spacing = this.config.recovery.retryIntervalMs / 2;
      if (s.lastOkAt === null || (this.#lastOkAt !== null && s.lastOkAt - this.#lastOkAt < spacing)) return;
      this.#lastOkAt = s.lastOkAt;
    } else {
      this.#lastOkAt = null;
    }
    if (!rs.observeLocal(down, down ? `${s.status}${s.lastError ? `: ${s.lastError}` : ''}` : undefined)) return;
    const st = rs.state;
    this.metrics.gatewayServingRemote.set(st.remote ? 1 : 0);
    if (st.remote) this.log.warn({ cause: st.cause }, "gateway: this site's NetHSM is down; serving reads and crypto from peer gateways");
    else this.log.info({}, "gateway: this site's NetHSM is healthy again; serving from it");
  }

  /** Counts one gateway request sent to a peer (or refused for want of one) in the remote-requests metric. */
  countRequest(outcome: string, peer: string | undefined): void {
    const remote = outcome === 'served_remote' ? 'served' : outcome === 'refused_no_peer' ? 'refused' : outcome === 'error' && peer ? 'error' : undefined;
    if (remote) this.metrics.gatewayRemoteRequestsTotal.inc({ peer: peer ?? 'none', outcome: remote });
  }

  /** `status`'s gateway section; null without a gateway. */
  view(): GatewayServingView | null {
    const g = this.config.gateway;
    if (!g) return null;
    const st = this.remote?.state;
    if (!st?.remote) return { serving: 'local', remoteServing: this.remote !== undefined, cause: null, try: null, since: null };
    return {
      serving: 'remote',
      remoteServing: true,
      cause: `this site's NetHSM is ${st.cause}; its gateway serves reads and crypto from peer gateways (answers carry x-nethsm-replicator-served-by) and refuses writes for namespaces primary here`,
      try: `Bring the NetHSM back (unlock it, or restore its connection); serving returns to it after ${g.remoteServing?.recoverAfter ?? 0} healthy checks in a row (${st.healthyInARow} so far).`,
      since: st.since === null ? null : new Date(st.since).toISOString(),
    };
  }
}
