/**
 * Namespace backups: extract one namespace's entries from a device backup into a file of its own, and merge such a
 * file back into a device backup (FACTS §4, §6, §7.5; docs/backup.md).
 *
 * Both stream entry by entry (constant memory, whatever the file size) and join the inputs in the firmware's path
 * order, which both inputs must follow (BackupOutOfOrderError otherwise). Output goes to a file atomically, so a
 * failure at any point (including checks that can only be made at the end) leaves no output file.
 */
import { BackupKindMismatchError, BackupManifestInvalidError, BackupNamespaceNotFoundError, BackupUnsupportedVersionError } from '../errors.js';
import { compareBackupPaths } from './format.js';
import { decodeManifest, makeManifest, encodeManifest, PathsDigest, type BackupManifest } from './manifest.js';
import { classifyPath, isNamespacePath, MANIFEST_PATH, namespaceOfPath, namespacePath } from './paths.js';
import type { BackupEntry, BackupReader, OpenBackupOptions } from './reader.js';
import {
  closeAll,
  createOutputWriter,
  openSource,
  orderedBatches,
  orderedEntries,
  withSink,
  type BackupSink,
  type BackupSource,
  type OutputOptions,
  type ProgressFn,
  V0_TARGET_HINT,
} from './transform.js';
import type { BackupWriter } from './writer.js';

export { listBackupContents, type BackupContents } from './contents.js';

export interface ExtractNamespaceOptions extends OutputOptions {
  /** How to open the device backup (passphrase or backupKey; scrypt 'auto' by default). */
  input: OpenBackupOptions;
  /** Caller data for the manifest (the daemon's epoch and position); no secrets. */
  meta?: Record<string, unknown>;
  onProgress?: ProgressFn;
  /** Creation time for the manifest (default now). */
  now?: Date;
  /**
   * Writes only the namespace's keys and users this accepts (by path), and always the `/namespace/<ns>` record, so the
   * file stays a namespace backup that every reader and `key-backup export` take (a quarantine of chosen entries).
   * Default: every entry of the namespace.
   */
  select?: (path: string) => boolean;
  /**
   * Called when the source has no `/namespace/<ns>` record (the firmware keeps a namespace's users when the namespace
   * is deleted, and a root Administrator may create them before it): the value written there instead, a copy of the
   * record from another backup of the same domain key, and what goes into the manifest's meta to say so. Without it,
   * a missing record throws BackupNamespaceNotFoundError.
   */
  missingRecord?: () => Promise<{ value: Buffer; meta: Record<string, unknown> }>;
}

export interface ExtractNamespaceSummary {
  namespace: string;
  /** Entries of the namespace written (namespace record, keys, users). */
  entries: number;
  keys: number;
  users: number;
  /** Entries of the source read. */
  sourceEntries: number;
  bytesWritten: number;
  manifest: BackupManifest;
}

/**
 * Writes a namespace backup of `ns` from `deviceBackup` to `out`: every `/namespace/ns`, `/key/.ns/*` and
 * `/authentication/ns~*` entry (or those `options.select` accepts, and the record), unchanged (still under the device's domain key), in firmware order, then the manifest;
 * header fields passed through from the source, under `options.passphrase` (default: the source's key and salt).
 * Throws BackupNamespaceNotFoundError when the source has no `/namespace/ns` entry (and `options.missingRecord` gives
 * none), BackupKindMismatchError when the
 * source is itself a namespace or key backup, BackupOutOfOrderError, the reader's errors, OutputExistsError.
 * No output file remains after a throw.
 */
export async function extractNamespace(
  deviceBackup: BackupSource,
  ns: string,
  out: BackupSink,
  options: ExtractNamespaceOptions,
): Promise<ExtractNamespaceSummary> {
  const reader = await openSource(deviceBackup, options.input);
  try {
    return await withSink(out, options, async (stream) => {
      const writer = await createOutputWriter(stream, reader, reader, options);
      try {
        return await extractInto(reader, writer, ns, options);
      } catch (err) {
        writer.abort();
        throw err;
      }
    });
  } finally {
    await closeAll(reader);
  }
}

async function extractInto(reader: BackupReader, writer: BackupWriter, ns: string, options: ExtractNamespaceOptions): Promise<ExtractNamespaceSummary> {
  const digest = new PathsDigest();
  let keys = 0;
  let users = 0;
  let found = false;
  let read = 0;
  // In batches (one await per batch of buffered entries); most entries of a device are outside `ns` and only skipped.
  // Entries outside `ns` are dropped, so only their path is read (docs/backup-format.md, "Entries read by their path
  // only"); the namespace's own entries, whose values go into the file, are authenticated.
  for await (const batch of orderedBatches(reader, 'device backup', { wantsValue: (p) => isNamespacePath(p, ns) })) {
    for (const e of batch) {
      read++;
      if (e.path === MANIFEST_PATH) throw notADeviceBackup(e, 'extract-namespace');
      if (isNamespacePath(e.path, ns)) {
        const c = classifyPath(e.path);
        if (c.kind === 'namespace' || (options.select?.(e.path) ?? true)) {
          await writer.writeEntry(e.path, e.value);
          digest.add(e.path, e.value.length);
          if (c.kind === 'namespace') found = true;
          else if (c.kind === 'namespace-key') keys++;
          else users++;
        }
      }
      options.onProgress?.({ entriesRead: read, bytesRead: reader.bytesRead, entriesWritten: writer.entriesWritten, bytesWritten: writer.bytesWritten });
    }
  }
  let meta = options.meta;
  if (!found) {
    if (!options.missingRecord) {
      throw new BackupNamespaceNotFoundError(`the device backup has no namespace ${ns} (no ${namespacePath(ns)} entry)`, { namespace: ns });
    }
    // The record sorts after every user (`/authentication/`) and key (`/key/`) of the namespace and before the
    // manifest (`/~`), so written last it is in the firmware's order.
    const copy = await options.missingRecord();
    await writer.writeEntry(namespacePath(ns), copy.value);
    digest.add(namespacePath(ns), copy.value.length);
    meta = { ...meta, ...copy.meta };
  }
  const manifest = makeManifest({
    kind: 'namespace',
    namespace: ns,
    keyId: null,
    entryCount: digest.count,
    pathsDigest: digest.digest(),
    createdAt: (options.now ?? new Date()).toISOString(),
    sourceDeviceId: reader.header.deviceId ?? null,
    sourceVersion: reader.header.version,
    ...(meta ? { meta } : {}),
  });
  await writer.writeEntry(MANIFEST_PATH, encodeManifest(manifest));
  await writer.finish();
  return { namespace: ns, entries: digest.count, keys, users, sourceEntries: read, bytesWritten: writer.bytesWritten, manifest };
}

function notADeviceBackup(e: BackupEntry, op: string): BackupKindMismatchError {
  return new BackupKindMismatchError(
    `${op} needs a device backup, but this file has a nethsm-replicator manifest (entry ${e.index}): it is a namespace or key backup`,
  );
}

export interface MergeNamespaceOptions extends OutputOptions {
  /** How to open the device backup. The output is under its key unless `passphrase` is given. */
  device: OpenBackupOptions;
  /** How to open the namespace backup. */
  namespaceBackup: OpenBackupOptions;
  /** When given, the namespace backup must be of this namespace (BackupKindMismatchError otherwise). */
  expectNamespace?: string;
  onProgress?: ProgressFn;
}

export interface MergeNamespaceSummary {
  namespace: string;
  /** Device entries not of the namespace, written unchanged. */
  kept: number;
  /** Namespace entries present in both files (the namespace backup's written). */
  replaced: number;
  /** Namespace entries only in the device backup (dropped). */
  removed: number;
  /** Namespace entries only in the namespace backup (written). */
  added: number;
  /** Whether the device backup had the namespace (`/namespace/<ns>`). */
  namespaceWasPresent: boolean;
  /** The namespace's entries in the device backup before and in the output after. */
  namespaceEntriesBefore: number;
  namespaceEntriesAfter: number;
  entriesWritten: number;
  bytesWritten: number;
  manifest: BackupManifest;
}

/**
 * Writes `deviceBackup` with namespace N's entries replaced by those of `namespaceBackup` (N taken from it) to `out`:
 * the device's header and every entry not of N byte-identical (same path, same value), N's entries exactly the
 * namespace backup's, the manifest left out, all in firmware order; under the device backup's key unless
 * `options.passphrase` is given.
 * Throws BackupKindMismatchError (the second file is a device or key backup, or of another namespace than
 * `expectNamespace`; or the first file is not a device backup), BackupUnsupportedVersionError (version-0 device
 * backup: its config entries cannot go into a version-1 file), BackupManifestInvalidError (manifest does not match
 * the entries), BackupOutOfOrderError, the readers' errors, OutputExistsError. No output file remains after a throw.
 */
export async function mergeNamespace(
  deviceBackup: BackupSource,
  namespaceBackup: BackupSource,
  out: BackupSink,
  options: MergeNamespaceOptions,
): Promise<MergeNamespaceSummary> {
  let dev: BackupReader | undefined;
  let nsr: BackupReader | undefined;
  try {
    dev = await openSource(deviceBackup, options.device);
    if (dev.header.version !== 1) {
      throw new BackupUnsupportedVersionError(
        `merge needs a version-1 device backup (NetHSM firmware 4.0 or later); this one is version ${dev.header.version}`,
        { hint: V0_TARGET_HINT },
      );
    }
    nsr = await openSource(namespaceBackup, options.namespaceBackup);
    const [d, n] = [dev, nsr];
    return await withSink(out, options, async (stream) => {
      const writer = await createOutputWriter(stream, d, d, options);
      try {
        return await mergeInto(d, n, writer, options);
      } catch (err) {
        writer.abort();
        throw err;
      }
    });
  } finally {
    await closeAll(dev, nsr);
  }
}

/** Checks the namespace backup's entries as they stream by, and its manifest at the end. */
class NamespaceBackupCheck {
  ns: string | undefined;
  private readonly digest = new PathsDigest();
  private hasRecord = false;
  manifest: BackupManifest | undefined;

  constructor(private readonly expect: string | undefined) {}

  /** Returns the entry to write, or undefined for the manifest. */
  accept(e: BackupEntry): BackupEntry | undefined {
    if (this.manifest !== undefined) throw new BackupManifestInvalidError(`namespace backup: entry ${e.path} follows the manifest`);
    const c = classifyPath(e.path);
    if (c.kind === 'manifest') {
      this.manifest = decodeManifest(e.value);
      return undefined;
    }
    const ns = namespaceOfPath(e.path);
    if (ns === undefined) {
      throw new BackupKindMismatchError(
        `expected a namespace backup, but entry ${e.index} (${e.path}) belongs to no namespace: this looks like a device backup or a root key backup`,
      );
    }
    if (this.ns === undefined) {
      if (this.expect !== undefined && ns !== this.expect) {
        throw new BackupKindMismatchError(`the namespace backup holds namespace ${ns}, not ${this.expect}`, { namespace: this.expect });
      }
      this.ns = ns;
    } else if (ns !== this.ns) {
      throw new BackupKindMismatchError(`the namespace backup mixes namespaces ${this.ns} and ${ns} (entry ${e.path})`);
    }
    if (c.kind === 'namespace') this.hasRecord = true;
    this.digest.add(e.path, e.value.length);
    return e;
  }

  /** For a file with no namespace entry at all: throws the error finish() finds (there is always one). */
  failEmpty(): never {
    this.finish();
    throw new BackupManifestInvalidError('namespace backup holds no entries');
  }

  /** Final checks; returns the manifest. */
  finish(): BackupManifest {
    const m = this.manifest;
    if (m === undefined) {
      throw new BackupKindMismatchError('expected a namespace backup, but the file has no nethsm-replicator manifest: it is a device backup');
    }
    if (m.kind !== 'namespace') throw new BackupKindMismatchError(`expected a namespace backup, but the file is a ${m.kind} backup`);
    if (this.ns === undefined || m.namespace !== this.ns) {
      throw new BackupManifestInvalidError(`namespace backup: the manifest names namespace ${m.namespace}, the entries ${this.ns ?? 'none'}`);
    }
    if (!this.hasRecord) throw new BackupManifestInvalidError(`namespace backup of ${this.ns} lacks its ${namespacePath(this.ns)} entry`);
    const digest = this.digest.digest();
    if (m.entryCount !== this.digest.count || m.pathsDigest !== digest) {
      throw new BackupManifestInvalidError(
        `namespace backup: the manifest says ${m.entryCount} entries (${m.pathsDigest}), the file holds ${this.digest.count} (${digest})`,
      );
    }
    return m;
  }
}

async function mergeInto(
  dev: BackupReader,
  nsr: BackupReader,
  writer: BackupWriter,
  options: MergeNamespaceOptions,
): Promise<MergeNamespaceSummary> {
  const check = new NamespaceBackupCheck(options.expectNamespace);
  const devIt = orderedEntries(dev, 'device backup');
  const nsIt = orderedEntries(nsr, 'namespace backup');
  const nextDev = async (): Promise<BackupEntry | undefined> => {
    const r = await devIt.next();
    if (r.done) return undefined;
    if (classifyPath(r.value.path).kind === 'manifest') throw notADeviceBackup(r.value, 'merge');
    return r.value;
  };
  // The manifest sorts last, so the first call fixes N (from the first entry) before any device entry is judged.
  const nextNs = async (): Promise<BackupEntry | undefined> => {
    for (;;) {
      const r = await nsIt.next();
      if (r.done) return undefined;
      const e = check.accept(r.value);
      if (e !== undefined) return e;
    }
  };
  const s = { kept: 0, replaced: 0, removed: 0, added: 0, before: 0, present: false, read: 0 };
  let n = await nextNs();
  const ns = check.ns ?? check.failEmpty();
  let d = await nextDev();
  const progress = (): void =>
    options.onProgress?.({
      entriesRead: ++s.read,
      bytesRead: dev.bytesRead + nsr.bytesRead,
      entriesWritten: writer.entriesWritten,
      bytesWritten: writer.bytesWritten,
    });
  while (d !== undefined || n !== undefined) {
    const cmp = d === undefined ? 1 : n === undefined ? -1 : compareBackupPaths(d.path, n.path);
    if (cmp < 0 && d !== undefined) {
      if (isNamespacePath(d.path, ns)) {
        s.before++;
        s.removed++;
        if (d.path === namespacePath(ns)) s.present = true;
      } else {
        await writer.writeEntry(d.path, d.value);
        s.kept++;
      }
      d = await nextDev();
    } else if (n !== undefined) {
      await writer.writeEntry(n.path, n.value);
      if (cmp === 0 && d !== undefined) {
        s.before++;
        s.replaced++;
        if (d.path === namespacePath(ns)) s.present = true;
        d = await nextDev();
      } else {
        s.added++;
      }
      n = await nextNs();
    }
    progress();
  }
  const manifest = check.finish();
  await writer.finish();
  return {
    namespace: manifest.namespace as string,
    kept: s.kept,
    replaced: s.replaced,
    removed: s.removed,
    added: s.added,
    namespaceWasPresent: s.present,
    namespaceEntriesBefore: s.before,
    namespaceEntriesAfter: s.replaced + s.added,
    entriesWritten: writer.entriesWritten,
    bytesWritten: writer.bytesWritten,
    manifest,
  };
}
