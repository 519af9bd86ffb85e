/**
 * `nethsm-replicator status`: the daemon's {@link DaemonStatus} as tables an operator can read at 3 a.m., and the
 * exit code checks rely on. Pure rendering; the request lives in `admin-commands.ts`.
 *
 * Exit codes (docs/cli.md): 0 everything ok; 2 something needs attention (a member not ok, a replica whose last sync
 * failed, that never synced or is over its lag limit, a fenced namespace); 1 the status could not be read.
 */
import { z } from 'zod';
import { AdminRemoteError } from '../errors.js';
import type { DaemonStatus, MemberStatusView, NamespaceStatus } from '../daemon/status.js';
import { relativeTime, scalar, shortDuration, table } from './format.js';

export const STATUS_OK = 0;
export const STATUS_ATTENTION = 2;

const iso = z.string().nullable();
// Loose objects: a newer daemon may add fields; the CLI shows what it knows.
const namespaceSchema = z.looseObject({
  name: z.string(),
  role: z.string(),
  epoch: z.number(),
  primarySite: z.string(),
  paused: z.boolean(),
  busy: z.boolean(),
  lastSync: z
    .looseObject({ at: z.string(), outcome: z.string(), durationSeconds: z.number(), errorCode: z.string().nullable() })
    .nullable(),
  position: z.looseObject({ epoch: z.number(), seq: z.number(), takenAt: z.string() }).nullable(),
  lagSeconds: z.number().nullable(),
  lagLimitSeconds: z.number(),
  nextScheduledSync: iso,
});
const memberSchema = z.looseObject({
  name: z.string(),
  kind: z.string(),
  status: z.string(),
  consecutiveFailures: z.number(),
  attempts: z.number(),
  gaveUp: z.boolean(),
  lastErrorCode: z.string().nullable(),
  lastError: z.string().nullable(),
  lastOkAt: iso,
  nextRetryAt: iso,
});
const statusSchema = z.looseObject({
  site: z.string(),
  version: z.string(),
  startedAt: z.string(),
  namespaces: z.array(namespaceSchema),
  members: z.array(memberSchema),
});

/** Validates the daemon's answer. Throws AdminRemoteError naming the first field that does not fit. */
export function parseDaemonStatus(value: unknown): DaemonStatus {
  const r = statusSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new AdminRemoteError(200, {
      message: `the daemon's status answer is malformed: ${issue?.path.join('.') || 'body'} ${issue?.message ?? ''}`.trim(),
      hint: 'Is the CLI the same version as the daemon? Compare `nethsm-replicator --version` with the daemon log.',
    });
  }
  return r.data as unknown as DaemonStatus;
}

/** Every condition that makes `status` exit 2, as one line each (empty: all ok). */
export function statusProblems(s: DaemonStatus, now: Date = new Date()): string[] {
  const out: string[] = [];
  for (const ns of s.namespaces) {
    if (ns.role === 'fenced') out.push(`namespace ${ns.name} is FENCED at epoch ${ns.epoch} (primary is ${ns.primarySite}); it resyncs as a replica`);
    if (ns.failover && !ns.failover.leaseValid) out.push(`namespace ${ns.name}: NO VALID ETCD LEASE (automatic failover): ${ns.failover.lastError ?? ns.failover.state}`);
    if (ns.role !== 'replica') continue;
    if (ns.lastSync?.outcome === 'failed') {
      out.push(`namespace ${ns.name}: last sync FAILED ${relativeTime(ns.lastSync.at, now)}${ns.lastSync.errorCode ? ` (${ns.lastSync.errorCode})` : ''}`);
    }
    if (ns.lagSeconds === null) out.push(`namespace ${ns.name}: replica has NEVER SYNCED from ${ns.primarySite}`);
    else if (ns.lagSeconds > ns.lagLimitSeconds) {
      out.push(`namespace ${ns.name}: lag ${shortDuration(ns.lagSeconds)} is OVER its limit of ${shortDuration(ns.lagLimitSeconds)}`);
    }
  }
  for (const m of s.members) {
    if (m.status !== 'ok') {
      out.push(`${m.kind === 'nethsm' ? 'this site\'s NetHSM' : `${m.kind} ${m.name}`} is ${m.status.toUpperCase()}${m.gaveUp ? ', retries GAVE UP' : ''}${m.lastErrorCode ? ` (${m.lastErrorCode})` : ''}`);
    }
  }
  return out;
}

export function statusExitCode(s: DaemonStatus): number {
  return statusProblems(s).length === 0 ? STATUS_OK : STATUS_ATTENTION;
}

/** The human form: a header, the namespace table, the member table, and the problems spelled out. */
export function renderStatus(s: DaemonStatus, now: Date = new Date()): string {
  const lines: string[] = [];
  lines.push(`site ${s.site}   nethsm-replicator ${s.version}   up ${relativeTime(s.startedAt, now).replace(/ ago$/, '')}`);
  lines.push('');
  if (s.namespaces.length === 0) lines.push('no namespaces configured');
  else lines.push(table([['NAMESPACE', 'ROLE', 'EPOCH', 'PRIMARY', 'LAST SYNC', 'LAG / LIMIT', 'NEXT SYNC', 'FLAGS'], ...s.namespaces.map((ns) => namespaceRow(ns, now))]));
  const automatic = s.namespaces.filter((ns) => ns.failover);
  if (automatic.length > 0) {
    lines.push('');
    lines.push(table([['FAILOVER', 'LEASE', 'LEADER KEY', 'STATE'], ...automatic.map((ns) => failoverRow(ns))]));
  }
  const streams = s.namespaces.filter((ns) => ns.stream);
  if (streams.length > 0) {
    lines.push('');
    lines.push(table([['STREAM', 'STATE', 'POSITION', 'BEHIND', 'LAG', 'LAST HEARTBEAT', 'LAST ERROR'], ...streams.map((ns) => streamRow(ns, now))]));
  }
  lines.push('');
  if (s.members.length === 0) lines.push('no members');
  else lines.push(table([['MEMBER', 'KIND', 'STATUS', 'FAILURES', 'ATTEMPTS', 'NEXT RETRY', 'LAST ERROR'], ...s.members.map((m) => memberRow(m, now))]));
  const problems = statusProblems(s, now);
  lines.push('');
  if (problems.length === 0) lines.push('all ok');
  else for (const p of problems) lines.push(`PROBLEM: ${p}`);
  return lines.join('\n') + '\n';
}

/** Automatic failover (docs/failover.md): the lease, who holds the leader key, and why this site does what it does. */
function failoverRow(ns: NamespaceStatus): string[] {
  const f = ns.failover!;
  const lease = f.leaseValid ? `valid ${shortDuration((f.leaseValidForMs ?? 0) / 1000)}` : 'NONE';
  const leader = f.leader ? `${f.leader.site} @${f.leader.epoch}` : '-';
  return [ns.name, lease, leader, f.lastError && !f.leaseValid ? `${f.state} (${f.lastError})` : f.state];
}

function namespaceRow(ns: NamespaceStatus, now: Date): string[] {
  const role = ns.role === 'fenced' ? 'FENCED' : ns.role;
  const replica = ns.role === 'replica';
  let last = '-';
  if (ns.lastSync) {
    const outcome = ns.lastSync.outcome === 'ok' ? 'ok' : 'FAILED';
    const why = ns.lastSync.outcome !== 'ok' && ns.lastSync.errorCode ? ` ${ns.lastSync.errorCode}` : '';
    last = `${outcome} ${relativeTime(ns.lastSync.at, now)} (${shortDuration(ns.lastSync.durationSeconds)})${why}`;
  } else if (replica) last = 'NEVER';
  let lag = '-';
  if (replica) {
    const limit = shortDuration(ns.lagLimitSeconds);
    if (ns.lagSeconds === null) lag = `- / ${limit}`;
    else lag = `${ns.lagSeconds > ns.lagLimitSeconds ? 'OVER ' : ''}${shortDuration(ns.lagSeconds)} / ${limit}`;
  }
  const flags = [ns.paused ? 'PAUSED' : '', ns.busy ? 'busy' : ''].filter(Boolean).join(',') || '-';
  return [ns.name, role, String(ns.epoch), ns.primarySite, last, lag, relativeTime(ns.nextScheduledSync, now), flags];
}

/** The change stream of a namespace: at a replica its puller, at the primary the head of the change log. */
function streamRow(ns: NamespaceStatus, now: Date): string[] {
  const st = ns.stream!;
  const pos = st.position ? `${st.position.epoch}.${st.position.seq}` : '-';
  const behind = st.changesBehind === null ? '-' : String(st.changesBehind);
  const lag = st.lagSeconds === null ? '-' : shortDuration(st.lagSeconds);
  const state = st.state === 'waiting' || st.state === 'connecting' ? st.state.toUpperCase() : st.state;
  return [ns.name, ns.role === 'primary' ? 'primary (head)' : state, pos, behind, lag, relativeTime(st.lastHeartbeat, now), st.lastErrorCode ?? '-'];
}

function memberRow(m: MemberStatusView, now: Date): string[] {
  const status = m.status === 'ok' ? 'ok' : m.status.toUpperCase() + (m.gaveUp ? ' (gave up)' : '');
  const next = m.gaveUp ? 'never' : relativeTime(m.nextRetryAt, now);
  // A healthy member's last error is history (kept in --json); showing it next to "ok" would read as a problem.
  const error = m.status !== 'ok' && m.lastErrorCode ? scalar(m.lastErrorCode) : '-';
  return [m.name, m.kind, status, String(m.consecutiveFailures), String(m.attempts), next, error];
}
