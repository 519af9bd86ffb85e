/**
 * Plumbing shared by the operations that read backups and write a new one (namespace extract/merge, key
 * export/import): opening inputs, checking the firmware's entry order, choosing the output key, and writing to a
 * file atomically or to a caller's stream.
 */
import { createHash } from 'node:crypto';
import { BackupOutOfOrderError } from '../errors.js';
import { withAtomicFile } from '../util/atomic-file.js';
import type { ByteSourceInput } from './byte-source.js';
import { compareBackupPaths, type ScryptParams } from './format.js';
import { openBackup, type BackupEntry, type BackupReader, type BatchOptions, type OpenBackupOptions } from './reader.js';
import { createBackupWriter, type BackupWriter } from './writer.js';

/** A backup to read: a file path, a readable stream or an async iterable of bytes. */
export type BackupSource = ByteSourceInput;

/**
 * Where a new backup goes: a file path (written atomically: temp file, fsync, rename; removed on failure) or a
 * writable stream (ended by the operation; on failure its content is invalid and the caller discards it).
 */
export type BackupSink = string | NodeJS.WritableStream;

export interface OutputOptions {
  /**
   * Passphrase of the new file. Absent: the new file is under the (first) input's key and salt, so it opens with the
   * input's passphrase and no second scrypt runs.
   */
  passphrase?: string | Buffer;
  /**
   * Instead of `passphrase`: the new file's key, derived before from it with `salt` (e.g. while the input is still on
   * its way, so the derivation costs no time of its own), or a promise of it, awaited once the input is open (so its
   * derivation and the input key's run side by side). The writer copies it; the caller zeroes its own.
   */
  outputKey?: { backupKey: Buffer; salt: Buffer } | Promise<{ backupKey: Buffer; salt: Buffer }>;
  /** KDF parameters when `passphrase` is given (default: production). */
  scrypt?: ScryptParams;
  /** Replace an existing output file (file sinks only). Default false: OutputExistsError. */
  overwrite?: boolean;
}

export interface Progress {
  entriesRead: number;
  bytesRead: number;
  entriesWritten: number;
  bytesWritten: number;
}
export type ProgressFn = (p: Progress) => void;

/**
 * Header fields of a version-1 file made from a version-0 source, which has neither: a recognisable device id and a
 * constant, non-zero config-store key. They matter only to a full restore of the file itself, which namespace and
 * key backups are not meant for (merge keeps the device backup's own header).
 */
export const V0_SOURCE_DEVICE_ID = 'nethsm-replicator-v0-source';
const V0_SOURCE_CONFIG_STORE_KEY = createHash('sha256').update('nethsm-replicator: version-0 source, no config-store key').digest();

/** Hint for a version-0 device backup given as a merge target (its config entries have no version-1 form). */
export const V0_TARGET_HINT = 'Take a fresh backup of the target device with NetHSM firmware 4.0 or later (it writes version 1) and merge into that.';

/** Opens a backup; the caller closes it. Errors as openBackup. */
export function openSource(source: BackupSource, options: OpenBackupOptions): Promise<BackupReader> {
  return openBackup(source, { scrypt: 'auto', ...options });
}

/**
 * The reader's entries, checked to be in strictly increasing firmware order. Throws BackupOutOfOrderError naming the
 * entry that breaks it (a duplicate path included), plus whatever the reader throws.
 */
export async function* orderedEntries(reader: BackupReader, label: string): AsyncGenerator<BackupEntry> {
  for await (const batch of orderedBatches(reader, label)) yield* batch;
}

/** As orderedEntries, in the reader's batches (entriesBatched, with `options`): one await per batch. */
export async function* orderedBatches(reader: BackupReader, label: string, options?: BatchOptions): AsyncGenerator<BackupEntry[]> {
  let prev: string | undefined;
  for await (const batch of reader.entriesBatched(options)) {
    for (const e of batch) {
      checkOrder(prev, e, label);
      prev = e.path;
    }
    yield batch;
  }
}

function checkOrder(prev: string | undefined, e: BackupEntry, label: string): void {
  if (prev !== undefined && compareBackupPaths(prev, e.path) >= 0) {
    throw new BackupOutOfOrderError(
      `${label}: entry ${e.index} (${e.path}, offset ${e.offset}) ${prev === e.path ? 'repeats' : 'sorts before'} the entry before it (${prev})`,
    );
  }
}

/**
 * A position in a stream of entries for a merge-join: `head` is the current entry (undefined once done), read without
 * a wait; `advance()` moves on and returns a promise only when it has to wait for bytes (await it then).
 */
export interface EntryCursor {
  readonly head: BackupEntry | undefined;
  advance(): Promise<void> | undefined;
}

/**
 * A cursor over a reader's entries in firmware order (checked as orderedEntries does, on every entry), positioned on
 * the entries `keep` accepts only; `options` as entriesBatched's. Call advance() once to reach the first. Errors as
 * orderedEntries.
 */
export class ReaderCursor implements EntryCursor {
  head: BackupEntry | undefined;
  private batch: BackupEntry[] = [];
  private i = 0;
  private prev: string | undefined;
  private done = false;
  private readonly it: AsyncIterator<BackupEntry[]>;

  constructor(
    reader: BackupReader,
    private readonly label: string,
    private readonly keep: (e: BackupEntry) => boolean = () => true,
    options?: BatchOptions,
    /**
     * Called with an entry read by its path only (unauthenticated) that breaks the order, before the order error: its
     * path may be damaged, so this may throw the truer error (BackupCorruptedError when it fails authentication).
     */
    private readonly vouch?: (e: BackupEntry) => void,
  ) {
    this.it = reader.entriesBatched(options);
  }

  advance(): Promise<void> | undefined {
    while (this.i < this.batch.length) {
      const e = this.batch[this.i++]!;
      if (e.pathOnly && this.vouch && this.prev !== undefined && compareBackupPaths(this.prev, e.path) >= 0) this.vouch(e);
      checkOrder(this.prev, e, this.label);
      this.prev = e.path;
      if (this.keep(e)) {
        this.head = e;
        return undefined;
      }
    }
    if (this.done) {
      this.head = undefined;
      return undefined;
    }
    return this.refill().then(() => this.advance());
  }

  private async refill(): Promise<void> {
    const r = await this.it.next();
    this.batch = r.done ? [] : r.value;
    this.done = r.done === true;
    this.i = 0;
  }
}

/**
 * Several cursors with disjoint paths as one, in firmware order (e.g. one per namespace of a coalesced merge). Call
 * advance() once to reach the first entry (it starts every cursor).
 */
export class MergedCursor implements EntryCursor {
  head: BackupEntry | undefined;
  private current = -1;
  private started = false;

  constructor(private readonly cursors: readonly EntryCursor[]) {}

  /** Which of the cursors `head` comes from (-1 once done). */
  get source(): number {
    return this.current;
  }

  advance(): Promise<void> | undefined {
    if (!this.started) {
      this.started = true;
      return Promise.all(this.cursors.map((c) => c.advance())).then(() => this.pick());
    }
    const moving = this.cursors[this.current];
    const wait = moving?.advance();
    if (wait) return wait.then(() => this.pick());
    this.pick();
    return undefined;
  }

  private pick(): void {
    let min = -1;
    for (let i = 0; i < this.cursors.length; i++) {
      const h = this.cursors[i]!.head;
      if (h !== undefined && (min < 0 || compareBackupPaths(h.path, this.cursors[min]!.head!.path) < 0)) min = i;
    }
    this.current = min;
    this.head = min < 0 ? undefined : this.cursors[min]!.head;
  }
}

/**
 * Creates a v1 writer whose header fields (locked domain key, device id, config-store key) are `headerFrom`'s,
 * keyed by `out.passphrase` or, without one, by `keyFrom`'s key and salt.
 */
export async function createOutputWriter(
  sink: NodeJS.WritableStream,
  headerFrom: BackupReader,
  keyFrom: BackupReader,
  out: OutputOptions,
): Promise<BackupWriter> {
  const h = headerFrom.header;
  const given = await out.outputKey;
  const key = given
    ? { backupKey: given.backupKey, salt: given.salt }
    : out.passphrase === undefined
      ? { backupKey: keyFrom.backupKey, salt: keyFrom.header.salt }
      : { passphrase: out.passphrase, ...(out.scrypt ? { scrypt: out.scrypt } : {}) };
  return createBackupWriter(sink, {
    ...key,
    lockedDomainKey: h.lockedDomainKey,
    deviceId: h.deviceId ?? V0_SOURCE_DEVICE_ID,
    configStoreKey: h.configStoreKey ?? V0_SOURCE_CONFIG_STORE_KEY,
  });
}

/** Runs `fn` on the sink's stream: a file path through an atomic file, a stream as it is. */
export async function withSink<T>(sink: BackupSink, out: OutputOptions, fn: (stream: NodeJS.WritableStream) => Promise<T>): Promise<T> {
  if (typeof sink === 'string') return withAtomicFile(sink, { overwrite: out.overwrite ?? false }, fn);
  return fn(sink);
}

/** Closes readers, ignoring close errors (used in finally blocks, where the first error wins). */
export async function closeAll(...readers: (BackupReader | undefined)[]): Promise<void> {
  for (const r of readers) {
    if (r === undefined) continue;
    // The config-store key is key material: zero our copy once the file is done with.
    r.header.configStoreKey?.fill(0);
    await r.close().catch(() => undefined);
  }
}
