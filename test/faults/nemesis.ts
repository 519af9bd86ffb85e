/**
 * The nemesis: a plan of faults drawn from the seed alone (so `--seed N` replays the same plan), carried out one at a
 * time while the workload writes. The plan is cycles; each cycle is every fault kind once, in a seeded order, so even
 * a short run meets every kind. A fault picks its targets by index (site, peer, namespace); which concrete site that
 * is can depend on the roles at that moment (a promote goes to a site that is a replica then), and the history records
 * what was actually done.
 *
 * Each fault is undone before the next starts (partitions healed, processes continued or restarted, NetHSMs
 * unlocked); the runner's final heal is a safety net.
 */
import type { Cluster } from './cluster.js';
import { cliError, runCli, type CliResult } from './cli.js';
import { EtcdScenarios } from './etcd-scenarios.js';
import { ETCD_FAULT_KINDS, FAULT_KINDS, type EtcdFaultKind, type FaultKind, type FaultRecord, type HistoryWriter } from './history.js';
import { Prng } from './prng.js';
import type { StatusSampler } from './sampler.js';
import type { Site } from './site.js';
import type { Workload } from './workload.js';

export interface PlannedFault {
  step: number;
  kind: FaultKind;
  /** Pause before the fault starts. */
  gapMs: number;
  /** How long the fault is held (partitions, kills, stops, locks, slow bodies); operator commands ignore it. */
  holdMs: number;
  /** Target picks: site index, second site offset, namespace index (taken modulo what fits at run time). */
  site: number;
  other: number;
  ns: number;
}

export interface PlanOptions {
  holdMs: [min: number, max: number];
  gapMs: [min: number, max: number];
  /** Cycles to plan (the run stops taking faults at its deadline anyway). */
  cycles: number;
  /** The kinds of one cycle (default: the classic {@link FAULT_KINDS}; `--etcd` adds the etcd scenarios, `--scenario` picks). */
  kinds?: readonly FaultKind[];
}

/** The plan for a seed: pure, so the same seed always gives the same plan. */
export function planFaults(seed: number, options: PlanOptions): PlannedFault[] {
  const prng = new Prng(seed).fork('nemesis');
  const out: PlannedFault[] = [];
  for (let c = 0; c < options.cycles; c++) {
    for (const kind of prng.shuffle(options.kinds ?? FAULT_KINDS)) {
      out.push({
        step: out.length,
        kind,
        gapMs: prng.int(options.gapMs[0], options.gapMs[1]),
        holdMs: prng.int(options.holdMs[0], options.holdMs[1]),
        site: prng.int(0, 1 << 16),
        other: prng.int(0, 1 << 16),
        ns: prng.int(0, 1 << 16),
      });
    }
  }
  return out;
}

const CLI_TIMEOUT_MS = 90_000;

export class Nemesis {
  #stop = false;
  /** Faults carried out per kind (ok or not). */
  readonly counts = new Map<FaultKind, number>();

  constructor(
    private readonly cluster: Cluster,
    private readonly history: HistoryWriter,
    private readonly sampler: StatusSampler,
    private readonly workload: Workload,
    private readonly say: (line: string) => void,
  ) {}

  stop(): void {
    this.#stop = true;
  }

  /**
   * Carries out the plan in order until it ends, `stop()` or `deadline`: no fault starts after the deadline, except that
   * the first cycle (every kind once) always completes, so a short run on a slow machine still meets every kind.
   */
  async run(plan: PlannedFault[], deadline: number): Promise<void> {
    const cycle = new Set(plan.map((f) => f.kind)).size;
    for (const f of plan) {
      await sleep(f.gapMs);
      if (this.#stop || (Date.now() >= deadline && f.step >= cycle)) return;
      const start = Date.now();
      let outcome: { target: string; ok: boolean; detail: string; measured?: FaultRecord['measured']; violation?: string };
      try {
        outcome = await this.carryOut(f);
      } catch (err) {
        outcome = { target: '?', ok: false, detail: `nemesis error: ${err instanceof Error ? err.message : String(err)}` };
      }
      const rec: FaultRecord = {
        type: 'fault',
        step: f.step,
        kind: f.kind,
        target: outcome.target,
        start,
        end: Date.now(),
        ok: outcome.ok,
        detail: outcome.detail,
        ...(outcome.measured ? { measured: outcome.measured } : {}),
        ...(outcome.violation ? { violation: outcome.violation } : {}),
      };
      this.history.append(rec);
      this.counts.set(f.kind, (this.counts.get(f.kind) ?? 0) + 1);
      this.say(`  fault #${f.step} ${f.kind} ${rec.target}: ${rec.ok ? 'done' : 'NOT DONE'} in ${rec.end - start} ms${rec.detail ? ` (${rec.detail})` : ''}${rec.violation ? ` VIOLATION: ${rec.violation}` : ''}`);
    }
  }

  private pickSite(i: number): Site {
    const sites = this.cluster.sites;
    return sites[i % sites.length]!;
  }

  /** A site other than `s`, chosen by `i`. */
  private pickOther(s: Site, i: number): Site {
    const others = this.cluster.sites.filter((x) => x !== s);
    return others[i % others.length]!;
  }

  private async carryOut(f: PlannedFault): Promise<{ target: string; ok: boolean; detail: string; measured?: FaultRecord['measured']; violation?: string }> {
    if ((ETCD_FAULT_KINDS as readonly FaultKind[]).includes(f.kind)) {
      if (!this.cluster.etcd) return { target: '-', ok: false, detail: `${f.kind} needs --etcd` };
      await this.sampler.sampleOnce();
      const ns = this.cluster.namespaces[f.ns % this.cluster.namespaces.length]!.name;
      return new EtcdScenarios(this.cluster, (n) => this.sampler.believedPrimary(n)).carryOut(f.kind as EtcdFaultKind, ns, f.holdMs, f.site);
    }
    const x = this.pickSite(f.site);
    const y = this.pickOther(x, f.other);
    const ns = this.cluster.namespaces[f.ns % this.cluster.namespaces.length]!.name;
    switch (f.kind) {
      case 'partition':
        return this.hold(`${x.name}↮${y.name}`, f.holdMs, () => {
          this.cluster.peerLink(x.name, y.name).block({ up: true, down: true });
          this.cluster.peerLink(y.name, x.name).block({ up: true, down: true });
          return () => (this.cluster.peerLink(x.name, y.name).heal(), this.cluster.peerLink(y.name, x.name).heal());
        });
      case 'partition-oneway':
        // Packets from x to y are dropped: x's requests to y hang; y's connections to x get no answer.
        return this.hold(`${x.name}→${y.name} dropped`, f.holdMs, () => {
          this.cluster.peerLink(x.name, y.name).block({ up: true });
          this.cluster.peerLink(y.name, x.name).block({ down: true });
          return () => (this.cluster.peerLink(x.name, y.name).heal(), this.cluster.peerLink(y.name, x.name).heal());
        });
      case 'partition-gateway':
        return this.hold(`clients↮gateway ${x.name}`, f.holdMs, () => {
          x.proxies.gateway.block({ up: true, down: true });
          return () => x.proxies.gateway.heal();
        });
      case 'partition-device':
        return this.hold(`daemon ${x.name}↮NetHSM ${x.name}`, f.holdMs, () => {
          x.proxies.device.block({ up: true, down: true });
          return () => x.proxies.device.heal();
        });
      case 'kill-daemon':
        return this.killAndRestart(`daemon ${x.name}`, f.holdMs, () => x.daemon.kill(), () => x.startDaemon());
      case 'kill-sim':
        return this.killAndRestart(`NetHSM ${x.name}`, f.holdMs, () => x.sim.kill(), () => x.startSim());
      case 'pause-daemon':
        return this.hold(`daemon ${x.name}`, f.holdMs, () => (x.daemon.pause(), () => x.daemon.resume()));
      case 'pause-sim':
        return this.hold(`NetHSM ${x.name}`, f.holdMs, () => (x.sim.pause(), () => x.sim.resume()));
      case 'lock-device':
        return this.lock(x, f.holdMs);
      case 'slow-client': {
        const site = this.sampler.believedPrimary(ns);
        const r = await this.workload.slowImport(site, ns, f.holdMs);
        return { target: `${ns}@${site}`, ok: true, detail: `import ${r.key} over ${f.holdMs} ms: ${r.outcome}${r.status ? ` ${r.status}` : ''}` };
      }
      case 'promote':
      case 'promote-force':
        await this.sampler.sampleOnce();
        return this.promote(ns, f, f.kind === 'promote-force');
      case 'demote':
        await this.sampler.sampleOnce();
        return this.demote(ns, f);
      case 'sync-other':
        await this.sampler.sampleOnce();
        return this.syncOther(f);
      default:
        return { target: '-', ok: false, detail: `unknown fault kind ${f.kind}` };
    }
  }

  /** Applies a fault, waits `ms`, undoes it (always, even when the wait is cut short by an error). */
  private async hold(target: string, ms: number, apply: () => () => unknown): Promise<{ target: string; ok: boolean; detail: string }> {
    const undo = apply();
    try {
      await sleep(ms);
    } finally {
      undo();
    }
    return { target, ok: true, detail: `${ms} ms` };
  }

  private async killAndRestart(target: string, ms: number, kill: () => Promise<void>, start: () => Promise<void>): Promise<{ target: string; ok: boolean; detail: string }> {
    await kill();
    await sleep(ms);
    // As systemd's Restart=on-failure would: a few attempts, a second apart.
    let last = '';
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await start();
        return { target, ok: true, detail: `down ${ms} ms${attempt > 1 ? `, started at attempt ${attempt}` : ''}` };
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
        await sleep(1_000);
      }
    }
    return { target, ok: false, detail: `restart failed: ${last}` };
  }

  private async lock(x: Site, ms: number): Promise<{ target: string; ok: boolean; detail: string }> {
    const target = `NetHSM ${x.name}`;
    try {
      await x.lock();
    } catch (err) {
      return { target, ok: false, detail: `lock failed: ${err instanceof Error ? err.message : String(err)}` };
    }
    x.lockedByNemesis = true;
    await sleep(ms);
    try {
      await x.unlock();
      x.lockedByNemesis = false;
      return { target, ok: true, detail: `locked ${ms} ms` };
    } catch (err) {
      return { target, ok: false, detail: `unlock failed (the final heal retries): ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  /** `promote <ns> [--force]` at a site that is not the believed primary. */
  private async promote(ns: string, f: PlannedFault, force: boolean): Promise<{ target: string; ok: boolean; detail: string }> {
    const primary = this.sampler.believedPrimary(ns);
    const candidates = this.cluster.sites.filter((s) => s.name !== primary);
    const at = candidates[f.site % candidates.length]!;
    const r = await runCli(['promote', ns, ...(force ? ['--force'] : []), '--config', at.configPath], CLI_TIMEOUT_MS);
    return { target: `${ns}@${at.name}`, ok: r.code === 0, detail: summary(r) };
  }

  /** `demote <ns> --to <replica>` at the believed primary. */
  private async demote(ns: string, f: PlannedFault): Promise<{ target: string; ok: boolean; detail: string }> {
    const primary = this.cluster.site(this.sampler.believedPrimary(ns));
    const to = this.pickOther(primary, f.other);
    const r = await runCli(['demote', ns, '--to', to.name, '--config', primary.configPath], CLI_TIMEOUT_MS);
    return { target: `${ns}@${primary.name}→${to.name}`, ok: r.code === 0, detail: summary(r) };
  }

  /**
   * `sync <ns>` at a site for a namespace it holds as a replica, preferring one that is primary for another namespace:
   * a merge-restore of that site's NetHSM while it takes writes for its own namespaces.
   */
  private async syncOther(f: PlannedFault): Promise<{ target: string; ok: boolean; detail: string }> {
    const primaryOf = (n: string): string => this.sampler.believedPrimary(n);
    const pairs = this.cluster.sites.flatMap((s) => this.cluster.namespaces.filter((n) => primaryOf(n.name) !== s.name).map((n) => ({ s, ns: n.name })));
    const busy = pairs.filter((p) => this.cluster.namespaces.some((n) => primaryOf(n.name) === p.s.name));
    const choice = (busy.length > 0 ? busy : pairs)[f.site % Math.max(1, (busy.length > 0 ? busy : pairs).length)];
    if (!choice) return { target: '-', ok: false, detail: 'no site holds a replica now' };
    const r = await runCli(['sync', choice.ns, '--config', choice.s.configPath], CLI_TIMEOUT_MS);
    return { target: `${choice.ns}@${choice.s.name}`, ok: r.code === 0, detail: summary(r) };
  }
}

function summary(r: CliResult): string {
  if (r.code === 0) return r.stdout.trim().split('\n')[0]?.slice(0, 200) ?? '';
  return cliError(r);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
