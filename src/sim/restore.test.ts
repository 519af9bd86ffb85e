import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createPublicKey, verify } from 'node:crypto';
import { startSimulator } from './server.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from './fixture.js';
import { TEST_KDF } from './crypto.js';
import { TestHttp } from './test-http.js';
import { readBackupBuffer } from '../backup/reader.js';
import { compareBackupPaths } from '../backup/writer.js';
import { createSelfSignedCertificate } from '../tls/self-signed.js';

const TEST = { backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF };

/** Everything a restore should carry over, read through the API. */
async function inventory(http: TestHttp, sim: ProvisionedSimulator): Promise<unknown> {
  const admin = sim.users.admin;
  const out: Record<string, unknown> = {};
  out['users'] = (await http.req('GET', '/users', { auth: admin })).json();
  out['namespaces'] = (await http.req('GET', '/namespaces', { auth: admin })).json();
  for (const [label, who] of [['root', admin], ...Object.entries(sim.nsUsers).map(([ns, u]) => [ns, u.admin] as const)] as const) {
    const ids = (await http.req('GET', '/keys', { auth: who })).json() as { id: string }[];
    for (const { id } of ids) {
      out[`${label}/${id}`] = (await http.req('GET', `/keys/${id}`, { auth: who })).json();
      const cert = await http.req('GET', `/keys/${id}/cert`, { auth: who });
      out[`${label}/${id}/cert`] = cert.status === 200 ? cert.body.toString('base64') : cert.status;
    }
  }
  out['operator-tags'] = (await http.req('GET', '/users/operator/tags', { auth: admin })).json();
  return out;
}

describe('backup and restore between simulators', () => {
  let a: ProvisionedSimulator;
  let http: TestHttp;
  let certDer: Buffer;
  beforeAll(async () => {
    a = await startProvisionedSimulator({ namespaces: ['ns1', 'ns2'] });
    http = new TestHttp(a);
    const admin = a.users.admin;
    const ok = async (p: Promise<{ status: number; text: string }>, status: number): Promise<void> => {
      const r = await p;
      expect(r.status, r.text).toBe(status);
    };
    await ok(http.req('POST', '/keys/generate', { auth: admin, json: { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'ec1', label: 'my label' } }), 201);
    await ok(http.req('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'ed1', restrictions: { tags: ['berlin'] } } }), 201);
    await ok(http.req('POST', '/keys/generate', { auth: admin, json: { type: 'Generic', mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'], length: 256, id: 'aes1' } }), 201);
    await ok(http.req('POST', '/keys/generate', { auth: a.nsUsers['ns1']!.admin, json: { type: 'EC_P384', mechanisms: ['ECDSA_Signature'], id: 'ec1' } }), 201);
    await ok(http.req('PUT', '/users/operator/tags/berlin', { auth: admin }), 204);
    certDer = Buffer.from((await createSelfSignedCertificate()).certPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    await ok(http.req('PUT', '/keys/ec1/cert', { auth: admin, body: certDer, headers: { 'content-type': 'application/octet-stream' } }), 201);
  });
  afterAll(async () => {
    await http.close();
    await a.close();
  });

  it('writes a version-1 file in the firmware order that the codec opens with the backup passphrase', async () => {
    expect((await http.req('POST', '/system/backup', { auth: a.users.admin })).status).toBe(403);
    expect((await http.req('POST', '/system/backup', { auth: a.nsUsers['ns1']!.admin })).status).toBe(403);
    const file = await http.backup(a.users.backup);
    const { header, entries, backupKey } = await readBackupBuffer(file, { passphrase: a.backupPassphrase, scrypt: TEST_KDF });
    backupKey.fill(0);
    expect(header.version).toBe(1);
    const info = (await http.req('GET', '/system/info', { auth: a.users.admin })).json() as { deviceId: string };
    expect(header.deviceId).toBe(info.deviceId);
    const paths = entries.map((e) => e.path);
    expect(paths).toEqual([...paths].sort(compareBackupPaths));
    expect(paths).toEqual(expect.arrayContaining(['/config/version', '/key/ec1', '/key/.ns1/ec1', '/namespace/ns1', '/authentication/ns1~admin', `/local/${info.deviceId}/domain-key/attended`]));
  });

  it('restores into a fresh simulator with identical users, keys, namespaces and certificates, and the keys work', async () => {
    const before = await inventory(http, a);
    const file = await http.backup(a.users.backup);
    const b = await startSimulator(TEST);
    const hb = new TestHttp(b);
    try {
      expect((await hb.restore(file, {})).json()).toEqual({ message: 'No backupPassphrase provided' });
      const r = await hb.restore(file, { backupPassphrase: a.backupPassphrase });
      expect(r.status, r.text).toBe(204);
      expect((await hb.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
      expect((await hb.req('POST', '/unlock', { json: { passphrase: a.unlockPassphrase } })).status).toBe(204);
      const bsim = { ...a, ...b } as ProvisionedSimulator;
      expect(await inventory(hb, bsim)).toEqual(before);
      // A signature made on B verifies with A's public key.
      const pem = (await http.req('GET', '/keys/ed1/public.pem', { auth: a.users.operator })).text;
      const msg = Buffer.from('hello');
      const sig = await hb.req('POST', '/keys/ed1/sign', { auth: a.users.operator, json: { mode: 'EdDSA', message: msg.toString('base64') } });
      expect(sig.status, sig.text).toBe(200);
      expect(verify(null, msg, createPublicKey(pem), Buffer.from((sig.json() as { signature: string }).signature, 'base64'))).toBe(true);
      // Namespaced users log in and see their keys.
      expect((await hb.req('GET', '/keys', { auth: a.nsUsers['ns1']!.operator })).json()).toEqual([{ id: 'ec1' }]);
      // And B's own backups open with the same passphrase.
      const again = await hb.backup(a.users.backup);
      const opened = await readBackupBuffer(again, { passphrase: a.backupPassphrase, scrypt: TEST_KDF });
      opened.backupKey.fill(0);
      expect(opened.entries.some((e) => e.path === '/key/.ns1/ec1')).toBe(true);
    } finally {
      await hb.close();
      await b.close();
    }
  });
});

describe('partial restore (Operational)', () => {
  it('replaces users, keys and namespaces, removes what the file lacks, and stays Operational with the same domain key', async () => {
    const sim = await startProvisionedSimulator({ namespaces: ['ns1'] });
    const http = new TestHttp(sim);
    try {
      const admin = sim.users.admin;
      await http.req('POST', '/keys/generate', { auth: admin, json: { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'kept' } });
      const file = await http.backup(sim.users.backup);
      await http.req('POST', '/keys/generate', { auth: admin, json: { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'later' } });
      await http.req('PUT', '/namespaces/ns9', { auth: admin });
      await http.req('PUT', '/users/late', { auth: admin, json: { realName: 'l', role: 'Operator', passphrase: 'latePassphrase' } });
      await http.req('DELETE', '/keys/kept', { auth: admin });
      expect((await http.restore(file, {})).status).toBe(401);
      expect((await http.restore(file, {}, sim.nsUsers['ns1']!.admin)).status).toBe(403);
      const r = await http.restore(file, {}, admin); // same backup salt: no passphrase needed (§7.3)
      expect(r.status, r.text).toBe(204);
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Operational' });
      expect((await http.req('GET', '/keys', { auth: admin })).json()).toEqual([{ id: 'kept' }]);
      expect((await http.req('GET', '/namespaces', { auth: admin })).json()).toEqual([{ id: 'ns1' }]);
      expect(((await http.req('GET', '/users', { auth: admin })).json() as { user: string }[]).map((u) => u.user)).not.toContain('late');
    } finally {
      await http.close();
      await sim.close();
    }
  });

  it('goes Locked when the locked domain key differs, and unlocks with the backup-time passphrase', async () => {
    const sim = await startProvisionedSimulator();
    const http = new TestHttp(sim);
    try {
      const admin = sim.users.admin;
      await http.req('PUT', '/config/unattended-boot', { auth: admin, json: { status: 'on' } });
      const file = await http.backup(sim.users.backup);
      const change = await http.req('PUT', '/config/unlock-passphrase', { auth: admin, json: { newPassphrase: 'newUnlockPassphrase', currentPassphrase: sim.unlockPassphrase } });
      expect(change.status).toBe(204);
      expect((await http.restore(file, { backupPassphrase: sim.backupPassphrase }, admin)).status).toBe(204);
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
      expect((await http.req('POST', '/unlock', { json: { passphrase: 'newUnlockPassphrase' } })).status).toBe(403);
      await new Promise((r) => setTimeout(r, 1050)); // the unlock rate limit
      expect((await http.req('POST', '/unlock', { json: { passphrase: sim.unlockPassphrase } })).status).toBe(204);
      expect((await http.req('GET', '/config/unattended-boot', { auth: admin })).json()).toEqual({ status: 'off' });
    } finally {
      await http.close();
      await sim.close();
    }
  });
});

describe('restore errors', () => {
  let sim: ProvisionedSimulator;
  let http: TestHttp;
  let file: Buffer;
  beforeAll(async () => {
    sim = await startProvisionedSimulator();
    http = new TestHttp(sim);
    await http.req('POST', '/keys/generate', { auth: sim.users.admin, json: { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'k1' } });
    file = await http.backup(sim.users.backup);
  });
  afterAll(async () => {
    await http.close();
    await sim.close();
  });

  async function expectUnchanged(): Promise<void> {
    expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Operational' });
    expect((await http.req('GET', '/keys', { auth: sim.users.admin })).json()).toEqual([{ id: 'k1' }, { id: 'k2' }]);
  }

  it('answers the firmware messages and leaves the device as it was', async () => {
    const admin = sim.users.admin;
    await http.req('POST', '/keys/generate', { auth: admin, json: { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'k2' } });
    const msg = async (body: Buffer, args: unknown): Promise<string> => {
      const r = await http.restore(body, args, admin);
      expect(r.status, r.text).toBe(400);
      return (r.json() as { message: string }).message;
    };
    expect(await msg(file, { backupPassphrase: 'wrongPassphrase' })).toBe('Could not decrypt backup-version, authentication failed. Is the passphrase correct?');
    expect(await msg(Buffer.from('hello, not a backup at all'), { backupPassphrase: sim.backupPassphrase })).toBe('Not a NetHSM backup file');
    expect(await msg(file, { backupPassphrase: sim.backupPassphrase, extra: 1 })).toBe('Invalid data for JSON schema: Json.restore_req.');
    expect(await msg(file, JSON.stringify({ backupPassphrase: 'x'.repeat(1100) }))).toBe('Meta data is too large.');
    // The firmware's timestamp decoder answers without the JSON-schema prefix (FACTS-system §6.4).
    expect(await msg(file, { backupPassphrase: sim.backupPassphrase, systemTime: '2024-01-01T00:00:00+02:00' })).toBe('Error while parsing timestamp. Offset must be 0.');
    expect(await msg(file, { backupPassphrase: sim.backupPassphrase, systemTime: '2024-01-01T00:00:00' })).toBe('Failed to decode timestamp: unexpected end of input at position 18 to 18.');
    // A flipped byte in the last entry: authentication fails at the end, nothing is applied.
    const corrupt = Buffer.from(file);
    const at = corrupt.length - 19 - 3 - 20;
    corrupt[at] = corrupt[at]! ^ 0x55;
    expect(await msg(corrupt, { backupPassphrase: sim.backupPassphrase })).toMatch(/^Could not decrypt/);
    // Cut short inside the entries: "Unexpected end of data", nothing applied (k2 is not in the file and must survive).
    expect(await msg(file.subarray(0, file.length - 40), { backupPassphrase: sim.backupPassphrase })).toBe('Unexpected end of data');
    await expectUnchanged();
  });

  it('applies a file whose trailer is wrong without the removal step and says it was truncated', async () => {
    const admin = sim.users.admin;
    const bad = Buffer.from(file);
    bad[bad.length - 1] = 0x21;
    const r = await http.restore(bad, { backupPassphrase: sim.backupPassphrase }, admin);
    expect(r.status).toBe(400);
    expect(r.json()).toEqual({ message: 'The backup file was truncated. Present keys were still restored.' });
    await expectUnchanged(); // k2 (absent from the file) was not removed
  });

  it('is refused while Locked (412) and needs multipart parts', async () => {
    const admin = sim.users.admin;
    // No Content-Type at all: 415 with an empty body (FACTS-system §6.5); a multipart body without parts: 400.
    const none = await http.req('POST', '/system/restore', { auth: admin });
    expect(none.status).toBe(415);
    expect(none.text).toBe('');
    const empty = await http.req('POST', '/system/restore', { auth: admin, body: '--b--\r\n', headers: { 'content-type': 'multipart/form-data; boundary=b' } });
    expect(empty.status).toBe(400);
    await http.req('POST', '/lock', { auth: admin });
    expect((await http.restore(file, {}, admin)).status).toBe(412);
    expect((await http.req('POST', '/unlock', { json: { passphrase: sim.unlockPassphrase } })).status).toBe(204);
  });
});

describe('one restore at a time', () => {
  it('refuses a second restore while one is running', async () => {
    const src = await startProvisionedSimulator();
    const hs = new TestHttp(src);
    for (let i = 0; i < 5; i++) await hs.req('PUT', `/namespaces/n${i}`, { auth: src.users.admin });
    const file = await hs.backup(src.users.backup);
    await hs.close();
    await src.close();
    const sim = await startSimulator({ ...TEST, latency: { 'restore-per-entry': 100 } });
    const http = new TestHttp(sim);
    try {
      const first = http.restore(file, { backupPassphrase: src.backupPassphrase });
      await new Promise((r) => setTimeout(r, 300));
      const second = await http.restore(file, { backupPassphrase: src.backupPassphrase });
      expect(second.status).toBe(500);
      expect((await first).status).toBe(204);
    } finally {
      await http.close();
      await sim.close();
    }
  });
});
