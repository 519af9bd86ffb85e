/**
 * Builds the status view (`DaemonStatus`) from the state store, the member monitor and the scheduler.
 */
import { StateWriteFailedError } from '../errors.js';
import type { NamespaceRow } from '../state/roles-repo.js';
import { VERSION } from '../version.js';
import { NETHSM_MEMBER, type SiteContext } from './context.js';
import { isSteppedDown } from './failover.js';
import { restartsUnseenView } from './older-primary.js';
import { lastPeerView } from './peer-watch.js';
import { unacknowledgedQuarantine } from './quarantine.js';
import type { ConfigStatusView, CredentialProblemView, DaemonStatus, HeldSyncsView, NamespaceStatus } from './status.js';
import type { NamespaceSync } from './sync.js';
import { syncCostView } from './sync-cost.js';

export interface StatusExtras {
  /** When the daemon finished starting (ms). */
  startedAt: () => number;
  nextRun(namespace: string): Date | null;
  /** The config file against what the daemon runs with; absent when the daemon has no file. */
  configFile?: () => Promise<ConfigStatusView>;
  /**
   * The namespace's anti-entropy passes deferred (a primary mid-restore, or the pass queued after its primary restarted
   * not completed): since ms, cause, remedy; undefined if not.
   */
  antiEntropyDeferred?: (namespace: string) => { since: number; cause: string; try: string } | undefined;
  /** The anti-entropy pass queued after the namespace's primary restarted (restart-pass.ts); undefined if none. */
  restartPass?: (namespace: string) => { primary: string; since: number; action: 'anti-entropy pass' | 'snapshot sync'; state: string } | undefined;
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
    syncRunning: running(syncer, name),
    lastSync:
      pos && pos.lastSyncAt !== undefined && pos.lastSyncOutcome !== undefined
        ? { at: iso(pos.lastSyncAt)!, outcome: pos.lastSyncOutcome, durationSeconds: (pos.lastSyncDurationMs ?? 0) / 1000, errorCode: pos.lastErrorCode ?? null }
        : null,
    position: pos && pos.epoch !== undefined && taken !== undefined ? { epoch: pos.epoch, seq: pos.seq ?? 0, takenAt: iso(taken)! } : null,
    lagSeconds: primaryHere || taken === undefined ? null : Math.max(0, (Date.now() - taken) / 1000),
    lagLimitSeconds: cfg.maxLagForPromoteMs / 1000,
    nextScheduledSync: iso(extras?.nextRun(name)?.getTime() ?? null),
    stream: ctx.streamStatus?.(name) ?? null,
    noPrimary: noPrimary(ctx, row),
    ...(cfg.failover === 'automatic' ? { failover: ctx.failoverStatus?.(name) ?? null } : {}),
    syncCost: syncCostView(ctx, name),
    antiEntropyDeferred: deferred(extras, name),
    restartPass: restartPass(extras, name),
    restartsUnseen: restartsUnseenView(ctx, row),
    administratorsPending: ctx.adminRestorer?.view(name) ?? null,
  };
}

function restartPass(extras: StatusExtras | undefined, name: string): NamespaceStatus['restartPass'] {
  const r = extras?.restartPass?.(name);
  return r ? { primary: r.primary, since: iso(r.since)!, state: r.state, action: r.action } : null;
}

function deferred(extras: StatusExtras | undefined, name: string): NamespaceStatus['antiEntropyDeferred'] {
  const d = extras?.antiEntropyDeferred?.(name);
  return d ? { since: iso(d.since)!, cause: d.cause, try: d.try } : null;
}

/** Why no reachable site is primary for the row's namespace, with the remedy; null when one is (as far as known). */
function noPrimary(ctx: SiteContext, row: NamespaceRow): { cause: string; try: string } | null {
  const ns = row.namespace;
  if (isSteppedDown(row, ctx.site)) {
    const to = ctx.store.audit.last(ns, 'demote')?.detail.handoverTo;
    const target = typeof to === 'string' ? to : undefined;
    return {
      cause: `this site (${ctx.site}) stepped down at epoch ${row.epoch} and no site has taken over (the handover${target ? ` to ${target}` : ''} did not finish)`,
      try: `Run \`nethsm-replicator demote ${ns} --to ${target ?? '<site>'}\` again once ${target ?? 'it'} answers, or take it back here with \`nethsm-replicator promote ${ns} --force\` (docs/operations.md §3).`,
    };
  }
  if (row.role !== 'replica') return null;
  const primary = row.primarySite;
  if (ctx.monitor.get(primary)?.status === 'unreachable') {
    // A replica that never synced has no copy to promote (`promote` refuses it: never-synced); during the setup the
    // primary's daemon may simply not run yet (docs/operations.md §1.4).
    if (!ctx.store.positions.forNamespace(ns).some((p) => p.epoch !== undefined)) {
      return {
        cause: `its primary ${primary} is UNREACHABLE, and this site never synced the namespace (it holds no copy to promote)`,
        try: `Bring ${primary}'s daemon up (or the network path to it); then \`nethsm-replicator sync ${ns}\` here takes the first copy (docs/operations.md §1.5).`,
      };
    }
    return {
      cause: `its primary ${primary} is UNREACHABLE`,
      try: `If ${primary} is only briefly away, wait: this replica resumes by itself. If ${primary} is lost, promote here: \`nethsm-replicator promote ${ns}\` (docs/operations.md §4).`,
    };
  }
  const view = lastPeerView(ctx, primary, ns);
  if (!view || view.epoch !== row.epoch || view.role === 'primary') return null;
  const steppedDown = view.role === 'replica' && view.primarySite === primary;
  return {
    cause: `${primary}, its primary at epoch ${row.epoch}, answers but is not primary there (${steppedDown ? 'it stepped down; its handover did not finish' : view.role})`,
    try: steppedDown
      ? `At ${primary}: run \`nethsm-replicator demote ${ns} --to <site>\` again, or \`nethsm-replicator promote ${ns} --force\` there to take it back (docs/operations.md §3).`
      : `See \`nethsm-replicator status\` at ${primary}.`,
  };
}

function running(syncer: NamespaceSync | undefined, name: string): NamespaceStatus['syncRunning'] {
  const p = syncer?.progressOf(name);
  return p ? { actor: p.actor, startedAt: iso(p.startedAt)!, step: p.step, stepSince: iso(p.stepAt)! } : null;
}

/**
 * While a recent sync's attempts outside the hold raced writes, this site's syncs hold writes for their whole
 * sequence (sync.ts, RACED_MEMORY_MS): that, its cause and the remedy, for status, readiness warnings and the log of
 * an operator. Null otherwise.
 */
export function heldSyncsView(syncer: NamespaceSync | undefined, now = Date.now()): HeldSyncsView | null {
  const r = syncer?.racedSync(now);
  if (!r) return null;
  const until = iso(r.until)!;
  const which = r.namespaces.length === 1 ? `namespace ${r.namespaces[0]}` : `namespaces ${r.namespaces.join(', ')} (one merge-restore)`;
  return {
    since: iso(r.at)!,
    until,
    namespaces: r.namespaces,
    cause:
      `writes outside the namespaces being synced (this site's gateway, other namespaces' replication) kept racing the snapshot sync of ${which}: ` +
      `${r.attempts === 1 ? 'the backup and merge' : `all ${r.attempts} backups and merges`} it tried outside the write hold raced (${r.writes} writes during the last), ` +
      `so syncs at this site hold writes for their whole backup, merge and restore until ${until}`,
    try:
      'Nothing is lost; writes through the gateway wait for the whole sync instead of its restore. Syncs try outside the hold again after that time. ' +
      'If the longer holds hurt, schedule syncs at quieter times or less often (docs/concurrency.md, "Snapshot sync").',
  };
}

/** Credentials the NetHSM refused, for status. */
export function credentialProblems(ctx: SiteContext): CredentialProblemView[] {
  return ctx.credentials.refused().map((c) => ({
    setting: c.setting,
    name: c.name,
    user: c.user,
    critical: c.critical,
    since: new Date(c.since).toISOString(),
    error: c.message,
  }));
}

/** The whole status: namespaces, members, refused credentials and, when the daemon has a config file, the file's state. */
export async function buildStatus(ctx: SiteContext, syncer: NamespaceSync, extras: StatusExtras): Promise<DaemonStatus> {
  const config = await extras.configFile?.();
  const status: DaemonStatus = {
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
    quarantine: { directory: ctx.work.quarantine, unacknowledged: unacknowledgedQuarantine(ctx) },
    credentials: credentialProblems(ctx),
  };
  if (config) status.config = config;
  const gateway = ctx.gatewayServing?.();
  if (gateway) status.gateway = gateway;
  status.heldSyncs = heldSyncsView(syncer);
  status.replaysPending = ctx.raceReplayer?.view() ?? null;
  const failed = ctx.store.writeFailure;
  status.stateWriteFailure = failed ? { since: new Date(failed.at).toISOString(), cause: failed.message, try: StateWriteFailedError.defaultHint } : null;
  return status;
}
