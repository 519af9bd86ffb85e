/**
 * The quarantine folder as the operator sees it: what each file holds (`quarantine list`), which files nobody has
 * looked at yet (`status`, the unacknowledged-files gauge), and the acknowledgement (`quarantine ack <file>`).
 *
 * Files are written by a fence (src/daemon/failover.ts, reason `fenced`) and by a sync that found foreign writes
 * (src/replicator/foreign.ts, reason `foreign writes at replica`), as namespace backups under the replication
 * passphrase. An acknowledgement is a row in the state store (`quarantine_acks`) plus an audit row, written in one
 * transaction; the file itself stays where it is, because fences and syncs find it again by its path (docs/state.md).
 */
import { lstat } from 'node:fs/promises';
import path from 'node:path';
import { listBackupContents } from '../backup/contents.js';
import { InputInvalidError, NhrError, QuarantineFileUnknownError } from '../errors.js';
import { FOREIGN_REASON } from '../replicator/foreign.js';
import { quarantineFileNameProblem, quarantineNamespaceOf } from '../replicator/workdir.js';
import type { StateStore } from '../state/store.js';
import type { SiteContext } from './context.js';

export interface QuarantineFileView {
  /** The file's name in `quarantine/` (what `quarantine ack` takes). */
  file: string;
  namespace: string | null;
  /** `fenced`, `foreign_writes` (the metric's reason values), or the manifest's own text for anything else. */
  reason: string | null;
  /** The epoch the site held when it wrote the file (fence), or the snapshot's epoch (foreign writes). */
  epoch: number | null;
  /** Foreign writes: the snapshot's sequence number. */
  seq: number | null;
  /** The site that wrote it. */
  site: string | null;
  /** When it was written (ISO): the manifest's time, else the file's modification time. */
  at: string;
  bytes: number;
  keys: number | null;
  users: number | null;
  keyIds: string[];
  userIds: string[];
  acknowledged: { at: string; actor: string } | null;
  /** Why the file's contents could not be read (its other fields then come from its name and the file system). */
  error: string | null;
}

export interface QuarantineList {
  directory: string;
  files: QuarantineFileView[];
}

/** The quarantine files nobody acknowledged yet, with their namespace when the name tells it. Synchronous, cheap. */
export function unacknowledgedQuarantine(ctx: SiteContext): { file: string; namespace: string | null }[] {
  const acked = ctx.store.quarantineAcks.files();
  const namespaces = ctx.config.namespaces.map((n) => n.name);
  return ctx.work
    .quarantineFiles()
    .filter((f) => !acked.has(f))
    .map((file) => ({ file, namespace: quarantineNamespaceOf(file, namespaces) ?? null }));
}

/** Unacknowledged files per configured namespace (0 included), plus `_other` for files of no configured namespace. */
export function unacknowledgedCounts(ctx: SiteContext): Record<string, number> {
  const counts: Record<string, number> = Object.fromEntries(ctx.config.namespaces.map((n) => [n.name, 0]));
  for (const f of unacknowledgedQuarantine(ctx)) {
    const key = f.namespace ?? '_other';
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

/**
 * Every quarantine file with what its manifest and entries say. Reads each file whole (it opens with the replication
 * passphrase, which only the daemon holds); a file that does not open is listed with `error` set, never dropped.
 */
export async function listQuarantine(ctx: SiteContext): Promise<QuarantineList> {
  const acks = ctx.store.quarantineAcks;
  const namespaces = ctx.config.namespaces.map((n) => n.name);
  const files: QuarantineFileView[] = [];
  for (const file of ctx.work.quarantineFiles()) {
    const full = path.join(ctx.work.quarantine, file);
    const st = await lstat(full).catch(() => undefined);
    if (!st?.isFile()) continue; // gone since the folder was read
    const ack = acks.get(file);
    const view: QuarantineFileView = {
      file,
      namespace: quarantineNamespaceOf(file, namespaces) ?? null,
      reason: null,
      epoch: null,
      seq: null,
      site: null,
      at: st.mtime.toISOString(),
      bytes: st.size,
      keys: null,
      users: null,
      keyIds: [],
      userIds: [],
      acknowledged: ack ? { at: new Date(ack.at).toISOString(), actor: ack.actor } : null,
      error: null,
    };
    try {
      Object.assign(view, await readContents(ctx, full));
    } catch (err) {
      // NhrError messages carry no secret (errors.ts contract); anything else is named by its class only.
      view.error = err instanceof NhrError ? `${err.message} [${err.code}]` : 'the file could not be read';
    }
    files.push(view);
  }
  return { directory: ctx.work.quarantine, files };
}

async function readContents(ctx: SiteContext, file: string): Promise<Partial<QuarantineFileView>> {
  const c = await listBackupContents(file, { input: ctx.snapshotOpen, collectIds: true });
  const meta = c.manifest?.meta ?? {};
  const namespace = c.manifest?.namespace ?? Object.keys(c.namespaces)[0];
  const ns = namespace === undefined ? undefined : c.namespaces[namespace];
  const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const reason = meta.reason === 'fenced' ? 'fenced' : meta.reason === FOREIGN_REASON ? 'foreign_writes' : typeof meta.reason === 'string' ? meta.reason.slice(0, 200) : null;
  const at = num(meta.at);
  return {
    ...(namespace !== undefined ? { namespace } : {}),
    reason,
    epoch: num(meta.epoch),
    seq: num(meta.seq),
    site: typeof meta.site === 'string' ? meta.site.slice(0, 128) : null,
    ...(at !== null ? { at: new Date(at).toISOString() } : {}),
    keys: ns?.keys ?? 0,
    users: ns?.users ?? 0,
    keyIds: ns?.keyIds ?? [],
    userIds: ns?.userIds ?? [],
  };
}

/**
 * Records that `actor` has looked at quarantine file `file` (a bare name; see quarantineFileNameProblem): a
 * `quarantine_acks` row and an audit row (`quarantine-ack`), in one transaction. Idempotent: a second ack of the same
 * file changes nothing and says so. Throws InputInvalidError for a malformed name and QuarantineFileUnknownError when
 * no such file is in the folder; nothing is recorded then.
 */
export async function ackQuarantine(ctx: SiteContext, file: string, actor: string): Promise<{ file: string; acknowledged: { at: string; actor: string }; alreadyAcknowledged: boolean }> {
  const problem = quarantineFileNameProblem(file);
  if (problem) throw new InputInvalidError(`quarantine file ${JSON.stringify(file.slice(0, 300))} ${problem}`);
  const st = await lstat(path.join(ctx.work.quarantine, file)).catch(() => undefined);
  if (!st?.isFile()) {
    throw new QuarantineFileUnknownError(`no quarantine file ${file} in ${ctx.work.quarantine}`, { path: ctx.work.quarantine });
  }
  const namespace = quarantineNamespaceOf(file, ctx.config.namespaces.map((n) => n.name));
  const added = ctx.store.transaction(() => {
    if (!ctx.store.quarantineAcks.add(file, actor)) return false;
    ctx.store.audit.append({ actor, action: 'quarantine-ack', ...(namespace ? { namespace } : {}), detail: { file } });
    // A fence's file lacking erased writes it could not re-apply: the operator has looked, the record ends with the ack.
    ctx.raceReplayer?.acknowledged(file);
    return true;
  });
  const ack = ctx.store.quarantineAcks.get(file)!;
  ctx.log.info({ file, actor, namespace, already: !added }, added ? 'quarantine file acknowledged' : 'quarantine file was acknowledged already');
  return { file, acknowledged: { at: new Date(ack.at).toISOString(), actor: ack.actor }, alreadyAcknowledged: !added };
}

/**
 * What the audit log says of `namespace`'s current fence: whether it was fenced (the last change of its role to
 * `fenced`, with the epoch it left), and the quarantine files its fence exports wrote since then (all of them when
 * no fencing row is found). One reader for the sync (what a fence already saved; no sync before its export) and the
 * fence's continuation (export first, then resync).
 */
export function fenceExports(store: StateStore, namespace: string): { fencedFrom: number | undefined; fenced: boolean; files: string[] } {
  const entries = store.audit.list({ namespace, limit: 100_000 });
  const fencedAt = entries.findLastIndex((e) => e.toRole === 'fenced' && e.fromRole !== 'fenced');
  const files = entries.slice(fencedAt + 1).flatMap((e) => (e.action === 'fence' && typeof e.detail.quarantine === 'string' ? [e.detail.quarantine] : []));
  return { fenced: fencedAt >= 0, fencedFrom: fencedAt >= 0 ? (entries[fencedAt]!.fromEpoch ?? undefined) : undefined, files };
}
