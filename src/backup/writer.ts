/**
 * Streaming writer of version-1 NetHSM backup files (layout in ./format.ts and docs/backup-format.md).
 * Entries are written in the order given: callers supply the firmware's order (see compareBackupPaths).
 */
import { randomBytes } from 'node:crypto';
import { finished } from 'node:stream/promises';
import { InputInvalidError, InternalError } from '../errors.js';
import { BACKUP_KEY_LENGTH, deriveBackupKey, type GcmKey, gcmKey, gcmSeal, gcmSealInto } from './crypto.js';
import {
  AD,
  BACKUP_MAGIC_BYTES,
  BACKUP_TRAILER_BYTES,
  END_MARKER,
  frameField,
  GCM_OVERHEAD,
  PRODUCTION_SCRYPT,
  SALT_LENGTH,
  type ScryptParams,
  U24_MAX,
  WRITE_VERSION,
  writeU24,
} from './format.js';

import type { BackupEntry, BackupReader } from './reader.js';

export { compareBackupPaths } from './format.js';

export interface BackupWriterOptions {
  /** A derived key (32 bytes) with the salt it was derived with; the writer copies the key. */
  backupKey?: Buffer;
  salt?: Buffer;
  /** Otherwise: derive from this passphrase, with `salt` if given (16 bytes), else a fresh random salt. */
  passphrase?: string | Buffer;
  /** KDF parameters for the passphrase (default PRODUCTION_SCRYPT). */
  scrypt?: ScryptParams;
  /** Header fields, passed through from a source backup. */
  lockedDomainKey: Buffer;
  deviceId: string;
  configStoreKey: Buffer;
}

export interface BackupWriter {
  /**
   * Seals and writes one entry (into the writer's output chunk, which goes to the sink when full); resolves once the
   * sink accepts more (back-pressure). Throws on a bad path/size, or the sink's error (at the latest from finish()).
   */
  writeEntry(path: string, value: Buffer): Promise<void>;
  /**
   * Writes an entry read by `source`: its sealed field as it is when `source` is under this writer's key (the same
   * bytes the firmware wrote, no decrypt-and-seal round; reusing a nonce for the very same plaintext under the same key
   * reveals nothing), otherwise sealed again like writeEntry (InternalError for an entry read by its path only).
   */
  copyEntry(entry: BackupEntry, source: BackupReader): Promise<void>;
  /**
   * Writes a field the caller sealed under THIS writer's key already (nonce ‖ ciphertext ‖ tag of `u24 pathLen ‖ path ‖
   * value`, AD "backup"; e.g. re-sealed on a worker thread, resealer.ts), framed as it is. Not checked here: the caller
   * authenticated its source and sealed it under this key; a wrong field makes the file fail at its reader.
   */
  writeSealedEntry(sealed: Buffer): Promise<void>;
  /** Writes the end marker and trailer, ends the sink and waits until it has finished; drops the key. */
  finish(): Promise<void>;
  /** Gives up: drops the key and refuses further writes; the sink is left to the caller (destroy it, remove the file). */
  abort(): void;
  readonly entriesWritten: number;
  readonly bytesWritten: number;
}

/** Largest value that fits an entry with `pathBytes` bytes of path: the sealed field length is a u24. */
function maxValueLength(pathBytes: number): number {
  return U24_MAX - GCM_OVERHEAD - 3 - pathBytes;
}

/**
 * Validates options, derives (or copies) the key and writes the header (magic, salt, version, domain key, device id,
 * config-store key). Throws InputInvalidError on missing/ill-sized options, InternalError when a given key or
 * config-store key is all zeros (it was zeroed by a closed reader: copy it before closing), or the sink's error.
 */
export async function createBackupWriter(sink: NodeJS.WritableStream, options: BackupWriterOptions): Promise<BackupWriter> {
  const { key, salt } = await keyAndSalt(options);
  let cipherKey: GcmKey;
  try {
    checkHeaderFields(options);
    cipherKey = gcmKey(key);
  } finally {
    // The raw copy is not needed past here: the KeyObject holds the key (not reachable from JS) until finish/abort.
    key.fill(0);
  }
  const w = new StreamingBackupWriter(sink, cipherKey);
  w.writeHeader(salt, options);
  return w;
}

async function keyAndSalt(o: BackupWriterOptions): Promise<{ key: Buffer; salt: Buffer }> {
  const bad = (msg: string): InputInvalidError =>
    new InputInvalidError(`backup writer: ${msg}`, { hint: 'Pass either backupKey with its salt, or a passphrase.' });
  if (o.salt !== undefined && o.salt.length !== SALT_LENGTH) throw bad(`salt must be ${SALT_LENGTH} bytes, got ${o.salt.length}`);
  if (o.backupKey !== undefined) {
    if (o.passphrase !== undefined) throw bad('give backupKey or passphrase, not both');
    if (o.salt === undefined) throw bad('backupKey needs the salt it was derived with');
    if (o.backupKey.length !== BACKUP_KEY_LENGTH) throw bad(`backupKey must be ${BACKUP_KEY_LENGTH} bytes, got ${o.backupKey.length}`);
    if (isAllZero(o.backupKey)) {
      throw new InternalError('backup writer: backupKey is all zeros (zeroed by BackupReader.close()? copy it before closing)');
    }
    return { key: Buffer.from(o.backupKey), salt: o.salt };
  }
  if (o.passphrase === undefined) throw bad('needs backupKey and salt, or a passphrase');
  const salt = o.salt ?? randomBytes(SALT_LENGTH);
  return { key: await deriveBackupKey(o.passphrase, salt, o.scrypt ?? PRODUCTION_SCRYPT), salt };
}

function checkHeaderFields(o: BackupWriterOptions): void {
  const bad = (msg: string): InputInvalidError => new InputInvalidError(`backup writer: ${msg}`);
  if (!Buffer.isBuffer(o.lockedDomainKey) || o.lockedDomainKey.length === 0 || o.lockedDomainKey.length > 4000) {
    throw bad('lockedDomainKey must be 1..4000 bytes');
  }
  if (typeof o.deviceId !== 'string' || !/^[\x20-\x7e]{1,1000}$/.test(o.deviceId)) {
    throw bad('deviceId must be 1..1000 printable ASCII characters');
  }
  if (!Buffer.isBuffer(o.configStoreKey) || o.configStoreKey.length === 0 || o.configStoreKey.length > 4000) {
    throw bad('configStoreKey must be 1..4000 bytes');
  }
  if (isAllZero(o.configStoreKey)) {
    throw new InternalError('backup writer: configStoreKey is all zeros (zeroed after use? pass a live copy)');
  }
}

function isAllZero(b: Buffer): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

/**
 * Output is gathered into chunks of this size before it goes to the sink: one stream write per ~50 entries instead of
 * two per entry (a Writable's per-write cost is about that of sealing an entry).
 */
const OUT_CHUNK = 64 * 1024;

class StreamingBackupWriter implements BackupWriter {
  private readonly sameKey = new WeakMap<BackupReader, boolean>();
  /** Bytes not yet handed to the sink: `out[0, used)`. A chunk handed over is the sink's; a new one is allocated. */
  private out = Buffer.allocUnsafe(OUT_CHUNK);
  private used = 0;
  /** The sink asked to wait for 'drain' when it last took a chunk. */
  private backedUp = false;
  entriesWritten = 0;
  bytesWritten = 0;
  private state: 'open' | 'finished' | 'aborted' = 'open';
  private sinkError: unknown;
  private readonly onError = (err: unknown): void => {
    this.sinkError ??= err;
  };

  constructor(
    private readonly sink: NodeJS.WritableStream,
    private key: GcmKey | undefined,
  ) {
    // Keeps a sink error from being an unhandled 'error' event; it is rethrown by the next write.
    sink.on('error', this.onError);
  }

  /** Buffers the header; it goes out with the first chunk of entries (or at finish). */
  writeHeader(salt: Buffer, o: BackupWriterOptions): void {
    const head = Buffer.concat([BACKUP_MAGIC_BYTES, Buffer.from([WRITE_VERSION]), frameField(salt)]);
    this.append(
      Buffer.concat([
        head,
        frameField(gcmSeal(this.liveKey(), AD.version, Buffer.from([WRITE_VERSION]))),
        frameField(gcmSeal(this.liveKey(), AD.domainKey, o.lockedDomainKey)),
        frameField(gcmSeal(this.liveKey(), AD.deviceId, Buffer.from(o.deviceId, 'latin1'))),
        frameField(gcmSeal(this.liveKey(), AD.configStoreKey, o.configStoreKey)),
      ]),
    );
  }

  async copyEntry(entry: BackupEntry, source: BackupReader): Promise<void> {
    const sealed = entry.sealed;
    if (sealed === undefined || !this.sameKeyAs(source)) {
      // A path-only entry has no value to seal again: only its sealed bytes under this same key may go out.
      if (entry.pathOnly) throw new InternalError(`backup writer: entry ${entry.path} was read by its path only; it can be copied only under its own key`);
      return this.writeEntry(entry.path, entry.value);
    }
    return this.writeSealedEntry(sealed);
  }

  async writeSealedEntry(sealed: Buffer): Promise<void> {
    this.checkOpen('writeSealedEntry');
    if (sealed.length <= GCM_OVERHEAD || sealed.length > U24_MAX) {
      throw new InternalError(`backup writer: a sealed entry field of ${sealed.length} bytes is impossible`);
    }
    const at = this.reserve(3 + sealed.length);
    writeU24(this.out, sealed.length, at);
    sealed.copy(this.out, at + 3);
    this.entriesWritten++;
    await this.settle();
  }

  /** Whether `source`'s key is this writer's (compared once per reader; the key stays native). */
  private sameKeyAs(source: BackupReader): boolean {
    let same = this.sameKey.get(source);
    if (same === undefined) {
      const raw = source.backupKey;
      const own = this.liveKey();
      same = raw.length === BACKUP_KEY_LENGTH && !isAllZero(raw) && (Buffer.isBuffer(own) ? own.equals(raw) : gcmKey(raw).equals(own));
      this.sameKey.set(source, same);
    }
    return same;
  }

  async writeEntry(path: string, value: Buffer): Promise<void> {
    this.checkOpen('writeEntry');
    if (typeof path !== 'string' || !path.startsWith('/') || path.length < 2) {
      throw new InputInvalidError(`backup writer: entry path must be an absolute KV path, got ${JSON.stringify(path)}`);
    }
    const pathBytes = Buffer.from(path, 'utf8');
    if (value.length > maxValueLength(pathBytes.length)) {
      throw new InputInvalidError(`backup writer: entry ${path} is too large (${value.length} bytes; a field is under 16 MiB)`);
    }
    const pt = Buffer.allocUnsafe(3 + pathBytes.length + value.length);
    writeU24(pt, pathBytes.length);
    pathBytes.copy(pt, 3);
    value.copy(pt, 3 + pathBytes.length);
    const key = this.liveKey();
    const sealedLength = GCM_OVERHEAD + pt.length;
    const at = this.reserve(3 + sealedLength);
    writeU24(this.out, sealedLength, at);
    gcmSealInto(key, AD.entry, pt, this.out, at + 3);
    this.entriesWritten++;
    await this.settle();
  }

  async finish(): Promise<void> {
    this.checkOpen('finish');
    this.state = 'finished';
    this.key = undefined;
    try {
      this.append(Buffer.concat([END_MARKER, BACKUP_TRAILER_BYTES]));
      this.handOver();
      await this.settle();
      this.sink.end();
      await finished(this.sink);
      if (this.sinkError !== undefined) throw this.sinkError;
    } finally {
      this.sink.removeListener('error', this.onError);
    }
  }

  abort(): void {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.key = undefined;
    // What was buffered is never sent: the caller discards the sink.
    this.out = Buffer.alloc(0);
    this.used = 0;
  }

  private liveKey(): GcmKey {
    if (this.key === undefined) throw new InternalError('BackupWriter used after finish() or abort()');
    return this.key;
  }

  private checkOpen(op: string): void {
    if (this.state !== 'open') throw new InternalError(`BackupWriter.${op}() after ${this.state === 'finished' ? 'finish()' : 'abort()'}`);
    if (this.sinkError !== undefined) throw this.sinkError;
  }

  /**
   * Makes room for `n` bytes at the end of the output buffer and counts them written; returns where they go. The
   * caller fills them before it awaits anything, so bytes leave in the order they were reserved: synchronous, like a
   * stream write (when they do not fit, the buffer goes to the sink first; a field larger than a chunk gets its own).
   */
  private reserve(n: number): number {
    if (this.used + n > this.out.length) {
      this.handOver();
      if (n > this.out.length) this.out = Buffer.allocUnsafe(n);
    }
    const at = this.used;
    this.used += n;
    this.bytesWritten += n;
    return at;
  }

  private append(buf: Buffer): void {
    // reserve() first: it may hand the current chunk to the sink and put a fresh one in `this.out`. Read as one
    // expression (`buf.copy(this.out, this.reserve(n))`), `this.out` was the chunk already handed over: the bytes
    // landed in it and the fresh chunk went out uninitialized.
    const at = this.reserve(buf.length);
    buf.copy(this.out, at);
  }

  /** Hands the buffered bytes to the sink (which owns them from now on: a fresh buffer takes their place). */
  private handOver(): void {
    if (this.used === 0) return;
    const chunk = this.out.subarray(0, this.used);
    this.out = Buffer.allocUnsafe(OUT_CHUNK);
    this.used = 0;
    if (!this.sink.write(chunk)) this.backedUp = true;
  }

  /** Waits for 'drain' when the sink asked for it; rethrows a sink error. */
  private async settle(): Promise<void> {
    if (this.backedUp) {
      this.backedUp = false;
      await this.drained();
    }
    if (this.sinkError !== undefined) throw this.sinkError;
  }

  /** Waits for 'drain'; rejects on the sink's error or when it closes first (a destroyed sink never drains). */
  private drained(): Promise<void> {
    const sink = this.sink;
    // A sink destroyed before this wait (a response whose client went away between two writes) emitted its 'close'
    // already and will emit nothing more: waiting for an event would hang the writer for good.
    if ((sink as { destroyed?: boolean }).destroyed === true) {
      return Promise.reject(this.sinkError ?? new InternalError('backup writer: the sink closed before it drained'));
    }
    return new Promise<void>((resolve, reject) => {
      const done = (err?: unknown): void => {
        sink.removeListener('drain', onDrain);
        sink.removeListener('error', onErr);
        sink.removeListener('close', onClose);
        if (err === undefined) resolve();
        else reject(err);
      };
      const onDrain = (): void => done();
      const onErr = (err: unknown): void => done(err);
      const onClose = (): void => done(new InternalError('backup writer: the sink closed before it drained'));
      sink.on('drain', onDrain);
      sink.on('error', onErr);
      sink.on('close', onClose);
    });
  }
}
