/**
 * `nethsm-replicator status`: the daemon's {@link DaemonStatus} as tables an operator can read at 3 a.m., and the
 * exit code checks rely on. Pure rendering; the request lives in `admin-commands.ts`.
 *
 * Exit codes (docs/cli.md): 0 everything ok; 2 something needs attention (a member not ok, a replica whose last sync
 * failed, whose change stream is failing, that never synced or is over its lag limit, a fenced namespace, a credential
 * the NetHSM refused, a config file that differs from what the daemon runs with); 1 the status could not be read.
 */
import { z } from 'zod';
import { AdminRemoteError, ERROR_CLASSES } from '../errors.js';
import type { ConfigStatusView, DaemonStatus, MemberStatusView, NamespaceStatus } from '../daemon/status.js';
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
  noPrimary: z.looseObject({ cause: z.string(), try: z.string() }).nullable().optional(),
  antiEntropyDeferred: z.looseObject({ since: z.string(), cause: z.string(), try: z.string() }).nullable().optional(),
  restartPass: z.looseObject({ primary: z.string(), since: z.string(), state: z.string(), action: z.enum(['anti-entropy pass', 'snapshot sync']).optional() }).nullable().optional(),
  restartsUnseen: z.looseObject({ primary: z.string(), version: z.string(), cause: z.string(), try: z.string() }).nullable().optional(),
  administratorsPending: z.looseObject({ since: z.string(), cause: z.string(), try: z.string() }).nullable().optional(),
  syncCost: z
    .looseObject({
      estimatedSeconds: z.number(),
      holdSeconds: z.number(),
      warnings: z.array(z.looseObject({ kind: z.string(), cause: z.string(), try: z.string() })),
    })
    .nullable()
    .optional(),
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
const credentialSchema = z.looseObject({ setting: z.string(), name: z.string(), user: z.string(), critical: z.boolean(), since: z.string(), error: z.string() });
const configSchema = z.looseObject({
  path: z.string(),
  loadedDigest: z.string(),
  loadedAt: z.string(),
  fileDigest: z.string().nullable(),
  changedOnDisk: z.boolean(),
  restartNeededFor: z.array(z.string()),
  lastReload: z
    .looseObject({ at: z.string(), outcome: z.string(), errorCode: z.string().nullable(), error: z.string().nullable() })
    .nullable(),
});
const statusSchema = z.looseObject({
  site: z.string(),
  version: z.string(),
  startedAt: z.string(),
  namespaces: z.array(namespaceSchema),
  members: z.array(memberSchema),
  quarantine: z
    .looseObject({ directory: z.string(), unacknowledged: z.array(z.looseObject({ file: z.string(), namespace: z.string().nullable() })) })
    .optional(),
  // Absent from daemons older than these fields.
  credentials: z.array(credentialSchema).optional(),
  config: configSchema.optional(),
  gateway: z
    .looseObject({ serving: z.enum(['local', 'remote']), remoteServing: z.boolean(), cause: z.string().nullable(), try: z.string().nullable(), since: z.string().nullable() })
    .optional(),
  heldSyncs: z.looseObject({ since: z.string(), until: z.string(), cause: z.string(), try: z.string() }).nullable().optional(),
  replaysPending: z.looseObject({ namespaces: z.array(z.string()), since: z.string(), cause: z.string(), try: z.string() }).nullable().optional(),
  stateWriteFailure: z.looseObject({ since: z.string(), cause: z.string(), try: z.string() }).nullable().optional(),
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
    if (ns.noPrimary) out.push(withTry(`namespace ${ns.name}: no primary: ${ns.noPrimary.cause}`, ns.noPrimary.try));
    // Stepped down here, handed over to nobody: there is no primary to have synced from (the line above says so).
    if (steppedDown(ns, s.site)) continue;
    if (ns.role === 'fenced') {
      out.push(withTry(`namespace ${ns.name} is FENCED at epoch ${ns.epoch} (primary is ${ns.primarySite}); it resyncs as a replica`, fencedTry(ns.name, ns.primarySite)));
    }
    const admins = ns.administratorsPending;
    if (admins) out.push(withTry(`namespace ${ns.name} (since ${relativeTime(admins.since, now)}): ${admins.cause}`, admins.try));
    if (ns.failover && !ns.failover.leaseValid) {
      out.push(
        withTry(
          `namespace ${ns.name}: NO VALID ETCD LEASE (automatic failover): ${ns.failover.lastError ?? ns.failover.state}`,
          'Check that this site reaches a majority of the etcd cluster (etcd.endpoints; `etcdctl endpoint health --cluster`); the daemon renews the lease by itself once it does (docs/failover.md).',
        ),
      );
    }
    if (ns.role !== 'replica') continue;
    if (ns.lastSync?.outcome === 'failed') {
      out.push(
        withTry(
          `namespace ${ns.name}: last sync FAILED ${relativeTime(ns.lastSync.at, now)}${ns.lastSync.errorCode ? ` (${ns.lastSync.errorCode})` : ''}`,
          hintOf(ns.lastSync.errorCode) ?? `The daemon log's \`namespace sync failed\` line has the cause; \`nethsm-replicator sync ${ns.name}\` tries again at once.`,
        ),
      );
    }
    const stream = ns.stream;
    if (stream?.lastErrorCode) {
      out.push(
        withTry(
          `namespace ${ns.name}: change stream FAILING (${stream.lastErrorCode}): ${scalar(stream.lastError ?? '')}`,
          hintOf(stream.lastErrorCode) ?? 'The stream retries by itself with backoff; the daemon log has the cause (docs/operations.md §10).',
        ),
      );
    }
    const syncNow = `\`nethsm-replicator sync ${ns.name}\` syncs it now (its answer names the cause if it cannot); the schedule does at its next tick.`;
    if (ns.lagSeconds === null) out.push(withTry(`namespace ${ns.name}: replica has NEVER SYNCED from ${ns.primarySite}`, syncNow));
    else if (ns.lagSeconds > ns.lagLimitSeconds) {
      out.push(withTry(`namespace ${ns.name}: lag ${shortDuration(ns.lagSeconds)} is OVER its limit of ${shortDuration(ns.lagLimitSeconds)}`, syncNow));
    }
  }
  for (const m of s.members) {
    if (m.status !== 'ok') {
      // A NetHSM that is not operational says which state it is in (Unprovisioned, Failed): the message names it.
      const why = m.status === 'not-operational' && m.lastError ? `: ${m.lastError}` : '';
      const problem = `${m.kind === 'nethsm' ? 'this site\'s NetHSM' : `${m.kind} ${m.name}`} is ${m.status.toUpperCase()}${m.gaveUp ? ', retries GAVE UP' : ''}${m.lastErrorCode ? ` (${m.lastErrorCode})` : ''}${why}`;
      out.push(withTry(problem, memberTry(m)));
    }
  }
  const unacked = s.quarantine?.unacknowledged ?? [];
  if (unacked.length > 0) {
    const shown = unacked.slice(0, 3).map((f) => f.file).join(', ') + (unacked.length > 3 ? `, … (${unacked.length - 3} more)` : '');
    out.push(
      withTry(
        `${unacked.length} quarantine file${unacked.length === 1 ? '' : 's'} NOT ACKNOWLEDGED in ${s.quarantine!.directory}: ${shown}`,
        'See what each holds with `nethsm-replicator quarantine list` (docs/operations.md §6); once you have looked, `nethsm-replicator quarantine ack <file>`.',
      ),
    );
  }
  for (const c of s.credentials ?? []) {
    out.push(
      withTry(
        `the NetHSM refused the ${c.name} credential (${c.setting}) for user ${c.user} (since ${relativeTime(c.since, now)}): fix that secret, then restart the daemon`,
        `Make the credential file that ${c.setting} names and the user's passphrase on the NetHSM agree, check it with \`nethsm-replicator check-config --credentials-dir /etc/nethsm-replicator/credentials\`, then \`systemctl restart nethsm-replicator\` (credentials are read at start only; docs/operations.md §2.4).`,
      ),
    );
  }
  if (s.config) out.push(...configProblems(s.config, now));
  if (s.stateWriteFailure) out.push(withTry(`since ${relativeTime(s.stateWriteFailure.since, now)}: ${s.stateWriteFailure.cause} [NHR_ERR_STATE_WRITE_FAILED]`, s.stateWriteFailure.try));
  if (s.replaysPending) out.push(withTry(`since ${relativeTime(s.replaysPending.since, now)}: ${s.replaysPending.cause}`, s.replaysPending.try));
  if (s.gateway?.serving === 'remote') out.push(withTry(`gateway SERVING REMOTELY${s.gateway.since ? ` since ${relativeTime(s.gateway.since, now)}` : ''}: ${s.gateway.cause ?? ''}`, s.gateway.try ?? undefined));
  return out;
}

/** A problem line followed by its remedy (`renderStatus` prints it as a `Try:` line under the PROBLEM). */
export function withTry(problem: string, hint: string | undefined): string {
  return hint ? `${problem}\nTry: ${hint}` : problem;
}

/** The registry's hint for an error code the daemon reported (the CLI and the daemon share src/errors.ts). */
function hintOf(code: string | null): string | undefined {
  return code ? ERROR_CLASSES.find((c) => c.code === code)?.defaultHint : undefined;
}


/** The config file on disk against what the daemon runs with: changed and not (successfully) reloaded, restart needed. */
function configProblems(c: ConfigStatusView, now: Date): string[] {
  const out: string[] = [];
  // From a shell CREDENTIALS_DIRECTORY is unset: without the flag check-config lists every secret as a problem first.
  const check = `\`nethsm-replicator check-config --config ${c.path} --credentials-dir /etc/nethsm-replicator/credentials\``;
  if (c.changedOnDisk) {
    const how = c.fileDigest === null ? 'cannot be read now' : `CHANGED since the daemon loaded it ${relativeTime(c.loadedAt, now)}`;
    const failed = c.lastReload?.outcome === 'failed' && Date.parse(c.lastReload.at) >= Date.parse(c.loadedAt);
    const apply = failed ? 'Its last reload FAILED (the next line says why): fix the file first.' : `Check it first with ${check}, then \`systemctl reload nethsm-replicator\` (docs/operations.md §2.3).`;
    out.push(withTry(`config file ${c.path} ${how}${failed ? '' : ': reload it (systemctl reload nethsm-replicator) to apply it'}`, apply));
    if (failed) {
      out.push(
        withTry(
          `config reload FAILED ${relativeTime(c.lastReload!.at, now)}${c.lastReload!.errorCode ? ` (${c.lastReload!.errorCode})` : ''}; ` +
            `the daemon runs with the config it had: ${reloadReason(c.lastReload!.error)}`,
          `Fix the file (${check} lists every problem), then \`systemctl reload nethsm-replicator\` again (docs/operations.md §2.3).`,
        ),
      );
    }
  }
  if (c.restartNeededFor.length > 0) {
    out.push(
      withTry(
        `restart needed for: ${c.restartNeededFor.join(', ')}`,
        '`systemctl restart nethsm-replicator` when convenient: a restart lets an in-flight sync finish first (docs/operations.md §2.3).',
      ),
    );
  }
  return out;
}

/** The remedy of a namespace fenced here (docs/operations.md §5). */
function fencedTry(namespace: string, primary: string): string {
  return (
    `Nothing, usually: the daemon exports this site's copy to quarantine/ and resyncs from ${primary} at each answered status probe of it. ` +
    `If it stays FENCED, see that ${primary} and this site's NetHSM are ok (the member lines), then \`nethsm-replicator sync ${namespace}\` ` +
    '(refused with NHR_ERR_SYNC_FENCE_EXPORT_PENDING until the export is written; docs/operations.md §5).'
  );
}

/** The remedy of a member that is not ok: its error's, else how it comes back. */
function memberTry(m: DaemonStatus['members'][number]): string {
  if (m.gaveUp) {
    return `The daemon stopped retrying after recovery.maxAttempts attempts: once ${m.kind === 'nethsm' ? 'the NetHSM' : `peer ${m.name}`} is back, \`systemctl restart nethsm-replicator\` starts the retries again.`;
  }
  return hintOf(m.lastErrorCode) ?? 'The daemon checks it again every recovery.retryInterval and resumes by itself once it answers.';
}

/** A config error's problems on one line (`a is required; b is not a duration`), else its message. */
function reloadReason(error: string | null): string {
  if (!error) return 'no reason given';
  const problems = error.split('\n').filter((l) => /^\s*- /.test(l)).map((l) => l.replace(/^\s*- /, ''));
  return problems.length > 0 ? problems.join('; ') : error;
}

/**
 * What needs an operator's eye without being a problem (the exit code stays): a snapshot sync's cost near its
 * schedule, `gateway.maxHold` or the catch-up window, anti-entropy passes deferred by a primary mid-restore, and syncs
 * holding writes for their whole sequence after one raced, each with its remedy.
 */
export function statusWarnings(s: DaemonStatus, now: Date = new Date()): string[] {
  const costs = s.namespaces.flatMap((ns) => (ns.syncCost?.warnings ?? []).map((w) => withTry(`namespace ${ns.name}: ${w.cause}`, w.try)));
  // Transient (the primary finishes its re-apply by itself): a warning, never a problem.
  const deferred = s.namespaces.flatMap((ns) => (ns.antiEntropyDeferred ? [withTry(`namespace ${ns.name} (since ${relativeTime(ns.antiEntropyDeferred.since, now)}): ${ns.antiEntropyDeferred.cause}`, ns.antiEntropyDeferred.try)] : []));
  // A primary of an older version (a rolling upgrade under way): its restarts queue no pass until it is upgraded.
  const unseen = s.namespaces.flatMap((ns) => (ns.restartsUnseen ? [withTry(`namespace ${ns.name}: ${ns.restartsUnseen.cause}`, ns.restartsUnseen.try)] : []));
  const all = [...costs, ...deferred, ...unseen];
  return s.heldSyncs ? [...all, withTry(s.heldSyncs.cause, s.heldSyncs.try)] : all;
}

/**
 * The anti-entropy passes queued after a primary's restart (information, not a problem), one line each: from when and
 * what each waits for.
 */
function pendingPasses(s: DaemonStatus, now: Date): string[] {
  return s.namespaces.flatMap((ns) =>
    ns.restartPass
      ? [`pending ${ns.restartPass.action ?? 'anti-entropy pass'} ${ns.name}: queued after the primary ${ns.restartPass.primary}'s daemon restarted (${relativeTime(ns.restartPass.since, now)}), to find writes made straight to its NetHSM meanwhile; ${ns.restartPass.state}`]
      : [],
  );
}

/** Catch-ups waiting for their batch, one line each: how many changes wait, since when, when it runs. */
function pendingCatchups(s: DaemonStatus, now: Date): string[] {
  return s.namespaces.flatMap((ns) => {
    const p = ns.stream?.pendingCatchup;
    if (!p) return [];
    const changes = p.changes === null ? 'changes' : `${p.changes} change${p.changes === 1 ? '' : 's'}`;
    return [`pending catch-up ${ns.name}: ${changes} wait (first ${relativeTime(p.since, now)}); snapshot ${relativeTime(p.dueAt, now)} (${scalar(p.reason)})`];
  });
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
  else lines.push(table([['NAMESPACE', 'ROLE', 'EPOCH', 'PRIMARY', 'LAST SYNC', 'LAG / LIMIT', 'NEXT SYNC', 'FLAGS'], ...s.namespaces.map((ns) => namespaceRow(ns, now, s.site))]));
  const automatic = s.namespaces.filter((ns) => ns.failover);
  if (automatic.length > 0) {
    lines.push('');
    lines.push(table([['FAILOVER', 'LEASE', 'LEADER KEY', 'STATE'], ...automatic.map((ns) => failoverRow(ns))]));
  }
  const streams = s.namespaces.filter((ns) => ns.stream);
  if (streams.length > 0) {
    lines.push('');
    lines.push(table([['STREAM', 'STATE', 'POSITION', 'BEHIND', 'LAG', 'LAST HEARTBEAT', 'LAST ERROR'], ...streams.map((ns) => streamRow(ns, now))]));
    const pending = pendingCatchups(s, now);
    if (pending.length > 0) lines.push('', ...pending);
  }
  const passes = pendingPasses(s, now);
  if (passes.length > 0) lines.push('', ...passes);
  lines.push('');
  if (s.members.length === 0) lines.push('no members');
  else lines.push(table([['MEMBER', 'KIND', 'STATUS', 'FAILURES', 'ATTEMPTS', 'NEXT RETRY', 'LAST ERROR'], ...s.members.map((m) => memberRow(m, now))]));
  const problems = statusProblems(s, now);
  const warnings = statusWarnings(s, now);
  lines.push('');
  for (const w of warnings) lines.push(`WARNING: ${w}`);
  // A pass still to run after a primary's restart is not a problem, but "all ok" would claim the check for writes made
  // around that primary's daemon had been made.
  const onlyPasses = s.namespaces.every((ns) => (ns.restartPass?.action ?? 'anti-entropy pass') === 'anti-entropy pass');
  const noun = onlyPasses ? `anti-entropy pass${passes.length === 1 ? '' : 'es'}` : `check${passes.length === 1 ? '' : 's'} after a primary's restart`;
  const checks = passes.length > 0 ? `${passes.length} ${noun} pending above` : '';
  const notes = [warnings.length > 0 ? `${warnings.length} warning${warnings.length === 1 ? '' : 's'} above` : '', checks].filter((x) => x !== '');
  if (problems.length === 0) lines.push(notes.length === 0 ? 'all ok' : `no problems; ${notes.join('; ')}`);
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

/** A replica of this very site: it stepped down (demote) and no site has taken over. */
function steppedDown(ns: NamespaceStatus, site: string): boolean {
  return ns.role === 'replica' && ns.primarySite === site;
}

function namespaceRow(ns: NamespaceStatus, now: Date, site: string): string[] {
  const role = ns.role === 'fenced' ? 'FENCED' : ns.role;
  const none = steppedDown(ns, site);
  const replica = ns.role === 'replica' && !none;
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
  return [ns.name, role, String(ns.epoch), none ? 'NONE' : ns.primarySite, last, lag, relativeTime(ns.nextScheduledSync, now), flags];
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
