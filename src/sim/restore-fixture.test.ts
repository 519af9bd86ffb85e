import { describe, it, expect } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants, publicEncrypt } from 'node:crypto';
import { startSimulator } from './server.js';
import { TestHttp } from './test-http.js';
import { readBackupBuffer } from '../backup/reader.js';
import { gcmOpen, TEST_KDF } from './crypto.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = path.resolve(repoRoot, '..', 'shared', 'nethsm', 'fixtures', 'backups');
const myBackup = path.join(fixtures, 'my_backup.bin');
const v31Backup = path.join(fixtures, 'v3.1_backup_full.bin');
const present = existsSync(myBackup) && existsSync(v31Backup);
if (!present) console.warn(`skipping the firmware-fixture restore tests: ${fixtures} is absent`);

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
      // The file has no ip-config/log-config: the defaults (FACTS-system §4.4).
      expect((await http.req('GET', '/config/network', { auth: admin })).json()).toEqual({ ipAddress: '192.168.1.1', netmask: '255.255.255.0', gateway: '0.0.0.0' });
      expect((await http.req('GET', '/config/logging', { auth: admin })).json()).toEqual({ ipAddress: '0.0.0.0', port: 514, logLevel: 'info' });
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

describe.skipIf(!present)('restoring the firmware fixture v3.1_backup_full.bin (v0 with binary ip-config and log-config)', () => {
  const admin = { username: 'admin', password: 'test1Passphrase' };
  const network = { ipAddress: '192.168.42.42', netmask: '255.255.255.0', gateway: '192.168.42.1' };
  const logging = { ipAddress: '1.0.255.0', port: 514, logLevel: 'debug' };

  it('converts them as the firmware migration does; a backup of the result carries the v1 encoding, which restores again', async () => {
    const sim = await startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF });
    const http = new TestHttp(sim);
    let file: Buffer;
    try {
      const r = await http.restore(readFileSync(v31Backup), { backupPassphrase: 'backupPassphrase' });
      expect(r.status, r.text).toBe(204);
      expect((await http.req('POST', '/unlock', { json: { passphrase: 'unlockPassphrase' } })).status).toBe(204);
      expect((await http.req('GET', '/config/network', { auth: admin })).json()).toEqual(network);
      expect((await http.req('GET', '/config/logging', { auth: admin })).json()).toEqual(logging);
      const bk = { username: 'bk2', password: 'backupUser2Passphrase' };
      expect((await http.req('PUT', '/users/bk2', { auth: admin, json: { realName: 'b', role: 'Backup', passphrase: bk.password } })).status).toBe(201);
      file = await http.backup(bk);
      const { header, entries, backupKey } = await readBackupBuffer(file, { passphrase: 'backupPassphrase' });
      backupKey.fill(0);
      const local = (name: string): string => {
        const p = `/local/${header.deviceId}/config/${name}`;
        const e = entries.find((x) => x.path === p);
        expect(e, p).toBeDefined();
        return gcmOpen(header.configStoreKey!, p, e!.value).toString('latin1');
      };
      // Exactly the firmware's v1 bytes: the v0 gateway is kept as a gateway (never null), compact JSON, field order.
      expect(local('ip-config')).toBe('{"ipv4":{"cidr":"192.168.42.42/24","gateway":"192.168.42.1"}}');
      expect(local('log-config')).toBe('{"ipAddress":"1.0.255.0","port":514,"logLevel":"debug"}');
    } finally {
      await http.close();
      await sim.close();
    }
    // The simulator's v1 file restores into another device with the same network and logging config.
    const other = await startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF });
    const h2 = new TestHttp(other);
    try {
      expect((await h2.restore(file, { backupPassphrase: 'backupPassphrase' })).status).toBe(204);
      expect((await h2.req('POST', '/unlock', { json: { passphrase: 'unlockPassphrase' } })).status).toBe(204);
      expect((await h2.req('GET', '/config/network', { auth: admin })).json()).toEqual(network);
      expect((await h2.req('GET', '/config/logging', { auth: admin })).json()).toEqual(logging);
    } finally {
      await h2.close();
      await other.close();
    }
  });
});
