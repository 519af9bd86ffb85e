import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile as writeBytes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BackupKindMismatchError,
  BackupManifestInvalidError,
  BackupNamespaceNotFoundError,
  BackupOutOfOrderError,
  BackupWrongPassphraseError,
  OutputExistsError,
} from '../errors.js';
import { verifyManifest } from './contents.js';
import { deriveBackupKey } from './crypto.js';
import { KeyCache } from './key-cache.js';
import { TEST_SCRYPT, compareBackupPaths } from './format.js';
import { encodeManifest, makeManifest, MANIFEST_PATH } from './manifest.js';
import { extractNamespace, listBackupContents, mergeNamespace } from './namespace.js';
import { isNamespacePath } from './paths.js';
import { openBackup, type BackupHeader } from './reader.js';
import { syntheticEntries, writeSyntheticDeviceBackup, type SyntheticSpec } from './synthetic.js';
import { createBackupWriter } from './writer.js';

const PASS = 'device-backup-passphrase';
const REPL = 'replication-passphrase';
const input = { passphrase: PASS, scrypt: TEST_SCRYPT };
let dir: string;

const specA: SyntheticSpec = {
  namespaces: { N: { keys: 5, users: 2 }, N2: { keys: 3, users: 1 }, 'N-a': { keys: 1, users: 1 }, M: { keys: 2, users: 1 } },
  rootKeys: 3,
  rootUsers: 2,
  keySize: 300,
  deviceId: 'DEVA',
};
// Same layout family, different content: N has fewer keys plus one the source lacks; N2 and root keys differ.
const specB: SyntheticSpec = {
  namespaces: { N: { keys: 3, users: 3 }, N2: { keys: 2, users: 1 }, Z: { keys: 1, users: 0 } },
  rootKeys: 4,
  rootUsers: 1,
  keySize: 300,
  variant: 'B',
  deviceId: 'DEVB',
};

async function writeFile(name: string, spec: SyntheticSpec): Promise<string> {
  const p = join(dir, name);
  await writeSyntheticDeviceBackup(createWriteStream(p), spec, { passphrase: PASS, scrypt: TEST_SCRYPT });
  return p;
}

async function readAll(path: string, passphrase = PASS): Promise<{ header: BackupHeader; entries: [string, Buffer][] }> {
  const r = await openBackup(path, { passphrase, scrypt: TEST_SCRYPT });
  const entries: [string, Buffer][] = [];
  for await (const e of r.entries()) entries.push([e.path, Buffer.from(e.value)]);
  const header = { ...r.header, configStoreKey: Buffer.from(r.header.configStoreKey ?? []) };
  await r.close();
  return { header, entries };
}

/** Writes a backup from explicit entries (for malformed inputs). */
async function writeRaw(name: string, entries: [string, Buffer][], passphrase = PASS): Promise<string> {
  const p = join(dir, name);
  const w = await createBackupWriter(createWriteStream(p), {
    passphrase,
    scrypt: TEST_SCRYPT,
    lockedDomainKey: Buffer.alloc(60, 1),
    deviceId: 'RAW',
    configStoreKey: Buffer.alloc(32, 2),
  });
  for (const [path, v] of entries) await w.writeEntry(path, v);
  await w.finish();
  return p;
}

let devA: string;
let devB: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nsbackup-'));
  devA = await writeFile('a.bin', specA);
  devB = await writeFile('b.bin', specB);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function filesIn(): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.startsWith('.'));
}

describe('extractNamespace', () => {
  it('writes exactly the namespace\'s entries and a manifest, nothing of N2 or N-a', async () => {
    const out = join(dir, 'n.nsb');
    const sum = await extractNamespace(devA, 'N', out, { input, passphrase: REPL, scrypt: TEST_SCRYPT, meta: { epoch: 3 } });
    const src = [...syntheticEntries(specA)].filter(([p]) => isNamespacePath(p, 'N'));
    const { header, entries } = await readAll(out, REPL);
    expect(entries.slice(0, -1)).toEqual(src);
    expect(entries.at(-1)?.[0]).toBe(MANIFEST_PATH);
    expect(header.deviceId).toBe('DEVA');
    expect(sum).toMatchObject({ namespace: 'N', entries: 8, keys: 5, users: 2 });
    expect(sum.manifest).toMatchObject({ kind: 'namespace', namespace: 'N', keyId: null, entryCount: 8, sourceDeviceId: 'DEVA', meta: { epoch: 3 } });
    await expect(openBackup(out, { passphrase: PASS, scrypt: TEST_SCRYPT })).rejects.toBeInstanceOf(BackupWrongPassphraseError);
  });

  it('opens the source before it waits for a pending output key (the two derivations run side by side)', async () => {
    // The output key is given only once the source's key is derived (the cache reports it): an extract that awaited
    // its output key before opening the source would wait forever.
    let give: (k: { backupKey: Buffer; salt: Buffer }) => void = () => undefined;
    const outputKey = new Promise<{ backupKey: Buffer; salt: Buffer }>((resolve) => (give = resolve));
    const salt = randomBytes(16);
    const keyCache = new KeyCache(Number.POSITIVE_INFINITY, {
      onLearnt: () => void deriveBackupKey(REPL, salt, TEST_SCRYPT).then((backupKey) => give({ backupKey, salt })),
    });
    const out = join(dir, 'pending-key.nsb');
    const sum = await extractNamespace(devA, 'N', out, { input: { ...input, keyCache }, outputKey, meta: { epoch: 1 } });
    expect(sum.keys).toBe(5);
    expect((await readAll(out, REPL)).entries).toHaveLength(9);
    keyCache.clear();
  });

  it('keeps the source\'s key and salt when no new passphrase is given', async () => {
    const out = join(dir, 'n-same.nsb');
    await extractNamespace(devA, 'N2', out, { input });
    const a = await readAll(devA);
    const n = await readAll(out);
    expect(n.header.salt).toEqual(a.header.salt);
    expect(n.entries.map(([p]) => p)).toEqual([...a.entries.map(([p]) => p).filter((p) => isNamespacePath(p, 'N2')), MANIFEST_PATH]);
  });

  it('writes only the selected keys and users with `select`, plus the namespace record, as a valid namespace backup', async () => {
    const out = join(dir, 'n-select.nsb');
    const all = [...syntheticEntries(specA)].filter(([p]) => isNamespacePath(p, 'N'));
    const key = all.find(([p]) => p.startsWith('/key/'))![0];
    const user = all.find(([p]) => p.startsWith('/authentication/'))![0];
    // The selector also accepts paths outside N: they are never written.
    const sum = await extractNamespace(devA, 'N', out, { input, select: (p) => p === key || p === user || !isNamespacePath(p, 'N') });
    const { entries } = await readAll(out);
    expect(entries.map(([p]) => p)).toEqual([...all.map(([p]) => p).filter((p) => p === key || p === user || p === '/namespace/N'), MANIFEST_PATH]);
    expect(sum).toMatchObject({ entries: 3, keys: 1, users: 1 });
    const c = await listBackupContents(out, { input, collectIds: true });
    expect(c).toMatchObject({ kind: 'namespace', namespaces: { N: { present: true, keys: 1, users: 1 } } });
    expect(() => verifyManifest(c)).not.toThrow();
  });

  it('refuses a namespace the backup lacks and leaves no file', async () => {
    const out = join(dir, 'none.nsb');
    await expect(extractNamespace(devA, 'NX', out, { input })).rejects.toBeInstanceOf(BackupNamespaceNotFoundError);
    await expect(readdir(dir)).resolves.not.toContain('none.nsb');
    expect(await filesIn()).toEqual([]);
  });

  it('refuses to extract from a namespace backup', async () => {
    const nsb = join(dir, 'n-for-extract.nsb');
    await extractNamespace(devA, 'N', nsb, { input });
    await expect(extractNamespace(nsb, 'N', join(dir, 'x.nsb'), { input })).rejects.toBeInstanceOf(BackupKindMismatchError);
    expect(await filesIn()).toEqual([]);
  });

  it('never overwrites an existing output', async () => {
    await expect(extractNamespace(devA, 'N', devB, { input })).rejects.toBeInstanceOf(OutputExistsError);
  });

  it('writes to a stream sink', async () => {
    const sink = new PassThrough();
    const chunks: Buffer[] = [];
    sink.on('data', (c: Buffer) => chunks.push(c));
    const sum = await extractNamespace(devA, 'M', sink, { input });
    expect(Buffer.concat(chunks).length).toBe(sum.bytesWritten);
  });
});

describe('mergeNamespace', () => {
  let nsb: string;
  beforeAll(async () => {
    nsb = join(dir, 'n-merge.nsb');
    await extractNamespace(devA, 'N', nsb, { input, passphrase: REPL, scrypt: TEST_SCRYPT });
  });

  it('replaces N with the namespace backup\'s and keeps every other entry and the header byte for byte', async () => {
    const out = join(dir, 'merged.bin');
    const sum = await mergeNamespace(devB, nsb, out, { device: input, namespaceBackup: { passphrase: REPL, scrypt: TEST_SCRYPT } });
    const a = await readAll(devA);
    const b = await readAll(devB);
    const m = await readAll(out);
    expect(m.entries.filter(([p]) => isNamespacePath(p, 'N'))).toEqual(a.entries.filter(([p]) => isNamespacePath(p, 'N')));
    expect(m.entries.filter(([p]) => !isNamespacePath(p, 'N'))).toEqual(b.entries.filter(([p]) => !isNamespacePath(p, 'N')));
    expect(m.entries.some(([p]) => p === MANIFEST_PATH)).toBe(false);
    const paths = m.entries.map(([p]) => p);
    expect([...paths].sort(compareBackupPaths)).toEqual(paths);
    expect(m.header.lockedDomainKey).toEqual(b.header.lockedDomainKey);
    expect(m.header.deviceId).toBe('DEVB');
    expect(m.header.configStoreKey).toEqual(b.header.configStoreKey);
    expect(m.header.salt).toEqual(b.header.salt);
    // B's N: record + 3 keys + 3 users = 7; A's N: record + 5 keys + 2 users = 8. Shared: record, k0..k2, u0, u1.
    expect(sum).toMatchObject({ namespace: 'N', replaced: 6, removed: 1, added: 2, namespaceWasPresent: true, namespaceEntriesBefore: 7, namespaceEntriesAfter: 8 });
    expect(sum.kept).toBe(b.entries.length - 7);
    expect(sum.entriesWritten).toBe(m.entries.length);
  });

  it('adds the namespace to a device backup that lacks it', async () => {
    const mOnly = join(dir, 'm-only.nsb');
    await extractNamespace(devA, 'M', mOnly, { input });
    const sum = await mergeNamespace(devB, mOnly, join(dir, 'merged-m.bin'), { device: input, namespaceBackup: input });
    expect(sum).toMatchObject({ namespace: 'M', namespaceWasPresent: false, replaced: 0, removed: 0, added: 4 });
  });

  it('refuses a device backup or a key backup where the namespace backup goes, writing nothing', async () => {
    await expect(mergeNamespace(devB, devA, join(dir, 'x.bin'), { device: input, namespaceBackup: input })).rejects.toBeInstanceOf(
      BackupKindMismatchError,
    );
    const key = await writeRaw('key.kb', [
      ['/key/.N/k00000000', Buffer.alloc(10, 1)],
      [MANIFEST_PATH, encodeManifest(makeManifest({ kind: 'key', namespace: 'N', keyId: 'k00000000', entryCount: 1, pathsDigest: `sha256:${'0'.repeat(64)}`, createdAt: new Date().toISOString(), sourceDeviceId: null, sourceVersion: 1 }))],
    ]);
    await expect(mergeNamespace(devB, key, join(dir, 'x.bin'), { device: input, namespaceBackup: input })).rejects.toBeInstanceOf(
      BackupKindMismatchError,
    );
    expect((await readdir(dir)).filter((f) => f.includes('x.bin'))).toEqual([]);
  });

  it('refuses a namespace backup of another namespace than expected', async () => {
    await expect(
      mergeNamespace(devB, nsb, join(dir, 'x.bin'), { device: input, namespaceBackup: { passphrase: REPL, scrypt: TEST_SCRYPT }, expectNamespace: 'N2' }),
    ).rejects.toBeInstanceOf(BackupKindMismatchError);
  });

  it('refuses a manifest that disagrees with the entries', async () => {
    const bad = await writeRaw('bad-manifest.nsb', [
      ['/namespace/N', Buffer.alloc(10, 1)],
      [MANIFEST_PATH, encodeManifest(makeManifest({ kind: 'namespace', namespace: 'N', keyId: null, entryCount: 2, pathsDigest: `sha256:${'0'.repeat(64)}`, createdAt: new Date().toISOString(), sourceDeviceId: null, sourceVersion: 1 }))],
    ]);
    await expect(mergeNamespace(devB, bad, join(dir, 'x.bin'), { device: input, namespaceBackup: input })).rejects.toBeInstanceOf(
      BackupManifestInvalidError,
    );
    expect(await filesIn()).toEqual([]);
  });

  it('refuses inputs out of firmware order rather than write a wrong file', async () => {
    const entries = [...syntheticEntries(specB)];
    const i = entries.findIndex(([p]) => p.startsWith('/key/'));
    const swapped = [...entries];
    [swapped[i], swapped[i + 1]] = [swapped[i + 1]!, swapped[i]!];
    const disordered = await writeRaw('disordered.bin', swapped);
    await expect(mergeNamespace(disordered, nsb, join(dir, 'x.bin'), { device: input, namespaceBackup: { passphrase: REPL, scrypt: TEST_SCRYPT } })).rejects.toBeInstanceOf(
      BackupOutOfOrderError,
    );
    expect(await filesIn()).toEqual([]);
  });
});

describe('listBackupContents', () => {
  it('lists namespaces, keys and users of a device backup', async () => {
    const c = await listBackupContents(devA, { input, collectIds: true });
    expect(c.kind).toBe('device');
    expect(Object.keys(c.namespaces).sort()).toEqual(['M', 'N', 'N-a', 'N2']);
    expect(c.namespaces.N).toMatchObject({ present: true, keys: 5, users: 2 });
    expect(c.namespaces.N?.keyIds).toHaveLength(5);
    expect(c.rootKeys).toBe(3);
    expect(c.rootUserIds).toEqual(['admin', 'user00000001']);
    expect(c.entryCount).toBe([...syntheticEntries(specA)].length);
  });

  it('tells a namespace backup by its manifest', async () => {
    const out = join(dir, 'n-list.nsb');
    await extractNamespace(devA, 'N', out, { input });
    const c = await listBackupContents(out, { input });
    expect(c.kind).toBe('namespace');
    expect(c.manifest?.namespace).toBe('N');
    expect(Object.keys(c.namespaces)).toEqual(['N']);
    expect(c.entryCount).toBe(8);
  });
  it('reads by path only (pathsOnly) what a full read lists, manifest and paths digest included, and a damaged value passes it', async () => {
    const out = join(dir, 'n-paths.nsb');
    await extractNamespace(devA, 'N', out, { input });
    const full = await listBackupContents(out, { input });
    const quick = await listBackupContents(out, { input, pathsOnly: true });
    expect(quick).toEqual(full);
    expect(() => verifyManifest(quick)).not.toThrow();
    // A flipped byte in a key entry's tag: only an authenticating read sees it (the apply's merge does, before a restore).
    const offsets: { path: string; offset: number; size: number }[] = [];
    await listBackupContents(out, { input, onEntry: (e) => void offsets.push(e) });
    const key = offsets.find((e) => e.path.startsWith('/key/'))!;
    const bytes = await readFile(out);
    bytes[key.offset + key.size - 2]! ^= 0xff;
    const damaged = join(dir, 'n-paths-damaged.nsb');
    await writeBytes(damaged, bytes);
    expect(await listBackupContents(damaged, { input, pathsOnly: true })).toEqual(full);
    await expect(listBackupContents(damaged, { input })).rejects.toThrow(/failed authentication/);
  });
});
