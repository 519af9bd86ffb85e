import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BackupCorruptedError,
  BackupNotABackupError,
  BackupTruncatedError,
  BackupUnsupportedVersionError,
  BackupWrongPassphraseError,
  InputInvalidError,
  InternalError,
} from '../errors.js';
import { deriveBackupKey, gcmOpen, gcmSeal } from './crypto.js';
import { AD, BACKUP_MAGIC, BACKUP_TRAILER, frameField, TEST_SCRYPT, writeU24 } from './format.js';
import { MAX_BATCH, openBackup, readBackupBuffer, valueHead, valueLength, type BackupEntry, type OpenBackupOptions } from './reader.js';

const PW = 'correct horse';
const salt = randomBytes(16);
let key: Buffer;
const opts: OpenBackupOptions = { passphrase: PW, scrypt: TEST_SCRYPT };

const ENTRIES: [string, Buffer][] = [
  ['/.initialized', Buffer.alloc(0)],
  ['/authentication/.version', randomBytes(29)],
  ['/authentication/admin', randomBytes(120)],
  ['/config/version', Buffer.from('1')],
  ['/key/.ns1/k1', randomBytes(300)],
  ['/key/.version', randomBytes(29)],
  ['/namespace/ns1', randomBytes(33)],
];

function entryPlaintext(p: string, v: Buffer): Buffer {
  const pb = Buffer.from(p, 'utf8');
  const u = Buffer.alloc(3);
  writeU24(u, pb.length);
  return Buffer.concat([u, pb, v]);
}

interface Craft {
  version?: number;
  innerVersion?: number;
  entries?: Buffer[]; // sealed-entry plaintexts
  end?: Buffer; // what follows the entries
}

/** Builds a backup byte by byte (independently of the writer), so malformed variants are easy. */
function craft(c: Craft = {}): { bytes: Buffer; fieldOffsets: number[]; entryOffsets: number[] } {
  const version = c.version ?? 1;
  const parts: Buffer[] = [Buffer.from(BACKUP_MAGIC, 'latin1'), Buffer.from([version])];
  const fieldOffsets: number[] = [];
  let pos = 16;
  const push = (b: Buffer, list: number[]): void => {
    list.push(pos);
    parts.push(b);
    pos += b.length;
  };
  push(frameField(salt), fieldOffsets);
  push(frameField(gcmSeal(key, AD.version, Buffer.from([c.innerVersion ?? version]))), fieldOffsets);
  push(frameField(gcmSeal(key, AD.domainKey, randomBytes(60))), fieldOffsets);
  if (version === 1) {
    push(frameField(gcmSeal(key, AD.deviceId, Buffer.from('DEVICE0123'))), fieldOffsets);
    push(frameField(gcmSeal(key, AD.configStoreKey, randomBytes(32))), fieldOffsets);
  }
  const entryOffsets: number[] = [];
  for (const pt of c.entries ?? ENTRIES.map(([p, v]) => entryPlaintext(p, v))) {
    push(frameField(gcmSeal(key, AD.entry, pt)), entryOffsets);
  }
  parts.push(c.end ?? (version === 1 ? Buffer.from(`\0\0\0${BACKUP_TRAILER}`, 'latin1') : Buffer.alloc(0)));
  return { bytes: Buffer.concat(parts), fieldOffsets, entryOffsets };
}

function streamOf(bytes: Buffer, chunk = 7): PassThrough {
  const s = new PassThrough();
  for (let i = 0; i < bytes.length; i += chunk) s.write(bytes.subarray(i, i + chunk));
  s.end();
  return s;
}

type ReadResult = { entries: BackupEntry[]; error?: unknown };

/** Reads everything one way, returning what was yielded before the first error (and the error). */
async function readOneWay(bytes: Buffer, o: OpenBackupOptions, api: 'entries' | 'batched', chunk: number): Promise<ReadResult> {
  const entries: BackupEntry[] = [];
  let reader;
  try {
    reader = await openBackup(streamOf(bytes, chunk), o);
    if (api === 'entries') {
      for await (const e of reader.entries()) entries.push(e);
    } else {
      for await (const batch of reader.entriesBatched()) {
        expect(batch.length).toBeGreaterThan(0);
        expect(batch.length).toBeLessThanOrEqual(MAX_BATCH);
        entries.push(...batch);
      }
    }
    return { entries };
  } catch (error) {
    return { entries, error };
  } finally {
    await reader?.close();
  }
}

/** What a read came to, for comparing the ways: each entry, and the error's class, message, offset and entry. */
function outcome(r: ReadResult): unknown {
  const e = r.error as (Error & { offset?: number; entryIndex?: number; code?: string }) | undefined;
  return {
    entries: r.entries.map((x) => [x.index, x.offset, x.size, x.path, x.value.toString('hex'), x.sealed?.toString('hex')]),
    error: e && [e.constructor.name, e.code, e.message, e.offset, e.entryIndex],
  };
}

/**
 * Reads everything, returning what was yielded before the first error (and the error). Reads it every way (entries()
 * and entriesBatched(), chunks that split every field, that hold several entries, and the whole file as one chunk,
 * where the batched reader parses entries straight from the chunk) and checks that all ways agree.
 */
async function readAll(bytes: Buffer, o: OpenBackupOptions = opts): Promise<ReadResult> {
  const first = await readOneWay(bytes, o, 'entries', 64);
  for (const [api, chunk] of [['entries', 7], ['batched', 7], ['batched', 64], ['batched', Math.max(1, bytes.length)]] as const) {
    expect(outcome(await readOneWay(bytes, o, api, chunk)), `${api} in chunks of ${chunk}`).toEqual(outcome(first));
  }
  return first;
}

function flip(bytes: Buffer, at: number): Buffer {
  const b = Buffer.from(bytes);
  b[at] = (b[at] ?? 0) ^ 0x40;
  return b;
}

beforeAll(async () => {
  key = await deriveBackupKey(PW, salt, TEST_SCRYPT);
});

describe('openBackup: happy path', () => {
  it('reads a version-1 file built byte by byte, with offsets and sizes of each entry', async () => {
    const { bytes, entryOffsets } = craft();
    const { entries, error } = await readAll(bytes);
    expect(error).toBeUndefined();
    expect(entries.map((e) => e.path)).toEqual(ENTRIES.map(([p]) => p));
    entries.forEach((e, i) => {
      expect(e.value.equals(ENTRIES[i]![1])).toBe(true);
      expect(e.offset).toBe(entryOffsets[i]);
    });
  });

  it('reads a version-0 file (no device id, no marker or trailer)', async () => {
    const { bytes } = craft({ version: 0 });
    const r = await readBackupBuffer(bytes, opts);
    expect(r.header.version).toBe(0);
    expect(r.header.deviceId).toBeUndefined();
    expect(r.header.configStoreKey).toBeUndefined();
    expect(r.entries.map((e) => e.path)).toEqual(ENTRIES.map(([p]) => p));
  });

  it('opens with a given backup key without a passphrase, and does not zero that key on close', async () => {
    const given = Buffer.from(key);
    const reader = await openBackup(streamOf(craft().bytes), { backupKey: given });
    expect(reader.backupKey).toBe(given);
    await reader.close();
    expect(given.equals(key)).toBe(true);
  });

  it('zeroes the key it derived on close, and close is idempotent', async () => {
    const reader = await openBackup(streamOf(craft().bytes), opts);
    const k = reader.backupKey;
    expect(k.equals(key)).toBe(true);
    await reader.close();
    await reader.close();
    expect(k.every((b) => b === 0)).toBe(true);
  });

  it('pulls the source lazily and ends it on close (constant memory, nothing read ahead)', async () => {
    const { bytes, entryOffsets } = craft();
    let pulled = 0;
    let finalized = false;
    async function* source(): AsyncGenerator<Uint8Array> {
      try {
        for (let i = 0; i < bytes.length; i += 16) {
          pulled += 16;
          yield bytes.subarray(i, i + 16);
        }
      } finally {
        finalized = true;
      }
    }
    const reader = await openBackup(source(), opts);
    const it = reader.entries();
    const first = await it.next();
    expect(first.value?.path).toBe('/.initialized');
    expect(pulled).toBeLessThanOrEqual(entryOffsets[1]! + 16);
    await reader.close();
    expect(finalized).toBe(true);
    await expect(it.next()).rejects.toBeInstanceOf(InternalError);
  });

  it('passes a source stream error through rather than calling it a truncated file', async () => {
    const { bytes, entryOffsets } = craft();
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield bytes.subarray(0, entryOffsets[2]! + 10);
      throw new Error('connection reset');
    }
    const reader = await openBackup(failing(), opts);
    const seen: string[] = [];
    await expect(
      (async () => {
        for await (const e of reader.entries()) seen.push(e.path);
      })(),
    ).rejects.toThrow('connection reset');
    expect(seen).toHaveLength(2);
    await reader.close();
  });

  it('hands out entries from a file whose sealed fields stay intact after later reads (no read buffer is reused)', async () => {
    // 400 entries of ~1 KB: several 64 KiB file reads, most entries parsed in place from a read's buffer.
    const many = Array.from({ length: 400 }, (_, i) => entryPlaintext(`/key/k${String(i).padStart(4, '0')}`, randomBytes(1000)));
    const { bytes } = craft({ entries: many });
    const dir = await mkdtemp(path.join(tmpdir(), 'nhr-reader-'));
    try {
      const file = path.join(dir, 'b.bin');
      writeFileSync(file, bytes);
      const reader = await openBackup(file, opts);
      const kept: BackupEntry[] = [];
      for await (const batch of reader.entriesBatched()) kept.push(...batch);
      await reader.close();
      expect(kept).toHaveLength(400);
      for (const [i, e] of kept.entries()) {
        expect(e.sealed!.equals(bytes.subarray(e.offset + 3, e.offset + e.size)), `entry ${i}`).toBe(true);
        expect(gcmOpen(key, AD.entry, e.sealed!).equals(many[i]!)).toBe(true);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses to iterate entries twice', async () => {
    const reader = await openBackup(streamOf(craft().bytes), opts);
    for await (const _ of reader.entries()) void _;
    await expect(reader.entries().next()).rejects.toBeInstanceOf(InternalError);
    await reader.close();
  });
});

describe('openBackup: refusals of the header', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-reader-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses an empty file as not a backup, naming the file', async () => {
    const file = path.join(dir, 'empty.bin');
    writeFileSync(file, '');
    const err = await openBackup(file, opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupNotABackupError);
    expect((err as BackupNotABackupError).message).toMatch(/empty/);
    expect((err as BackupNotABackupError).path).toBe(file);
  });

  it('refuses a directory and a path that does not open as invalid input, naming the path', async () => {
    const sub = path.join(dir, 'a-directory');
    mkdirSync(sub);
    for (const [p, what] of [[sub, /is a directory/], [path.join(dir, 'missing.bin'), /cannot open backup file .*ENOENT/]] as const) {
      const err = await openBackup(p, opts).catch((e: unknown) => e);
      expect(err, p).toBeInstanceOf(InputInvalidError);
      expect((err as InputInvalidError).message).toMatch(what);
      expect((err as InputInvalidError).message).toContain(p);
      expect((err as InputInvalidError).path).toBe(p);
    }
  });

  it('refuses files on disk cut inside an entry and before the trailer, naming the file and offset', async () => {
    const { bytes, entryOffsets } = craft();
    for (const cut of [entryOffsets[2]! + 5, bytes.length - 22, bytes.length - 1]) {
      const file = path.join(dir, `cut-${cut}.bin`);
      writeFileSync(file, bytes.subarray(0, cut));
      const reader = await openBackup(file, opts);
      const err = await (async () => {
        for await (const _ of reader.entries()) void _;
      })().catch((e: unknown) => e);
      await reader.close();
      expect(err).toBeInstanceOf(BackupTruncatedError);
      expect(err).toMatchObject({ path: file, offset: cut });
    }
  });

  it('refuses a file with the wrong magic', async () => {
    const { error } = await readAll(Buffer.concat([Buffer.from('_NETHSM_BACKUX_\x01'), randomBytes(200)]));
    expect(error).toBeInstanceOf(BackupNotABackupError);
    const { error: e2 } = await readAll(Buffer.from('PK\x03\x04 a zip file'));
    expect(e2).toBeInstanceOf(BackupNotABackupError);
  });

  it('refuses version 2 (and 0xff) as unsupported', async () => {
    for (const v of [2, 0xff]) {
      const { error } = await readAll(craft({ version: v }).bytes);
      expect(error).toBeInstanceOf(BackupUnsupportedVersionError);
      expect((error as Error).message).toContain(`version ${v}`);
    }
  });

  it('refuses a wrong passphrase (explicit test parameters)', async () => {
    const { error, entries } = await readAll(craft().bytes, { passphrase: 'wrong', scrypt: TEST_SCRYPT });
    expect(error).toBeInstanceOf(BackupWrongPassphraseError);
    expect(entries).toEqual([]);
  });

  it('refuses a wrong passphrase after trying production then test parameters (auto)', async () => {
    const { error } = await readAll(craft().bytes, { passphrase: 'wrong' });
    expect(error).toBeInstanceOf(BackupWrongPassphraseError);
    expect((error as Error).message).toMatch(/N=16384,r=8,p=16 and N=2,r=1,p=1/);
  });

  it('refuses a wrong backup key as a wrong passphrase', async () => {
    const { error } = await readAll(craft().bytes, { backupKey: randomBytes(32) });
    expect(error).toBeInstanceOf(BackupWrongPassphraseError);
  });

  it('refuses an inner version that differs from the header byte', async () => {
    const { error } = await readAll(craft({ version: 1, innerVersion: 0 }).bytes);
    expect(error).toBeInstanceOf(BackupCorruptedError);
    expect((error as Error).message).toMatch(/differs from the header's version 1/);
    const { error: e0 } = await readAll(craft({ version: 0, innerVersion: 1 }).bytes);
    expect(e0).toBeInstanceOf(BackupCorruptedError);
  });

  it('maps a flipped byte in each header field to its error, with the field offset', async () => {
    const { bytes, fieldOffsets } = craft();
    const [saltAt, versionAt, domainAt, deviceAt, configAt] = fieldOffsets as [number, number, number, number, number];
    // Salt and version field: the version field no longer authenticates, indistinguishable from a wrong passphrase.
    expect((await readAll(flip(bytes, saltAt + 3 + 5))).error).toBeInstanceOf(BackupWrongPassphraseError);
    expect((await readAll(flip(bytes, versionAt + 3 + 20))).error).toBeInstanceOf(BackupWrongPassphraseError);
    // Length bytes of salt and version field: impossible lengths, refused before any scrypt.
    for (const at of [saltAt + 2, versionAt + 2]) {
      const { error } = await readAll(flip(bytes, at));
      expect(error).toBeInstanceOf(BackupCorruptedError);
      expect((error as BackupCorruptedError).offset).toBe(at - 2);
    }
    for (const at of [domainAt, deviceAt, configAt]) {
      for (const delta of [3, 3 + 12, 3 + 30]) {
        const { error, entries } = await readAll(flip(bytes, at + delta));
        expect(error).toBeInstanceOf(BackupCorruptedError);
        expect((error as BackupCorruptedError).offset).toBe(at);
        expect((error as BackupCorruptedError).entryIndex).toBeUndefined();
        expect((error as Error).message).toMatch(new RegExp(`field at offset ${at} failed authentication`));
        expect(entries).toEqual([]);
      }
    }
  });

  it('refuses a header field with an impossible length', async () => {
    const { bytes, fieldOffsets } = craft();
    const b = Buffer.from(bytes);
    writeU24(b, 10, fieldOffsets[2]!); // domain key field shorter than nonce + tag
    const { error } = await readAll(b);
    expect(error).toBeInstanceOf(BackupCorruptedError);
    expect((error as Error).message).toMatch(/domain-key field at offset \d+ has impossible length 10/);
  });
});

describe('entries(): refusals', () => {
  it('refuses a flipped byte in several entries: the error names entry and offset, nothing after it is yielded', async () => {
    const { bytes, entryOffsets } = craft();
    for (const i of [0, 2, 4, ENTRIES.length - 1]) {
      const at = entryOffsets[i]!;
      for (const delta of [3, 3 + 12, 3 + 14]) {
        const { entries, error } = await readAll(flip(bytes, at + delta));
        expect(error).toBeInstanceOf(BackupCorruptedError);
        expect(error).toMatchObject({ offset: at, entryIndex: i });
        expect((error as Error).message).toBe(`entry ${i} at offset ${at} failed authentication`);
        expect(entries.map((e) => e.index)).toEqual([...Array(i).keys()]);
      }
    }
  });

  it('refuses an entry whose length was damaged (reads into its neighbour or past the end)', async () => {
    const { bytes, entryOffsets } = craft();
    for (const i of [1, 3, ENTRIES.length - 1]) {
      for (const byte of [0, 1, 2]) {
        const { entries, error } = await readAll(flip(bytes, entryOffsets[i]! + byte));
        expect(error).toBeDefined();
        expect(error instanceof BackupCorruptedError || error instanceof BackupTruncatedError).toBe(true);
        expect(entries.length).toBeLessThanOrEqual(i);
      }
    }
  });

  it('decodes a path with non-ASCII UTF-8 as UTF-8 (not byte by byte)', async () => {
    const { entries, error } = await readAll(craft({ entries: [entryPlaintext('/a/\u00fc\u20ac', Buffer.from('x'))] }).bytes);
    expect(error).toBeUndefined();
    expect(entries.map((e) => e.path)).toEqual(['/a/\u00fc\u20ac']);
  });

  it('refuses an entry whose sealed path length or path is impossible', async () => {
    const badLen = Buffer.from([0, 0, 50, 0x2f, 0x61]); // announces 50 path bytes, has 2
    const noSlash = entryPlaintext('key/k', Buffer.from('v'));
    const badUtf8 = Buffer.concat([Buffer.from([0, 0, 3]), Buffer.from([0x2f, 0xc3, 0x28])]);
    const emptyPath = Buffer.from([0, 0, 0, 0x41]);
    for (const pt of [badLen, noSlash, badUtf8, emptyPath]) {
      const ok = entryPlaintext('/a', Buffer.from('x'));
      const { entries, error } = await readAll(craft({ entries: [ok, pt, ok] }).bytes);
      expect(error).toBeInstanceOf(BackupCorruptedError);
      expect(error).toMatchObject({ entryIndex: 1 });
      expect(entries).toHaveLength(1);
    }
  });

  it('refuses a cut at every offset of a version-1 file, yielding only entries wholly before the cut', async () => {
    const { bytes, entryOffsets } = craft();
    const seen = new Set<string>();
    for (let cut = 0; cut < bytes.length; cut++) {
      const { entries, error } = await readAll(bytes.subarray(0, cut));
      if (cut === 0) {
        expect(error).toBeInstanceOf(BackupNotABackupError);
        continue;
      }
      expect(error, `cut at ${cut}`).toBeInstanceOf(BackupTruncatedError);
      const whole = entryOffsets.filter((o, i) => (entryOffsets[i + 1] ?? bytes.length - 22) <= cut && o < cut).length;
      expect(entries.length, `cut at ${cut}`).toBe(whole);
      expect((error as BackupTruncatedError).offset).toBeLessThanOrEqual(cut);
      seen.add((error as Error).message.replace(/\d+/g, 'N'));
    }
    // The messages say where it ended: in the header, in an entry, before the marker, in the trailer.
    expect([...seen].join('\n')).toMatch(/inside entry N/);
    expect([...seen].join('\n')).toMatch(/without the end marker/);
    expect([...seen].join('\n')).toMatch(/trailer .* missing or cut short/);
  });

  it('refuses a version-1 file without the end marker and trailer, or with a wrong trailer', async () => {
    const noEnd = await readAll(craft({ end: Buffer.alloc(0) }).bytes);
    expect(noEnd.error).toBeInstanceOf(BackupTruncatedError);
    expect(noEnd.entries).toHaveLength(ENTRIES.length);
    const noTrailer = await readAll(craft({ end: Buffer.from([0, 0, 0]) }).bytes);
    expect(noTrailer.error).toBeInstanceOf(BackupTruncatedError);
    const wrong = await readAll(craft({ end: Buffer.from(`\0\0\0_NETHSM_BACKUP_ENX_`, 'latin1') }).bytes);
    expect(wrong.error).toBeInstanceOf(BackupTruncatedError);
    expect((wrong.error as Error).message).toMatch(/trailer at offset \d+ is wrong/);
    const trailerNoMarker = await readAll(craft({ end: Buffer.from(BACKUP_TRAILER, 'latin1') }).bytes);
    expect(trailerNoMarker.error).toBeDefined(); // "_NE" read as a length: an entry that cannot be there
  });

  it('refuses data after the trailer as corrupted', async () => {
    const { entries, error } = await readAll(craft({ end: Buffer.from(`\0\0\0${BACKUP_TRAILER}x`, 'latin1') }).bytes);
    expect(error).toBeInstanceOf(BackupCorruptedError);
    expect((error as Error).message).toMatch(/after the trailer/);
    expect(entries).toHaveLength(ENTRIES.length);
  });

  it('refuses an end marker in a version-0 file (a zero-length entry)', async () => {
    const { error } = await readAll(craft({ version: 0, end: Buffer.from(`\0\0\0${BACKUP_TRAILER}`, 'latin1') }).bytes);
    expect(error).toBeInstanceOf(BackupCorruptedError);
    expect((error as Error).message).toMatch(/impossible length 0/);
  });

  it('cannot detect a version-0 file cut at an entry boundary (the format has no end marker)', async () => {
    const { bytes, entryOffsets } = craft({ version: 0 });
    const { entries, error } = await readAll(bytes.subarray(0, entryOffsets[3]));
    expect(error).toBeUndefined();
    expect(entries).toHaveLength(3);
  });

  it('refuses a version-0 file cut inside an entry', async () => {
    const { bytes, entryOffsets } = craft({ version: 0 });
    for (const cut of [entryOffsets[3]! + 1, entryOffsets[3]! + 3, entryOffsets[4]! - 1, bytes.length - 1]) {
      const { error } = await readAll(bytes.subarray(0, cut));
      expect(error, `cut at ${cut}`).toBeInstanceOf(BackupTruncatedError);
    }
  });
});

describe('entriesBatched({ wantsValue }): entries read by their path only', () => {
  const longPath = `/key/.ns1/${'k'.repeat(60)}`; // beyond the peeked blocks: opened in full even when declined
  const mixed: [string, Buffer][] = [
    ...ENTRIES.slice(0, 4),
    ['/key/.ns1/k1', randomBytes(300)],
    [longPath, randomBytes(40)],
    ['/key/.ns1/\u00fc', randomBytes(10)],
    ...ENTRIES.slice(5),
  ];
  const bytesOf = () => craft({ entries: mixed.map(([p, v]) => entryPlaintext(p, v)) }).bytes;
  const wantsValue = (p: string) => p.startsWith('/authentication/');

  async function readDeclining(bytes: Buffer, chunk: number, wants: (p: string) => boolean): Promise<ReadResult> {
    const entries: BackupEntry[] = [];
    let reader;
    try {
      reader = await openBackup(streamOf(bytes, chunk), opts);
      for await (const batch of reader.entriesBatched({ wantsValue: wants })) entries.push(...batch);
      return { entries };
    } catch (error) {
      return { entries, error };
    } finally {
      await reader?.close();
    }
  }

  it('gives every entry with the same path, offset, size and sealed bytes; values only of the wanted, authenticated', async () => {
    const bytes = bytesOf();
    const full = await readOneWay(bytes, opts, 'entries', 64);
    expect(full.error).toBeUndefined();
    for (const chunk of [7, 64, bytes.length]) {
      const { entries, error } = await readDeclining(bytes, chunk, wantsValue);
      expect(error).toBeUndefined();
      expect(entries.map((e) => [e.index, e.offset, e.size, e.path, e.sealed?.toString('hex')])).toEqual(
        full.entries.map((e) => [e.index, e.offset, e.size, e.path, e.sealed?.toString('hex')]),
      );
      for (const [i, e] of entries.entries()) {
        const declined = !wantsValue(e.path) && e.path !== longPath;
        expect(e.pathOnly, e.path).toBe(declined ? true : undefined);
        expect(e.value.equals(declined ? Buffer.alloc(0) : full.entries[i]!.value), e.path).toBe(true);
      }
    }
  });

  it('reports a cut at every offset exactly as entries() does', async () => {
    const bytes = bytesOf();
    for (let cut = 1; cut < bytes.length; cut++) {
      const full = await readOneWay(bytes.subarray(0, cut), opts, 'entries', 64);
      const mine = await readDeclining(bytes.subarray(0, cut), cut, () => false);
      const shape = (r: ReadResult) => outcome({ entries: r.entries.map((e) => ({ ...e, value: Buffer.alloc(0), pathOnly: undefined })), error: r.error });
      expect(shape(mine), `cut at ${cut}`).toEqual(shape(full));
    }
  });

  it('authenticates a wanted entry (a flipped byte is refused) but not a declined one, which only the key holder can check', async () => {
    const { bytes, entryOffsets } = craft();
    const at = entryOffsets[2]!; // /authentication/admin
    const tagByte = at + 3 + 12 + 120 + 3 + '/authentication/admin'.length; // inside the tag
    const wanted = await readDeclining(flip(bytes, tagByte), bytes.length, () => true);
    expect(wanted.error).toBeInstanceOf(BackupCorruptedError);
    expect((wanted.error as Error).message).toBe(`entry 2 at offset ${at} failed authentication`);
    const declined = await readDeclining(flip(bytes, tagByte), bytes.length, () => false);
    expect(declined.error).toBeUndefined();
    expect(declined.entries[2]).toMatchObject({ path: '/authentication/admin', pathOnly: true });
  });

  it('with heads, gives a declined entry the first 12 bytes of its value and its length, as the full read has them', async () => {
    const midPath = `/key/.ns1/${'m'.repeat(45)}`; // its path lies within the 4 peeked blocks, its head beyond them
    const tooLong = `/key/.ns1/${'t'.repeat(110)}`; // its path lies beyond the peeked blocks: opened in full
    const withLong: [string, Buffer][] = [...mixed.slice(0, 5), [midPath, randomBytes(50)], [tooLong, randomBytes(50)], ['/key/.ns1/short', randomBytes(8)], ...mixed.slice(5)];
    withLong.sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
    const bytes = craft({ entries: withLong.map(([p, v]) => entryPlaintext(p, v)) }).bytes;
    const full = await readOneWay(bytes, opts, 'entries', 64);
    expect(full.error).toBeUndefined();
    const entries: BackupEntry[] = [];
    const reader = await openBackup(streamOf(bytes, bytes.length), opts);
    try {
      for await (const batch of reader.entriesBatched({ wantsValue, heads: true })) entries.push(...batch);
    } finally {
      await reader.close();
    }
    let declinedWithHead = 0;
    for (const [i, e] of entries.entries()) {
      const f = full.entries[i]!;
      expect(valueLength(e), e.path).toBe(f.value.length);
      if (e.path === '/key/.ns1/short') {
        // An 8-byte value has no 12-byte head.
        expect(e.pathOnly, e.path).toBe(true);
        expect(valueHead(e), e.path).toBeUndefined();
        continue;
      }
      const head = valueHead(e);
      if (f.value.length < 12) expect(head).toBeUndefined();
      else {
        expect(head?.toString('hex'), e.path).toBe(f.value.subarray(0, 12).toString('hex'));
        if (e.pathOnly) declinedWithHead++;
      }
    }
    expect(entries.find((e) => e.path === midPath)?.pathOnly).toBe(true);
    expect(entries.find((e) => e.path === tooLong)?.pathOnly).toBeUndefined();
    expect(entries.find((e) => e.path === longPath)?.pathOnly).toBeUndefined();
    expect(declinedWithHead).toBeGreaterThanOrEqual(3);
    // Without heads, a declined entry carries none.
    const plain = await readDeclining(bytes, bytes.length, wantsValue);
    expect(plain.entries.filter((e) => e.pathOnly).every((e) => e.head === undefined && valueHead(e) === undefined)).toBe(true);
  });

  it('opens in full a declined entry whose path does not decode, and reports it as entries() does', async () => {
    const noSlash = entryPlaintext('key/k', Buffer.from('v'));
    const ok = entryPlaintext('/a', Buffer.from('x'));
    const bytes = craft({ entries: [ok, noSlash, ok] }).bytes;
    const mine = await readDeclining(bytes, bytes.length, () => false);
    const full = await readOneWay(bytes, opts, 'entries', 64);
    expect(mine.error).toBeInstanceOf(BackupCorruptedError);
    expect((mine.error as Error).message).toBe((full.error as Error).message);
    expect(mine.entries).toHaveLength(1);
  });
});
