/**
 * Builds the status view (`DaemonStatus`) from the state store, the member monitor and the scheduler.
 */
import { VERSION } from '../version.js';
import { NETHSM_MEMBER, type SiteContext } from './context.js';
import type { DaemonStatus, NamespaceStatus } from './status.js';
import type { NamespaceSync } from './sync.js';

export interface StatusExtras {
  /** When the daemon finished starting (ms). */
  startedAt: () => number;
  nextRun(namespace: string): Date | null;
}

const iso = (ms: number | undefined | null): string | null => (ms === undefined || ms === null ? null : new Date(ms).toISOString());

export function namespaceStatus(ctx: SiteContext, syncer: NamespaceSync | undefined, extras: StatusExtras | undefined, name: string): NamespaceStatus | undefined {
  const row = ctx.store.roles.get(name);
  const cfg = ctx.config.namespaces.find((n) => n.name === name);
  if (!row || !cfg) return undefined;
  const primaryHere = row.role === 'primary';
  const pos = primaryHere ? undefined : ctx.store.positions.get(name, row.primarySite);
  const taken = pos?.positionTakenAt;
  return {
    name,
    role: row.role,
    epoch: row.epoch,
    primarySite: row.primarySite,
    paused: row.paused,
    busy: syncer?.isBusy(name) ?? false,
    lastSync:
      pos && pos.lastSyncAt !== undefined && pos.lastSyncOutcome !== undefined
        ? { at: iso(pos.lastSyncAt)!, outcome: pos.lastSyncOutcome, durationSeconds: (pos.lastSyncDurationMs ?? 0) / 1000, errorCode: pos.lastErrorCode ?? null }
        : null,
    position: pos && pos.epoch !== undefined && taken !== undefined ? { epoch: pos.epoch, seq: pos.seq ?? 0, takenAt: iso(taken)! } : null,
    lagSeconds: primaryHere || taken === undefined ? null : Math.max(0, (Date.now() - taken) / 1000),
    lagLimitSeconds: cfg.maxLagForPromoteMs / 1000,
    nextScheduledSync: iso(extras?.nextRun(name)?.getTime() ?? null),
    stream: ctx.streamStatus?.(name) ?? null,
    ...(cfg.failover === 'automatic' ? { failover: ctx.failoverStatus?.(name) ?? null } : {}),
  };
}

export function buildStatus(ctx: SiteContext, syncer: NamespaceSync, extras: StatusExtras): DaemonStatus {
  return {
    site: ctx.site,
    version: VERSION,
    startedAt: new Date(extras.startedAt()).toISOString(),
    namespaces: ctx.config.namespaces.map((n) => namespaceStatus(ctx, syncer, extras, n.name)).filter((s): s is NamespaceStatus => !!s),
    members: ctx.monitor.all().map((m) => ({
      name: m.name,
      kind: m.name === NETHSM_MEMBER ? ('nethsm' as const) : ('peer' as const),
      status: m.status,
      consecutiveFailures: m.consecutiveFailures,
      attempts: m.attempts,
      gaveUp: m.gaveUp,
      lastErrorCode: m.lastErrorCode,
      lastError: m.lastError,
      lastOkAt: iso(m.lastOkAt),
      nextRetryAt: iso(m.nextRetryAt),
    })),
  };
}
