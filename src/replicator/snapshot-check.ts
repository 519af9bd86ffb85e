/**
 * A replica's check of a snapshot while it downloads: the same full pass a file check makes (every entry opened and
 * authenticated, the trailer, the manifest against the entries), over the bytes as they arrive from the primary
 * (src/peer/client.ts `fetchSnapshot`'s `check`), so the file need not be read again before it is applied.
 */
import { listBackupContents, verifyManifest, type BackupContents } from '../backup/contents.js';
import type { OpenBackupOptions } from '../backup/reader.js';
import type { BackupSource } from '../backup/transform.js';
import { snapshotMetaOf, type SnapshotMeta } from './snapshot-meta.js';

/** What a snapshot check found: the file's contents and its snapshot meta (epoch, site, position, administrators). */
export interface CheckedSnapshot {
  namespace: string;
  contents: BackupContents;
  meta: SnapshotMeta;
  /** Keys of the namespace in the snapshot. */
  namespaceKeys: number;
}

/**
 * Reads `source` (a file, or bytes as they arrive) to its end under the snapshot key and checks it is a whole
 * snapshot of `namespace`: the codec's integrity checks (a truncated or altered file throws), the manifest against the
 * entries (verifyManifest), the snapshot meta (snapshotMetaOf). Decrypts in memory only; writes nothing. With
 * `pathsOnly` (listBackupContents's): the manifest authenticated and every entry's path and size checked against it,
 * the values left to the merge, which authenticates each before any restore (what a lone snapshot's open does).
 */
export async function checkSnapshot(source: BackupSource, snapshotOpen: OpenBackupOptions, namespace: string, options: { pathsOnly?: boolean } = {}): Promise<CheckedSnapshot> {
  const contents = await listBackupContents(source, { input: snapshotOpen, pathsOnly: options.pathsOnly ?? false });
  verifyManifest(contents);
  const meta = snapshotMetaOf(contents.manifest, namespace);
  return { namespace, contents, meta, namespaceKeys: contents.namespaces[namespace]?.keys ?? 0 };
}
