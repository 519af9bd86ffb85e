import { describe, it, expect } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants, publicEncrypt } from 'node:crypto';
import { startSimulator } from './server.js';
import { TestHttp } from './test-http.js';
import { readBackupBuffer } from '../backup/reader.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = path.resolve(repoRoot, '..', 'shared', 'nethsm', 'fixtures', 'backups');
const myBackup = path.join(fixtures, 'my_backup.bin');
const present = existsSync(myBackup);
if (!present) console.warn(`skipping the firmware-fixture restore test: ${myBackup} is absent`);

describe.skipIf(!present)('restoring the firmware fixture my_backup.bin (v0, production scrypt)', () => {
  it('restores while Unprovisioned, unlocks with unlockPassphrase, and the operator decrypts with keyID (PKCS1)', async () => {
    // Production scrypt for both KDFs: the file and its unlock passphrase were made with them.
    const sim = await startSimulator();
    const http = new TestHttp(sim);
    try {
      const r = await http.restore(readFileSync(myBackup), { backupPassphrase: 'BackupPassphrase' });
      expect(r.status, r.text).toBe(204);
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
      expect((await http.req('POST', '/unlock', { json: { passphrase: 'unlockPassphrase' } })).status).toBe(204);
      const operator = { username: 'operator', password: 'test2Passphrase' };
      expect((await http.req('GET', '/keys', { auth: operator })).json()).toEqual([{ id: 'keyID' }]);
      const view = (await http.req('GET', '/keys/keyID', { auth: operator })).json() as { type: string; mechanisms: string[] };
      expect(view.type).toBe('RSA');
      expect(view.mechanisms).toEqual(['RSA_Decryption_PKCS1']);
      const pem = (await http.req('GET', '/keys/keyID/public.pem', { auth: operator })).text;
      const message = Buffer.from('replicate me, please');
      const encrypted = publicEncrypt({ key: pem, padding: constants.RSA_PKCS1_PADDING }, message);
      const dec = await http.req('POST', '/keys/keyID/decrypt', { auth: operator, json: { mode: 'PKCS1', encrypted: encrypted.toString('base64') } });
      expect(dec.status, dec.text).toBe(200);
      expect(Buffer.from((dec.json() as { decrypted: string }).decrypted, 'base64')).toEqual(message);
      const admin = { username: 'admin', password: 'test1Passphrase' };
      expect((await http.req('GET', '/users/operator/tags', { auth: admin })).json()).toEqual(['berlin']);
      // The v0 backup key was migrated at unlock: a new backup (v1) opens with the fixture's backup passphrase.
      const backupUser = { username: 'bk2', password: 'backupUser2Passphrase' };
      expect((await http.req('PUT', '/users/bk2', { auth: admin, json: { realName: 'b', role: 'Backup', passphrase: backupUser.password } })).status).toBe(201);
      const file = await http.backup(backupUser);
      const { header, entries, backupKey } = await readBackupBuffer(file, { passphrase: 'BackupPassphrase' });
      backupKey.fill(0);
      expect(header.version).toBe(1);
      expect(entries.map((e) => e.path)).toContain('/key/keyID');
      expect(entries.find((e) => e.path === '/config/version')?.value.toString()).toBe('1');
    } finally {
      await http.close();
      await sim.close();
    }
  });
});
