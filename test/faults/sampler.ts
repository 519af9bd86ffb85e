/**
 * Watches every site's status (the admin API's `GET /v1/status`, what `status --json` prints) about once a second
 * during a run: it records each change of a site's role for a namespace in the history, and tells the workload which
 * site it believes is primary (as an application behind a `/primary/<ns>` load-balancer check would). A site that
 * does not answer (SIGSTOPped, killed) keeps its last known status.
 */
import type { DaemonStatus } from '../../src/daemon/status.js';
import type { Cluster } from './cluster.js';
import type { HistoryWriter, RoleRecord } from './history.js';

const PERIOD_MS = 1_000;

export class StatusSampler {
  readonly latest = new Map<string, DaemonStatus>();
  readonly #recorded = new Map<string, string>();
  #running: Promise<void> | undefined;
  #stop = false;

  constructor(
    private readonly cluster: Cluster,
    private readonly history: HistoryWriter,
  ) {}

  start(): void {
    this.#running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#running;
  }

  /** Samples every site once now (also used before the workload starts). */
  async sampleOnce(): Promise<void> {
    await Promise.all(
      this.cluster.sites.map(async (s) => {
        const st = await s.status(1_500).catch(() => undefined);
        if (!st) return;
        this.latest.set(s.name, st);
        for (const n of st.namespaces) this.record({ type: 'role', at: Date.now(), site: s.name, ns: n.name, role: n.role, epoch: n.epoch, primarySite: n.primarySite });
      }),
    );
  }

  /** The site whose last status says it is primary for `ns` at the highest epoch; else the configured primary. */
  believedPrimary(ns: string): string {
    let best: { site: string; epoch: number } | undefined;
    for (const [site, st] of this.latest) {
      const n = st.namespaces.find((x) => x.name === ns);
      if (n?.role === 'primary' && (!best || n.epoch > best.epoch)) best = { site, epoch: n.epoch };
    }
    return best?.site ?? this.cluster.namespaces.find((n) => n.name === ns)!.primary;
  }

  private record(r: RoleRecord): void {
    const key = `${r.site}/${r.ns}`;
    const value = `${r.role}/${r.epoch}/${r.primarySite}`;
    if (this.#recorded.get(key) === value) return;
    this.#recorded.set(key, value);
    this.history.append(r);
  }

  private async loop(): Promise<void> {
    while (!this.#stop) {
      const started = Date.now();
      await this.sampleOnce();
      await new Promise((r) => setTimeout(r, Math.max(50, PERIOD_MS - (Date.now() - started))));
    }
  }
}
