import { createWriteStream } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupKeyNotFoundError, BackupKindMismatchError, BackupNamespaceNotFoundError, InputInvalidError } from '../errors.js';
import { TEST_SCRYPT, compareBackupPaths } from './format.js';
import { exportKey, importKey } from './keybackup.js';
import { MANIFEST_PATH } from './manifest.js';
import { extractNamespace } from './namespace.js';
import { openBackup } from './reader.js';
import { syntheticEntries, writeSyntheticDeviceBackup, type SyntheticSpec } from './synthetic.js';

const PASS = 'device-backup-passphrase';
const KEYPASS = 'key-backup-passphrase';
const input = { passphrase: PASS, scrypt: TEST_SCRYPT };
const keyInput = { passphrase: KEYPASS, scrypt: TEST_SCRYPT };
let dir: string;
let devA: string;
let devB: string;

const specA: SyntheticSpec = { namespaces: { N: { keys: 3, users: 1 }, N2: { keys: 1, users: 0 } }, rootKeys: 2, rootUsers: 1, keySize: 100 };
const specB: SyntheticSpec = { namespaces: { N: { keys: 1, users: 1 }, Q: { keys: 0, users: 0 } }, rootKeys: 1, rootUsers: 1, keySize: 100, variant: 'B' };

async function entriesOf(path: string, passphrase = PASS): Promise<[string, Buffer][]> {
  const r = await openBackup(path, { passphrase, scrypt: TEST_SCRYPT });
  const out: [string, Buffer][] = [];
  for await (const e of r.entries()) out.push([e.path, Buffer.from(e.value)]);
  await r.close();
  return out;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keybackup-'));
  devA = join(dir, 'a.bin');
  devB = join(dir, 'b.bin');
  await writeSyntheticDeviceBackup(createWriteStream(devA), specA, { passphrase: PASS, scrypt: TEST_SCRYPT });
  await writeSyntheticDeviceBackup(createWriteStream(devB), specB, { passphrase: PASS, scrypt: TEST_SCRYPT });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const leftovers = async (): Promise<string[]> => (await readdir(dir)).filter((f) => f.startsWith('.'));

describe('key backups', () => {
  it('exports one namespaced key with its manifest', async () => {
    const out = join(dir, 'k2.kb');
    const sum = await exportKey(devA, { namespace: 'N', keyId: 'k00000002' }, out, { input, passphrase: KEYPASS, scrypt: TEST_SCRYPT });
    const src = [...syntheticEntries(specA)].find(([p]) => p === '/key/.N/k00000002');
    const got = await entriesOf(out, KEYPASS);
    expect(got[0]).toEqual(src);
    expect(got.map(([p]) => p)).toEqual(['/key/.N/k00000002', MANIFEST_PATH]);
    expect(sum.manifest).toMatchObject({ kind: 'key', namespace: 'N', keyId: 'k00000002', entryCount: 1 });
  });

  it('exports a root key when no namespace is given, and from a namespace backup too', async () => {
    const sum = await exportKey(devA, { keyId: 'k00000001' }, join(dir, 'root.kb'), { input });
    expect(sum.path).toBe('/key/k00000001');
    expect(sum.manifest.namespace).toBeNull();
    const nsb = join(dir, 'n.nsb');
    await extractNamespace(devA, 'N', nsb, { input });
    const s2 = await exportKey(nsb, { namespace: 'N', keyId: 'k00000000' }, join(dir, 'from-nsb.kb'), { input });
    expect(s2.path).toBe('/key/.N/k00000000');
  });

  it('refuses a key the backup lacks (N2\'s key is not N\'s) and bad ids, leaving no file', async () => {
    await expect(exportKey(devA, { namespace: 'N', keyId: 'k00000009' }, join(dir, 'x.kb'), { input })).rejects.toBeInstanceOf(BackupKeyNotFoundError);
    await expect(exportKey(devA, { namespace: 'N2', keyId: 'k00000001' }, join(dir, 'x.kb'), { input })).rejects.toBeInstanceOf(BackupKeyNotFoundError);
    await expect(exportKey(devA, { namespace: 'a/b', keyId: 'k' }, join(dir, 'x.kb'), { input })).rejects.toBeInstanceOf(InputInvalidError);
    expect((await readdir(dir)).filter((f) => f.includes('x.kb'))).toEqual([]);
  });

  it('inserts a key into a device backup in firmware order, everything else unchanged', async () => {
    const kb = join(dir, 'ins.kb');
    await exportKey(devA, { namespace: 'N', keyId: 'k00000002' }, kb, { input, passphrase: KEYPASS, scrypt: TEST_SCRYPT });
    const out = join(dir, 'b-with-key.bin');
    const sum = await importKey(devB, kb, out, { device: input, keyBackup: keyInput });
    expect(sum).toMatchObject({ path: '/key/.N/k00000002', namespace: 'N', replaced: false });
    const b = await entriesOf(devB);
    const m = await entriesOf(out);
    const key = [...syntheticEntries(specA)].find(([p]) => p === '/key/.N/k00000002')!;
    expect(m).toEqual([...b, key].sort(([x], [y]) => compareBackupPaths(x, y)));
  });

  it('replaces a key of the same id and says so', async () => {
    const kb = join(dir, 'repl.kb');
    await exportKey(devA, { namespace: 'N', keyId: 'k00000000' }, kb, { input });
    const out = join(dir, 'b-replaced.bin');
    const sum = await importKey(devB, kb, out, { device: input, keyBackup: input });
    expect(sum.replaced).toBe(true);
    const m = await entriesOf(out);
    const b = await entriesOf(devB);
    expect(m).toHaveLength(b.length);
    expect(m.find(([p]) => p === '/key/.N/k00000000')?.[1]).toEqual([...syntheticEntries(specA)].find(([p]) => p === '/key/.N/k00000000')?.[1]);
  });

  it('refuses a key whose namespace the device lacks, leaving no file', async () => {
    const kb = join(dir, 'n2.kb');
    await exportKey(devA, { namespace: 'N2', keyId: 'k00000000' }, kb, { input });
    await expect(importKey(devB, kb, join(dir, 'y.bin'), { device: input, keyBackup: input })).rejects.toBeInstanceOf(BackupNamespaceNotFoundError);
    expect(await leftovers()).toEqual([]);
    expect(await readdir(dir)).not.toContain('y.bin');
  });

  it('refuses a namespace or device backup where a key backup goes', async () => {
    const nsb = join(dir, 'n-kind.nsb');
    await extractNamespace(devA, 'N', nsb, { input });
    await expect(importKey(devB, nsb, join(dir, 'y.bin'), { device: input, keyBackup: input })).rejects.toBeInstanceOf(BackupKindMismatchError);
    await expect(importKey(devB, devA, join(dir, 'y.bin'), { device: input, keyBackup: input })).rejects.toBeInstanceOf(BackupKindMismatchError);
    expect(await leftovers()).toEqual([]);
  });
});
