/**
 * A replica namespace's snapshot cost against its bounds, for `status`, health and metrics: the cost model's estimate
 * (replicator/cost-model.ts) checked against the schedule's period, `gateway.maxHold` and, for `generate: device`, the
 * catch-up window.
 */
import type { SyncCostSample } from '../metrics/metrics.js';
import { syncCostWarnings } from '../replicator/cost-model.js';
import { cronPeriodMs } from '../scheduler/scheduler.js';
import type { SiteContext } from './context.js';
import type { SyncCostView } from './status.js';

/** The namespace's cost view, or null for a primary, an unknown namespace, or before this site's first sync. */
export function syncCostView(ctx: SiteContext, namespace: string): SyncCostView | null {
  const row = ctx.store.isOpen ? ctx.store.roles.get(namespace) : undefined;
  const cfg = ctx.config.namespaces.find((n) => n.name === namespace);
  if (!row || !cfg || row.role === 'primary') return null;
  const cost = ctx.costModel.costOf(namespace);
  if (!cost) return null;
  const period = cronPeriodMs(cfg.schedule);
  const window = ctx.config.stream.catchupWindowMs;
  const warnings = syncCostWarnings(cost, {
    namespace,
    ...(period !== null ? { schedulePeriodSeconds: period / 1000 } : {}),
    // Without a gateway no application write waits for the hold.
    ...(ctx.config.gateway ? { maxHoldSeconds: ctx.config.gateway.maxHoldMs / 1000 } : {}),
    // A window of 0 is the operator's choice of no bound: nothing to compare with.
    ...(cfg.generate === 'device' && window > 0 ? { catchupWindowSeconds: window / 1000 } : {}),
  });
  return {
    source: cost.source,
    deviceEntries: cost.deviceEntries,
    estimatedSeconds: round(cost.syncSeconds),
    holdSeconds: round(cost.holdSeconds),
    lastSyncSeconds: cost.observedSyncSeconds === null ? null : round(cost.observedSyncSeconds),
    lastHoldSeconds: cost.observedHoldSeconds === null ? null : round(cost.observedHoldSeconds),
    warnings,
  };
}

/** Every configured namespace's sample for the sync cost gauges (those with a view). */
export function syncCostSamples(ctx: SiteContext): Record<string, SyncCostSample> {
  const out: Record<string, SyncCostSample> = {};
  for (const n of ctx.config.namespaces) {
    const v = syncCostView(ctx, n.name);
    if (v) out[n.name] = { syncSeconds: v.estimatedSeconds, holdSeconds: v.holdSeconds, warnings: v.warnings.map((w) => w.kind) };
  }
  return out;
}

const round = (x: number) => Math.round(x * 1000) / 1000;
