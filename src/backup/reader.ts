/**
 * Streaming reader of NetHSM backup files, versions 0 and 1 (layout in ./format.ts and docs/backup-format.md).
 *
 * Memory is constant: the reader holds one entry, or one batch of a chunk's entries (plus one read buffer), whatever
 * the file size; nothing accumulates.
 * Every field is authenticated before anything from it is returned, so a reader never yields an entry past a failed
 * check. A truncated version-1 file is only detected at its end (missing marker/trailer): consumers that write
 * something from the entries must treat a throwing iteration as "all of it invalid" (write to a temp file, drop it).
 * A version-0 file has no end marker, so a cut exactly at an entry boundary cannot be detected.
 */
import {
  BackupCorruptedError,
  BackupNotABackupError,
  BackupTruncatedError,
  BackupUnsupportedVersionError,
  BackupWrongPassphraseError,
  InputInvalidError,
  InternalError,
  type NhrErrorOptions,
} from '../errors.js';
import { ByteSource, type ByteSourceInput } from './byte-source.js';
import type { KeyCache } from './key-cache.js';
import { BACKUP_KEY_LENGTH, deriveBackupKey, type GcmKey, gcmKey, gcmKeystreamPrefixes, gcmOpen } from './crypto.js';
import {
  AD,
  BACKUP_MAGIC_BYTES,
  BACKUP_TRAILER_BYTES,
  type BackupVersion,
  GCM_NONCE_LENGTH,
  GCM_OVERHEAD,
  PRODUCTION_SCRYPT,
  readU24,
  SALT_LENGTH,
  type ScryptParams,
  TEST_SCRYPT,
  VERSION_FIELD_LENGTH,
} from './format.js';

export interface BackupHeader {
  version: BackupVersion;
  /** The plaintext scrypt salt (the device's `backup-salt`). */
  salt: Buffer;
  /** Decrypted header field 4 (60 bytes from the firmware): the domain key sealed under the unlock key. */
  lockedDomainKey: Buffer;
  /** v1 only: the id of the device the backup was taken on. */
  deviceId?: string;
  /** v1 only: `SHA256(deviceKey ‖ "early_config_store")`, key material: zero it when you are done with it. */
  configStoreKey?: Buffer;
  /** Offset of the first entry (= size of the header). */
  headerBytes: number;
}

export interface BackupEntry {
  /** 0-based position in the file. */
  index: number;
  /** File offset of the entry's 3-byte length. */
  offset: number;
  /** KV path with its leading `/`, e.g. `/key/.ns1/k1`. */
  path: string;
  /** The raw KV value (still inner-encrypted where the firmware encrypts it). */
  value: Buffer;
  /** Bytes the entry takes in the file: 3-byte length + sealed blob, so `offset + size` is the next entry's offset. */
  size: number;
  /**
   * The sealed field as read (nonce ‖ ciphertext ‖ tag), already authenticated: a writer under the same key copies it
   * as it is (BackupWriter.copyEntry) instead of sealing the value again. Absent on entries not read from a file.
   */
  sealed?: Buffer;
  /**
   * Set when entriesBatched's `wantsValue` declined the entry: it was NOT authenticated, its `path` was read from the
   * ciphertext's first blocks alone and `value` is empty. Such an entry may only be dropped, or copied sealed
   * (BackupWriter.copyEntry) into a file under the same key, whose reader (the device, at restore) authenticates it
   * (docs/backup-format.md, "Entries read by their path only").
   */
  pathOnly?: true;
  /**
   * With BatchOptions.heads, on an entry read by its path only: the first VALUE_HEAD_LENGTH bytes of its value, read
   * like its path (from the keystream, NOT authenticated), when they lie within the blocks peeked; absent otherwise.
   * See valueHead() for what they are good for.
   */
  head?: Buffer;
}

/** Bytes of a value's start kept as BackupEntry.head: an inner-encrypted value's nonce (FACTS.md §6.5). */
export const VALUE_HEAD_LENGTH = 12;

/**
 * The first VALUE_HEAD_LENGTH bytes of the entry's value (as read, or its `head`), or undefined when not known. A
 * value the firmware store-encrypts (keys, users) starts with the 12 random bytes of its own GCM nonce, drawn afresh by
 * every write of that entry; so two entries of one path with equal heads and equal value lengths hold the same stored
 * write, byte for byte (a merge uses it to tell the keys a restore leaves as they were: rewrite.ts `onOverlay`).
 */
export function valueHead(e: BackupEntry): Buffer | undefined {
  if (e.pathOnly) return e.head;
  return e.value.length >= VALUE_HEAD_LENGTH ? e.value.subarray(0, VALUE_HEAD_LENGTH) : undefined;
}

/** The value's length: as read, or for an entry read by its path only, from its sealed field (3-byte path length, path, value). */
export function valueLength(e: BackupEntry): number {
  return e.pathOnly ? e.size - 3 - GCM_OVERHEAD - 3 - Buffer.byteLength(e.path, 'utf8') : e.value.length;
}

export interface BatchOptions {
  /**
   * Whether the caller uses the value of the entry at `path`. Entries it declines are read by their path only (see
   * BackupEntry.pathOnly): a few AES blocks for a whole batch instead of a GCM open each. Default: every value is used.
   */
  wantsValue?: (path: string) => boolean;
  /**
   * Also read each path-only entry's `head` (BackupEntry.head): from the same PEEK_BLOCKS keystream blocks as its path
   * when it lies within them (paths up to 49 bytes), else from HEAD_PEEK_BLOCKS computed for those entries alone (a
   * longer prefix for every entry costed a merge a third more CPU). Default false.
   */
  heads?: boolean;
}

export interface OpenBackupOptions {
  passphrase?: string | Buffer;
  /** A key derived before (e.g. another reader's `backupKey`): skips scrypt. Stays the caller's; never zeroed here. */
  backupKey?: Buffer;
  /** `'auto'` (default): production parameters, then the test parameters if the version field does not authenticate. */
  scrypt?: ScryptParams | 'auto';
  /**
   * Where `passphrase` comes from (a config setting such as `replication.passphrase`) and what to do when it does not
   * open a file: BackupWrongPassphraseError then names it in its message and takes `hint` as its hint.
   */
  passphraseSetting?: { path: string; hint: string };
  /**
   * Keys of `passphrase` derived before, by salt and parameters (key-cache.ts): a file whose salt is in it opens
   * without scrypt, and a key derived here is added to it. The cache keeps ownership of its keys.
   */
  keyCache?: KeyCache;
}

export interface BackupReader {
  readonly header: BackupHeader;
  /**
   * The key that opened the file, so a writer can reuse it without scrypt. Ownership rule: a key the reader derived
   * (from a passphrase) is zeroed by close(); copy it (`Buffer.from(reader.backupKey)`) to keep it past close, and
   * zero your copy. A key passed in as `options.backupKey` is this same buffer and is never zeroed by the reader.
   * (createBackupWriter copies the key it is given, so handing `reader.backupKey` to a writer is safe.)
   */
  readonly backupKey: Buffer;
  /** The scrypt parameters that opened the file (for a given backupKey: the ones requested, or PRODUCTION_SCRYPT). */
  readonly scrypt: ScryptParams;
  /**
   * The entries in file order, one in memory at a time. Iterate once. Throws BackupCorruptedError (entry failed
   * authentication, impossible length, data after the trailer) or BackupTruncatedError (file ends inside an entry;
   * v1: end marker or trailer missing or wrong); nothing is yielded after a failure.
   */
  entries(): AsyncGenerator<BackupEntry>;
  /**
   * The same entries, same checks and errors, in batches: each batch holds every entry whose bytes had arrived when it
   * was read (at least one, at most MAX_BATCH), parsed without a wait in between, so a consumer pays one await per
   * batch, not per entry. On a failure the entries before it are yielded first (a batch of them), then the error is
   * thrown. Use either this or entries(), once.
   */
  entriesBatched(options?: BatchOptions): AsyncGenerator<BackupEntry[]>;
  /** Bytes consumed from the source so far. */
  readonly bytesRead: number;
  /** Idempotent: releases the file (or ends the stream) and zeroes a derived backupKey. */
  close(): Promise<void>;
}

/** Limit for sealed header fields (device id, keys): far above what the firmware writes, far below u24's 16 MiB. */
const MAX_HEADER_FIELD = 4096;
const pathDecoder = new TextDecoder('utf-8', { fatal: true });
/** Most entries in one batch of entriesBatched (bounds memory when a whole file arrives as one chunk). */
export const MAX_BATCH = 1024;

/**
 * Opens a backup: checks magic and version, derives the key, authenticates and decrypts the header fields.
 * Throws BackupNotABackupError (empty file, wrong magic), BackupUnsupportedVersionError (version byte not 0/1),
 * BackupWrongPassphraseError (version field does not authenticate), BackupCorruptedError (a header field fails
 * authentication, impossible length, inner version differs), BackupTruncatedError (file ends inside the header),
 * InputInvalidError (neither passphrase nor backupKey; a file that cannot be opened or is a directory, naming it).
 * On any throw the source is released and derived keys are zeroed.
 */
export async function openBackup(source: ByteSourceInput, options: OpenBackupOptions): Promise<BackupReader> {
  if (options.passphrase === undefined && options.backupKey === undefined) {
    throw new InputInvalidError('opening a backup needs a passphrase or a backup key');
  }
  if (options.backupKey !== undefined && options.backupKey.length !== BACKUP_KEY_LENGTH) {
    throw new InputInvalidError(`a backup key is ${BACKUP_KEY_LENGTH} bytes, got ${options.backupKey.length}`);
  }
  const where: NhrErrorOptions = typeof source === 'string' ? { path: source } : {};
  const src = await ByteSource.open(source);
  try {
    const pre = await readPreamble(src, where);
    const opened = await unlock(pre, options, where);
    try {
      const cipherKey = gcmKey(opened.key);
      const header = await readHeaderFields(src, pre, cipherKey, where);
      return new StreamingBackupReader(src, header, opened.key, cipherKey, opened.params, opened.derived, where);
    } catch (err) {
      if (opened.derived) opened.key.fill(0);
      throw err;
    }
  } catch (err) {
    await src.close();
    throw err;
  }
}

/**
 * Reads a whole backup held in memory (small files: tests, the simulator's restore body). Same checks and errors
 * as openBackup + entries(). The returned backupKey is a copy the caller owns and zeroes.
 */
export async function readBackupBuffer(
  buf: Buffer,
  options: OpenBackupOptions,
): Promise<{ header: BackupHeader; entries: BackupEntry[]; backupKey: Buffer }> {
  const reader = await openBackup(
    (async function* () {
      yield buf;
    })(),
    options,
  );
  try {
    const entries: BackupEntry[] = [];
    for await (const e of reader.entries()) entries.push(e);
    return { header: reader.header, entries, backupKey: Buffer.from(reader.backupKey) };
  } finally {
    await reader.close();
  }
}

/**
 * The salt in a backup's header (public: in clear, FACTS §6.2), read without a key: the magic, version and salt field
 * only (a 64 KiB read). For deriving a file's key ahead of opening it (src/daemon/key-warmup.ts). Throws as openBackup
 * does for a file that is not a backup or ends inside its header.
 */
export async function readBackupSalt(source: ByteSourceInput): Promise<Buffer> {
  const where: NhrErrorOptions = typeof source === 'string' ? { path: source } : {};
  const src = await ByteSource.open(source);
  try {
    return Buffer.from((await readPreamble(src, where)).salt);
  } finally {
    await src.close();
  }
}

interface Preamble {
  version: BackupVersion;
  salt: Buffer;
  versionField: Buffer;
  versionFieldOffset: number;
}

async function readPreamble(src: ByteSource, where: NhrErrorOptions): Promise<Preamble> {
  const magic = await src.read(BACKUP_MAGIC_BYTES.length + 1);
  const magicPart = magic.subarray(0, BACKUP_MAGIC_BYTES.length);
  if (magic.length === 0) throw new BackupNotABackupError('not a NetHSM backup: the file is empty', where);
  if (!magicPart.equals(BACKUP_MAGIC_BYTES.subarray(0, magicPart.length))) {
    throw new BackupNotABackupError('not a NetHSM backup: the file does not start with "_NETHSM_BACKUP_"', where);
  }
  if (magic.length <= BACKUP_MAGIC_BYTES.length) {
    throw new BackupTruncatedError(`backup ends at offset ${magic.length}, inside the magic and version byte`, {
      ...where,
      offset: magic.length,
    });
  }
  const v = magic[BACKUP_MAGIC_BYTES.length];
  if (v !== 0 && v !== 1) {
    throw new BackupUnsupportedVersionError(`backup format version ${v} is not supported (only 0 and 1)`, where);
  }
  const salt = await readHeaderField(src, 'salt field', where, SALT_LENGTH, SALT_LENGTH);
  const versionFieldOffset = src.offset;
  const versionField = await readHeaderField(
    src,
    'version field',
    where,
    VERSION_FIELD_LENGTH,
    VERSION_FIELD_LENGTH,
  );
  return { version: v, salt, versionField, versionFieldOffset };
}

/** Reads `u24 ‖ bytes` of a header field, checking the length first (so a flipped length byte reads nothing). */
async function readHeaderField(
  src: ByteSource,
  what: string,
  where: NhrErrorOptions,
  min: number,
  max: number,
): Promise<Buffer> {
  const offset = src.offset;
  const lenBuf = await src.read(3);
  if (lenBuf.length < 3) {
    throw new BackupTruncatedError(`backup ends at offset ${src.offset}, inside the length of the ${what} (offset ${offset})`, {
      ...where,
      offset: src.offset,
    });
  }
  const len = readU24(lenBuf);
  if (len < min || len > max) {
    const expected = min === max ? `${min}` : `${min}..${max}`;
    throw new BackupCorruptedError(`the ${what} at offset ${offset} has impossible length ${len} (expected ${expected})`, {
      ...where,
      offset,
    });
  }
  const data = await src.read(len);
  if (data.length < len) {
    throw new BackupTruncatedError(
      `backup ends at offset ${src.offset}, inside the ${what} at offset ${offset} (${len} bytes announced)`,
      { ...where, offset: src.offset },
    );
  }
  return data;
}

interface Unlocked {
  key: Buffer;
  params: ScryptParams;
  /** Whether the reader derived the key (and so must zero it). */
  derived: boolean;
}

/** Finds the key that opens the version field, then checks the inner version byte against the header's. */
async function unlock(pre: Preamble, options: OpenBackupOptions, where: NhrErrorOptions): Promise<Unlocked> {
  const at = { ...where, offset: pre.versionFieldOffset };
  const requested = options.scrypt ?? 'auto';
  const given = options.backupKey;
  const found =
    given !== undefined
      ? {
          unlocked: { key: given, params: requested === 'auto' ? PRODUCTION_SCRYPT : requested, derived: false },
          inner: tryOpen(given, pre.versionField),
        }
      : await deriveAndOpen(pre, options.passphrase as string | Buffer, requested, options.keyCache);
  if (found === undefined || found.inner === undefined) {
    const setting = given === undefined ? options.passphraseSetting : undefined;
    const what =
      given !== undefined
        ? 'the given backup key does not open this backup'
        : `${setting ? `the passphrase of ${setting.path}` : 'the backup passphrase'} does not open this backup (tried scrypt ${scryptCandidates(requested).map(describeScrypt).join(' and ')})`;
    throw new BackupWrongPassphraseError(`${what}: the version field at offset ${pre.versionFieldOffset} failed authentication`, {
      ...at,
      ...(setting ? { hint: setting.hint } : {}),
    });
  }
  const { unlocked, inner } = found;
  if (inner.length !== 1 || inner[0] !== pre.version) {
    if (unlocked.derived) unlocked.key.fill(0);
    const got = inner.length === 1 ? `${inner[0]}` : `${inner.length} bytes`;
    throw new BackupCorruptedError(
      `the encrypted version at offset ${pre.versionFieldOffset} (${got}) differs from the header's version ${pre.version}`,
      at,
    );
  }
  return unlocked;
}

function scryptCandidates(requested: ScryptParams | 'auto'): ScryptParams[] {
  return requested === 'auto' ? [PRODUCTION_SCRYPT, TEST_SCRYPT] : [requested];
}

function describeScrypt(p: ScryptParams): string {
  return `N=${p.N},r=${p.r},p=${p.p}`;
}

/**
 * Derives with each candidate parameter set until one opens the version field (a key in `cache` first: no scrypt);
 * zeroes the keys that did not; a key that did goes into `cache`. With a cache, a derivation goes through it (one
 * already running for the salt, such as a start-up warm-up, is joined), and a cached key that does not open the field
 * (derived ahead for a salt with other parameters or passphrase) is forgotten.
 */
async function deriveAndOpen(
  pre: Preamble,
  passphrase: string | Buffer,
  requested: ScryptParams | 'auto',
  cache: KeyCache | undefined,
): Promise<{ unlocked: Unlocked; inner: Buffer } | undefined> {
  const candidates = scryptCandidates(requested);
  for (const params of candidates) {
    const known = cache?.get(pre.salt, params);
    const inner = known && tryOpen(known, pre.versionField);
    if (known && inner !== undefined) return { unlocked: { key: known, params, derived: false }, inner };
    if (known) cache?.forget(pre.salt, params);
  }
  for (const params of candidates) {
    const key = cache ? await cache.derive(passphrase, pre.salt, params) : await deriveBackupKey(passphrase, pre.salt, params);
    const inner = tryOpen(key, pre.versionField);
    if (inner !== undefined) {
      cache?.learnt(pre.salt, params);
      return { unlocked: { key, params, derived: true }, inner };
    }
    key.fill(0);
    cache?.forget(pre.salt, params);
  }
  return undefined;
}

function tryOpen(key: Buffer, sealed: Buffer): Buffer | undefined {
  try {
    return gcmOpen(key, AD.version, sealed);
  } catch {
    return undefined;
  }
}

async function readHeaderFields(src: ByteSource, pre: Preamble, key: GcmKey, where: NhrErrorOptions): Promise<BackupHeader> {
  const sealedField = async (what: string, ad: string): Promise<Buffer> => {
    const offset = src.offset;
    const sealed = await readHeaderField(src, what, where, GCM_OVERHEAD + 1, MAX_HEADER_FIELD);
    try {
      return gcmOpen(key, ad, sealed);
    } catch (cause) {
      throw new BackupCorruptedError(`the ${what} at offset ${offset} failed authentication`, { ...where, offset, cause });
    }
  };
  const lockedDomainKey = await sealedField('domain-key field', AD.domainKey);
  const header: BackupHeader = { version: pre.version, salt: pre.salt, lockedDomainKey, headerBytes: 0 };
  if (pre.version === 1) {
    header.deviceId = (await sealedField('device-id field', AD.deviceId)).toString('latin1');
    header.configStoreKey = await sealedField('config-store-key field', AD.configStoreKey);
  }
  header.headerBytes = src.offset;
  return header;
}

/** A sealed entry field as framed in the file, not yet authenticated. */
interface SealedField {
  /** File offset of its 3-byte length. */
  offset: number;
  len: number;
  /** nonce ‖ ciphertext ‖ tag. */
  sealed: Buffer;
}

/** Keystream blocks peekPaths computes per entry: paths up to 61 bytes (every path the firmware writes in practice). */
const PEEK_BLOCKS = 4;
/** With heads (BatchOptions.heads), for a path the first blocks hold but not its head: 3 + 61 + VALUE_HEAD_LENGTH ≤ 96 bytes. */
const HEAD_PEEK_BLOCKS = 6;
const EMPTY = Buffer.alloc(0);

/** The path at the start of `sealed`'s plaintext, from the keystream at `ks[at, at + span)`; undefined if not found. */
function peekPath(sealed: Buffer, ks: Buffer, at: number, span: number): string | undefined {
  const ctLength = sealed.length - GCM_OVERHEAD;
  const n = Math.min(span, ctLength);
  if (n < 4) return undefined;
  const c = GCM_NONCE_LENGTH;
  const pathLen = ((sealed[c]! ^ ks[at]!) << 16) | ((sealed[c + 1]! ^ ks[at + 1]!) << 8) | (sealed[c + 2]! ^ ks[at + 2]!);
  if (pathLen < 1 || 3 + pathLen > n) return undefined;
  const bytes = Buffer.allocUnsafe(pathLen);
  for (let j = 0; j < pathLen; j++) bytes[j] = sealed[c + 3 + j]! ^ ks[at + 3 + j]!;
  const path = decodePath(bytes, 0, pathLen);
  return path.startsWith('/') ? path : undefined;
}

/**
 * The VALUE_HEAD_LENGTH bytes after the path at the start of `sealed`'s plaintext (peekPath found the path), or
 * undefined when the value is shorter or they do not lie within `span`.
 */
function peekHead(sealed: Buffer, ks: Buffer, at: number, span: number): Buffer | undefined {
  const c = GCM_NONCE_LENGTH;
  const pathLen = ((sealed[c]! ^ ks[at]!) << 16) | ((sealed[c + 1]! ^ ks[at + 1]!) << 8) | (sealed[c + 2]! ^ ks[at + 2]!);
  const start = 3 + pathLen;
  const end = start + VALUE_HEAD_LENGTH;
  if (end > Math.min(span, sealed.length - GCM_OVERHEAD)) return undefined;
  const head = Buffer.allocUnsafe(VALUE_HEAD_LENGTH);
  for (let j = 0; j < VALUE_HEAD_LENGTH; j++) head[j] = sealed[c + start + j]! ^ ks[at + start + j]!;
  return head;
}

/**
 * A path's UTF-8 bytes as a string; '' when they are not valid UTF-8. Paths are ASCII in practice: those decode as
 * latin1 (identical for bytes below 0x80), which skips the strict decoder's setup per call.
 */
function decodePath(pt: Buffer, start: number, end: number): string {
  let ascii = true;
  for (let i = start; i < end; i++) {
    if (pt[i]! >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return pt.toString('latin1', start, end);
  try {
    return pathDecoder.decode(pt.subarray(start, end));
  } catch {
    return '';
  }
}

class StreamingBackupReader implements BackupReader {
  private started = false;
  private closed = false;
  private index = 0;

  constructor(
    private readonly src: ByteSource,
    readonly header: BackupHeader,
    readonly backupKey: Buffer,
    private readonly cipherKey: GcmKey,
    readonly scrypt: ScryptParams,
    private readonly ownsKey: boolean,
    private readonly where: NhrErrorOptions,
  ) {}

  get bytesRead(): number {
    return this.src.offset;
  }

  async *entries(): AsyncGenerator<BackupEntry> {
    for await (const batch of this.entriesBatched()) {
      for (const e of batch) {
        if (this.closed) throw new InternalError('BackupReader.entries() used after close()');
        yield e;
      }
    }
  }

  async *entriesBatched(options: BatchOptions = {}): AsyncGenerator<BackupEntry[]> {
    if (this.started) throw new InternalError('BackupReader.entries() can be iterated only once');
    this.started = true;
    const { wantsValue, heads = false } = options;
    for (;;) {
      if (this.closed) throw new InternalError('BackupReader.entries() used after close()');
      // One field the slow way (it may span chunks, need a read, or be the end), then all that are buffered behind it;
      // parsed in file order, so the first bad entry is the one reported, as entries() reports it.
      const first = await this.nextField();
      if (first === null) return;
      const fields = [first];
      while (fields.length < MAX_BATCH) {
        const f = this.nextBufferedField();
        if (f === undefined) break;
        fields.push(f);
      }
      const peeked = wantsValue ? this.peekPaths(fields, heads) : undefined;
      const batch: BackupEntry[] = [];
      let failure: { err: unknown } | undefined;
      try {
        for (let i = 0; i < fields.length; i++) {
          const path = peeked?.paths[i];
          batch.push(path !== undefined && !wantsValue!(path) ? this.pathOnly(fields[i]!, path, peeked!.heads?.[i]) : this.parse(fields[i]!));
        }
      } catch (err) {
        failure = { err };
      }
      if (batch.length > 0) yield batch;
      if (failure) throw failure.err;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsKey) this.backupKey.fill(0);
    await this.src.close();
  }

  /**
   * The next entry when its length and sealed field are both in the source's current chunk: parsed from a view of it,
   * with no copy and no wait. undefined (nothing consumed) otherwise, and at an end marker or an impossible length:
   * next() handles those, with the same errors either way.
   */
  private nextBufferedField(): SealedField | undefined {
    const { src } = this;
    const lenBuf = src.peekBuffered(3);
    if (lenBuf === undefined) return undefined;
    const len = readU24(lenBuf);
    if (len <= GCM_OVERHEAD) return undefined;
    const offset = src.offset;
    const field = src.takeBuffered(3 + len);
    return field === undefined ? undefined : { offset, len, sealed: field.subarray(3) };
  }

  /**
   * Reads the next entry's sealed field (not yet authenticated); null after the last one (v0: EOF, v1: marker +
   * trailer). Throws the framing errors: truncation, impossible length, a wrong trailer, data after it.
   */
  private async nextField(): Promise<SealedField | null> {
    const { src, index } = this;
    const offset = src.offset;
    const lenBuf = await src.read(3);
    if (lenBuf.length === 0) {
      if (this.header.version === 0) return null;
      throw this.truncated(`backup ends at offset ${offset} after ${index} entries, without the end marker and trailer`);
    }
    if (lenBuf.length < 3) throw this.truncated(`backup ends at offset ${src.offset}, inside the length of entry ${index} (offset ${offset})`);
    const len = readU24(lenBuf);
    if (len === 0 && this.header.version === 1) {
      await this.readTrailer(offset);
      return null;
    }
    if (len <= GCM_OVERHEAD) {
      throw this.corrupted(`entry ${index} at offset ${offset} has impossible length ${len}`, offset);
    }
    const sealed = await src.read(len);
    if (sealed.length < len) {
      throw this.truncated(`backup ends at offset ${src.offset}, inside entry ${index} at offset ${offset} (${len} bytes announced)`);
    }
    return { offset, len, sealed };
  }

  /** Authenticates entry `this.index`'s sealed field and splits its path and value. */
  private parse({ offset, len, sealed }: SealedField): BackupEntry {
    const { index } = this;
    let pt: Buffer;
    try {
      pt = gcmOpen(this.cipherKey, AD.entry, sealed);
    } catch (cause) {
      throw this.corrupted(`entry ${index} at offset ${offset} failed authentication`, offset, cause);
    }
    const pathLen = pt.length >= 3 ? readU24(pt) : -1;
    if (pathLen < 1 || 3 + pathLen > pt.length) {
      throw this.corrupted(`entry ${index} at offset ${offset} has an impossible path length`, offset);
    }
    const path = decodePath(pt, 3, 3 + pathLen);
    if (!path.startsWith('/')) {
      throw this.corrupted(`entry ${index} at offset ${offset} has a path that is not an absolute UTF-8 KV path`, offset);
    }
    this.index++;
    return { index, offset, path, value: pt.subarray(3 + pathLen), size: 3 + len, sealed };
  }

  /** Entry `this.index`, not authenticated: its path as peekPaths read it (BackupEntry.pathOnly). */
  private pathOnly({ offset, len, sealed }: SealedField, path: string, head: Buffer | undefined): BackupEntry {
    const index = this.index++;
    const e: BackupEntry = { index, offset, path, value: EMPTY, size: 3 + len, sealed, pathOnly: true };
    if (head) e.head = head;
    return e;
  }

  /**
   * The paths of the entries in `fields`, read without authentication from the keystream of their first PEEK_BLOCKS
   * blocks, one AES call for the batch (gcmKeystreamPrefixes), and with `heads` their value heads. undefined for a
   * field whose path does not lie within those blocks or does not look like a path (parse() then opens it and reports
   * what is wrong).
   */
  private peekPaths(fields: readonly SealedField[], heads: boolean): { paths: (string | undefined)[]; heads?: (Buffer | undefined)[] } {
    const span = PEEK_BLOCKS * 16;
    const keystream = gcmKeystreamPrefixes(this.cipherKey, fields.map((f) => f.sealed), PEEK_BLOCKS);
    try {
      const paths = fields.map((f, i) => peekPath(f.sealed, keystream, i * span, span));
      if (!heads) return { paths };
      const got = fields.map((f, i) => (paths[i] === undefined ? undefined : peekHead(f.sealed, keystream, i * span, span)));
      return { paths, heads: this.longerHeads(fields, paths, got) };
    } finally {
      keystream.fill(0);
    }
  }

  /** `got` completed with the heads beyond PEEK_BLOCKS, from HEAD_PEEK_BLOCKS of those fields' keystream alone. */
  private longerHeads(fields: readonly SealedField[], paths: readonly (string | undefined)[], got: (Buffer | undefined)[]): (Buffer | undefined)[] {
    const span = PEEK_BLOCKS * 16;
    const longer = fields.flatMap((f, i) => (paths[i] !== undefined && got[i] === undefined && f.len - GCM_OVERHEAD > span ? [i] : []));
    if (longer.length === 0) return got;
    const wide = HEAD_PEEK_BLOCKS * 16;
    const keystream = gcmKeystreamPrefixes(this.cipherKey, longer.map((i) => fields[i]!.sealed), HEAD_PEEK_BLOCKS);
    try {
      longer.forEach((i, j) => (got[i] = peekHead(fields[i]!.sealed, keystream, j * wide, wide)));
      return got;
    } finally {
      keystream.fill(0);
    }
  }

  private async readTrailer(markerOffset: number): Promise<void> {
    const trailerOffset = markerOffset + 3;
    const t = await this.src.read(BACKUP_TRAILER_BYTES.length);
    if (t.length < BACKUP_TRAILER_BYTES.length) {
      throw this.truncated(
        `backup ends at offset ${this.src.offset}: the trailer after the end marker at offset ${markerOffset} is missing or cut short`,
      );
    }
    if (!t.equals(BACKUP_TRAILER_BYTES)) {
      throw this.truncated(`the trailer at offset ${trailerOffset} is wrong (expected "_NETHSM_BACKUP_END_")`, trailerOffset);
    }
    if (!(await this.src.atEnd())) {
      throw this.corrupted(`unexpected data after the trailer, at offset ${this.src.offset}`, this.src.offset, undefined, false);
    }
  }

  private truncated(message: string, offset = this.src.offset): BackupTruncatedError {
    return new BackupTruncatedError(message, { ...this.where, offset });
  }

  private corrupted(message: string, offset: number, cause?: unknown, inEntry = true): BackupCorruptedError {
    return new BackupCorruptedError(message, { ...this.where, offset, cause, ...(inEntry ? { entryIndex: this.index } : {}) });
  }
}
