/**
 * The replica's side of snapshot replication: write one namespace into this site's device without losing anything
 * else on it. A NetHSM restore replaces the whole store, so (docs/concurrency.md, "Snapshot sync"):
 *   1. mark the barrier's write generation, back the device up (B1) under a read-only SHARED hold, and merge OUTSIDE
 *      any exclusive hold: B1's entries outside the namespace + the snapshot's namespace entries, less the namespace's
 *      Administrators (read-only replica; the replication account stays). The same pass lists the namespace's keys
 *      and users the restore will remove, for the foreign-writes check;
 *   2. take the EXCLUSIVE hold (the caller's `hold`: barrier, then the namespace's lock). If no write outside the
 *      namespace passed the barrier since the mark (none in flight at it either; writes scoped to the namespace itself
 *      are replaced by the restore anyway), B1 is still what the device holds outside it: check the fencing
 *      tokens, save foreign writes (foreign.ts) from B1 to a quarantine file — or, on a first sync with
 *      `onExisting: 'remove'`, the whole namespace to kept/ — and restore. The hold is the restore and nothing else;
 *   3. if writes raced, leave the hold and redo 1–2 (at most `maxRemerges` times); as a last resort do the old
 *      sequence inside the hold: B1, merge, a B2 re-check against writers that bypass the barrier (SyncRaceError when
 *      they keep racing), save, restore. `onHeldMerge` reports it (metric, log);
 *   4. after the hold, back up again (B3, shared) and verify in one pass: B3 equals the merged file (every entry
 *      outside the namespace as in B1, the namespace as merged), less the namespaces written since the restore (the
 *      barrier knows them); an unscoped write since skips verification, reported (`onVerifySkipped`). A failed
 *      verification keeps B1 (path logged) and throws SyncVerifyFailedError.
 * Writes made straight to the NetHSM (not through this daemon) between B1 and the restore are invisible to the
 * barrier and are lost in the common path: the window is documented (docs/concurrency.md).
 */
import { rename } from 'node:fs/promises';
import { listBackupContents, verifyManifest } from '../backup/contents.js';
import { extractNamespace } from '../backup/namespace.js';
import { classifyPath, isNamespacePath } from '../backup/paths.js';
import type { ScryptParams } from '../backup/format.js';
import type { OpenBackupOptions } from '../backup/reader.js';
import { openSource } from '../backup/transform.js';
import { SyncNamespaceExistsError, SyncRaceError, SyncVerifyFailedError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { diffEntries, isEmptyDiff, type BackupDiff, type DiffKind } from './compare.js';
import type { ExclusiveGuard, WriteMark } from '../concurrency/barrier.js';
import type { Device } from './device.js';
import { foreignAmong, quarantineForeign, type ForeignEntries, type ForeignQuarantine } from './foreign.js';
import { isUserOf, rewriteBackup } from './rewrite.js';
import { snapshotMetaOf, type SnapshotMeta } from './snapshot-meta.js';
import { removeFiles, type WorkDir } from './workdir.js';

/** Takes the exclusive device hold (and whatever locks go with it) and runs `fn` inside it. */
export type ExclusiveHold = <T>(fn: (guard: ExclusiveGuard) => Promise<T>) => Promise<T>;

/** Where a sync stands, for tests and progress: each phase is reported as it starts. */
export type ApplyPhase = 'backup' | 'merge' | 'hold' | 'restore' | 'verify';

export interface ApplyDeps {
  device: Device;
  work: WorkDir;
  deviceOpen: OpenBackupOptions;
  /** How snapshots open (the replication passphrase). */
  snapshotOpen: OpenBackupOptions;
  /** The namespace's replication account id (without `<ns>~`): kept on the replica. */
  replicationUserId: string;
  /**
   * Takes the exclusive hold around the restore; its guard is checked right before the restore (a stale token
   * abandons the apply). Pass the namespace as the hold's scope (ExclusiveOptions). Default: the device's barrier,
   * no tokens, scoped to the namespace.
   */
  hold?: ExclusiveHold;
  /** Runs inside the exclusive hold right after a successful restore (the caller records the position there). */
  afterRestore?: (r: RestoredSnapshot) => void;
  logger?: Logger;
  /**
   * How many times to back up and merge again outside the hold when writes raced (default 2); then inside it. -1: no
   * attempt outside the hold (writers around the daemon: only the held sequence's re-check sees them).
   */
  maxRemerges?: number;
  /** How many times the last-resort sequence merges again when writers bypassing the barrier race B2 (default 3). */
  maxRechecks?: number;
  /** Test seam: runs after B1 is merged and before the exclusive hold is requested (a test writes here). */
  beforeHold?: () => Promise<void>;
  /** Test seam (last resort only): runs after B1 is merged and before B2 is taken. */
  beforeRecheck?: () => Promise<void>;
  /** Called as each phase starts (tests assert where the hold is; progress). */
  onPhase?: (phase: ApplyPhase) => void;
  /** Called when the merge fell back to running inside the exclusive hold (metric; the log says why). */
  onHeldMerge?: () => void;
  /** Called when verification was skipped because writes kept passing the barrier after the restore (metric). */
  onVerifySkipped?: () => void;
  /**
   * Given: the verification (B3 and its comparison) is not awaited; applySnapshot returns once the restore is done and
   * hands it here to run after (it resolves like `verified`, or throws SyncVerifyFailedError, and removes the
   * temporary files either way). The caller must keep the next merge-restore of this namespace waiting for it.
   */
  deferVerify?: (verify: () => Promise<boolean>) => void;
  /** Test seam: runs after the restore and before the check backup (B3) is taken. */
  beforeVerify?: () => Promise<void>;
  /** Called with the number of entries lost outside the namespace when verification fails (metrics). */
  onForeignLoss?: (lost: number) => void;
  /** This site's name, for a quarantine file's meta. */
  site?: string;
  /** Whether a stream change this site applied or logged names this key id of the namespace (then it is not foreign). */
  knownKey?: (keyId: string) => boolean;
  /** Namespace backups (opened like snapshots) that already saved entries of the namespace, e.g. the fence's quarantine. */
  savedFiles?: readonly string[];
  /** Passphrase of quarantine files. Default: the snapshots' (`snapshotOpen`), i.e. the replication passphrase. */
  quarantineOut?: { passphrase: string | Buffer; scrypt?: ScryptParams };
  /** Called once foreign entries are saved, before the restore (audit row, metric); a throw abandons the restore. */
  onQuarantined?: (q: ForeignQuarantine) => void;
}

export interface ApplyOptions {
  /** First sync of this namespace at this site: refuse (default) or replace a namespace the device already holds. */
  onExisting?: 'refuse' | 'remove' | 'adopt';
}

export interface ApplyResult {
  meta: SnapshotMeta;
  /** Times the backup and merge were redone because writes raced (outside the hold, then inside it). */
  remerges: number;
  /** Whether the merge ran inside the exclusive hold (last resort: writes kept racing). */
  heldMerge: boolean;
  /**
   * Whether the restore was verified (false: writes that may touch anything passed the barrier after it; reported),
   * or `deferred`: handed to `deferVerify`.
   */
  verified: boolean | 'deferred';
  namespaceEntries: number;
  /** Administrators left out on this replica. */
  strippedAdministrators: string[];
  /** Where the device's previous copy of the namespace was saved (`onExisting: 'remove'`). */
  savedExisting?: string;
  /** Foreign writes the restore removed, and the quarantine file that holds them. */
  quarantined?: ForeignQuarantine;
}

/** What `afterRestore` learns: the result less what only verification tells. */
export type RestoredSnapshot = Omit<ApplyResult, 'verified'>;

/** One merge: the device backup it came from, the merged file, and the namespace paths the restore removes. */
interface Merged {
  base: string;
  merged: string;
  replacing: boolean;
  /** The foreign entries among those the restore removes (none when replacing the whole namespace). */
  foreign: ForeignEntries | undefined;
}

interface Apply {
  deps: ApplyDeps;
  namespace: string;
  snapshotFile: string;
  options: ApplyOptions;
  meta: SnapshotMeta;
  stripped: string[];
  namespaceEntries: number;
  log: Logger;
  temp: (label: string) => string;
}

/**
 * Applies a verified snapshot file of `namespace`. On success the snapshot is moved to `snapshots/<ns>.nsbackup`.
 * Throws the codec's errors for a bad snapshot (nothing touched), SyncNamespaceExistsError, SyncRaceError (last
 * resort only), SyncQuarantineFailedError (foreign entries could not be saved; nothing restored),
 * SyncVerifyFailedError (after the restore and `afterRestore`), what `hold` throws (FenceTokenStaleError, a drain
 * timeout: nothing restored), and the client's errors. Before the restore nothing on the device has changed; a failed
 * restore leaves it as it was (the NetHSM applies a restore file only once fully read and authenticated).
 */
export async function applySnapshot(deps: ApplyDeps, namespace: string, snapshotFile: string, options: ApplyOptions = {}): Promise<ApplyResult> {
  const contents = await listBackupContents(snapshotFile, { input: deps.snapshotOpen });
  verifyManifest(contents);
  const meta = snapshotMetaOf(contents.manifest, namespace);
  const temps: string[] = [];
  const a: Apply = {
    deps,
    namespace,
    snapshotFile,
    options,
    meta,
    stripped: meta.administrators.filter((id) => id !== deps.replicationUserId),
    namespaceEntries: contents.namespaces[namespace]?.keys ?? 0,
    log: deps.logger ?? silentLogger,
    temp: (label) => {
      const t = deps.work.temp(label);
      temps.push(t);
      return t;
    },
  };
  const hold: ExclusiveHold = deps.hold ?? ((fn) => deps.device.barrier.exclusive([], fn, { scope: namespace }));
  try {
    // Writes within the namespace itself (its stream, its anti-entropy) need no new merge: the restore replaces the
    // namespace, and the position recorded with it makes the stream apply again what the snapshot lacks.
    const own = new Set([namespace]);
    let outcome: { done: RestoredSnapshot; merged: Merged; after: WriteMark } | undefined;
    let remerges = 0;
    for (; outcome === undefined && remerges <= (deps.maxRemerges ?? 2); remerges++) {
      const mark = deps.device.barrier.markWrites();
      const m = await backupAndMerge(a, (file) => deps.device.backupForReading(file), remerges);
      await deps.beforeHold?.();
      deps.onPhase?.('hold');
      outcome = await hold(async (guard) => {
        const raced = deps.device.barrier.writesSince(mark, own);
        if (raced > 0) {
          a.log.info({ namespace, writes: raced }, 'writes passed the device barrier during the backup and merge; merging again');
          return undefined;
        }
        const done = await saveAndRestore(a, m, guard, remerges, false);
        return { done, merged: m, after: deps.device.barrier.markWrites() };
      });
    }
    if (outcome === undefined) {
      // `remerges` now counts the attempts made outside the hold: the held merge is one more redo.
      deps.onHeldMerge?.();
      if (remerges === 0) a.log.info({ namespace }, 'merging inside the exclusive hold, with a re-check for writers around the daemon (replication.directWriters)');
      else {
        a.log.warn(
          { namespace, attempts: remerges },
          'writes kept passing the device barrier during every backup and merge; merging inside the exclusive hold (writes wait for the whole merge-restore)',
        );
      }
      outcome = await hold(async (guard) => {
        const r = await heldMerge(a, remerges);
        const done = await saveAndRestore(a, r.merged, guard, r.remerges, true);
        return { done, merged: r.merged, after: deps.device.barrier.markWrites() };
      });
    }
    const restored = outcome;
    if (deps.deferVerify) {
      await rename(snapshotFile, deps.work.snapshotOf(namespace));
      // The temporary files (B1 among them, kept when verification fails) now belong to the verification.
      const files = temps.splice(0);
      const later: Apply = {
        ...a,
        temp: (label) => {
          const t = deps.work.temp(label);
          files.push(t);
          return t;
        },
      };
      deps.deferVerify(() => verifyAfter(later, restored.merged, restored.after).finally(() => removeFiles(...files)));
      return { ...restored.done, verified: 'deferred' };
    }
    const verified = await verifyAfter(a, restored.merged, restored.after);
    await rename(snapshotFile, deps.work.snapshotOf(namespace));
    return { ...restored.done, verified };
  } finally {
    await removeFiles(...temps);
  }
}

/** B1 with `backup` (shared or, inside the hold, the holder's own), then the merge. */
async function backupAndMerge(a: Apply, backup: (file: string) => Promise<unknown>, attempt: number): Promise<Merged> {
  a.deps.onPhase?.('backup');
  const base = a.temp(`pre-${attempt + 1}`);
  await backup(base);
  const replacing = await checkExisting(a.deps, a.namespace, base, a.options);
  a.deps.onPhase?.('merge');
  return mergeFrom(a, base, replacing);
}

/** The merge of `base`, and the foreign entries the restore would remove (known files read here, outside any hold). */
async function mergeFrom(a: Apply, base: string, replacing: boolean): Promise<Merged> {
  const { merged, removed } = await merge(a, base);
  const { deps, namespace, log } = a;
  if (replacing || removed.size === 0) return { base, merged, replacing, foreign: undefined };
  const known = { files: [deps.work.snapshotOf(namespace), ...(deps.savedFiles ?? [])], open: deps.snapshotOpen, ...(deps.knownKey ? { knownKey: deps.knownKey } : {}) };
  return { base, merged, replacing, foreign: await foreignAmong(namespace, removed, known, log) };
}

/**
 * The last resort, inside the exclusive hold: no write passes the barrier, so only writers bypassing it can race; a
 * B2 re-check catches those (bounded; SyncRaceError when they keep racing).
 */
async function heldMerge(a: Apply, remergesSoFar: number): Promise<{ merged: Merged; remerges: number }> {
  const otherData = (p: string) => !isNamespacePath(p, a.namespace) && isStoreData(p);
  let m = await backupAndMerge(a, (file) => a.deps.device.backupTo(file), remergesSoFar);
  let rechecks = 0;
  for (;;) {
    await a.deps.beforeRecheck?.();
    const b2 = a.temp(`recheck-${rechecks + 1}`);
    await a.deps.device.backupTo(b2);
    const raced = await diffFiles(a.deps.deviceOpen, m.base, b2, otherData);
    if (isEmptyDiff(raced)) break;
    a.log.warn({ namespace: a.namespace, changed: raced.samples }, 'entries outside the namespace changed during the sync (a writer bypassing the gateway); merging again');
    if (++rechecks > (a.deps.maxRechecks ?? 3)) {
      throw new SyncRaceError(`entries outside namespace ${a.namespace} changed ${rechecks} times during the sync; not restoring`, { namespace: a.namespace });
    }
    m = await mergeFrom(a, b2, m.replacing);
  }
  return { merged: m, remerges: remergesSoFar + rechecks };
}

/** Inside the hold: save what the restore removes (from the base it replaces), check the tokens, restore. */
async function saveAndRestore(a: Apply, m: Merged, guard: ExclusiveGuard, remerges: number, held: boolean): Promise<RestoredSnapshot> {
  const { deps, namespace, meta, log } = a;
  const savedExisting = m.replacing ? await saveExisting(deps, namespace, m.base, log) : undefined;
  const quarantined = m.replacing ? undefined : await saveForeign(a, m);
  guard.check();
  deps.onPhase?.('restore');
  await deps.device.restore(m.merged);
  const done: RestoredSnapshot = {
    meta,
    remerges,
    heldMerge: held,
    namespaceEntries: a.namespaceEntries,
    strippedAdministrators: a.stripped,
    ...(savedExisting ? { savedExisting } : {}),
    ...(quarantined ? { quarantined } : {}),
  };
  deps.afterRestore?.(done);
  return done;
}

/**
 * Base entries outside the namespace + the snapshot's namespace entries less the stripped administrators, in one pass
 * that also lists the namespace's keys and users of the base the restore removes (the snapshot lacks their path).
 */
async function merge(a: Apply, base: string): Promise<{ merged: string; removed: Set<string> }> {
  const inNs = (p: string) => isNamespacePath(p, a.namespace);
  const dropAdmin = isUserOf(a.namespace, a.stripped);
  const removed = new Set<string>();
  const keyOrUser = (p: string) => inNs(p) && ['namespace-key', 'namespace-user'].includes(classifyPath(p).kind);
  const out = a.temp('merged');
  await rewriteBackup({
    base: { source: base, open: a.deps.deviceOpen, keep: (p) => !inNs(p) },
    overlay: { source: a.snapshotFile, open: a.deps.snapshotOpen, select: (p) => inNs(p) && !dropAdmin(p) },
    out,
    onDropped: (p, replaced) => {
      if (!replaced && keyOrUser(p)) removed.add(p);
    },
  });
  return { merged: out, removed };
}

async function diffFiles(
  open: OpenBackupOptions,
  before: string,
  after: string,
  inScope: (p: string) => boolean,
  onDiff?: (path: string, kind: DiffKind) => void,
): Promise<BackupDiff> {
  const a = await openSource(before, open);
  try {
    const b = await openSource(after, open);
    try {
      return await diffEntries(a.entries(), b.entries(), inScope, onDiff);
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}

/**
 * After the hold: B3 under a shared hold, compared with the merged file in one pass (outside the namespace it holds
 * B1's entries, inside it the namespace as merged). `after` was marked inside the hold right after the restore, so the
 * barrier tells which writes may have reached B3 since: the namespaces scoped writers wrote in are left out of the
 * comparison; an unscoped write (may touch anything) skips verification, reported (`onVerifySkipped`). Returns
 * whether it verified; keeps B1 and throws SyncVerifyFailedError when anything compared is off.
 */
async function verifyAfter(a: Apply, m: Merged, after: WriteMark): Promise<boolean> {
  const { deps, namespace, log } = a;
  deps.onPhase?.('verify');
  await deps.beforeVerify?.();
  const b3 = a.temp('post');
  await deps.device.backupForReading(b3);
  const written = deps.device.barrier.scopesWrittenSince(after);
  if (written.has(null)) {
    deps.onVerifySkipped?.();
    log.warn({ namespace }, 'restore not verified: writes that may touch anything passed the device barrier after it (the restore itself succeeded)');
    return false;
  }
  const skip = [...written].filter((s): s is string => s !== null);
  const inScope = (p: string) => isStoreData(p) && !skip.some((ns) => isNamespacePath(p, ns));
  let lostOutside = 0;
  const diff = await diffFiles(deps.deviceOpen, m.merged, b3, inScope, (p, kind) => {
    if (kind !== 'added' && !isNamespacePath(p, namespace)) lostOutside++;
  });
  if (isEmptyDiff(diff)) return true;
  const kept = deps.work.keptPath(namespace);
  await rename(m.base, kept);
  if (lostOutside > 0) deps.onForeignLoss?.(lostOutside);
  log.error({ namespace, kept, differences: diff.samples, notCompared: skip }, 'restore verification failed; pre-restore backup kept');
  throw new SyncVerifyFailedError(
    `after restoring namespace ${namespace}: ${diff.missing + diff.changed + diff.added} entries not as merged, ${lostOutside} of them outside it lost or changed; pre-restore backup kept at ${kept}`,
    { namespace, path: kept },
  );
}

/**
 * Users, keys and namespaces: what a restore replaces and clients write. Device-local configuration (unlock salt,
 * domain-key slots, TLS, network) is re-sealed by every restore with fresh nonces, so it is not compared.
 */
function isStoreData(path: string): boolean {
  const k = classifyPath(path).kind;
  return k !== 'config' && k !== 'store-version' && k !== 'manifest';
}

/**
 * On a first sync, a device that already holds the namespace is refused (`refuse`), or replaced (`remove`: returns
 * true; its copy is saved to `kept/` from the last backup before the restore), or taken as the bootstrap copy
 * (`adopt`: init-replica put it there).
 */
async function checkExisting(deps: ApplyDeps, namespace: string, deviceBackup: string, options: ApplyOptions): Promise<boolean> {
  const mode = options.onExisting;
  if (mode === undefined || mode === 'adopt') return false;
  const c = await listBackupContents(deviceBackup, { input: deps.deviceOpen });
  const held = c.namespaces[namespace];
  if (!held || (!held.present && held.keys === 0 && held.users === 0)) return false;
  if (mode === 'refuse') {
    throw new SyncNamespaceExistsError(
      `this device already holds namespace ${namespace} (${held.keys} keys, ${held.users} users${held.present ? '' : ', no namespace record'}) that was never synced here`,
      { namespace },
    );
  }
  return true;
}

/** `onExisting: 'remove'`: the whole copy the device holds goes to `kept/` (it holds any foreign entry too). */
async function saveExisting(deps: ApplyDeps, namespace: string, deviceBackup: string, log: Logger): Promise<string> {
  const saved = deps.work.keptPath(`${namespace}-existing`).replace(/\.bin$/, '.nsbackup');
  const s = await extractNamespace(deviceBackup, namespace, saved, { input: deps.deviceOpen, meta: { reason: 'replaced by first sync' } });
  log.warn({ namespace, saved, keys: s.keys, users: s.users }, 'replacing the namespace the device held; its copy was saved');
  return saved;
}

/**
 * Inside the hold: saves the foreign entries (foreign.ts, found with the merge) from the base to a quarantine file and
 * reports them; undefined when there are none (no file). Throws SyncQuarantineFailedError: the caller must not
 * restore then.
 */
async function saveForeign(a: Apply, m: Merged): Promise<ForeignQuarantine | undefined> {
  const { deps, namespace, meta, log } = a;
  const foreign = m.foreign;
  if (!foreign || foreign.paths.size === 0) return undefined;
  const out = deps.quarantineOut ?? {
    ...(deps.snapshotOpen.passphrase !== undefined ? { passphrase: deps.snapshotOpen.passphrase } : {}),
    ...(typeof deps.snapshotOpen.scrypt === 'object' ? { scrypt: deps.snapshotOpen.scrypt } : {}),
  };
  const device = { file: m.base, open: deps.deviceOpen };
  const q = await quarantineForeign(namespace, device, foreign, {
    path: deps.work.foreignQuarantinePath(namespace, meta.epoch, meta.seq),
    ...out,
    meta: { epoch: meta.epoch, seq: meta.seq, site: deps.site ?? null },
  });
  log.warn(
    { namespace, quarantine: q.path, keys: q.keys, users: q.users, keyIds: q.keyIds, userIds: q.userIds },
    'foreign writes at this replica (not replicated; written straight to the NetHSM) saved to quarantine before the snapshot removes them',
  );
  deps.onQuarantined?.(q);
  return q;
}
