/**
 * Golden tests against real firmware backup files kept outside the repository (`<repo>/../shared/nethsm/fixtures/backups`).
 * Skipped, saying so, when that folder is absent.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compareBackupPaths, PRODUCTION_SCRYPT, TEST_SCRYPT } from './format.js';
import { openBackup, readBackupBuffer } from './reader.js';

const repoRoot = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
const fixtures = path.resolve(repoRoot, '..', 'shared', 'nethsm', 'fixtures', 'backups');
const present = existsSync(path.join(fixtures, 'my_backup.bin'));
if (!present) console.warn(`backup fixtures absent at ${fixtures}: golden backup tests skipped`);

describe.skipIf(!present)(`firmware backup fixtures (${present ? 'present' : `SKIPPED: ${fixtures} absent`})`, () => {
  it('reads my_backup.bin (v0, production scrypt) into exactly my_backup.export.json', async () => {
    const expected = JSON.parse(readFileSync(path.join(fixtures, 'my_backup.export.json'), 'utf8')) as Record<string, string>;
    const reader = await openBackup(path.join(fixtures, 'my_backup.bin'), { passphrase: 'BackupPassphrase' });
    try {
      expect(reader.header.version).toBe(0);
      expect(reader.scrypt).toEqual(PRODUCTION_SCRYPT);
      expect(reader.header.deviceId).toBeUndefined();
      const got: Record<string, string> = { '.locked-domain-key': reader.header.lockedDomainKey.toString('base64') };
      let expectedOffset = reader.header.headerBytes;
      for await (const e of reader.entries()) {
        expect(e.offset).toBe(expectedOffset);
        expectedOffset += e.size;
        got[e.path] = e.value.toString('base64');
      }
      expect(got).toEqual(expected);
      expect(Object.keys(got)).toEqual(Object.keys(expected));
      expect(reader.bytesRead).toBe(readFileSync(path.join(fixtures, 'my_backup.bin')).length);
    } finally {
      await reader.close();
    }
  });

  it('reads v3.1_backup_full.bin (v0, test scrypt found by auto) and lists its namespace users', async () => {
    const buf = readFileSync(path.join(fixtures, 'v3.1_backup_full.bin'));
    const { header, entries, backupKey } = await readBackupBuffer(buf, { passphrase: 'backupPassphrase' });
    backupKey.fill(0);
    expect(header.version).toBe(0);
    const users = entries.filter((e) => e.path.startsWith('/authentication/')).map((e) => e.path.slice('/authentication/'.length));
    expect(users).toEqual(expect.arrayContaining(['namespace1~subadmin', 'namespace1~suboperator', 'namespace2~suboperator2']));
    expect(entries.map((e) => e.path)).toEqual(expect.arrayContaining(['/namespace/namespace1', '/namespace/namespace2']));
  });

  it('finds both firmware files in the order compareBackupPaths gives', async () => {
    for (const [file, passphrase] of [
      ['my_backup.bin', 'BackupPassphrase'],
      ['v3.1_backup_full.bin', 'backupPassphrase'],
    ] as const) {
      const scrypt = file === 'my_backup.bin' ? PRODUCTION_SCRYPT : TEST_SCRYPT;
      const { entries, backupKey } = await readBackupBuffer(readFileSync(path.join(fixtures, file)), { passphrase, scrypt });
      backupKey.fill(0);
      const paths = entries.map((e) => e.path);
      expect(paths.length).toBeGreaterThan(5);
      expect([...paths].sort(compareBackupPaths)).toEqual(paths);
    }
  });

  it('opens v3.1_backup_full.bin directly with the test parameters and refuses it with production only', async () => {
    const file = path.join(fixtures, 'v3.1_backup_full.bin');
    const reader = await openBackup(file, { passphrase: 'backupPassphrase', scrypt: TEST_SCRYPT });
    expect(reader.scrypt).toEqual(TEST_SCRYPT);
    await reader.close();
    await expect(openBackup(file, { passphrase: 'backupPassphrase', scrypt: PRODUCTION_SCRYPT })).rejects.toMatchObject({
      code: 'NHR_ERR_BACKUP_WRONG_PASSPHRASE',
    });
  });
});
