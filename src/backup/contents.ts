/**
 * What a backup file holds, by path: its kind (device, namespace or key backup), manifest, namespaces, keys and
 * users. Used by `backup inspect` and by the daemon to verify a device against a snapshot.
 */
import { BackupManifestInvalidError } from '../errors.js';
import { compareBackupPaths } from './format.js';
import type { BackupKind, BackupManifest } from './manifest.js';
import { decodeManifest, PathsDigest } from './manifest.js';
import { classifyPath, keyPath, MANIFEST_PATH } from './paths.js';
import { type BackupEntry, type BackupReader, type OpenBackupOptions, valueLength } from './reader.js';
import { closeAll, openSource, type BackupSource } from './transform.js';

export interface NamespaceContents {
  /** Whether the `/namespace/<ns>` record is present (users may outlive their namespace, FACTS §4). */
  present: boolean;
  keys: number;
  users: number;
  /** Key ids and user ids (without the `ns~` prefix), in file order; only with `collectIds`. */
  keyIds?: string[];
  userIds?: string[];
}

export interface BackupContents {
  version: 0 | 1;
  /** Hex of the scrypt salt. */
  salt: string;
  /** v1 only. */
  deviceId?: string;
  kind: BackupKind;
  manifest?: BackupManifest;
  /** Entries besides the manifest. */
  entryCount: number;
  /** Bytes of the file read. */
  bytes: number;
  namespaces: Record<string, NamespaceContents>;
  rootKeys: number;
  rootUsers: number;
  /** Only with `collectIds`. */
  rootKeyIds?: string[];
  rootUserIds?: string[];
  /** Config, local, store-version and unknown entries. */
  otherEntries: number;
  /** Whether the entries are in strictly increasing firmware order (merges need it; restores do not). */
  inFirmwareOrder: boolean;
  /** The paths digest of the entries besides the manifest (see PathsDigest). */
  pathsDigest: string;
  /** Path of the first entry besides the manifest (a key backup's key). */
  firstPath?: string;
}

export interface ListContentsOptions {
  input: OpenBackupOptions;
  /** Collect key and user ids (memory grows with their number). Default false: counts only. */
  collectIds?: boolean;
  /** Called for every entry, manifest included, in file order (e.g. to print it); awaited. */
  onEntry?: (e: BackupEntry) => void | Promise<void>;
  /**
   * Read every entry but the manifest by its path only (BackupEntry.pathOnly: NOT authenticated; its value length
   * taken from its sealed size), at a few AES blocks per batch instead of a GCM open each. Only for a caller that
   * authenticates every entry it goes on to use before acting on it (a one-snapshot apply: its merge opens each
   * entry it writes, before any restore). The manifest is authenticated; what is counted and digested is what the
   * file's framing and keystream say, so a damaged path fails verifyManifest and a damaged value fails the later read.
   */
  pathsOnly?: boolean;
}

/**
 * Reads the whole file with every integrity check of the reader and lists what it holds. Does not require firmware
 * order. Throws the reader's errors and BackupManifestInvalidError (malformed manifest, or one that is not the
 * last entry).
 */
export async function listBackupContents(source: BackupSource, options: ListContentsOptions): Promise<BackupContents> {
  const reader = await openSource(source, options.input);
  try {
    const h = reader.header;
    const c: BackupContents = {
      version: h.version,
      salt: h.salt.toString('hex'),
      ...(h.deviceId !== undefined ? { deviceId: h.deviceId } : {}),
      kind: 'device',
      entryCount: 0,
      bytes: 0,
      namespaces: {},
      rootKeys: 0,
      rootUsers: 0,
      ...(options.collectIds ? { rootKeyIds: [], rootUserIds: [] } : {}),
      otherEntries: 0,
      inFirmwareOrder: true,
      pathsDigest: '',
    };
    const digest = new PathsDigest();
    let prev: string | undefined;
    for await (const e of entriesOf(reader, options.pathsOnly ?? false)) {
      await options.onEntry?.(e);
      if (c.manifest !== undefined) throw new BackupManifestInvalidError(`entry ${e.path} follows the manifest`);
      if (prev !== undefined && compareBackupPaths(prev, e.path) >= 0) c.inFirmwareOrder = false;
      prev = e.path;
      tally(c, e, options.collectIds ?? false);
      if (c.manifest === undefined) {
        digest.add(e.path, valueLength(e));
        c.firstPath ??= e.path;
      }
    }
    c.pathsDigest = digest.digest();
    c.bytes = reader.bytesRead;
    if (c.manifest) c.kind = c.manifest.kind;
    if (c.firstPath === undefined) delete c.firstPath;
    return c;
  } finally {
    await closeAll(reader);
  }
}

/** Every entry in file order; with `pathsOnly`, all but the manifest read by their path only. */
async function* entriesOf(reader: BackupReader, pathsOnly: boolean): AsyncGenerator<BackupEntry> {
  if (!pathsOnly) {
    yield* reader.entries();
    return;
  }
  for await (const batch of reader.entriesBatched({ wantsValue: (p) => p === MANIFEST_PATH })) yield* batch;
}

function tally(c: BackupContents, e: BackupEntry, ids: boolean): void {
  const p = classifyPath(e.path);
  const ns = (name: string): NamespaceContents =>
    (c.namespaces[name] ??= { present: false, keys: 0, users: 0, ...(ids ? { keyIds: [], userIds: [] } : {}) });
  switch (p.kind) {
    case 'manifest':
      c.manifest = decodeManifest(e.value);
      return;
    case 'namespace':
      ns(p.namespace).present = true;
      break;
    case 'namespace-key': {
      const n = ns(p.namespace);
      n.keys++;
      n.keyIds?.push(p.keyId);
      break;
    }
    case 'namespace-user': {
      const n = ns(p.namespace);
      n.users++;
      n.userIds?.push(p.userId);
      break;
    }
    case 'root-key':
      c.rootKeys++;
      c.rootKeyIds?.push(p.keyId);
      break;
    case 'root-user':
      c.rootUsers++;
      c.rootUserIds?.push(p.userId);
      break;
    default:
      c.otherEntries++;
  }
  c.entryCount++;
}

/**
 * Checks that a namespace or key backup's entries are what its manifest says: count, paths digest, and only the
 * namespace's entries (with its record) or only the one key. Device backups pass. Throws BackupManifestInvalidError.
 */
export function verifyManifest(c: BackupContents): void {
  const m = c.manifest;
  if (m === undefined) return;
  const bad = (what: string): BackupManifestInvalidError => new BackupManifestInvalidError(`${m.kind} backup: ${what}`);
  if (m.entryCount !== c.entryCount) throw bad(`the manifest says ${m.entryCount} entries, the file holds ${c.entryCount}`);
  if (m.pathsDigest !== c.pathsDigest) throw bad('the paths digest does not match the entries');
  const names = Object.keys(c.namespaces);
  if (m.kind === 'namespace') {
    if (names.length !== 1 || names[0] !== m.namespace || c.rootKeys + c.rootUsers + c.otherEntries > 0) {
      throw bad(`it must hold only entries of namespace ${m.namespace}`);
    }
    if (!c.namespaces[m.namespace as string]?.present) throw bad(`it lacks the /namespace/${m.namespace} entry`);
  } else {
    const expected = keyPath(m.namespace ?? undefined, m.keyId as string);
    if (c.firstPath !== expected) throw bad(`the manifest names ${expected}, the file holds ${c.firstPath ?? 'no entry'}`);
  }
}
