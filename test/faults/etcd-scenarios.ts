/**
 * The automatic-failover scenarios of the nemesis (`--etcd`): each aims at a namespace's believed primary, carries the
 * fault out, watches every site's status (admin API, polled every 100 ms) to measure what the daemons did, heals, and
 * waits (bounded) for the outcome the failover design promises (docs/failover.md). A broken promise is returned as a
 * `violation`, which the checker reports as a `failover` finding; the timings go to the history (`measured`).
 */
import type { NamespaceStatus } from '../../src/daemon/status.js';
import type { Cluster } from './cluster.js';
import { ETCD_LEASE_TTL_MS, WITNESS } from './etcd.js';
import type { EtcdFaultKind, FaultRecord } from './history.js';
import type { Site } from './site.js';

/** Beyond the lease TTL: etcd's expiry check, one leadership tick, the promote's device steps (on a loaded machine). */
export const PROMOTE_BOUND_MS = 30_000;
/** How long a returning old primary may take to be fenced under the new one (restart, resync). */
export const RETURN_BOUND_MS = 90_000;
const POLL_MS = 100;
/** How long a scenario waits for the etcd cluster to be whole (every member serving linearizable reads) before it starts. */
const WHOLE_BOUND_MS = 30_000;

export interface ScenarioOutcome {
  target: string;
  ok: boolean;
  detail: string;
  measured?: FaultRecord['measured'];
  /** The design's promise this run broke, if any. */
  violation?: string;
}

type Roles = Map<string, NamespaceStatus | undefined>;

/** Every site's view of `ns` now (undefined for a site that does not answer). */
async function rolesOf(cluster: Cluster, ns: string, only?: readonly Site[]): Promise<Roles> {
  const out: Roles = new Map();
  await Promise.all(
    (only ?? cluster.sites).map(async (s) => {
      const st = await s.status(1_000).catch(() => undefined);
      out.set(s.name, st?.namespaces.find((n) => n.name === ns));
    }),
  );
  return out;
}

/** The site (other than `not`) that says it is primary of `ns` above `epoch`, if any. */
function newPrimary(roles: Roles, not: string, epoch: number): string | undefined {
  for (const [site, n] of roles) if (site !== not && n?.role === 'primary' && n.primarySite === site && n.epoch > epoch) return site;
  return undefined;
}

async function until<T>(timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() >= deadline) return undefined;
    await sleep(POLL_MS);
  }
}

export class EtcdScenarios {
  constructor(
    private readonly cluster: Cluster,
    private readonly believedPrimary: (ns: string) => string,
  ) {}

  async carryOut(kind: EtcdFaultKind, ns: string, holdMs: number, siteIndex: number): Promise<ScenarioOutcome> {
    // Every scenario assumes a whole cluster: a member that rejoined after the last heal or restart may still be
    // catching up, and killing another meanwhile leaves no majority (every primary would rightly step down, and the
    // scenario would call that a violation). Seen in a CI run: a member killed 0.6 s after the previous cut healed.
    const waited = await this.cluster.etcd!.cluster.waitWhole(WHOLE_BOUND_MS).catch((err: Error) => err);
    if (waited instanceof Error) return { target: `etcd`, ok: false, detail: `${kind} not carried out: ${waited.message}` };
    const outcome = await this.carryOutOnWhole(kind, ns, holdMs, siteIndex);
    return waited > 1_000 ? { ...outcome, detail: `etcd whole after ${waited} ms; ${outcome.detail}` } : outcome;
  }

  private async carryOutOnWhole(kind: EtcdFaultKind, ns: string, holdMs: number, siteIndex: number): Promise<ScenarioOutcome> {
    switch (kind) {
      case 'lose-site':
        return this.loseSite(ns, holdMs);
      case 'isolate-primary':
        return this.isolatePrimary(ns, holdMs);
      case 'kill-witness':
        return this.killMember(WITNESS, Math.max(holdMs, 2 * ETCD_LEASE_TTL_MS));
      case 'kill-etcd-member': {
        const s = this.cluster.sites[siteIndex % this.cluster.sites.length]!;
        return this.killMember(s.name, Math.max(holdMs, ETCD_LEASE_TTL_MS));
      }
    }
  }

  /** The primary's whole site (daemon, NetHSM, etcd member) dies; a replica must promote within TTL + bound. */
  private async loseSite(ns: string, holdMs: number): Promise<ScenarioOutcome> {
    const etcd = this.cluster.etcd!;
    const x = this.cluster.site(this.believedPrimary(ns));
    const before = (await rolesOf(this.cluster, ns, [x])).get(x.name);
    const epoch = before?.epoch ?? 0;
    const target = `${ns}: site ${x.name}`;
    if (before?.role !== 'primary') return { target, ok: false, detail: `${x.name} is not primary of ${ns} now (${before ? before.role : 'no answer'}); not carried out` };
    const eligible = await this.eligibleReplicas(ns, x, epoch);
    const t0 = Date.now();
    await Promise.all([x.daemon.kill(), x.sim.kill(), etcd.kill(x.name)]);
    const bound = ETCD_LEASE_TTL_MS + PROMOTE_BOUND_MS;
    const others = this.cluster.sites.filter((s) => s !== x);
    const successor = await until(bound, async () => newPrimary(await rolesOf(this.cluster, ns, others), x.name, epoch));
    const promotedMs = successor ? Date.now() - t0 : undefined;
    await sleep(Math.max(0, holdMs - (Date.now() - t0)));
    const restarted = await this.restartSite(x);
    if (restarted) return { target, ok: false, detail: `site ${x.name} did not come back: ${restarted}`, measured: { promotedMs } };
    const returned = successor ? await this.fencedUnder(x, ns, successor) : undefined;
    const fencedMs = returned ? Date.now() - t0 : undefined;
    const resumed = !successor && eligible.length === 0 ? await this.primaryAgain(x, ns) : undefined;
    const detail =
      `${successor ? `${successor} primary after ${promotedMs} ms (bound ${bound})` : `no promotion within ${bound} ms`}` +
      `${eligible.length === 0 ? ' (no replica of its term when lost: none may promote)' : ''}; ${x.name} back` +
      `${returned ? ` as ${returned} of ${successor} at ${fencedMs} ms` : ''}${resumed !== undefined ? (resumed ? ' and primary again' : ', NOT primary again') : ''}`;
    const violation = !successor && eligible.length === 0
      ? resumed
        ? undefined
        : `primary site ${x.name} of ${ns}, lost with no replica to take over, not primary again within ${RETURN_BOUND_MS} ms of its return`
      : !successor
      ? `primary site ${x.name} of ${ns} lost: no replica promoted within lease TTL + ${PROMOTE_BOUND_MS} ms`
      : !returned
        ? `old primary ${x.name} of ${ns} not fenced under ${successor} within ${RETURN_BOUND_MS} ms of its return`
        : undefined;
    return { target, ok: true, detail, measured: { promotedMs, fencedMs }, violation };
  }

  /** The primary's site cut off from the etcd majority and the other daemons; its clients still reach its gateway. */
  private async isolatePrimary(ns: string, holdMs: number): Promise<ScenarioOutcome> {
    const x = this.cluster.site(this.believedPrimary(ns));
    const before = (await rolesOf(this.cluster, ns, [x])).get(x.name);
    const epoch = before?.epoch ?? 0;
    const target = `${ns}: site ${x.name}`;
    if (before?.role !== 'primary') return { target, ok: false, detail: `${x.name} is not primary of ${ns} now (${before ? before.role : 'no answer'}); not carried out` };
    const links = this.cluster.sites.filter((s) => s !== x).flatMap((y) => [this.cluster.peerLink(x.name, y.name), this.cluster.peerLink(y.name, x.name)]);
    // A promotion is promised only where a site was a replica of x's term when the cut began: one still fenced from
    // an earlier scenario (its resync not done) must not take over, and then x leads again after the heal.
    const eligible = await this.eligibleReplicas(ns, x, epoch);
    const t0 = Date.now();
    const undoEtcd = this.cluster.etcd!.isolate(x.name);
    for (const l of links) l.block({ up: true, down: true });
    let steppedDownMs: number | undefined;
    let promotedMs: number | undefined;
    let successor: string | undefined;
    const bound = ETCD_LEASE_TTL_MS + PROMOTE_BOUND_MS;
    try {
      await until(bound, async () => {
        const roles = await rolesOf(this.cluster, ns);
        if (steppedDownMs === undefined && roles.get(x.name)?.role !== 'primary' && roles.get(x.name) !== undefined) steppedDownMs = Date.now() - t0;
        successor ??= newPrimary(roles, x.name, epoch);
        if (successor && promotedMs === undefined) promotedMs = Date.now() - t0;
        return steppedDownMs !== undefined && successor ? true : undefined;
      });
      await sleep(Math.max(0, holdMs - (Date.now() - t0)));
    } finally {
      undoEtcd();
      for (const l of links) l.heal();
    }
    const returned = successor ? await this.fencedUnder(x, ns, successor) : undefined;
    const fencedMs = returned ? Date.now() - t0 : undefined;
    const resumed = !successor && eligible.length === 0 ? await this.primaryAgain(x, ns) : undefined;
    const detail =
      `${x.name} ${steppedDownMs !== undefined ? `stepped down after ${steppedDownMs} ms` : 'did NOT step down'}, ` +
      `${successor ? `${successor} primary after ${promotedMs} ms` : `no promotion within ${bound} ms`}` +
      `${eligible.length === 0 ? ' (no replica of its term when cut: none may promote)' : ''}` +
      `${returned ? `; healed, ${x.name} ${returned} of ${successor} at ${fencedMs} ms` : ''}` +
      `${resumed !== undefined ? `; healed, ${x.name} ${resumed ? `primary again at ${Date.now() - t0} ms` : 'NOT primary again'}` : ''}`;
    let violation: string | undefined;
    if (steppedDownMs === undefined) violation = `isolated primary ${x.name} of ${ns} did not step down within ${bound} ms`;
    else if (promotedMs !== undefined && promotedMs < steppedDownMs) violation = `${successor} promoted (${promotedMs} ms) before the isolated primary ${x.name} stepped down (${steppedDownMs} ms)`;
    else if (!successor && eligible.length === 0) violation = resumed ? undefined : `primary ${x.name} of ${ns}, cut off with no replica to take over, not primary again within ${RETURN_BOUND_MS} ms of the heal`;
    else if (!successor) violation = `primary ${x.name} of ${ns} cut off from the etcd majority: no replica promoted within lease TTL + ${PROMOTE_BOUND_MS} ms`;
    else if (!returned) violation = `old primary ${x.name} of ${ns} not fenced under ${successor} within ${RETURN_BOUND_MS} ms of the heal`;
    return { target, ok: true, detail, measured: { steppedDownMs, promotedMs, fencedMs }, violation };
  }

  /** One etcd member down for `ms`: the remaining two are a majority, so no primary may change (none steps down, none promotes). */
  private async killMember(member: string, ms: number): Promise<ScenarioOutcome> {
    const etcd = this.cluster.etcd!;
    // A site that does not answer its status in time (a loaded machine) keeps its last known view: not a change.
    const last = new Map<string, NamespaceStatus>();
    const primaries = async (): Promise<string> => {
      const parts: string[] = [];
      for (const { name: ns } of this.cluster.namespaces) {
        for (const [site, n] of await rolesOf(this.cluster, ns)) {
          const v = n ?? last.get(`${ns}@${site}`);
          if (n) last.set(`${ns}@${site}`, n);
          if (v?.role === 'primary') parts.push(`${ns}@${site}/${v.epoch}`);
        }
      }
      return parts.sort().join(' ');
    };
    const before = await primaries();
    const changes: string[] = [];
    await etcd.kill(member);
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const now = await primaries();
      if (now !== (changes.at(-1) ?? before)) changes.push(now);
      await sleep(250);
    }
    await etcd.restart(member);
    const target = `etcd ${member}`;
    const detail = `down ${ms} ms; primaries ${before}${changes.length ? ` changed: ${changes.join(' → ')}` : ' unchanged'}`;
    return { target, ok: true, detail, violation: changes.length ? `etcd member ${member} lost (a majority left): primaries changed ${before} → ${changes.join(' → ')}` : undefined };
  }

  /** The other sites that hold `ns` as a replica of `x` at `epoch` now (a promotion from them is promised). */
  private async eligibleReplicas(ns: string, x: Site, epoch: number): Promise<string[]> {
    const roles = await rolesOf(this.cluster, ns, this.cluster.sites.filter((s) => s !== x));
    return [...roles].filter(([, n]) => n?.role === 'replica' && n.primarySite === x.name && n.epoch === epoch).map(([site]) => site);
  }

  /** Waits until `x` is primary of `ns` again (after a heal with no successor). */
  private async primaryAgain(x: Site, ns: string): Promise<boolean> {
    const ok = await until(RETURN_BOUND_MS, async () => ((await rolesOf(this.cluster, ns, [x])).get(x.name)?.role === 'primary' ? true : undefined));
    return ok === true;
  }

  /** Restarts a lost site: etcd member, NetHSM, daemon (a few attempts, as systemd would). Returns an error or undefined. */
  private async restartSite(x: Site): Promise<string | undefined> {
    let last = '';
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        if (!this.cluster.etcd!.running(x.name)) await this.cluster.etcd!.restart(x.name);
        if (!x.sim.running) await x.startSim();
        if (!x.daemon.running) await x.startDaemon();
        return undefined;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
        await sleep(1_000);
      }
    }
    return last;
  }

  /** Waits until `x` no longer claims `ns` and names `successor` as primary; returns its role then. */
  private fencedUnder(x: Site, ns: string, successor: string): Promise<string | undefined> {
    return until(RETURN_BOUND_MS, async () => {
      const n = (await rolesOf(this.cluster, ns, [x])).get(x.name);
      return n && n.role !== 'primary' && n.primarySite !== x.name && n.primarySite === successor ? n.role : undefined;
    });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
