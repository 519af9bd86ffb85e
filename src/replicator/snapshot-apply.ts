/**
 * The replica's side of snapshot replication: write one namespace into this site's device without losing anything
 * else on it. A NetHSM restore replaces the whole store, so:
 *   1. back the device up (B1) and merge: B1's entries outside the namespace + the snapshot's namespace entries, less
 *      the namespace's Administrators (read-only replica; the replication account stays);
 *   2. back the device up again (B2) just before restoring; if anything outside the namespace changed since B1,
 *      merge again from B2 (bounded; SyncRaceError when writes keep racing);
 *   2b. save what the restore will remove from the namespace and replication never knew (foreign writes, foreign.ts)
 *      from B2 to a quarantine file, or, on a first sync with `onExisting: 'remove'`, the whole namespace to kept/;
 *      no restore when saving fails (SyncQuarantineFailedError);
 *   3. restore the merged file;
 *   4. back up once more (B3) and verify: every entry outside the namespace in B2 is in B3 unchanged, and the
 *      namespace in B3 is exactly as merged. B2 is kept (path logged, error raised) when not.
 * The caller runs the whole sequence inside an exclusive hold of the site's DeviceBarrier (docs/concurrency.md), so no
 * gateway write, stream apply or repair lands between B1 and the restore, and passes the hold's guard: the fencing
 * tokens are checked once more right before the restore, the one irreversible call.
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
import { diffEntries, isEmptyDiff, type BackupDiff } from './compare.js';
import type { ExclusiveGuard } from '../concurrency/barrier.js';
import type { Device } from './device.js';
import { findForeign, quarantineForeign, type ForeignQuarantine } from './foreign.js';
import { isUserOf, rewriteBackup } from './rewrite.js';
import { snapshotMetaOf, type SnapshotMeta } from './snapshot-meta.js';
import { removeFiles, type WorkDir } from './workdir.js';

export interface ApplyDeps {
  device: Device;
  work: WorkDir;
  deviceOpen: OpenBackupOptions;
  /** How snapshots open (the replication passphrase). */
  snapshotOpen: OpenBackupOptions;
  /** The namespace's replication account id (without `<ns>~`): kept on the replica. */
  replicationUserId: string;
  /** The caller's exclusive hold: checked right before the restore (a stale token abandons the apply). */
  guard?: ExclusiveGuard;
  logger?: Logger;
  /** How many times to merge again when writes race (default 3). */
  maxRemerges?: number;
  /** Test seam: runs after B1 is merged and before B2 is taken (a test writes to the device here). */
  beforeRecheck?: () => Promise<void>;
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
  /** Times the merge was redone because writes raced. */
  remerges: number;
  namespaceEntries: number;
  /** Administrators left out on this replica. */
  strippedAdministrators: string[];
  /** Where the device's previous copy of the namespace was saved (`onExisting: 'remove'`). */
  savedExisting?: string;
  /** Foreign writes the restore removed, and the quarantine file that holds them. */
  quarantined?: ForeignQuarantine;
}

/**
 * Applies a verified snapshot file of `namespace`. On success the snapshot is moved to `snapshots/<ns>.nsbackup`.
 * Throws the codec's errors for a bad snapshot (nothing touched), SyncNamespaceExistsError, SyncRaceError,
 * SyncQuarantineFailedError (foreign entries could not be saved; nothing restored), SyncVerifyFailedError, and the
 * client's errors. Before the restore nothing on the device has changed; a failed
 * restore leaves it as it was (the NetHSM applies a restore file only once fully read and authenticated).
 */
export async function applySnapshot(deps: ApplyDeps, namespace: string, snapshotFile: string, options: ApplyOptions = {}): Promise<ApplyResult> {
  const log = deps.logger ?? silentLogger;
  const contents = await listBackupContents(snapshotFile, { input: deps.snapshotOpen });
  verifyManifest(contents);
  const meta = snapshotMetaOf(contents.manifest, namespace);
  const stripped = meta.administrators.filter((id) => id !== deps.replicationUserId);
  const dropAdmin = isUserOf(namespace, stripped);
  const inNs = (p: string) => isNamespacePath(p, namespace);
  const outsideNs = (p: string) => !inNs(p);
  const otherData = (p: string) => !inNs(p) && isStoreData(p);
  const temps: string[] = [];
  const temp = (label: string) => {
    const t = deps.work.temp(label);
    temps.push(t);
    return t;
  };
  try {
    let b1 = temp('pre-1');
    await deps.device.backupTo(b1);
    const replacing = await checkExisting(deps, namespace, b1, options);
    let merged = await merge(deps, b1, snapshotFile, outsideNs, (p) => inNs(p) && !dropAdmin(p), temp);
    let remerges = 0;
    let b2: string;
    for (;;) {
      await deps.beforeRecheck?.();
      b2 = temp(`pre-${remerges + 2}`);
      await deps.device.backupTo(b2);
      const raced = await diffFiles(deps.deviceOpen, b1, b2, otherData);
      if (isEmptyDiff(raced)) break;
      log.warn({ namespace, changed: raced.samples }, 'entries outside the namespace changed during the sync; merging again');
      if (++remerges > (deps.maxRemerges ?? 3)) {
        throw new SyncRaceError(`entries outside namespace ${namespace} changed ${remerges} times during the sync; not restoring`, { namespace });
      }
      b1 = b2;
      merged = await merge(deps, b1, snapshotFile, outsideNs, (p) => inNs(p) && !dropAdmin(p), temp);
    }
    // B2 is what the restore replaces: whatever of the namespace it removes is saved from B2 first.
    const savedExisting = replacing ? await saveExisting(deps, namespace, b2, log) : undefined;
    const quarantined = replacing ? undefined : await saveForeign(deps, namespace, meta, { b2, snapshotFile }, log);
    deps.guard?.check();
    await deps.device.restore(merged);
    const b3 = temp('post');
    await deps.device.backupTo(b3);
    await verify(deps, namespace, { b2, b3, merged }, log);
    await rename(snapshotFile, deps.work.snapshotOf(namespace));
    return {
      meta,
      remerges,
      namespaceEntries: contents.namespaces[namespace]?.keys ?? 0,
      strippedAdministrators: stripped,
      ...(savedExisting ? { savedExisting } : {}),
      ...(quarantined ? { quarantined } : {}),
    };
  } finally {
    await removeFiles(...temps);
  }
}

async function merge(
  deps: ApplyDeps,
  base: string,
  snapshot: string,
  keep: (p: string) => boolean,
  select: (p: string) => boolean,
  temp: (label: string) => string,
): Promise<string> {
  const out = temp('merged');
  await rewriteBackup({ base: { source: base, open: deps.deviceOpen, keep }, overlay: { source: snapshot, open: deps.snapshotOpen, select }, out });
  return out;
}

async function diffFiles(open: OpenBackupOptions, before: string, after: string, inScope: (p: string) => boolean): Promise<BackupDiff> {
  const a = await openSource(before, open);
  try {
    const b = await openSource(after, open);
    try {
      return await diffEntries(a.entries(), b.entries(), inScope);
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}

/** Verification after the restore; keeps B2 and throws SyncVerifyFailedError when anything is off. */
async function verify(deps: ApplyDeps, namespace: string, f: { b2: string; b3: string; merged: string }, log: Logger): Promise<void> {
  const foreign = await diffFiles(deps.deviceOpen, f.b2, f.b3, (p) => !isNamespacePath(p, namespace) && isStoreData(p));
  const mine = await diffFiles(deps.deviceOpen, f.merged, f.b3, (p) => isNamespacePath(p, namespace));
  const lost = foreign.missing + foreign.changed;
  if (lost === 0 && isEmptyDiff(mine)) return;
  const kept = deps.work.keptPath(namespace);
  await rename(f.b2, kept);
  if (lost > 0) deps.onForeignLoss?.(lost);
  log.error({ namespace, kept, foreign: foreign.samples, namespaceDiff: mine.samples }, 'restore verification failed; pre-restore backup kept');
  throw new SyncVerifyFailedError(
    `after restoring namespace ${namespace}: ${lost} entries outside it lost or changed, ${mine.missing + mine.added + mine.changed} of its own not as merged; pre-restore backup kept at ${kept}`,
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
 * Saves the foreign entries (foreign.ts) the restore would remove to a quarantine file and reports them; undefined
 * when there are none (no file). Throws SyncQuarantineFailedError: the caller must not restore then.
 */
async function saveForeign(
  deps: ApplyDeps,
  namespace: string,
  meta: SnapshotMeta,
  f: { b2: string; snapshotFile: string },
  log: Logger,
): Promise<ForeignQuarantine | undefined> {
  const device = { file: f.b2, open: deps.deviceOpen };
  const known = { files: [deps.work.snapshotOf(namespace), ...(deps.savedFiles ?? [])], open: deps.snapshotOpen, ...(deps.knownKey ? { knownKey: deps.knownKey } : {}) };
  const foreign = await findForeign(namespace, device, { file: f.snapshotFile, open: deps.snapshotOpen }, known, log);
  if (foreign.paths.size === 0) return undefined;
  const out = deps.quarantineOut ?? {
    ...(deps.snapshotOpen.passphrase !== undefined ? { passphrase: deps.snapshotOpen.passphrase } : {}),
    ...(typeof deps.snapshotOpen.scrypt === 'object' ? { scrypt: deps.snapshotOpen.scrypt } : {}),
  };
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
