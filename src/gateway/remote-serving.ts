/**
 * Cross-site crypto (the "virtual slot"): while this site's NetHSM is down (unreachable, Locked, Failed: the member
 * monitor says so), the gateway serves reads and crypto by forwarding them to a peer site's gateway that holds the
 * caller's namespace as primary, or as a replica no older than `maxLag`. This module holds the two decisions that needs,
 * with no I/O of its own:
 * - whether this site serves remotely now: at once when the local NetHSM is reported down; back to local only after
 *   `recoverAfter` consecutive healthy reports (hysteresis: a NetHSM answering one probe in three does not flap);
 * - which peer serves a namespace: from each peer's serving view (`GET /peer/v1/serving`, validated by the peer client),
 *   cached `viewTtlMs`, failures too (a dead peer costs one fetch per TTL, not one per call).
 * See docs/gateway.md, "Serving from a peer".
 */
import type { ServingView } from '../peer/messages.js';

export const ROUTINGS = ['local-first', 'nearest-healthy'] as const;
/**
 * `local-first`: when the local NetHSM is down, the namespace's primary serves, else the freshest replica within maxLag.
 * `nearest-healthy`: when the local NetHSM is down, the eligible peer with the shortest measured round trip serves.
 * Either way the local NetHSM serves whenever it is healthy (it is always the nearest).
 */
export type Routing = (typeof ROUTINGS)[number];

export interface RemotePeer {
  name: string;
  /** The peer's gateway, `https://host:port`. */
  gatewayUrl: string;
}

export interface RemoteServingOptions {
  peers: readonly RemotePeer[];
  /** The peer's serving view; throws (a PeerMessageInvalidError for a malformed answer) when it cannot be had. */
  fetchView: (peer: string) => Promise<ServingView>;
  maxLagMs: number;
  /** Consecutive healthy reports of the local NetHSM before serving returns to it. */
  recoverAfter: number;
  viewTtlMs: number;
  routing: Routing;
  now?: () => number;
}

export type RemoteChoice = { ok: true; peer: string; url: string } | { ok: false; cause: string };

/** Whether and why this site serves remotely. */
export interface RemoteServingState {
  remote: boolean;
  /** Why the local NetHSM is not used (the member monitor's reason), while remote. */
  cause: string | null;
  /** Epoch ms when remote serving began. */
  since: number | null;
  /** Healthy reports in a row since the local NetHSM answered again (counts up to recoverAfter). */
  healthyInARow: number;
}

interface CachedView {
  at: number;
  view?: ServingView;
  error?: string;
  rttMs: number;
}

interface Candidate {
  peer: RemotePeer;
  primary: boolean;
  lag: number;
  rtt: number;
  order: number;
}

export class RemoteServing {
  readonly #o: RemoteServingOptions;
  readonly #now: () => number;
  readonly #views = new Map<string, CachedView>();
  readonly #fetching = new Map<string, Promise<CachedView>>();
  #state: RemoteServingState = { remote: false, cause: null, since: null, healthyInARow: 0 };

  /** Throws RangeError for a bound that is not a positive integer (recoverAfter, viewTtlMs) or a negative maxLagMs. */
  constructor(options: RemoteServingOptions) {
    for (const k of ['recoverAfter', 'viewTtlMs'] as const) {
      if (!Number.isSafeInteger(options[k]) || options[k] <= 0) throw new RangeError(`remote serving: ${k} must be a positive integer, got ${options[k]}`);
    }
    if (!Number.isFinite(options.maxLagMs) || options.maxLagMs < 0) throw new RangeError(`remote serving: maxLagMs must be >= 0, got ${options.maxLagMs}`);
    if (!ROUTINGS.includes(options.routing)) throw new RangeError(`remote serving: routing must be one of ${ROUTINGS.join(', ')}`);
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  get state(): Readonly<RemoteServingState> {
    return { ...this.#state };
  }

  /** Whether this site serves from peers now (the hot path's check: no copy of the state). */
  get remote(): boolean {
    return this.#state.remote;
  }

  get maxLagMs(): number {
    return this.#o.maxLagMs;
  }

  /**
   * One report of the local NetHSM's health (each member-monitor check). Down: serve remotely from now on. Healthy:
   * count; serving returns to local at the `recoverAfter`-th healthy report in a row. Returns true when the mode changed.
   */
  observeLocal(down: boolean, cause?: string): boolean {
    const s = this.#state;
    if (down) {
      const changed = !s.remote;
      this.#state = { remote: true, cause: (cause ?? 'the NetHSM is down').slice(0, 300), since: s.remote ? s.since : this.#now(), healthyInARow: 0 };
      return changed;
    }
    if (!s.remote) return false;
    const healthyInARow = s.healthyInARow + 1;
    if (healthyInARow >= this.#o.recoverAfter) {
      this.#state = { remote: false, cause: null, since: null, healthyInARow: 0 };
      return true;
    }
    this.#state = { ...s, healthyInARow };
    return false;
  }

  /**
   * The peer to serve `namespace` (which this site holds at `localEpoch`), or why none can: every peer's reason, e.g.
   * `replica b lags 45 s > maxLag 30 s`. Never throws.
   */
  async choose(namespace: string, localEpoch: number): Promise<RemoteChoice> {
    if (this.#o.peers.length === 0) return { ok: false, cause: 'no peer gateway is configured (peers[].gatewayUrl)' };
    const views = await Promise.all(this.#o.peers.map((p) => this.#view(p.name)));
    const causes: string[] = [];
    const eligible: Candidate[] = [];
    this.#o.peers.forEach((peer, order) => {
      const judged = this.#judge(peer, views[order]!, namespace, localEpoch);
      if (typeof judged === 'string') causes.push(judged);
      else eligible.push({ ...judged, order });
    });
    if (eligible.length === 0) return { ok: false, cause: `no peer can serve namespace ${namespace}: ${causes.join('; ')}` };
    const best = eligible.sort(this.#o.routing === 'nearest-healthy' ? byRtt : byFreshness)[0]!;
    return { ok: true, peer: best.peer.name, url: best.peer.gatewayUrl };
  }

  /** A served call failed at the peer's gateway: look at its view again before the next call rather than after the TTL. */
  forget(peer: string): void {
    this.#views.delete(peer);
  }

  #judge(peer: RemotePeer, c: CachedView, ns: string, localEpoch: number): Omit<Candidate, 'order'> | string {
    const who = `site ${peer.name}`;
    if (c.view === undefined) return `${who}: ${c.error ?? 'no answer'}`;
    const v = c.view;
    if (v.site !== peer.name) return `${who} answered as site ${v.site}`;
    if (!v.gateway) return `${who} runs no gateway`;
    if (v.nethsm !== 'ok') return `${who}'s NetHSM is down too`;
    const n = v.namespaces.find((x) => x.namespace === ns);
    if (n === undefined) return `${who} does not replicate namespace ${ns}`;
    if (n.epoch < localEpoch) return `${who} holds namespace ${ns} at epoch ${n.epoch}, older than this site's ${localEpoch}`;
    if (n.role === 'primary' && n.primarySite === peer.name) return { peer, primary: true, lag: 0, rtt: c.rttMs };
    if (n.role !== 'replica') return `namespace ${ns} is ${n.role} at ${who}`;
    if (n.lagSeconds === null) return `replica ${peer.name} has never synced namespace ${ns}`;
    const max = this.#o.maxLagMs / 1000;
    if (n.lagSeconds > max) return `replica ${peer.name} lags ${fmt(n.lagSeconds)} s > maxLag ${fmt(max)} s`;
    return { peer, primary: false, lag: n.lagSeconds, rtt: c.rttMs };
  }

  async #view(peer: string): Promise<CachedView> {
    const cached = this.#views.get(peer);
    if (cached !== undefined && this.#now() - cached.at < this.#o.viewTtlMs) return cached;
    let pending = this.#fetching.get(peer);
    if (pending === undefined) {
      pending = this.#fetch(peer).finally(() => this.#fetching.delete(peer));
      this.#fetching.set(peer, pending);
    }
    return pending;
  }

  async #fetch(peer: string): Promise<CachedView> {
    const start = performance.now();
    let entry: CachedView;
    try {
      const view = await this.#o.fetchView(peer);
      entry = { at: this.#now(), view, rttMs: performance.now() - start };
    } catch (err) {
      entry = { at: this.#now(), error: (err instanceof Error ? err.message : String(err)).slice(0, 200), rttMs: Infinity };
    }
    this.#views.set(peer, entry);
    return entry;
  }
}

const byFreshness = (a: Candidate, b: Candidate): number => Number(b.primary) - Number(a.primary) || a.lag - b.lag || a.order - b.order;
const byRtt = (a: Candidate, b: Candidate): number => a.rtt - b.rtt || a.order - b.order;

function fmt(seconds: number): string {
  // One decimal: 30.4 s past a 30 s limit must not read "30 s > 30 s".
  const tenths = Math.round(seconds * 10) / 10;
  return Number.isInteger(tenths) ? String(tenths) : tenths.toFixed(1);
}
