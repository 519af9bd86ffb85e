/**
 * Foreign writes at a replica: keys and users of the namespace on this site's device that replication never knew
 * (someone wrote them straight to the NetHSM). A snapshot's restore replaces the namespace with the primary's copy and
 * would delete them; before it does, they are exported (blobs only, never decrypted) to a quarantine file.
 *
 * The rule (docs/operations.md §6): an entry of the namespace in the device backup taken just before the restore is
 * foreign when the snapshot lacks its path (the restore removes it) and replication never knew it here, that is:
 *   - it is not in the last snapshot applied at this site, nor in a file that already saved it (a fence's quarantine,
 *     or the quarantine file an earlier attempt of the same apply wrote before a batch-mate dropped out);
 *   - for a key: no stream change this site applied (replica) or logged (primary) names its id.
 * A key the primary deleted whose delete had not reached this replica yet is therefore not foreign (no false alarm).
 * Anything else is: exporting an entry too many is harmless, deleting an unknown one without a copy is not.
 * Out of scope: an entry the snapshot also holds, with another value (changed in place); the snapshot's value wins.
 */
import { existsSync } from 'node:fs';
import { extractNamespace } from '../backup/namespace.js';
import { classifyPath, isNamespacePath, namespacePath } from '../backup/paths.js';
import type { ScryptParams } from '../backup/format.js';
import type { BackupEntry, OpenBackupOptions } from '../backup/reader.js';
import { closeAll, openSource } from '../backup/transform.js';
import { BackupNamespaceNotFoundError, SyncQuarantineFailedError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { diffEntries } from './compare.js';

/** The `reason` of a foreign-writes quarantine file's meta (a fence's says `fenced`). */
export const FOREIGN_REASON = 'foreign writes at replica';

/** Ids listed in meta, logs, audit rows and sync results; the file itself always holds every entry. */
export const MAX_IDS_LISTED = 100;

export interface ForeignEntries {
  /** Paths of the foreign keys and users, to select them from the device backup. */
  paths: Set<string>;
  keyIds: string[];
  userIds: string[];
}

export interface KnownSources {
  /** Namespace backups whose entries replication knew: the last applied snapshot, a fence's quarantine. Missing ones are skipped. */
  files: readonly string[];
  /** How those files open (the replication passphrase). */
  open: OpenBackupOptions;
  /** Whether a stream change this site applied or logged names the key id. */
  knownKey?: (keyId: string) => boolean;
}

/** A backup file and how it opens. */
export interface OpenFile {
  file: string;
  open: OpenBackupOptions;
}

/**
 * The foreign entries of `namespace` in `device` (a device backup) against `snapshot` (the namespace backup about to be
 * restored). Throws the codec's errors for the device backup or the snapshot; an unreadable known file is logged and
 * skipped (its entries then count as foreign: a copy too many, never one too few).
 */
export async function findForeign(namespace: string, device: OpenFile, snapshot: OpenFile, known: KnownSources, log: Logger = silentLogger): Promise<ForeignEntries> {
  const removed = new Set<string>();
  const keyOrUser = (p: string) => isNamespacePath(p, namespace) && ['namespace-key', 'namespace-user'].includes(classifyPath(p).kind);
  await withEntries([device, snapshot], ([d, s]) =>
    diffEntries(d!, s!, keyOrUser, (p, kind) => {
      if (kind === 'missing') removed.add(p);
    }),
  );
  return foreignAmong(namespace, removed, known, log);
}

/**
 * The foreign entries among `removed`: the namespace's key and user paths of a device backup that a restore removes
 * (the merge lists them in its own pass, so no second walk of the backups is needed). Consumes `removed`.
 */
export async function foreignAmong(namespace: string, removed: Set<string>, known: KnownSources, log: Logger = silentLogger): Promise<ForeignEntries> {
  // Keys the stream knows are not foreign whatever the files hold: asked first, the files (a key derivation and a
  // whole pass each) are read only for what is left, usually nothing (a replica's own stream applies).
  for (const p of removed) {
    const c = classifyPath(p);
    if (c.kind === 'namespace-key' && (known.knownKey?.(c.keyId) ?? false)) removed.delete(p);
  }
  if (removed.size > 0) {
    for (const file of known.files.filter((f) => existsSync(f))) {
      try {
        await withEntries([{ file, open: known.open }], async ([entries]) => {
          for await (const e of entries!) removed.delete(e.path);
        });
      } catch (err) {
        log.warn({ namespace, file, err }, 'a file of known entries could not be read; entries it holds count as foreign');
      }
    }
  }
  const out: ForeignEntries = { paths: new Set(), keyIds: [], userIds: [] };
  for (const p of removed) {
    const c = classifyPath(p);
    if (c.kind === 'namespace-key' && !(known.knownKey?.(c.keyId) ?? false)) {
      out.keyIds.push(c.keyId);
      out.paths.add(p);
    } else if (c.kind === 'namespace-user') {
      out.userIds.push(c.userId);
      out.paths.add(p);
    }
  }
  return out;
}

export interface ForeignQuarantine {
  /** The quarantine file. */
  path: string;
  keys: number;
  users: number;
  /** The first MAX_IDS_LISTED ids of each. */
  keyIds: string[];
  userIds: string[];
}

export interface QuarantineTarget {
  path: string;
  /** Passphrase of the file (the replication passphrase, as a fence's); absent: the device backup's. */
  passphrase?: string | Buffer;
  scrypt?: ScryptParams;
  /** Written into the manifest's meta with the reason, namespace and ids; no secrets. */
  meta: { epoch: number; seq: number; site: string | null };
}

/** The manifest meta of a quarantine file whose namespace record is the snapshot's (the device had none). */
export const RECORD_FROM_SNAPSHOT = { namespaceRecord: 'snapshot' } as const;

/**
 * Exports the foreign entries (and the namespace record, so the file is a namespace backup every tool reads) from the
 * device backup to `target.path`, atomically. Throws SyncQuarantineFailedError (cause attached); no file then remains.
 *
 * A device may hold the namespace's users without its `/namespace/<ns>` record (the firmware keeps them when the
 * namespace is deleted, and a root Administrator creates them before the namespace): then the record is `snapshot`'s
 * (recordFromSnapshot), and the manifest's meta says so.
 */
export async function quarantineForeign(namespace: string, device: OpenFile, snapshot: OpenFile, foreign: ForeignEntries, target: QuarantineTarget): Promise<ForeignQuarantine> {
  const keyIds = foreign.keyIds.slice(0, MAX_IDS_LISTED);
  const userIds = foreign.userIds.slice(0, MAX_IDS_LISTED);
  const listed = { keys: foreign.keyIds.length, users: foreign.userIds.length, keyIds, userIds };
  try {
    await extractNamespace(device.file, namespace, target.path, {
      input: device.open,
      ...(target.passphrase !== undefined ? { passphrase: target.passphrase } : {}),
      ...(target.scrypt ? { scrypt: target.scrypt } : {}),
      select: (p) => foreign.paths.has(p),
      missingRecord: recordFromSnapshot(namespace, snapshot),
      meta: { reason: FOREIGN_REASON, namespace, ...target.meta, at: Date.now(), ...listed },
    });
  } catch (err) {
    const ids = [...keyIds.map((k) => `key ${k}`), ...userIds.map((u) => `user ${u}`)].join(', ');
    throw new SyncQuarantineFailedError(
      `namespace ${namespace} on this device holds ${listed.keys} keys and ${listed.users} users nobody replicated (${ids}); saving them to ${target.path} failed, so the snapshot was not restored: ${err instanceof Error ? err.message : String(err)}`,
      { namespace, path: target.path, cause: err },
    );
  }
  return { path: target.path, ...listed };
}

/**
 * extractNamespace's `missingRecord` for a save, made just before a restore, of entries of a device that lacks the
 * namespace's record: the record of `snapshot` (the namespace backup about to be restored; same path, same domain key,
 * and the restore writes that very record to the device anyway), with RECORD_FROM_SNAPSHOT for the meta. Throws
 * BackupNamespaceNotFoundError when the snapshot has none either.
 */
export function recordFromSnapshot(namespace: string, snapshot: OpenFile): () => Promise<{ value: Buffer; meta: Record<string, unknown> }> {
  return async () => ({ value: await recordOf(namespace, snapshot), meta: RECORD_FROM_SNAPSHOT });
}

/** The `/namespace/<ns>` record's value in `file` (a namespace backup); BackupNamespaceNotFoundError when it has none. */
async function recordOf(namespace: string, file: OpenFile): Promise<Buffer> {
  const record = namespacePath(namespace);
  const reader = await openSource(file.file, file.open);
  try {
    // Only the record's value is wanted: every other entry is read by its path alone.
    for await (const batch of reader.entriesBatched({ wantsValue: (p) => p === record })) {
      const e = batch.find((x) => x.path === record);
      if (e) return Buffer.from(e.value);
    }
  } finally {
    await closeAll(reader);
  }
  throw new BackupNamespaceNotFoundError(`neither the device backup nor the snapshot holds the ${record} record`, { namespace });
}

/** Opens the files, runs `fn` over their entry streams, and closes them whatever happens. */
async function withEntries<T>(files: OpenFile[], fn: (entries: AsyncIterable<BackupEntry>[]) => Promise<T>): Promise<T> {
  const readers = [];
  try {
    for (const f of files) readers.push(await openSource(f.file, f.open));
    return await fn(readers.map((r) => r.entries()));
  } finally {
    await closeAll(...readers);
  }
}
