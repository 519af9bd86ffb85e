/**
 * The manifest of namespace and key backups: one entry at {@link MANIFEST_PATH}, the last in the firmware's order,
 * holding a small JSON object that says what the file holds. It carries no secret: paths are hashed, values only
 * counted by length. A backup file without a manifest is a device backup (as the NetHSM writes it).
 */
import { createHash, type Hash } from 'node:crypto';
import { z } from 'zod';
import { BackupManifestInvalidError } from '../errors.js';
import { isValidId } from '../nethsm/ids.js';
export { MANIFEST_PATH } from './paths.js';

/** The manifest format this code writes and reads. */
export const MANIFEST_FORMAT_VERSION = 1;
/** Upper bound of the serialised manifest (the daemon's `meta` included). */
export const MANIFEST_MAX_BYTES = 64 * 1024;

export type BackupKind = 'device' | 'namespace' | 'key';

const id = z.string().refine(isValidId, { message: 'must follow the NetHSM id rule (letters, digits, _.-; 1..128)' });

const manifestSchema = z.strictObject({
  formatVersion: z.literal(MANIFEST_FORMAT_VERSION),
  kind: z.enum(['namespace', 'key']),
  /** The namespace; null for a root key (key kind only). */
  namespace: id.nullable(),
  /** Key kind: the key's id; namespace kind: null. */
  keyId: id.nullable(),
  /** Entries in the file besides the manifest. */
  entryCount: z.number().int().nonnegative(),
  /** `sha256:<hex>` over the entries, see {@link PathsDigest}. */
  pathsDigest: z.string().regex(/^sha256:[0-9a-f]{64}$/, { message: 'must be "sha256:" and 64 lowercase hex digits' }),
  /** ISO 8601 time the file was made. */
  createdAt: z.iso.datetime({ offset: true }),
  /** Device id of the source backup (v1); null for a version-0 source. */
  sourceDeviceId: z.string().max(1000).nullable(),
  /** Format version of the source backup. */
  sourceVersion: z.union([z.literal(0), z.literal(1)]),
  /** Free-form data of the caller (the daemon stores e.g. `{ epoch, position }`); never secrets. */
  meta: z.record(z.string(), z.unknown()).optional(),
});

export type BackupManifest = z.infer<typeof manifestSchema>;

/** Builds a manifest object (validated like a read one). Throws BackupManifestInvalidError on bad fields. */
export function makeManifest(fields: Omit<BackupManifest, 'formatVersion'>): BackupManifest {
  return parseManifestObject({ formatVersion: MANIFEST_FORMAT_VERSION, ...fields });
}

function parseManifestObject(raw: unknown): BackupManifest {
  const r = manifestSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = issue && issue.path.length > 0 ? issue.path.join('.') : '(manifest)';
    throw new BackupManifestInvalidError(`backup manifest field ${field}: ${issue?.message ?? 'invalid'}`);
  }
  const m = r.data;
  if (m.kind === 'namespace' && (m.namespace === null || m.keyId !== null)) {
    throw new BackupManifestInvalidError('backup manifest field namespace/keyId: a namespace backup names a namespace and no key');
  }
  if (m.kind === 'key' && (m.keyId === null || m.entryCount !== 1)) {
    throw new BackupManifestInvalidError('backup manifest field keyId/entryCount: a key backup names one key and holds one entry');
  }
  return m;
}

/** Serialises a manifest into the entry value. Throws BackupManifestInvalidError when it exceeds MANIFEST_MAX_BYTES. */
export function encodeManifest(m: BackupManifest): Buffer {
  const buf = Buffer.from(JSON.stringify(parseManifestObject(m)), 'utf8');
  if (buf.length > MANIFEST_MAX_BYTES) {
    throw new BackupManifestInvalidError(`backup manifest is ${buf.length} bytes, over the ${MANIFEST_MAX_BYTES}-byte limit (meta too large?)`);
  }
  return buf;
}

/**
 * Parses and validates a manifest entry's value. Throws BackupManifestInvalidError naming the offending field
 * (or saying the JSON does not parse, or the value is too large).
 */
export function decodeManifest(value: Buffer): BackupManifest {
  if (value.length > MANIFEST_MAX_BYTES) {
    throw new BackupManifestInvalidError(`backup manifest is ${value.length} bytes, over the ${MANIFEST_MAX_BYTES}-byte limit`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(value));
  } catch (cause) {
    throw new BackupManifestInvalidError('backup manifest is not valid UTF-8 JSON', { cause });
  }
  return parseManifestObject(raw);
}

/**
 * Running digest of a backup's entries, in file order: SHA-256 over, per entry,
 * `u32be(byteLength(path)) ‖ path (UTF-8) ‖ u32be(byteLength(value))`. Values are not hashed (only their length),
 * so the digest is the same whatever passphrase the file is under and reveals nothing of the blobs.
 */
export class PathsDigest {
  private readonly hash: Hash = createHash('sha256');
  private readonly u32 = Buffer.alloc(4);
  count = 0;

  add(path: string, valueLength: number): void {
    const p = Buffer.from(path, 'utf8');
    this.u32.writeUInt32BE(p.length);
    this.hash.update(this.u32);
    this.hash.update(p);
    this.u32.writeUInt32BE(valueLength);
    this.hash.update(this.u32);
    this.count++;
  }

  /** `sha256:<hex>`; call once. */
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}
