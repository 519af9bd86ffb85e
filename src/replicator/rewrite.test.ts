import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { gcmKey } from '../backup/crypto.js';
import { AD, compareBackupPaths, TEST_SCRYPT } from '../backup/format.js';
import { isNamespacePath } from '../backup/paths.js';
import { openBackup, readBackupBuffer, type BackupEntry } from '../backup/reader.js';
import { ResealPipeline } from '../backup/reseal-pipeline.js';
import { Resealer } from '../backup/resealer.js';
import { syntheticEntries, writeSyntheticDeviceBackup, type SyntheticSpec } from '../backup/synthetic.js';
import { createBackupWriter } from '../backup/writer.js';
import { BackupCorruptedError, InternalError } from '../errors.js';
import { rewriteBackup } from './rewrite.js';

const DEV = 'device passphrase';
// Every full batch on the thread (by default a batch that finds it starting is re-sealed in-thread).
const THREAD_ONLY = { batch: 256, inFlight: 4, threadDepth: 1, threadOnly: true };
const REPL = 'replication passphrase';
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rewrite-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function synthetic(name: string, spec: SyntheticSpec, passphrase: string): Promise<string> {
  const p = join(dir, name);
  await writeSyntheticDeviceBackup(createWriteStream(p), spec, { passphrase, scrypt: TEST_SCRYPT });
  return p;
}

// The overlay holds far more than a batch of namespace entries: most are re-sealed on the worker thread.
const base: SyntheticSpec = { namespaces: { M: { keys: 30, users: 3 }, N: { keys: 20, users: 2 } }, rootKeys: 40, rootUsers: 3 };
const snap: SyntheticSpec = { namespaces: { N: { keys: 1500, users: 4 } }, rootKeys: 0, rootUsers: 0, variant: 'snapshot', keySize: 300 };

function merge(b: string, s: string, out: string, strip = (p: string) => p.endsWith('~u00000000')) {
  return rewriteBackup({
    base: { source: b, open: { passphrase: DEV, scrypt: TEST_SCRYPT }, keep: (p) => !isNamespacePath(p, 'N') },
    overlay: { source: s, open: { passphrase: REPL, scrypt: TEST_SCRYPT }, select: (p) => isNamespacePath(p, 'N') && !strip(p) },
    out,
    reseal: THREAD_ONLY,
  });
}

async function entriesOf(file: string, passphrase: string): Promise<BackupEntry[]> {
  return (await readBackupBuffer(await readFile(file), { passphrase, scrypt: TEST_SCRYPT })).entries;
}

describe('rewriteBackup with the overlay re-sealed on a worker thread', () => {
  it('writes the base outside the namespace and the snapshot within it, under the base key, in order', async () => {
    const [b, s, out] = [await synthetic('b1', base, DEV), await synthetic('snap', snap, REPL), join(dir, 'merged')];
    const sum = await merge(b, s, out);
    const got = await entriesOf(out, DEV);
    const baseEntries = [...syntheticEntries(base)].filter(([p]) => !isNamespacePath(p, 'N'));
    const snapEntries = [...syntheticEntries(snap)].filter(([p]) => isNamespacePath(p, 'N') && !p.endsWith('~u00000000'));
    const want = [...baseEntries, ...snapEntries].sort(([a], [c]) => compareBackupPaths(a, c));
    expect(got.map((e) => e.path)).toEqual(want.map(([p]) => p));
    const values = new Map(want.map(([p, v]) => [p, v]));
    for (const e of got) expect(e.value.equals(values.get(e.path)!)).toBe(true);
    expect(sum.fromOverlay).toBe(snapEntries.length);
  });

  it('gives the same file re-sealed in-thread (below a batch, or while the thread starts) and by default', async () => {
    const [b, s] = [await synthetic('b1', base, DEV), await synthetic('snap', snap, REPL)];
    const opts = (out: string, reseal?: { batch: number; inFlight: number; threadDepth: number }) => ({
      base: { source: b, open: { passphrase: DEV, scrypt: TEST_SCRYPT }, keep: (p: string) => !isNamespacePath(p, 'N') },
      overlay: { source: s, open: { passphrase: REPL, scrypt: TEST_SCRYPT }, select: (p: string) => isNamespacePath(p, 'N') },
      out,
      ...(reseal ? { reseal } : {}),
    });
    await rewriteBackup(opts(join(dir, 'thread'), THREAD_ONLY));
    await rewriteBackup(opts(join(dir, 'here'), { batch: 1e6, inFlight: 4, threadDepth: 0 }));
    await rewriteBackup(opts(join(dir, 'default')));
    const [t, h, d] = [await entriesOf(join(dir, 'thread'), DEV), await entriesOf(join(dir, 'here'), DEV), await entriesOf(join(dir, 'default'), DEV)];
    const flat = (es: BackupEntry[]) => es.map((e) => `${e.path}=${e.value.toString('hex')}`);
    expect(flat(h)).toEqual(flat(t));
    expect(flat(d)).toEqual(flat(t));
  });

  it("uses a caller's running thread for several merges and leaves it running", async () => {
    const [b, s] = [await synthetic('b1', base, DEV), await synthetic('snap', snap, REPL)];
    const shared = new Resealer();
    try {
      shared.start();
      for (const out of [join(dir, 'm1'), join(dir, 'm2')]) {
        await rewriteBackup({
          base: { source: b, open: { passphrase: DEV, scrypt: TEST_SCRYPT }, keep: (p) => !isNamespacePath(p, 'N') },
          overlay: { source: s, open: { passphrase: REPL, scrypt: TEST_SCRYPT }, select: (p) => isNamespacePath(p, 'N') },
          out,
          reseal: THREAD_ONLY,
          resealer: shared,
        });
        expect((await entriesOf(out, DEV)).filter((e) => isNamespacePath(e.path, 'N')).length).toBe(1505);
      }
      expect(shared.ready).toBe(true);
    } finally {
      await shared.close();
    }
  });

  it('refuses a snapshot entry that fails authentication deep in a worker batch, naming it, and leaves no output', async () => {
    const [b, s, out] = [await synthetic('b1', base, DEV), await synthetic('snap', snap, REPL), join(dir, 'merged')];
    const victim = (await entriesOf(s, REPL))[1000]!;
    const bytes = await readFile(s);
    bytes[victim.offset + victim.size - 1]! ^= 0x01; // the tag's last byte: the path still reads right
    await writeFile(s, bytes);
    const err = await merge(b, s, out).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupCorruptedError);
    expect((err as BackupCorruptedError).entryIndex).toBe(victim.index);
    expect((err as Error).message).toContain(`entry ${victim.index} at offset ${victim.offset} failed authentication`);
    await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('reports a damaged path byte that breaks the order within the namespace as failed authentication', async () => {
    const [b, s, out] = [await synthetic('b1', base, DEV), await synthetic('snap', snap, REPL), join(dir, 'merged')];
    // A key whose id ends in an odd digit: one flipped bit makes it its predecessor's id, still in the namespace.
    const victim = (await entriesOf(s, REPL)).find((e) => e.index > 700 && /^\/key\/\.N\/.*[13579]$/.test(e.path))!;
    const bytes = await readFile(s);
    bytes[victim.offset + 3 + 12 + 3 + victim.path.length - 1]! ^= 0x01;
    await writeFile(s, bytes);
    const err = await merge(b, s, out).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupCorruptedError);
    expect((err as Error).message).toContain(`entry ${victim.index} at offset ${victim.offset} failed authentication`);
  });
});

describe('ResealPipeline', () => {
  it('refuses an entry whose authenticated path is not the one it was ordered by', async () => {
    const s = await synthetic('snap', { namespaces: { N: { keys: 10, users: 0 } }, rootKeys: 0, rootUsers: 0 }, REPL);
    const reader = await openBackup(s, { passphrase: REPL, scrypt: TEST_SCRYPT });
    const entries: BackupEntry[] = [];
    for await (const batch of reader.entriesBatched({ wantsValue: () => false })) entries.push(...batch);
    const sink = new PassThrough();
    sink.resume();
    const writer = await createBackupWriter(sink, { passphrase: DEV, scrypt: TEST_SCRYPT, lockedDomainKey: Buffer.alloc(60, 1), deviceId: 'X', configStoreKey: Buffer.alloc(32, 2) });
    const keys = { ad: AD.entry, open: [gcmKey(reader.backupKey)], seal: gcmKey(Buffer.alloc(32, 7)) };
    const p = new ResealPipeline(writer, reader, keys, [{ path: s }], { batch: 4, inFlight: 2, threadDepth: 1, threadOnly: true });
    try {
      const lying = { ...entries[5]!, path: '/key/.N/elsewhere' };
      const all = [...entries.slice(0, 5), lying, ...entries.slice(6)];
      const run = async () => {
        for (const e of all) await p.addOverlay(e, 0);
        await p.flush();
      };
      await expect(run()).rejects.toThrow(/entry 5 at offset \d+: its authenticated path differs/);
    } finally {
      await p.close();
      writer.abort();
      await reader.close();
    }
  });
});

describe('Resealer', () => {
  it('fails a batch in flight when its thread dies, and every later one, without hanging', async () => {
    const keys = { ad: AD.entry, open: [gcmKey(Buffer.alloc(32, 1))], seal: gcmKey(Buffer.alloc(32, 2)) };
    const died: Error[] = [];
    const r = new Resealer({ onDied: (err) => died.push(err) });
    try {
      r.start();
      const fields = Buffer.allocUnsafeSlow(64 * 1000).fill(5);
      const inFlight = r.reseal(keys, { fields, lengths: new Uint32Array(1000).fill(64), keyOf: new Uint8Array(1000) });
      await r.worker!.terminate();
      await expect(inFlight).rejects.toBeInstanceOf(InternalError);
      // Told once, with the error its batches failed with (the daemon's metric and warn log).
      expect(died.map((e) => e.message)).toEqual([expect.stringMatching(/re-seal worker thread exited \(code \d+\)/)]);
      await expect(r.reseal(keys, { fields: Buffer.alloc(64), lengths: Uint32Array.of(64), keyOf: Uint8Array.of(0) })).rejects.toThrow(/re-seal worker thread exited/);
      expect(r.ready).toBe(false);
      // A later merge starts a new thread, which re-seals again.
      r.start();
      const again = await r.reseal(keys, { fields: Buffer.allocUnsafeSlow(64).fill(5), lengths: Uint32Array.of(64), keyOf: Uint8Array.of(0) });
      expect(again.result).toEqual({ failed: 0, reason: 'authentication' });
    } finally {
      await r.close();
      await r.close();
    }
    // Closing ends the new thread on purpose: not a death.
    expect(died).toHaveLength(1);
  });

  it('re-seals on the thread: the fields open under the output key only, with the same plaintext', async () => {
    const s = await synthetic('snap', { namespaces: { N: { keys: 5, users: 1 } }, rootKeys: 0, rootUsers: 0 }, REPL);
    const { entries, backupKey } = await readBackupBuffer(await readFile(s), { passphrase: REPL, scrypt: TEST_SCRYPT });
    const outKey = Buffer.alloc(32, 9);
    const r = new Resealer();
    try {
      r.start();
      const fields = Buffer.concat(entries.map((e) => e.sealed!));
      const { fields: back, result } = await r.reseal({ ad: AD.entry, open: [gcmKey(backupKey)], seal: gcmKey(outKey) }, { fields, lengths: Uint32Array.from(entries.map((e) => e.sealed!.length)), keyOf: new Uint8Array(entries.length) });
      expect(result).toEqual({ paths: entries.map((e) => e.path) });
      const { gcmOpen } = await import('../backup/crypto.js');
      let at = 0;
      for (const e of entries) {
        const f = back.subarray(at, (at += e.sealed!.length));
        expect(f.subarray(0, 12).equals(e.sealed!.subarray(0, 12))).toBe(false); // a fresh nonce
        expect(() => gcmOpen(gcmKey(backupKey), AD.entry, f)).toThrow(BackupCorruptedError);
        expect(gcmOpen(gcmKey(outKey), AD.entry, f).subarray(3 + Buffer.byteLength(e.path)).equals(e.value)).toBe(true);
      }
    } finally {
      await r.close();
      backupKey.fill(0);
    }
  });

  it('tells for each overlay entry written whether the base held the same stored write, another, or none (onOverlay)', async () => {
    // Same variant: the first 20 keys and the users of N hold the same values in both; the snapshot has 10 keys more.
    const b = await synthetic('b1', { namespaces: { M: { keys: 3, users: 1 }, N: { keys: 20, users: 2 } }, rootKeys: 2, rootUsers: 1 }, DEV);
    const same = await synthetic('same', { namespaces: { N: { keys: 30, users: 2 } }, rootKeys: 0, rootUsers: 0 }, REPL);
    const other = await synthetic('other', { namespaces: { N: { keys: 20, users: 2 } }, rootKeys: 0, rootUsers: 0, variant: 'x' }, REPL);
    const resized = await synthetic('resized', { namespaces: { N: { keys: 20, users: 2 } }, rootKeys: 0, rootUsers: 0, keySize: 2300 }, REPL);
    const verdicts = async (snapshot: string) => {
      const seen = new Map<string, string>();
      await rewriteBackup({
        base: { source: b, open: { passphrase: DEV, scrypt: TEST_SCRYPT }, keep: (p) => !isNamespacePath(p, 'N') },
        overlay: { source: snapshot, open: { passphrase: REPL, scrypt: TEST_SCRYPT }, select: (p) => isNamespacePath(p, 'N') },
        out: join(dir, `out-${seen.size}-${Math.random()}`),
        onOverlay: (p, held) => seen.set(p, held),
      });
      return seen;
    };
    const count = (m: Map<string, string>, held: string, prefix = '/key/.N/') => [...m].filter(([p, h]) => p.startsWith(prefix) && h === held).length;
    const v1 = await verdicts(same);
    expect([count(v1, 'same'), count(v1, 'none'), count(v1, 'changed')]).toEqual([20, 10, 0]);
    expect(v1.get('/key/.N/k00000019')).toBe('same');
    expect(v1.get('/key/.N/k00000020')).toBe('none');
    expect(count(v1, 'same', '/authentication/N~')).toBe(2);
    const v2 = await verdicts(other);
    expect([count(v2, 'same'), count(v2, 'none'), count(v2, 'changed')]).toEqual([0, 0, 20]);
    // Same first bytes (the synthetic value repeats its seed), another length: not the same write.
    const v3 = await verdicts(resized);
    expect([count(v3, 'same'), count(v3, 'changed')]).toEqual([0, 20]);
    // Without onOverlay the merge is as before (no heads read): same output entries.
    const plain = join(dir, 'plain');
    await rewriteBackup({
      base: { source: b, open: { passphrase: DEV, scrypt: TEST_SCRYPT }, keep: (p) => !isNamespacePath(p, 'N') },
      overlay: { source: same, open: { passphrase: REPL, scrypt: TEST_SCRYPT }, select: (p) => isNamespacePath(p, 'N') },
      out: plain,
    });
    expect((await entriesOf(plain, DEV)).map((e) => e.path)).toHaveLength([...syntheticEntries({ namespaces: { M: { keys: 3, users: 1 }, N: { keys: 30, users: 2 } }, rootKeys: 2, rootUsers: 1 })].length);
  });
});
