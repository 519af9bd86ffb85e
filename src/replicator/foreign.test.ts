import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareBackupPaths, TEST_SCRYPT } from '../backup/format.js';
import { extractNamespace, listBackupContents, mergeNamespace } from '../backup/namespace.js';
import { openBackup } from '../backup/reader.js';
import { createBackupWriter } from '../backup/writer.js';
import { SyncQuarantineFailedError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { foreignAmong, quarantineForeign, RECORD_FROM_SNAPSHOT } from './foreign.js';

describe('foreignAmong', () => {
  let dir: string;
  let unreadable: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-foreign-'));
    unreadable = path.join(dir, 'last-snapshot.nsbackup');
    await writeFile(unreadable, 'not a backup');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A logger that records what it was asked to warn about. */
  function recording(): { log: Logger; warned: string[] } {
    const warned: string[] = [];
    const log = Object.create(silentLogger, { warn: { value: (_o: unknown, msg: string) => void warned.push(msg) } }) as Logger;
    return { log, warned };
  }

  // Every removed key named by the stream: the known files (a key derivation and a whole pass each) are not read.
  it('asks the stream first and reads no known file when it knows every removed key', async () => {
    const { log, warned } = recording();
    const removed = new Set(['/key/.alpha/k1', '/key/.alpha/k2']);
    const out = await foreignAmong('alpha', removed, { files: [unreadable], open: { passphrase: 'x', scrypt: TEST_SCRYPT }, knownKey: () => true }, log);
    expect(out.paths.size).toBe(0);
    expect(warned).toEqual([]);
  });

  it('still reads the known files for what the stream does not know (users, unknown keys)', async () => {
    const { log, warned } = recording();
    const removed = new Set(['/key/.alpha/k1', '/key/.alpha/unknown', '/authentication/alpha~op']);
    const out = await foreignAmong('alpha', removed, { files: [unreadable], open: { passphrase: 'x', scrypt: TEST_SCRYPT }, knownKey: (id) => id === 'k1' }, log);
    expect(out.keyIds).toEqual(['unknown']);
    expect(out.userIds).toEqual(['op']);
    expect(warned).toHaveLength(1);
  });
});

describe('quarantineForeign', () => {
  const DEV = { passphrase: 'device-backup-passphrase', scrypt: TEST_SCRYPT };
  const REPL = { passphrase: 'replication-passphrase', scrypt: TEST_SCRYPT };
  const record = Buffer.from('sealed "alpha" record of the domain');
  let dir: string;
  let snapshot: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-foreign-q-'));
    // The primary: namespace alpha with its record, a key and a user; its snapshot is a namespace backup.
    const primary = await deviceBackup('primary.bin', { '/namespace/alpha': record, '/key/.alpha/k1': Buffer.from('k1'), '/authentication/alpha~op': Buffer.from('op') });
    snapshot = path.join(dir, 'alpha.nsbackup');
    await extractNamespace(primary, 'alpha', snapshot, { input: DEV, passphrase: REPL.passphrase, scrypt: TEST_SCRYPT });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A device backup (same domain header for all) holding the base entries and `extra`, in the firmware's order. */
  async function deviceBackup(name: string, extra: Record<string, Buffer>): Promise<string> {
    const file = path.join(dir, name);
    const w = await createBackupWriter(createWriteStream(file), { ...DEV, lockedDomainKey: Buffer.alloc(60, 1), deviceId: 'DEV', configStoreKey: Buffer.alloc(32, 2) });
    const base = { '/.initialized': Buffer.alloc(0), '/authentication/.version': Buffer.from('0'), '/authentication/admin': Buffer.from('admin'), '/config/version': Buffer.from('1'), '/key/.version': Buffer.from('0'), '/namespace/.version': Buffer.from('0') };
    const entries = Object.entries({ ...base, ...extra }).sort(([a], [b]) => compareBackupPaths(a, b));
    for (const [p, v] of entries) await w.writeEntry(p, v);
    await w.finish();
    return file;
  }

  // Before: extractNamespace threw NHR_ERR_BACKUP_NAMESPACE_NOT_FOUND, so the sync failed with
  // NHR_ERR_SYNC_QUARANTINE_FAILED and never restored, although nothing was wrong with the data.
  it("saves users of a namespace the device holds without its record, with the snapshot's record, as a namespace backup every tool reads", async () => {
    // The firmware keeps a namespace's users when the namespace is deleted (FACTS §4): alpha~stray is foreign.
    const device = await deviceBackup('replica.bin', { '/authentication/alpha~op': Buffer.from('op'), '/authentication/alpha~stray': Buffer.from('stray') });
    const out = path.join(dir, 'alpha-foreign.nsbackup');
    const foreign = { paths: new Set(['/authentication/alpha~stray']), keyIds: [], userIds: ['stray'] };
    const q = await quarantineForeign('alpha', { file: device, open: DEV }, { file: snapshot, open: REPL }, foreign, {
      path: out,
      passphrase: REPL.passphrase,
      scrypt: TEST_SCRYPT,
      meta: { epoch: 1, seq: 2, site: 'b' },
    });
    expect(q).toMatchObject({ path: out, users: 1, userIds: ['stray'], keys: 0 });

    const c = await listBackupContents(out, { input: REPL, collectIds: true });
    expect(c.kind).toBe('namespace');
    expect(c.namespaces.alpha).toMatchObject({ present: true, keys: 0, userIds: ['stray'] });
    expect(c.manifest?.meta).toMatchObject({ ...RECORD_FROM_SNAPSHOT, reason: 'foreign writes at replica', userIds: ['stray'] });
    const r = await openBackup(out, REPL);
    const entries = new Map<string, Buffer>();
    for await (const e of r.entries()) entries.set(e.path, Buffer.from(e.value));
    await r.close();
    expect(entries.get('/namespace/alpha')).toEqual(record);
    expect(entries.get('/authentication/alpha~stray')).toEqual(Buffer.from('stray'));
    // The merge takes it (the manifest checks out, the record is there).
    const merged = await mergeNamespace(device, out, path.join(dir, 'merged.bin'), { device: DEV, namespaceBackup: REPL, expectNamespace: 'alpha' });
    expect(merged).toMatchObject({ namespaceWasPresent: false, added: 1, replaced: 1 });
  });

  it('still fails, saving nothing, when the snapshot has no record either', async () => {
    const device = await deviceBackup('replica-2.bin', { '/authentication/alpha~stray': Buffer.from('stray') });
    const out = path.join(dir, 'alpha-foreign-2.nsbackup');
    const foreign = { paths: new Set(['/authentication/alpha~stray']), keyIds: [], userIds: ['stray'] };
    // A device backup stands in for a snapshot without the record (it has no alpha record).
    const err = await quarantineForeign('alpha', { file: device, open: DEV }, { file: device, open: DEV }, foreign, { path: out, meta: { epoch: 1, seq: 2, site: 'b' } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncQuarantineFailedError);
    expect((err as SyncQuarantineFailedError).message).toMatch(/stray.*neither the device backup nor the snapshot holds the \/namespace\/alpha record/);
    expect(existsSync(out)).toBe(false);
  });
});
