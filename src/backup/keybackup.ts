/**
 * Single-key backups (Luna's SIMExtract/SIMInsert): one key's blob in a file of its own, and its insertion into a
 * device backup of the same domain by a merge. Streaming; the key backup itself is two entries (key, manifest).
 */
import {
  BackupKeyNotFoundError,
  BackupKindMismatchError,
  BackupManifestInvalidError,
  BackupNamespaceNotFoundError,
  BackupUnsupportedVersionError,
  InputInvalidError,
} from '../errors.js';
import { isValidId } from '../nethsm/ids.js';
import { compareBackupPaths } from './format.js';
import { decodeManifest, encodeManifest, makeManifest, PathsDigest, type BackupManifest } from './manifest.js';
import { classifyPath, keyPath, MANIFEST_PATH, namespacePath } from './paths.js';
import type { BackupEntry, OpenBackupOptions } from './reader.js';
import {
  closeAll,
  createOutputWriter,
  openSource,
  orderedEntries,
  withSink,
  type BackupSink,
  type BackupSource,
  type OutputOptions,
  type ProgressFn,
  V0_TARGET_HINT,
} from './transform.js';

export interface KeyRef {
  /** Undefined for a root key (`/key/<id>`). */
  namespace?: string | undefined;
  keyId: string;
}

export interface ExportKeyOptions extends OutputOptions {
  input: OpenBackupOptions;
  meta?: Record<string, unknown>;
  onProgress?: ProgressFn;
  now?: Date;
}

export interface ExportKeySummary {
  path: string;
  sourceEntries: number;
  bytesWritten: number;
  manifest: BackupManifest;
}

function checkKeyRef(k: KeyRef): void {
  if (k.namespace !== undefined && !isValidId(k.namespace)) throw new InputInvalidError(`namespace ${JSON.stringify(k.namespace)} breaks the NetHSM id rule`);
  if (!isValidId(k.keyId)) throw new InputInvalidError(`key id ${JSON.stringify(k.keyId)} breaks the NetHSM id rule`);
}

function describeKey(k: KeyRef): string {
  return k.namespace === undefined ? `root key ${k.keyId}` : `key ${k.keyId} of namespace ${k.namespace}`;
}

/**
 * Writes a key backup of one key (`/key/.<ns>/<id>`, or `/key/<id>` for a root key) from `source` (a device or
 * namespace backup) to `out`, under `options.passphrase` (default: the source's key and salt).
 * Throws InputInvalidError (bad ids), BackupKeyNotFoundError, the reader's errors, OutputExistsError.
 * No output file remains after a throw.
 */
export async function exportKey(source: BackupSource, key: KeyRef, out: BackupSink, options: ExportKeyOptions): Promise<ExportKeySummary> {
  checkKeyRef(key);
  const path = keyPath(key.namespace, key.keyId);
  const reader = await openSource(source, options.input);
  try {
    return await withSink(out, options, async (stream) => {
      const writer = await createOutputWriter(stream, reader, reader, options);
      try {
        const digest = new PathsDigest();
        let read = 0;
        for await (const e of reader.entries()) {
          read++;
          if (e.path === path) {
            await writer.writeEntry(e.path, e.value);
            digest.add(e.path, e.value.length);
          }
          options.onProgress?.({ entriesRead: read, bytesRead: reader.bytesRead, entriesWritten: writer.entriesWritten, bytesWritten: writer.bytesWritten });
        }
        if (digest.count === 0) {
          throw new BackupKeyNotFoundError(`the backup has no ${describeKey(key)} (no ${path} entry)`, {
            ...(key.namespace !== undefined ? { namespace: key.namespace } : {}),
          });
        }
        if (digest.count > 1) throw new BackupManifestInvalidError(`the backup holds ${path} ${digest.count} times`);
        const manifest = makeManifest({
          kind: 'key',
          namespace: key.namespace ?? null,
          keyId: key.keyId,
          entryCount: 1,
          pathsDigest: digest.digest(),
          createdAt: (options.now ?? new Date()).toISOString(),
          sourceDeviceId: reader.header.deviceId ?? null,
          sourceVersion: reader.header.version,
          ...(options.meta ? { meta: options.meta } : {}),
        });
        await writer.writeEntry(MANIFEST_PATH, encodeManifest(manifest));
        await writer.finish();
        return { path, sourceEntries: read, bytesWritten: writer.bytesWritten, manifest };
      } catch (err) {
        writer.abort();
        throw err;
      }
    });
  } finally {
    await closeAll(reader);
  }
}

/** Reads and checks a key backup whole (it is one entry and the manifest). */
async function readKeyBackup(source: BackupSource, input: OpenBackupOptions): Promise<{ entry: BackupEntry; manifest: BackupManifest }> {
  const reader = await openSource(source, input);
  try {
    let entry: BackupEntry | undefined;
    let manifest: BackupManifest | undefined;
    let count = 0;
    for await (const e of reader.entries()) {
      if (manifest !== undefined) throw new BackupManifestInvalidError(`key backup: entry ${e.path} follows the manifest`);
      if (classifyPath(e.path).kind === 'manifest') {
        manifest = decodeManifest(e.value);
        continue;
      }
      // A key backup has one entry; anything more means another kind of file: stop before reading a device's worth.
      if (++count > 1) throw new BackupKindMismatchError('expected a key backup, but the file holds more than one entry (a device or namespace backup?)');
      entry = e;
    }
    if (manifest === undefined) throw new BackupKindMismatchError('expected a key backup, but the file has no nethsm-replicator manifest: it is a device backup');
    if (manifest.kind !== 'key') throw new BackupKindMismatchError(`expected a key backup, but the file is a ${manifest.kind} backup`);
    const expected = keyPath(manifest.namespace ?? undefined, manifest.keyId ?? '');
    if (entry === undefined || entry.path !== expected) {
      throw new BackupManifestInvalidError(`key backup: the manifest names ${expected}, the file holds ${entry?.path ?? 'no entry'}`);
    }
    const digest = new PathsDigest();
    digest.add(entry.path, entry.value.length);
    if (digest.digest() !== manifest.pathsDigest) throw new BackupManifestInvalidError('key backup: the paths digest does not match the entry');
    return { entry, manifest };
  } finally {
    await closeAll(reader);
  }
}

export interface ImportKeyOptions extends OutputOptions {
  /** How to open the device backup; the output is under its key unless `passphrase` is given. */
  device: OpenBackupOptions;
  keyBackup: OpenBackupOptions;
  onProgress?: ProgressFn;
}

export interface ImportKeySummary {
  path: string;
  namespace: string | null;
  keyId: string;
  /** Whether the device backup already had a key at that path (now replaced). */
  replaced: boolean;
  entriesWritten: number;
  bytesWritten: number;
  manifest: BackupManifest;
}

/**
 * Writes `deviceBackup` with the key of `keyBackup` inserted (or replacing the key of the same path) to `out`; every
 * other entry and the header unchanged, firmware order kept. Refuses (BackupNamespaceNotFoundError) a namespaced key
 * when the device backup lacks its namespace: a key cannot live in a namespace the device does not have.
 * Throws BackupKindMismatchError (not a key backup; device backup is not one), BackupUnsupportedVersionError
 * (version-0 device backup), BackupManifestInvalidError, BackupOutOfOrderError, the readers' errors,
 * OutputExistsError. No output file remains after a throw.
 */
export async function importKey(
  deviceBackup: BackupSource,
  keyBackup: BackupSource,
  out: BackupSink,
  options: ImportKeyOptions,
): Promise<ImportKeySummary> {
  const { entry: key, manifest } = await readKeyBackup(keyBackup, options.keyBackup);
  const ns = manifest.namespace;
  const dev = await openSource(deviceBackup, options.device);
  try {
    if (dev.header.version !== 1) {
      throw new BackupUnsupportedVersionError(`key import needs a version-1 device backup (NetHSM firmware 4.0 or later); this one is version ${dev.header.version}`, {
        hint: V0_TARGET_HINT,
      });
    }
    return await withSink(out, options, async (stream) => {
      const writer = await createOutputWriter(stream, dev, dev, options);
      try {
        let pending: BackupEntry | undefined = key;
        let replaced = false;
        let nsPresent = ns === null;
        let read = 0;
        for await (const e of orderedEntries(dev, 'device backup')) {
          read++;
          if (classifyPath(e.path).kind === 'manifest') {
            throw new BackupKindMismatchError('key import needs a device backup, but the first file has a nethsm-replicator manifest');
          }
          if (ns !== null && e.path === namespacePath(ns)) nsPresent = true;
          const cmp = pending === undefined ? -1 : compareBackupPaths(e.path, pending.path);
          if (cmp >= 0 && pending !== undefined) {
            await writer.writeEntry(pending.path, pending.value);
            pending = undefined;
          }
          if (cmp === 0) replaced = true;
          else await writer.writeEntry(e.path, e.value);
          options.onProgress?.({ entriesRead: read, bytesRead: dev.bytesRead, entriesWritten: writer.entriesWritten, bytesWritten: writer.bytesWritten });
        }
        if (pending !== undefined) await writer.writeEntry(pending.path, pending.value);
        if (!nsPresent) {
          throw new BackupNamespaceNotFoundError(
            `the device backup has no namespace ${ns} (no ${namespacePath(ns as string)} entry): a key cannot live in a namespace the device lacks`,
            { namespace: ns as string, hint: `Create namespace ${ns} on the device (or merge its namespace backup) first, then take a fresh backup.` },
          );
        }
        await writer.finish();
        return { path: key.path, namespace: ns, keyId: manifest.keyId as string, replaced, entriesWritten: writer.entriesWritten, bytesWritten: writer.bytesWritten, manifest };
      } catch (err) {
        writer.abort();
        throw err;
      }
    });
  } finally {
    await closeAll(dev);
  }
}
