/**
 * The primary's side of snapshot replication: a namespace backup of this device's namespace, under the group's
 * replication passphrase, with the epoch and the namespace's administrators in its manifest.
 */
import type { OpenBackupOptions } from '../backup/reader.js';
import type { ScryptParams } from '../backup/format.js';
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
export async function takeSnapshot(deps: SnapshotSourceDeps, namespace: string, epoch: number, seq = 0): Promise<Snapshot> {
  const users = await deps.device.namespaceUsers(namespace);
  const deviceFile = deps.work.temp('snapshot-device');
  const out = deps.work.temp(`snapshot-${namespace}`);
  try {
    const takenAt = Date.now();
    await deps.device.lock.run(() => deps.device.backupTo(deviceFile));
    const meta: SnapshotMeta = { epoch, site: deps.site, takenAt, administrators: users.administrators, seq };
    const summary = await extractNamespace(deviceFile, namespace, out, {
      input: deps.deviceOpen,
      passphrase: deps.replicationPassphrase,
      ...(deps.scrypt ? { scrypt: deps.scrypt } : {}),
      meta,
    });
    return { file: out, meta, entries: summary.entries, bytes: summary.bytesWritten };
  } catch (err) {
    await removeFiles(out);
    throw err;
  } finally {
    await removeFiles(deviceFile);
  }
}
