/**
 * The primary's side of snapshot replication: a namespace backup of this device's namespace, under the group's
 * replication passphrase, with the epoch and the namespace's administrators in its manifest.
 */
import type { OpenBackupOptions } from '../backup/reader.js';
import { PRODUCTION_SCRYPT, type ScryptParams } from '../backup/format.js';
import { SnapshotKeyRing } from './snapshot-keys.js';
import { extractNamespace, type ExtractNamespaceSummary } from '../backup/namespace.js';
import type { BackupSink } from '../backup/transform.js';
import { BackupNamespaceNotFoundError } from '../errors.js';
import { Spool } from '../util/spool.js';
import type { Device, NamespaceUsers } from './device.js';
import type { SnapshotMeta } from './snapshot-meta.js';
import { removeFiles, type WorkDir } from './workdir.js';

export interface SnapshotSourceDeps {
  site: string;
  device: Device;
  work: WorkDir;
  /** How device backups open (the device backup passphrase; scrypt parameters). */
  deviceOpen: OpenBackupOptions;
  replicationPassphrase: string;
  /** KDF parameters for the snapshot file (production unless a test says otherwise). */
  scrypt?: ScryptParams;
  /** Every namespace's change-log head (seq) at the primary, read just before a device backup (0 without a stream). */
  heads?: () => Readonly<Record<string, number>>;
  /** The identity of this site's change log of a namespace (the log the heads are in); none without a stream. */
  logId?: (namespace: string) => string;
  /** The daemon's snapshot keys (one derivation per generation); without it each snapshot derives its own. */
  snapshotKeys?: SnapshotKeyRing;
  /**
   * The daemon stopping (snapshots served to peers only): cuts the device backup (Device.withSharedBackup), failing
   * the snapshot with `signal.reason`. Not for the demote hand-off's snapshot, a step the stop lets end.
   */
  signal?: AbortSignal;
}

export interface Snapshot {
  file: string;
  meta: SnapshotMeta;
  entries: number;
  bytes: number;
}

/**
 * Takes a device backup and extracts `namespace` into a snapshot file in `work/` (the caller removes it). Throws the
 * client's errors, BackupNamespaceNotFoundError when the device lacks the namespace, and the codec's errors.
 */
export async function takeSnapshot(deps: SnapshotSourceDeps, namespace: string, epoch: number): Promise<Snapshot> {
  const out = deps.work.temp(`snapshot-${namespace}`);
  try {
    const { meta, summary } = await extractSnapshot(deps, namespace, epoch, out);
    return { file: out, meta, entries: summary.entries, bytes: summary.bytesWritten };
  } catch (err) {
    await removeFiles(out);
    throw err;
  }
}

/** A snapshot on its way: its bytes as they are written, and how its making ended. */
export interface StreamedSnapshot {
  /**
   * The snapshot's bytes from the first on, while the extract still writes them (src/util/spool.ts): it ends cleanly
   * only once the snapshot is complete, and throws the extract's error when it fails, at any point.
   */
  body: AsyncIterable<Buffer>;
  /** Resolves when the extract finished (rejects with its error); the spooled file is removed once both are over. */
  done: Promise<Omit<Snapshot, 'file'>>;
}

/**
 * As takeSnapshot, but answers as soon as the extract has started: the snapshot is streamed while the device backup
 * downloads and the extract writes it, instead of once the file is complete. The extract writes to a spool file in
 * `work/` at its own pace (a slow reader never slows the device backup, which holds the site's barrier shared), and
 * `body` reads it as it grows. Refuses before any byte when the device has no such namespace
 * (BackupNamespaceNotFoundError), so a peer gets a proper refusal, not a broken transfer. Close `body` (or read it to
 * its end) when done with it.
 */
export async function streamSnapshot(deps: SnapshotSourceDeps, namespace: string, epoch: number): Promise<StreamedSnapshot> {
  // Asked side by side: the namespace's existence (refused here, before any byte) and its users (for the meta).
  const [exists, users] = await Promise.all([deps.device.hasNamespace(namespace), deps.device.namespaceUsers(namespace)]);
  if (!exists) throw new BackupNamespaceNotFoundError(`this site's NetHSM has no namespace ${namespace}`, { namespace });
  const spool = await Spool.create(deps.work.temp(`snapshot-${namespace}`));
  let readers = 0;
  let extracting = true;
  const closeIfIdle = () => void (readers === 0 && !extracting ? spool.close() : undefined);
  const done = extractSnapshot(deps, namespace, epoch, spool.sink, users).then(
    ({ meta, summary }) => {
      spool.done();
      return { meta, entries: summary.entries, bytes: summary.bytesWritten };
    },
    (err: unknown) => {
      spool.fail(err);
      throw err;
    },
  );
  done.catch(() => undefined).finally(() => ((extracting = false), closeIfIdle()));
  // A body never read still counts until it is closed (return()): an async generator not yet started would not run
  // its finally, so the iterator is spelled out.
  const inner = spool.reader();
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    readers--;
    closeIfIdle();
  };
  readers++;
  const body: AsyncIterableIterator<Buffer> = {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next() {
      try {
        const r = await inner.next();
        if (r.done) release();
        return r;
      } catch (err) {
        release();
        throw err;
      }
    },
    async return() {
      release();
      // Not awaited: a read still waiting for bytes ends when the extract does (the spool is then closed).
      void inner.return(undefined).catch(() => undefined);
      return { done: true, value: undefined };
    },
  };
  return { body, done };
}

/** Takes (or joins) a device backup and extracts `namespace` to `out` under the replication key, with its meta. */
async function extractSnapshot(
  deps: SnapshotSourceDeps,
  namespace: string,
  epoch: number,
  out: BackupSink,
  known?: NamespaceUsers,
): Promise<{ meta: SnapshotMeta; summary: ExtractNamespaceSummary }> {
  // The snapshot's key comes from the daemon's ring (derived once per generation, the first at start: key-warmup.ts), or
  // from a ring of this one snapshot, derived while the device is asked for its users and backup, not after.
  const ring = deps.snapshotKeys ?? new SnapshotKeyRing(deps.replicationPassphrase, deps.scrypt ?? PRODUCTION_SCRYPT);
  const leased = ring.lease();
  leased.catch(() => undefined);
  // Awaited by the extract once the device backup is open: a sealing key still being derived (a new generation) and
  // the device's backup key (a salt not derived yet) are derived side by side, not one after the other.
  const outputKey = leased.then((l) => l.key);
  outputKey.catch(() => undefined);
  try {
    const users = known ?? (await deps.device.namespaceUsers(namespace));
    // Snapshots requested together (several namespaces or replicas at one cron tick) share one device backup.
    const heads = deps.heads ?? (() => ({}));
    return await deps.device.withSharedBackup(deps.work, heads, async (deviceBackup, takenAt, captured) => {
      // The position the snapshot reflects: the head when its backup was requested (the stream resumes there).
      // The log id never changes while this site's state lives, so reading it now names the log the head was read in.
      const log = deps.logId?.(namespace);
      const meta: SnapshotMeta = { epoch, site: deps.site, takenAt, administrators: users.administrators, seq: captured[namespace] ?? 0, ...(log ? { log } : {}) };
      const summary = await extractNamespace(deviceBackup, namespace, out, {
        input: deps.deviceOpen,
        outputKey,
        meta,
      });
      return { meta, summary };
    }, deps.signal);
  } finally {
    (await leased.catch(() => undefined))?.release();
    if (ring !== deps.snapshotKeys) ring.close();
  }
}
