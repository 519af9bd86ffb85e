/**
 * What a snapshot's manifest `meta` carries from the primary to its replicas: the epoch and site it was taken at,
 * when, the change-log position it reflects (seq, in log `log`), and which of the namespace's users are
 * Administrators (ids only: replicas strip them). Validated on receipt.
 */
import { z } from 'zod';
import { PeerMessageInvalidError } from '../errors.js';
import type { BackupManifest } from '../backup/manifest.js';
import { isValidId } from '../nethsm/ids.js';
import { logIdSchema } from '../stream/protocol.js';

export const snapshotMetaSchema = z.strictObject({
  epoch: z.number().int().min(1),
  site: z.string().min(1).max(128),
  /** Milliseconds since the epoch when the primary took the device backup. */
  takenAt: z.number().int().min(0),
  administrators: z.array(z.string().refine(isValidId, { message: 'is not a valid user id' })).max(100_000),
  /** Change-log sequence number the snapshot reflects (streaming); 0 without a stream. */
  seq: z.number().int().min(0).default(0),
  /**
   * The primary's change log `seq` is in (ChangeLogRepo.logId). Absent from a primary older than log ids: the
   * replica's position then names no log, and only a stream that names none continues from it.
   */
  log: logIdSchema.optional(),
});

export type SnapshotMeta = z.infer<typeof snapshotMetaSchema>;

/** The manifest's meta, validated; throws PeerMessageInvalidError naming the field. */
export function snapshotMetaOf(manifest: BackupManifest | undefined, namespace: string): SnapshotMeta {
  if (!manifest || manifest.kind !== 'namespace' || manifest.namespace !== namespace) {
    throw new PeerMessageInvalidError(`the snapshot is not a namespace backup of ${namespace}`, { namespace });
  }
  const r = snapshotMetaSchema.safeParse(manifest.meta);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new PeerMessageInvalidError(`snapshot manifest meta.${i?.path.join('.') || ''} ${i?.message ?? 'is invalid'}`, { namespace });
  }
  return r.data;
}
