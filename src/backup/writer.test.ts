import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InternalError } from '../errors.js';
import { deriveBackupKey } from './crypto.js';
import { BACKUP_MAGIC, BACKUP_TRAILER, TEST_SCRYPT } from './format.js';
import { openBackup, readBackupBuffer, type BackupEntry } from './reader.js';
import { compareBackupPaths, createBackupWriter, type BackupWriterOptions } from './writer.js';

const header = {
  lockedDomainKey: randomBytes(60),
  deviceId: '0123456789ABCDEFGHIJ',
  configStoreKey: createHash('sha256').update('device-key').update('early_config_store').digest(),
};

function syntheticEntries(): [string, Buffer][] {
  const list: [string, Buffer][] = [
    ['/.initialized', Buffer.alloc(0)],
    ['/authentication/.version', randomBytes(29)],
    ['/authentication/admin', randomBytes(180)],
    ['/config/version', Buffer.from('1')],
    ['/key/.ns1/k1', randomBytes(2200)],
    ['/key/.version', randomBytes(29)],
    ['/key/big', randomBytes(200_000)],
    ['/namespace/ns1', randomBytes(33)],
  ];
  return list.sort((a, b) => compareBackupPaths(a[0], b[0]));
}

/** Collects everything written to it; can be slow to drain to exercise back-pressure. */
class MemorySink extends Writable {
  chunks: Buffer[] = [];
  constructor(highWaterMark = 16 * 1024) {
    super({ highWaterMark });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(chunk);
    setImmediate(cb);
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

async function writeMemory(entries: [string, Buffer][], opts: Partial<BackupWriterOptions> = {}): Promise<Buffer> {
  const sink = new MemorySink();
  const w = await createBackupWriter(sink, { passphrase: 'pw', scrypt: TEST_SCRYPT, ...header, ...opts });
  for (const [p, v] of entries) await w.writeEntry(p, v);
  await w.finish();
  expect(w.entriesWritten).toBe(entries.length);
  expect(w.bytesWritten).toBe(sink.bytes.length);
  return sink.bytes;
}

function expectSame(got: BackupEntry[], want: [string, Buffer][]): void {
  expect(got.map((e) => e.path)).toEqual(want.map(([p]) => p));
  got.forEach((e, i) => {
    expect(e.index).toBe(i);
    expect(e.value.equals(want[i]![1])).toBe(true);
  });
}

/**
 * Regression (fault suite, seeds 13/84/87, CI seed 1): when the output chunk had fewer than 22 bytes of room left at
 * `finish()`, the end marker and trailer were copied into the chunk already handed to the sink (the copy's target was
 * read before `reserve` replaced it), and the last chunk went out as 22 bytes of uninitialized memory. Readers then
 * saw a trailer mid-file and "unexpected data after the trailer"; the bytes after it could be process memory.
 */
describe('the end of the output', () => {
  it('goes out whole when the chunk in hand has too little room for the end marker and trailer', async () => {
    const headerLen = (await writeMemory([])).length - 22;
    const p = '/key/fill';
    for (const room of [0, 1, 10, 21, 22]) {
      const v = 64 * 1024 - room - headerLen - (3 + 28 + 3 + Buffer.byteLength(p));
      const entries: [string, Buffer][] = [[p, randomBytes(v)]];
      const bytes = await writeMemory(entries);
      expect(bytes.subarray(bytes.length - BACKUP_TRAILER.length).toString('latin1')).toBe(BACKUP_TRAILER);
      const back = await readBackupBuffer(bytes, { passphrase: 'pw', scrypt: TEST_SCRYPT });
      expectSame(back.entries, entries);
      back.backupKey.fill(0);
    }
  });
});


describe('createBackupWriter', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-codec-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes a version-1 file that reads back identically from a file, with right offsets', async () => {
    const want = syntheticEntries();
    const file = path.join(dir, 'rt.bin');
    const w = await createBackupWriter(createWriteStream(file), { passphrase: 'pw', scrypt: TEST_SCRYPT, ...header });
    for (const [p, v] of want) await w.writeEntry(p, v);
    await w.finish();
    const bytes = readFileSync(file);
    expect(bytes.length).toBe(w.bytesWritten);
    expect(bytes.subarray(0, 16).toString('latin1')).toBe(`${BACKUP_MAGIC}\x01`);
    expect(bytes.subarray(bytes.length - 22).toString('latin1')).toBe(`\0\0\0${BACKUP_TRAILER}`);

    const reader = await openBackup(file, { passphrase: 'pw', scrypt: TEST_SCRYPT });
    const got: BackupEntry[] = [];
    for await (const e of reader.entries()) got.push(e);
    await reader.close();
    expectSame(got, want);
    expect(reader.header).toMatchObject({ version: 1, deviceId: header.deviceId });
    expect(reader.header.lockedDomainKey.equals(header.lockedDomainKey)).toBe(true);
    expect(reader.header.configStoreKey?.equals(header.configStoreKey)).toBe(true);
    expect(got[0]!.offset).toBe(reader.header.headerBytes);
    for (let i = 1; i < got.length; i++) expect(got[i]!.offset).toBe(got[i - 1]!.offset + got[i - 1]!.size);
    // Each offset points at the u24 length of a sealed field of the announced size.
    for (const e of got) expect(bytes.readUIntBE(e.offset, 3) + 3).toBe(e.size);
    const last = got.at(-1)!;
    expect(last.offset + last.size + 22).toBe(bytes.length);
    expect(reader.bytesRead).toBe(bytes.length);
  });

  it('round-trips through a stream and through readBackupBuffer alike', async () => {
    const want = syntheticEntries();
    const bytes = await writeMemory(want);
    const fromStream = await openBackup(toStream(bytes), { passphrase: 'pw', scrypt: TEST_SCRYPT });
    const streamed: BackupEntry[] = [];
    for await (const e of fromStream.entries()) streamed.push(e);
    await fromStream.close();
    expectSame(streamed, want);
    const buffered = await readBackupBuffer(bytes, { passphrase: 'pw', scrypt: TEST_SCRYPT });
    expect(buffered.entries).toEqual(streamed);
    expect(buffered.header).toEqual(fromStream.header);
    buffered.backupKey.fill(0);
  });
});

function toStream(bytes: Buffer): PassThrough {
  const s = new PassThrough();
  // Odd chunk sizes so fields straddle chunk boundaries.
  let pos = 0;
  let n = 1;
  while (pos < bytes.length) {
    s.write(bytes.subarray(pos, pos + n));
    pos += n;
    n = (n * 7 + 3) % 5000 || 1;
  }
  s.end();
  return s;
}

describe('createBackupWriter key handling', () => {
  it('reuses a reader\'s key and salt without scrypt, and the copy survives the reader closing', async () => {
    const bytes = await writeMemory(syntheticEntries());
    const reader = await openBackup(toStream(bytes), { passphrase: 'pw', scrypt: TEST_SCRYPT });
    const sink = new MemorySink();
    const w = await createBackupWriter(sink, {
      backupKey: reader.backupKey,
      salt: reader.header.salt,
      lockedDomainKey: reader.header.lockedDomainKey,
      deviceId: reader.header.deviceId!,
      configStoreKey: reader.header.configStoreKey!,
    });
    await reader.close();
    expect(reader.backupKey.every((b) => b === 0)).toBe(true);
    await w.writeEntry('/key/x', Buffer.from('v'));
    await w.finish();
    const back = await readBackupBuffer(sink.bytes, { passphrase: 'pw', scrypt: TEST_SCRYPT });
    expect(back.entries.map((e) => [e.path, e.value.toString()])).toEqual([['/key/x', 'v']]);
    expect(back.header.salt.equals(reader.header.salt)).toBe(true);
  });

  it('refuses a zeroed key (a closed reader\'s) and a key without its salt', async () => {
    await expect(
      createBackupWriter(new MemorySink(), { backupKey: Buffer.alloc(32), salt: randomBytes(16), ...header }),
    ).rejects.toMatchObject({ code: 'NHR_ERR_INTERNAL' });
    await expect(createBackupWriter(new MemorySink(), { backupKey: randomBytes(32), ...header })).rejects.toMatchObject({
      code: 'NHR_ERR_INPUT_INVALID',
    });
    await expect(createBackupWriter(new MemorySink(), { ...header })).rejects.toMatchObject({ code: 'NHR_ERR_INPUT_INVALID' });
  });

  it('uses a fresh random salt per file, and a given key with its salt', async () => {
    const a = await readBackupBuffer(await writeMemory([]), { passphrase: 'pw', scrypt: TEST_SCRYPT });
    const b = await readBackupBuffer(await writeMemory([]), { passphrase: 'pw', scrypt: TEST_SCRYPT });
    expect(a.header.salt.equals(b.header.salt)).toBe(false);
    const salt = randomBytes(16);
    const key = await deriveBackupKey('other', salt, TEST_SCRYPT);
    const c = await readBackupBuffer(await writeMemory([], { passphrase: undefined, backupKey: key, salt }), {
      passphrase: 'other',
      scrypt: TEST_SCRYPT,
    });
    expect(c.header.salt.equals(salt)).toBe(true);
    expect(key.every((x) => x === 0)).toBe(false); // the caller's key is not zeroed by the writer
  });

  it('refuses a relative path and writes after finish', async () => {
    const w = await createBackupWriter(new MemorySink(), { passphrase: 'pw', scrypt: TEST_SCRYPT, ...header });
    await expect(w.writeEntry('key/x', Buffer.alloc(1))).rejects.toMatchObject({ code: 'NHR_ERR_INPUT_INVALID' });
    await w.finish();
    await expect(w.writeEntry('/key/x', Buffer.alloc(1))).rejects.toMatchObject({ code: 'NHR_ERR_INTERNAL' });
  });

  it('refuses an entry too large for a u24 field and leaves the writer usable', async () => {
    const sink = new MemorySink();
    const w = await createBackupWriter(sink, { passphrase: 'pw', scrypt: TEST_SCRYPT, ...header });
    await expect(w.writeEntry('/key/huge', Buffer.alloc(0xffffff))).rejects.toThrow(/too large/);
    await w.writeEntry('/key/ok', Buffer.from('v'));
    await w.finish();
    const back = await readBackupBuffer(sink.bytes, { passphrase: 'pw', scrypt: TEST_SCRYPT });
    expect(back.entries.map((e) => e.path)).toEqual(['/key/ok']);
  });

  it('abort() refuses further writes and finish, and is idempotent', async () => {
    const w = await createBackupWriter(new MemorySink(), { passphrase: 'pw', scrypt: TEST_SCRYPT, ...header });
    await w.writeEntry('/key/a', Buffer.from('v'));
    w.abort();
    w.abort();
    await expect(w.writeEntry('/key/b', Buffer.from('v'))).rejects.toThrow(/after abort/);
    await expect(w.finish()).rejects.toThrow(/after abort/);
  });

  it('waits for drain on a slow sink and still writes every byte', async () => {
    const sink = new MemorySink(1024);
    let drains = 0;
    sink.on('drain', () => drains++);
    const w = await createBackupWriter(sink, { passphrase: 'pw', scrypt: TEST_SCRYPT, ...header });
    for (let i = 0; i < 50; i++) await w.writeEntry(`/key/k${String(i).padStart(3, '0')}`, randomBytes(4096));
    await w.finish();
    expect(drains).toBeGreaterThan(0);
    const back = await readBackupBuffer(sink.bytes, { passphrase: 'pw', scrypt: TEST_SCRYPT });
    expect(back.entries).toHaveLength(50);
  });

  it('surfaces a sink error on the next write', async () => {
    const sink = new Writable({
      write(_c, _e, cb) {
        cb(new Error('disk full'));
      },
    });
    await expect(
      (async () => {
        const w = await createBackupWriter(sink, { passphrase: 'pw', scrypt: TEST_SCRYPT, ...header });
        await w.writeEntry('/key/x', Buffer.alloc(10));
        await w.finish();
      })(),
    ).rejects.toThrow('disk full');
  });
});

/**
 * Regression: a sink closed between two writes (an HTTP response whose client went away, as the simulator's backup
 * route has: `check-config` stops a download after the header) emits 'close' once; the writer's next hand-over got
 * `false` from write() and then waited for a 'drain', 'error' or 'close' that had all passed: it hung for good.
 */
describe('a sink closed between writes', () => {
  it('fails the next write that must wait for it instead of hanging', async () => {
    const sink = new Writable({
      write(_c, _e, cb) {
        cb();
      },
    });
    const w = await createBackupWriter(sink, { passphrase: 'pw', scrypt: TEST_SCRYPT, ...header });
    await w.writeEntry('/key/a', Buffer.alloc(10));
    sink.destroy();
    await new Promise((r) => sink.once('close', r));
    let outcome: unknown = 'pending';
    const run = (async () => {
      for (let i = 0; i < 4; i++) await w.writeEntry(`/key/b${i}`, randomBytes(30_000));
      await w.finish();
    })().then(
      () => (outcome = 'finished'),
      (err: unknown) => (outcome = err),
    );
    // Sealing four entries needs no I/O: a writer that is not stuck settles within a few turns of the event loop.
    for (let i = 0; i < 50 && outcome === 'pending'; i++) await new Promise((r) => setImmediate(r));
    expect(outcome).toBeInstanceOf(InternalError);
    expect((outcome as Error).message).toMatch(/sink closed/);
    await run;
  });
});

describe('BackupWriter.copyEntry', () => {
  async function readerOf(bytes: Buffer, passphrase = 'pw') {
    return openBackup(
      (async function* () {
        yield bytes;
      })(),
      { passphrase, scrypt: TEST_SCRYPT },
    );
  }

  it('copies the sealed field as it is under the same key, and the copy opens to the same entries', async () => {
    const entries = syntheticEntries();
    const src = await readerOf(await writeMemory(entries));
    const sink = new MemorySink();
    const w = await createBackupWriter(sink, { backupKey: src.backupKey, salt: src.header.salt, ...header });
    const sealed: Buffer[] = [];
    for await (const e of src.entries()) {
      sealed.push(e.sealed!);
      await w.copyEntry(e, src);
    }
    await w.finish();
    await src.close();
    // The sealed fields (nonces included) are in the output byte for byte: nothing was sealed again.
    for (const s of sealed) expect(sink.bytes.includes(s)).toBe(true);
    const { entries: got, backupKey } = await readBackupBuffer(sink.bytes, { passphrase: 'pw', scrypt: TEST_SCRYPT });
    backupKey.fill(0);
    expectSame(got, entries);
  });

  it('seals again under its own key when the source is under another', async () => {
    const entries = syntheticEntries();
    const src = await readerOf(await writeMemory(entries, { passphrase: 'other-passphrase' }), 'other-passphrase');
    const sink = new MemorySink();
    const w = await createBackupWriter(sink, { passphrase: 'pw', scrypt: TEST_SCRYPT, ...header });
    const sealed: Buffer[] = [];
    for await (const e of src.entries()) {
      sealed.push(e.sealed!);
      await w.copyEntry(e, src);
    }
    await w.finish();
    await src.close();
    for (const s of sealed) expect(sink.bytes.includes(s)).toBe(false);
    const { entries: got, backupKey } = await readBackupBuffer(sink.bytes, { passphrase: 'pw', scrypt: TEST_SCRYPT });
    backupKey.fill(0);
    expectSame(got, entries);
  });

  it('copies entries read by their path only under the same key, and refuses them under another (no value to seal)', async () => {
    const entries = syntheticEntries();
    const bytes = await writeMemory(entries);
    const same = await readerOf(bytes);
    const sink = new MemorySink();
    const w = await createBackupWriter(sink, { backupKey: same.backupKey, salt: same.header.salt, ...header });
    for await (const batch of same.entriesBatched({ wantsValue: () => false })) {
      for (const e of batch) {
        expect(e.pathOnly).toBe(true);
        await w.copyEntry(e, same);
      }
    }
    await w.finish();
    await same.close();
    const { entries: got, backupKey } = await readBackupBuffer(sink.bytes, { passphrase: 'pw', scrypt: TEST_SCRYPT });
    backupKey.fill(0);
    expectSame(got, entries);

    const src = await readerOf(bytes);
    const other = await createBackupWriter(new MemorySink(), { passphrase: 'other', scrypt: TEST_SCRYPT, ...header });
    const first = (await src.entriesBatched({ wantsValue: () => false }).next()).value![0]!;
    await expect(other.copyEntry(first, src)).rejects.toBeInstanceOf(InternalError);
    other.abort();
    await src.close();
  });
});
