/**
 * The checker: judges a fault run's history against the final inspection. Pure (no I/O), so the self-test can feed it
 * a synthetic history.
 *
 * Findings (each fails the run):
 * - `lost`: an acknowledged write whose effect is neither at the namespace's final primary nor in a quarantine file:
 *   a created key missing, an acknowledged tag or certificate missing, an acknowledged delete undone. A write counts as
 *   quarantined instead (reported, not a failure: promote, forced or not, gives up what was not replicated yet, and
 *   the fenced site exports it) when the site that acknowledged it later exported a quarantine file of the namespace
 *   that reflects it: holding the key (create, tag, certificate; the blob carries its tags and certificate), or,
 *   for a delete, not holding it.
 * - `wrong-key`: a key whose public key differs from the one the application created (or read back after generating).
 * - `duplicated`: one public key under two ids (or two namespaces) on one NetHSM.
 * - `extra`: at the primary, a key (tag, certificate) no request created, or whose every request was refused; at a
 *   replica, a key the primary does not hold.
 * - `diverged`: a replica misses a key of the primary, or holds it with another public key, tags or certificate.
 * - `stale-status`: a replica whose status says it is caught up (stream position = the primary's head, nothing
 *   behind) while its inventory differs from the primary's.
 * - `ack-not-primary`: a write acknowledged through a site that was not primary for the namespace at any moment of the
 *   request, by that site's own audit log.
 * - `unwritable-primary`: writes refused with 401 by a site that was primary for the namespace throughout the request
 *   (one finding per site and namespace, with the count and time span). The workload's credentials are always right, so
 *   a 401 from a primary means its NetHSM does not hold the namespace's Administrator: the site says primary, but its
 *   applications cannot write.
 * - `split-brain` (automatic failover runs only): two sites acknowledged writes of one namespace in the same epoch, or
 *   in terms whose acknowledgements overlap in time. A term is (site, epoch), the epoch being the one the site was
 *   primary at when the acknowledgement arrived (its audit log), its span the first to the last of its acknowledgements.
 * - `ack-after-lease-lost` (automatic failover runs only): a write acknowledged by a site later than its step-down plus
 *   the safety margin, i.e. when its etcd lease may have expired and another site may have taken the key. Such a write
 *   would be one the old primary can only hand to its quarantine after another term began (there must be none).
 *   Acknowledged after the step-down but within the margin (a device write already in flight) is only counted (info).
 * - `failover`: an etcd scenario of the nemesis saw a broken promise (no promotion within TTL + bound, a promotion
 *   before the isolated primary stepped down, a primary change while only the witness was down, …).
 * - `unconverged`: after healing everything and the bounded wait, the sites do not agree on one primary per
 *   namespace, or a replica is still behind (and does not claim otherwise).
 */
import type { DaemonStatus } from '../../src/daemon/status.js';
import { agreedPrimary, type KeyView, type Observation, type RoleSpan } from './inspection.js';
import { ALL_FAULT_KINDS, type FaultKind, type FaultRecord, type HistoryRecord, type MetaRecord, type OpKind, type OpRecord, type Outcome } from './history.js';

export type FindingKind =
  | 'lost'
  | 'wrong-key'
  | 'duplicated'
  | 'extra'
  | 'diverged'
  | 'stale-status'
  | 'ack-not-primary'
  | 'unwritable-primary'
  | 'split-brain'
  | 'ack-after-lease-lost'
  | 'failover'
  | 'unconverged';
export const FINDING_KINDS: readonly FindingKind[] = [
  'lost',
  'wrong-key',
  'duplicated',
  'extra',
  'diverged',
  'stale-status',
  'ack-not-primary',
  'unwritable-primary',
  'split-brain',
  'ack-after-lease-lost',
  'failover',
  'unconverged',
];

export interface Finding {
  kind: FindingKind;
  ns?: string;
  site?: string;
  key?: string;
  detail: string;
}

export interface Report {
  seed: number | undefined;
  minutes: number | undefined;
  ops: Record<Outcome | 'total', number>;
  opsByKind: Record<OpKind, Record<Outcome, number>>;
  /** Refusals and unknown outcomes by HTTP status (`none`: no answer), to read what the applications met. */
  failuresByStatus: Record<string, number>;
  faults: Record<FaultKind, { done: number; notDone: number }>;
  findings: Finding[];
  counts: Record<FindingKind, number>;
  /** Facts that are not failures: acknowledged writes found only in quarantine, acks by superseded primaries, … */
  info: { quarantined: number; ackedBySupersededPrimary: number; unknownPresent: number; unknownAbsent: number; ackedAfterStepDown: number };
  /** Automatic failover runs: the terms that acknowledged writes, per namespace (`site@epoch first–last`). */
  terms?: Record<string, string[]>;
  finalPrimaries: Record<string, string | null>;
  converged: boolean;
}

interface KeyHistory {
  ns: string;
  key: string;
  create?: OpRecord;
  deletes: OpRecord[];
  tags: OpRecord[];
  certs: OpRecord[];
}

/** Judges the run. */
export function check(history: HistoryRecord[], obs: Observation): Report {
  const meta = history.find((r): r is MetaRecord => r.type === 'meta');
  const ops = history.filter((r): r is OpRecord => r.type === 'op');
  const findings: Finding[] = [];
  const info = { quarantined: 0, ackedBySupersededPrimary: 0, unknownPresent: 0, unknownAbsent: 0, ackedAfterStepDown: 0 };
  const namespaces = meta?.namespaces.map((n) => n.name) ?? [...new Set(ops.map((o) => o.ns))];
  const finalPrimaries: Record<string, string | null> = {};
  const timeline = new RoleTimeline(obs.roles);

  for (const op of ops) {
    if (op.outcome !== 'ack') continue;
    const st = timeline.during(op.ns, op.site, op.start, op.end);
    if (!st.primary) findings.push({ kind: 'ack-not-primary', ns: op.ns, site: op.site, key: op.key, detail: `${op.kind} #${op.id} acknowledged at ${op.site}, which was ${st.describe} during the request` });
  }
  checkUnwritable(ops, timeline, findings);
  const terms = meta?.failover === 'automatic' ? checkTerms(ops, obs, meta.safetyMarginMs ?? 0, findings, info) : undefined;
  for (const f of history) {
    if (f.type === 'fault' && f.violation) findings.push({ kind: 'failover', detail: `${f.kind} #${f.step} (${f.target}, t=${iso(f.start)}): ${f.violation}` });
  }
  if (!obs.converged) findings.push({ kind: 'unconverged', detail: `after healing and waiting ${Math.round(obs.waitedMs / 1000)} s: ${obs.problems.slice(0, 10).join('; ')}` });

  const keys = indexKeys(ops);
  for (const ns of namespaces) {
    const primary = agreedPrimary(ns, obs.statuses) ?? fallbackPrimary(ns, obs.statuses);
    finalPrimaries[ns] = primary ?? null;
    if (!primary) {
      findings.push({ kind: 'unconverged', ns, detail: `no site claims to be primary of ${ns}; its writes cannot be checked` });
      continue;
    }
    const inv = obs.inventories[primary]?.[ns];
    if (!inv) {
      findings.push({ kind: 'unconverged', ns, site: primary, detail: `the inventory of ${ns} at its primary ${primary} could not be read` });
      continue;
    }
    const atPrimary = new Map(inv.map((k) => [k.id, k]));
    const quarantine = new QuarantineIndex(obs, ns);
    for (const kh of [...keys.values()].filter((k) => k.ns === ns)) {
      checkKey(kh, atPrimary.get(kh.key), quarantine, timeline, primary, findings, info);
    }
    for (const k of inv) {
      if (!keys.has(`${ns}/${k.id}`)) findings.push({ kind: 'extra', ns, site: primary, key: k.id, detail: `key ${k.id} at the primary ${primary} was never created by any request` });
    }
    checkReplicas(ns, primary, inv, obs, findings);
  }
  checkDuplicates(obs, findings);
  return {
    seed: meta?.seed,
    minutes: meta?.minutes,
    ...countOps(ops),
    faults: countFaults(history.filter((r): r is FaultRecord => r.type === 'fault')),
    findings,
    counts: Object.fromEntries(FINDING_KINDS.map((k) => [k, findings.filter((f) => f.kind === k).length])) as Record<FindingKind, number>,
    info,
    finalPrimaries,
    converged: obs.converged,
    ...(terms ? { terms } : {}),
  };
}

/** Where an acknowledgement falls in its site's role history: the primary epoch it belongs to, and any step-down before it. */
export function ackTerm(spans: readonly RoleSpan[], op: OpRecord): { epoch: number; steppedDownAt?: number } | undefined {
  const upTo = spans.filter((s) => s.at <= op.end);
  const inForce = upTo.at(-1);
  if (inForce?.role === 'primary') return { epoch: inForce.epoch };
  const lastPrimary = upTo.map((s, i) => ({ s, i })).filter(({ s }) => s.role === 'primary').at(-1);
  if (!lastPrimary) return undefined; // never primary: ack-not-primary's business
  return { epoch: lastPrimary.s.epoch, steppedDownAt: upTo[lastPrimary.i + 1]!.at };
}

/**
 * Automatic failover: every acknowledgement's term (site, epoch), no two sites' terms of a namespace sharing an epoch
 * or overlapping in time, and no acknowledgement after a step-down plus the safety margin. Returns the terms.
 */
function checkTerms(ops: OpRecord[], obs: Observation, marginMs: number, findings: Finding[], info: Report['info']): Record<string, string[]> {
  const terms = new Map<string, { ns: string; site: string; epoch: number; first: number; last: number; n: number }>();
  for (const op of ops) {
    if (op.outcome !== 'ack') continue;
    const t = ackTerm(obs.roles[op.ns]?.[op.site] ?? [], op);
    if (!t) continue;
    if (t.steppedDownAt !== undefined) {
      if (op.end > t.steppedDownAt + marginMs) {
        findings.push({
          kind: 'ack-after-lease-lost',
          ns: op.ns,
          site: op.site,
          key: op.key,
          detail: `${op.kind} #${op.id} of ${op.key} acknowledged by ${op.site} at ${iso(op.end)}, ${op.end - t.steppedDownAt} ms after it stepped down from epoch ${t.epoch} (margin ${marginMs} ms)`,
        });
      } else info.ackedAfterStepDown++;
    }
    const k = `${op.ns}/${op.site}/${t.epoch}`;
    const term = terms.get(k) ?? { ns: op.ns, site: op.site, epoch: t.epoch, first: op.end, last: op.end, n: 0 };
    term.first = Math.min(term.first, op.end);
    term.last = Math.max(term.last, op.end);
    term.n++;
    terms.set(k, term);
  }
  const all = [...terms.values()].sort((a, b) => a.first - b.first);
  for (const [i, a] of all.entries()) {
    for (const b of all.slice(i + 1)) {
      if (a.ns !== b.ns || a.site === b.site) continue;
      const span = (t: typeof a): string => `${t.site}@${t.epoch} (${t.n} acks, ${iso(t.first)}–${iso(t.last)})`;
      if (a.epoch === b.epoch) findings.push({ kind: 'split-brain', ns: a.ns, detail: `two sites acknowledged writes of ${a.ns} at epoch ${a.epoch}: ${span(a)} and ${span(b)}` });
      else if (b.first <= a.last) findings.push({ kind: 'split-brain', ns: a.ns, detail: `two primaries of ${a.ns} acknowledged writes at the same time: ${span(a)} overlaps ${span(b)}` });
    }
  }
  const out: Record<string, string[]> = {};
  for (const t of all) (out[t.ns] ??= []).push(`${t.site}@${t.epoch} ${iso(t.first)}–${iso(t.last)} (${t.n})`);
  return out;
}

/** 401s from a site that was primary (and only primary) for the whole request, grouped per site and namespace. */
function checkUnwritable(ops: OpRecord[], timeline: RoleTimeline, findings: Finding[]): void {
  const groups = new Map<string, OpRecord[]>();
  for (const op of ops) {
    if (op.outcome !== 'refused' || op.status !== 401) continue;
    if (!timeline.during(op.ns, op.site, op.start, op.end).onlyPrimary) continue;
    const k = `${op.ns}@${op.site}`;
    groups.set(k, [...(groups.get(k) ?? []), op]);
  }
  for (const [, g] of groups) {
    const { ns, site } = g[0]!;
    findings.push({
      kind: 'unwritable-primary',
      ns,
      site,
      detail: `${g.length} write(s) refused with 401 by ${site} while it was primary of ${ns} (${iso(g[0]!.start)}–${iso(g[g.length - 1]!.end)}): its NetHSM lacks ${ns}~admin`,
    });
  }
}

function indexKeys(ops: OpRecord[]): Map<string, KeyHistory> {
  const out = new Map<string, KeyHistory>();
  for (const op of ops) {
    const id = `${op.ns}/${op.key}`;
    let kh = out.get(id);
    if (!kh) out.set(id, (kh = { ns: op.ns, key: op.key, deletes: [], tags: [], certs: [] }));
    if (op.kind === 'import' || op.kind === 'generate') kh.create = op;
    else if (op.kind === 'delete') kh.deletes.push(op);
    else if (op.kind === 'tag') kh.tags.push(op);
    else kh.certs.push(op);
  }
  return out;
}

/** One key's story against the primary's copy (`have`, undefined when absent). */
function checkKey(kh: KeyHistory, have: KeyView | undefined, quarantine: QuarantineIndex, timeline: RoleTimeline, primary: string, findings: Finding[], info: Report['info']): void {
  const { ns, key } = kh;
  const base = { ns, site: primary, key };
  const c = kh.create;
  if (!c) {
    if (have) findings.push({ ...base, kind: 'extra', detail: `key ${key} at the primary was only ever the target of updates, never created` });
    return;
  }
  const superseded = (op: OpRecord): boolean => timeline.during(op.ns, op.site, op.start, op.end).superseded;
  for (const op of [c, ...kh.deletes, ...kh.tags, ...kh.certs]) if (op.outcome === 'ack' && superseded(op)) info.ackedBySupersededPrimary++;
  const deleteAcked = kh.deletes.find((d) => d.outcome === 'ack');
  const deleteMaybe = kh.deletes.some((d) => d.outcome !== 'refused');

  if (c.outcome === 'refused') {
    if (have) findings.push({ ...base, kind: 'extra', detail: `${c.kind} #${c.id} of ${key} was refused (${c.status ?? c.error}) at ${c.site}, yet the key is at the primary` });
    return;
  }
  if (c.outcome === 'unknown') {
    if (have) info.unknownPresent++;
    else info.unknownAbsent++;
  }
  if (deleteAcked) {
    if (!have) return;
    if (quarantine.reflects(deleteAcked, false)) info.quarantined++;
    else findings.push({ ...base, kind: 'lost', detail: `delete #${deleteAcked.id} of ${key} was acknowledged at ${deleteAcked.site} (t=${iso(deleteAcked.end)}), yet the key is at the primary` });
    return;
  }
  if (!have) {
    if (c.outcome !== 'ack' || deleteMaybe) return;
    if (quarantine.reflects(c, true)) info.quarantined++;
    else findings.push({ ...base, kind: 'lost', detail: `${c.kind} #${c.id} of ${key} acknowledged at ${c.site} (t=${iso(c.end)}), but the key is neither at the primary ${primary} nor in a later quarantine file of ${c.site}` });
    return;
  }
  if (c.pub && have.pub && c.pub !== have.pub) findings.push({ ...base, kind: 'wrong-key', detail: `key ${key} at the primary has another public key than the one ${c.kind} #${c.id} made` });
  checkUpdates(kh, have, quarantine, base, findings, info);
}

/** Tags and certificates of a key present at the primary. */
function checkUpdates(kh: KeyHistory, have: KeyView, quarantine: QuarantineIndex, base: { ns: string; site: string; key: string }, findings: Finding[], info: Report['info']): void {
  const missing = (op: OpRecord, what: string): void => {
    if (quarantine.reflects(op, true)) info.quarantined++;
    else findings.push({ ...base, kind: 'lost', detail: `${what} on ${kh.key} (#${op.id}) acknowledged at ${op.site} (t=${iso(op.end)}), missing at the primary and in no later quarantine file of ${op.site}` });
  };
  for (const t of kh.tags) {
    const present = have.tags.includes(t.tag!);
    if (t.outcome === 'ack' && !present) missing(t, `tag ${t.tag}`);
    if (t.outcome === 'refused' && present) findings.push({ ...base, kind: 'extra', detail: `tag ${t.tag} on ${kh.key} (#${t.id}) was refused (${t.status ?? t.error}) at ${t.site}, yet it is at the primary` });
  }
  for (const c of kh.certs) {
    if (c.outcome === 'ack' && have.cert === undefined) missing(c, 'certificate');
    if (c.outcome === 'ack' && have.cert !== undefined && have.cert !== c.cert) findings.push({ ...base, kind: 'wrong-key', detail: `certificate of ${kh.key} at the primary is not the one #${c.id} set` });
    if (c.outcome === 'refused' && have.cert !== undefined && have.cert === c.cert) {
      findings.push({ ...base, kind: 'extra', detail: `certificate on ${kh.key} (#${c.id}) was refused (${c.status ?? c.error}) at ${c.site}, yet it is at the primary` });
    }
  }
}

/** Every replica against the primary, and whether its status claimed to be caught up. */
function checkReplicas(ns: string, primary: string, inv: KeyView[], obs: Observation, findings: Finding[]): void {
  const head = obs.statuses[primary]?.namespaces.find((n) => n.name === ns)?.stream?.position;
  const want = new Map(inv.map((k) => [k.id, k]));
  for (const [site, byNs] of Object.entries(obs.inventories)) {
    if (site === primary) continue;
    const have = byNs[ns];
    if (!have) {
      findings.push({ kind: 'unconverged', ns, site, detail: `the inventory of ${ns} at ${site} could not be read` });
      continue;
    }
    const got = new Map(have.map((k) => [k.id, k]));
    const diffs: string[] = [];
    for (const k of have) {
      if (!want.has(k.id)) {
        findings.push({ kind: 'extra', ns, site, key: k.id, detail: `replica ${site} holds ${k.id}, which the primary ${primary} does not` });
        diffs.push(`extra ${k.id}`);
      }
    }
    for (const k of inv) {
      const r = got.get(k.id);
      const why = !r ? 'missing' : r.pub !== k.pub ? 'another public key' : r.tags.join(',') !== k.tags.join(',') ? `tags [${r.tags}] not [${k.tags}]` : r.cert !== k.cert ? 'another certificate' : undefined;
      if (why) {
        findings.push({ kind: 'diverged', ns, site, key: k.id, detail: `replica ${site}: ${k.id} ${why} (primary ${primary})` });
        diffs.push(`${k.id} ${why}`);
      }
    }
    if (diffs.length > 0 && claimsCaughtUp(obs.statuses[site], ns, head)) {
      findings.push({
        kind: 'stale-status',
        ns,
        site,
        detail: `${site}'s status says ${ns} is caught up with ${primary} (position ${head!.epoch}.${head!.seq}, nothing behind; /replica/${ns} → ${obs.roleChecks[site]?.[ns]?.replica ?? '?'}) but it differs: ${diffs.slice(0, 5).join('; ')}${diffs.length > 5 ? ` (+${diffs.length - 5})` : ''}`,
      });
    }
  }
}

function claimsCaughtUp(st: DaemonStatus | null | undefined, ns: string, head: { epoch: number; seq: number } | null | undefined): boolean {
  const n = st?.namespaces.find((x) => x.name === ns);
  const pos = n?.stream?.position;
  return !!head && n?.role === 'replica' && !!pos && pos.epoch === head.epoch && pos.seq === head.seq && (n.stream?.changesBehind ?? 0) === 0;
}

function checkDuplicates(obs: Observation, findings: Finding[]): void {
  for (const [site, byNs] of Object.entries(obs.inventories)) {
    const seen = new Map<string, string>();
    for (const [ns, keys] of Object.entries(byNs)) {
      for (const k of keys ?? []) {
        if (!k.pub) continue;
        const where = `${ns}/${k.id}`;
        const first = seen.get(k.pub);
        if (first) findings.push({ kind: 'duplicated', ns, site, key: k.id, detail: `${site} holds one public key twice: ${first} and ${where}` });
        else seen.set(k.pub, where);
      }
    }
  }
}

/** The quarantine files of one namespace, by the site that wrote them. */
class QuarantineIndex {
  constructor(
    private readonly obs: Observation,
    private readonly ns: string,
  ) {}

  /**
   * Whether a quarantine file of the namespace, written by the site that acknowledged `op` after it did, reflects the
   * write: holds the key (`present`) or, for a delete, does not.
   */
  reflects(op: OpRecord, present: boolean): boolean {
    return (this.obs.quarantine[op.site] ?? []).some((f) => f.ns === this.ns && f.createdAt >= op.end && f.keys.includes(op.key) === present);
  }
}

/** When the sites do not agree: the site claiming primary at the highest epoch, so the keys can still be checked. */
function fallbackPrimary(ns: string, statuses: Record<string, DaemonStatus | null>): string | undefined {
  let best: { site: string; epoch: number } | undefined;
  for (const [site, st] of Object.entries(statuses)) {
    const n = st?.namespaces.find((x) => x.name === ns);
    if (n?.role === 'primary' && (!best || n.epoch > best.epoch)) best = { site, epoch: n.epoch };
  }
  return best?.site;
}

/** Which roles a site held when, per its audit log. */
export class RoleTimeline {
  constructor(private readonly roles: Observation['roles']) {}

  /**
   * The site's roles for `ns` during [start, end]: whether it was primary at any moment, and whether, while it was,
   * another site was already primary at a higher epoch (per that site's audit log).
   */
  during(ns: string, site: string, start: number, end: number): { primary: boolean; onlyPrimary: boolean; superseded: boolean; describe: string } {
    const spans = this.spansIn(ns, site, start, end);
    const primaryEpochs = spans.filter((s) => s.role === 'primary').map((s) => s.epoch);
    const describe = spans.length === 0 ? 'unknown (no audit entry)' : spans.map((s) => `${s.role}@${s.epoch}`).join('→');
    const onlyPrimary = spans.length > 0 && primaryEpochs.length === spans.length;
    if (primaryEpochs.length === 0) return { primary: false, onlyPrimary, superseded: false, describe };
    const mine = Math.max(...primaryEpochs);
    const superseded = Object.keys(this.roles[ns] ?? {}).some(
      (other) => other !== site && this.spansIn(ns, other, start, end).some((s) => s.role === 'primary' && s.epoch > mine && s.at <= end),
    );
    return { primary: true, onlyPrimary, superseded, describe };
  }

  /** The span in force at `start` plus every change up to `end`. */
  private spansIn(ns: string, site: string, start: number, end: number): RoleSpan[] {
    const all = this.roles[ns]?.[site] ?? [];
    const before = all.filter((s) => s.at <= start);
    return [...before.slice(-1), ...all.filter((s) => s.at > start && s.at <= end)];
  }
}

function countOps(ops: OpRecord[]): Pick<Report, 'ops' | 'opsByKind' | 'failuresByStatus'> {
  const zero = (): Record<Outcome, number> => ({ ack: 0, refused: 0, unknown: 0 });
  const byKind: Record<OpKind, Record<Outcome, number>> = { import: zero(), generate: zero(), delete: zero(), tag: zero(), cert: zero() };
  const total = { ...zero(), total: ops.length };
  const failuresByStatus: Record<string, number> = {};
  for (const o of ops) {
    byKind[o.kind][o.outcome]++;
    total[o.outcome]++;
    if (o.outcome !== 'ack') failuresByStatus[`${o.outcome} ${o.status ?? 'none'}`] = (failuresByStatus[`${o.outcome} ${o.status ?? 'none'}`] ?? 0) + 1;
  }
  return { ops: total, opsByKind: byKind, failuresByStatus };
}

function countFaults(faults: FaultRecord[]): Report['faults'] {
  const out = Object.fromEntries(ALL_FAULT_KINDS.map((k) => [k, { done: 0, notDone: 0 }])) as Report['faults'];
  for (const f of faults) out[f.kind][f.ok ? 'done' : 'notDone']++;
  return out;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().slice(11, 23);
}

/** The report as text: counts, then every finding (capped per kind), then the one-line summary last. */
export function formatReport(r: Report, maxPerKind = 20): string {
  const lines: string[] = [];
  lines.push(`operations: ${r.ops.total} (acknowledged ${r.ops.ack}, refused ${r.ops.refused}, unknown ${r.ops.unknown})`);
  for (const [k, v] of Object.entries(r.opsByKind)) lines.push(`  ${k.padEnd(9)} ack ${v.ack}  refused ${v.refused}  unknown ${v.unknown}`);
  const byStatus = Object.entries(r.failuresByStatus).sort(([a], [b]) => a.localeCompare(b));
  if (byStatus.length > 0) lines.push(`  not acknowledged, by status: ${byStatus.map(([k, v]) => `${k}: ${v}`).join(', ')}`);
  const faults = Object.entries(r.faults).filter(([, v]) => v.done + v.notDone > 0);
  lines.push(`faults: ${faults.reduce((s, [, v]) => s + v.done + v.notDone, 0)}`);
  for (const [k, v] of faults) lines.push(`  ${k.padEnd(17)} ${v.done}${v.notDone ? ` (+${v.notDone} not carried out)` : ''}`);
  lines.push(`final primaries: ${Object.entries(r.finalPrimaries).map(([ns, s]) => `${ns}@${s ?? 'NONE'}`).join(', ')}; converged: ${r.converged ? 'yes' : 'NO'}`);
  lines.push(
    `info: ${r.info.quarantined} acknowledged write(s) found only in quarantine, ${r.info.ackedBySupersededPrimary} acknowledged by a superseded primary, ` +
      `unknown creates: ${r.info.unknownPresent} present / ${r.info.unknownAbsent} absent`,
  );
  if (r.terms) {
    lines.push(`terms (site@epoch first–last ack (count)): ${Object.entries(r.terms).map(([ns, ts]) => `${ns}: ${ts.join(', ')}`).join('; ')}`);
    lines.push(`  acknowledged after a step-down, within the safety margin: ${r.info.ackedAfterStepDown}`);
  }
  for (const kind of FINDING_KINDS) {
    const fs = r.findings.filter((f) => f.kind === kind);
    if (fs.length === 0) continue;
    lines.push(`FINDINGS ${kind} (${fs.length}):`);
    for (const f of fs.slice(0, maxPerKind)) lines.push(`  - ${f.ns ? `[${f.ns}${f.site ? `@${f.site}` : ''}] ` : ''}${f.detail}`);
    if (fs.length > maxPerKind) lines.push(`  … ${fs.length - maxPerKind} more in report.json`);
  }
  lines.push(summaryLine(r));
  return lines.join('\n');
}

/** `faults seed=… PASS|FAIL ops=… lost=… …`: the one line CI logs and the docs' table come from. */
export function summaryLine(r: Report): string {
  const faults = Object.values(r.faults).reduce((s, v) => s + v.done, 0);
  const counts = FINDING_KINDS.map((k) => `${k}=${r.counts[k]}`).join(' ');
  return `faults seed=${r.seed ?? '?'} minutes=${r.minutes ?? '?'} ${r.findings.length === 0 ? 'PASS' : 'FAIL'} ops=${r.ops.total} ack=${r.ops.ack} refused=${r.ops.refused} unknown=${r.ops.unknown} faults=${faults} ${counts}`;
}
