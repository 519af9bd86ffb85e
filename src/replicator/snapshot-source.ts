/**
 * The primary's side of snapshot replication: a namespace backup of this device's namespace, under the group's
 * replication passphrase, with the epoch and the namespace's administrators in its manifest.
 */
import type { OpenBackupOptions } from '../backup/reader.js';
import { PRODUCTION_SCRYPT, type ScryptParams } from '../backup/format.js';
import { SnapshotKeyRing } from './snapshot-keys.js';
import { extractNamespace } from '../backup/namespace.js';
import type { Device } from './device.js';
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
  // The snapshot's key comes from the daemon's ring (derived once per generation, the first at start: key-warmup.ts), or
  // from a ring of this one snapshot, derived while the device is asked for its users and backup, not after.
  const ring = deps.snapshotKeys ?? new SnapshotKeyRing(deps.replicationPassphrase, deps.scrypt ?? PRODUCTION_SCRYPT);
  const leased = ring.lease();
  leased.catch(() => undefined);
  // Awaited by the extract once the device backup is open: a sealing key still being derived (a new generation) and
  // the device's backup key (a salt not derived yet) are derived side by side, not one after the other.
  const outputKey = leased.then((l) => l.key);
  outputKey.catch(() => undefined);
  const out = deps.work.temp(`snapshot-${namespace}`);
  try {
    const users = await deps.device.namespaceUsers(namespace);
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
      return { file: out, meta, entries: summary.entries, bytes: summary.bytesWritten };
    });
  } catch (err) {
    await removeFiles(out);
    throw err;
  } finally {
    (await leased.catch(() => undefined))?.release();
    if (ring !== deps.snapshotKeys) ring.close();
  }
}
