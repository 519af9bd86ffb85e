/**
 * Every client method against the simulator over real HTTPS: the happy path and a typical refusal.
 * (Transport, TLS and error-mapping details: transport.test.ts. Large streamed backups: backup-stream.test.ts.)
 */
import { constants, createHash, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes, verify } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetHsmHttpError, OutputExistsError, TlsPinMismatchError } from '../errors.js';
import { TEST_SCRYPT } from '../backup/format.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { startSimulator } from '../sim/server.js';
import { NetHsmClient } from './client.js';
import { tapBytes } from '../util/byte-tap.js';

/** This process's open descriptors on `file` (Linux /proc): none may stay on a backup's file after a cut. */
async function openFdsOn(file: string): Promise<string[]> {
  const fds = await readdir('/proc/self/fd');
  const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
  return targets.filter((t) => t.startsWith(file));
}

async function waitUntil(ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    if (err instanceof NetHsmHttpError) return err.status;
    throw err;
  }
  throw new Error('expected a NetHSM error');
}

let sim: ProvisionedSimulator;
let root: NetHsmClient;
let admin: NetHsmClient;
let operator: NetHsmClient;
let dir: string;

beforeAll(async () => {
  sim = await startProvisionedSimulator({ namespaces: ['ns1'] });
  root = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
  admin = root.withAuth(sim.users.admin.username, sim.users.admin.password);
  operator = root.withAuth(sim.users.operator.username, sim.users.operator.password);
  dir = await mkdtemp(path.join(tmpdir(), 'nhr-client-'));
});
afterAll(async () => {
  await root?.close();
  await sim?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('state, health and system', () => {
  it('reads info, state, readiness and liveness', async () => {
    expect(await root.info()).toEqual({ vendor: 'Nitrokey GmbH', product: 'NetHSM' });
    expect(await root.healthState()).toBe('Operational');
    expect(await root.healthReady()).toBe(true);
    expect(await root.healthAlive()).toBe(false);
  });

  it('provisions an Unprovisioned device, and refuses to provision twice (412)', async () => {
    const fresh = await startSimulator({ backupScrypt: TEST_SCRYPT, unlockScrypt: TEST_SCRYPT });
    const c = new NetHsmClient({ url: fresh.url, tls: { caPem: fresh.certPem } });
    try {
      const body = { unlockPassphrase: 'unlockPassphrase', adminPassphrase: 'adminPassphrase', systemTime: '2025-01-01T00:00:00Z' };
      await c.provision(body);
      expect(await c.healthState()).toBe('Operational');
      expect(await statusOf(c.provision(body))).toBe(412);
    } finally {
      await c.close();
      await fresh.close();
    }
  });

  it('locks and unlocks; a wrong unlock passphrase is 403', async () => {
    await admin.lock();
    expect(await root.healthState()).toBe('Locked');
    expect(await statusOf(root.unlock('wrongUnlockPassphrase'))).toBe(403);
    await new Promise((r) => setTimeout(r, 1100)); // the firmware's one-second unlock rate limit
    await root.unlock(sim.unlockPassphrase);
    expect(await root.healthState()).toBe('Operational');
  });

  it('reads metrics as the Metrics user; others get 403', async () => {
    const metrics = await root.withAuth(sim.users.metrics.username, sim.users.metrics.password).metrics();
    expect(Object.values(metrics).every((v) => typeof v === 'string')).toBe(true);
    expect(await statusOf(admin.metrics())).toBe(403);
  });

  it('draws random bytes as an Operator; a length of 0 is 400', async () => {
    expect(await operator.random(32)).toHaveLength(32);
    expect(await statusOf(operator.random(0))).toBe(400);
  });

  it('reads and sets unattended boot and system info; an Operator gets 403', async () => {
    expect(await admin.getUnattendedBoot()).toBe(false);
    await admin.setUnattendedBoot(true);
    expect(await admin.getUnattendedBoot()).toBe(true);
    await admin.setUnattendedBoot(false);
    expect((await admin.systemInfo()).deviceId).toMatch(/\S/);
    expect(await statusOf(operator.systemInfo())).toBe(403);
    expect(await statusOf(operator.setUnattendedBoot(true))).toBe(403);
  });

  it('changes the backup passphrase; a wrong current passphrase is 403', async () => {
    expect(await statusOf(admin.setBackupPassphrase('newBackupPassphrase', 'wrongPassphrase'))).toBe(403);
    await admin.setBackupPassphrase('newBackupPassphrase', sim.backupPassphrase);
    await admin.setBackupPassphrase(sim.backupPassphrase, 'newBackupPassphrase');
  });

  it('generates a new TLS key: new connections then present a new certificate (the old pin fails), bad input is 400', async () => {
    const fresh = await startProvisionedSimulator();
    const oldPin = fresh.fingerprint256;
    const a = new NetHsmClient({ url: fresh.url, tls: { fingerprint256: oldPin }, auth: fresh.users.admin });
    try {
      expect(await statusOf(a.generateTls({ type: 'RSA' }))).toBe(400);
      await a.generateTls({ type: 'EC_P384' });
      expect(fresh.fingerprint256).not.toBe(oldPin);
      const stale = new NetHsmClient({ url: fresh.url, tls: { fingerprint256: oldPin }, auth: fresh.users.admin });
      await expect(stale.systemInfo()).rejects.toThrow(TlsPinMismatchError);
      await stale.close();
      const repinned = new NetHsmClient({ url: fresh.url, tls: { fingerprint256: fresh.fingerprint256 }, auth: fresh.users.admin });
      expect((await repinned.systemInfo()).softwareVersion).toBe('5.0');
      await repinned.close();
    } finally {
      await a.close();
      await fresh.close();
    }
  });
});

describe('keys', () => {
  it('generates, gets, lists (filter, label, prefix) and deletes keys', async () => {
    expect(await admin.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'ed1', label: 'edkey' })).toBe('ed1');
    const gen = await admin.generateKey({ type: 'EC_P384', mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['nowhere'] } });
    expect(gen).toMatch(/^[0-9a-f]{20}$/);
    expect(await admin.getKey('ed1')).toMatchObject({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], label: 'edkey', operations: 0 });
    // `gen`'s id is random hex: one in 256 starts with 'ed' too (that failed a CI run), so it is left out here.
    expect((await admin.listKeys({ prefix: 'ed' })).filter((k) => k !== gen)).toEqual(['ed1']);
    expect(await admin.listKeys({ label: 'edkey' })).toEqual(['ed1']);
    expect(await admin.listKeys()).toEqual(expect.arrayContaining(['ed1', gen]));
    // `filter` keeps only what the Operator may use: the key restricted to tag `nowhere` is dropped.
    expect(await operator.listKeys({ filter: '' })).not.toContain(gen);
    await admin.deleteKey(gen);
    expect(await statusOf(admin.getKey(gen))).toBe(404);
    expect(await statusOf(admin.deleteKey(gen))).toBe(404);
    expect(await statusOf(admin.generateKey({ type: 'RSA', mechanisms: ['RSA_Signature_PKCS1'], length: 128 }))).toBe(400);
  });

  it('imports JSON under a given and a generated id; an existing id is 400', async () => {
    const data = randomBytes(16).toString('base64');
    const body = { type: 'Generic' as const, mechanisms: ['AES_Encryption_CBC' as const, 'AES_Decryption_CBC' as const], private: { data } };
    expect(await admin.importKey(body, 'aes1')).toBe('aes1');
    expect(await admin.importKey(body)).toMatch(/^[0-9a-f]{20}$/);
    const err = (await admin.importKey(body, 'aes1').catch((e: unknown) => e)) as NetHsmHttpError;
    expect(err.status).toBe(400);
    expect(err.nethsmMessage).toMatch(/already exists/);
  });

  it('imports a PEM key, decrypts RSA-OAEP and signs PKCS#1 with it; a missing mechanism is 400', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await admin.importKeyPem({ mechanisms: ['RSA_Decryption_OAEP_SHA256', 'RSA_Signature_PKCS1'] }, pem, 'rsa1');
    expect(await operator.publicKeyPem('rsa1')).toBe(publicKey.export({ type: 'spki', format: 'pem' }).toString());
    const secret = randomBytes(24);
    const ct = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, secret);
    expect(await operator.decrypt('rsa1', 'OAEP_SHA256', ct)).toEqual(secret);
    // PKCS1 signs the DigestInfo the caller supplies.
    const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), createHash('sha256').update('m').digest()]);
    const sig = await operator.sign('rsa1', 'PKCS1', digestInfo);
    expect(verify('sha256', Buffer.from('m'), publicKey, sig)).toBe(true);
    expect(await statusOf(operator.decrypt('rsa1', 'PKCS1', ct))).toBe(400);
    const generated = await admin.importKeyPem({ mechanisms: ['RSA_Signature_PKCS1'] }, pem);
    expect(generated).toMatch(/^[0-9a-f]{20}$/);
  });

  it('encrypts and decrypts AES-CBC, with and without a given IV; no IV on decrypt is 400', async () => {
    const msg = randomBytes(48);
    const iv = randomBytes(16);
    const a = await operator.encrypt('aes1', 'AES_CBC', msg, iv);
    expect(a.iv).toEqual(iv);
    expect(await operator.decrypt('aes1', 'AES_CBC', a.encrypted, iv)).toEqual(msg);
    const b = await operator.encrypt('aes1', 'AES_CBC', msg);
    expect(await operator.decrypt('aes1', 'AES_CBC', b.encrypted, b.iv)).toEqual(msg);
    expect(await statusOf(operator.decrypt('aes1', 'AES_CBC', a.encrypted))).toBe(400);
  });

  it('signs EdDSA and makes a CSR; an Administrator cannot sign (403)', async () => {
    const pub = createPublicKey(await operator.publicKeyPem('ed1'));
    const sig = await operator.sign('ed1', 'EdDSA', Buffer.from('hello'));
    expect(verify(null, Buffer.from('hello'), pub, sig)).toBe(true);
    expect(await operator.csr('ed1', { commonName: 'nethsm.example' })).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----/);
    expect(await statusOf(admin.sign('ed1', 'EdDSA', Buffer.from('hello')))).toBe(403);
    expect(await statusOf(operator.csr('aes1', { commonName: 'x' }))).toBe(400);
  });

  it('puts, gets and deletes certificates; a second put is 409 and no certificate reads as null', async () => {
    const cert = randomBytes(2000);
    expect(await admin.getCert('ed1')).toBeNull();
    await admin.putCert('ed1', cert);
    expect(await statusOf(admin.putCert('ed1', cert))).toBe(409);
    expect(await operator.getCert('ed1')).toEqual({ contentType: 'application/octet-stream', data: cert });
    await admin.deleteCert('ed1');
    expect(await admin.getCert('ed1')).toBeNull();
    expect(await statusOf(admin.getCert('nokey'))).toBe(404);
    expect(await statusOf(admin.deleteCert('ed1'))).toBe(404);
  });

  it('adds and removes key tags and labels; an Operator may not (403)', async () => {
    await admin.addKeyTag('ed1', 'berlin');
    await admin.addKeyTag('ed1', 'berlin');
    expect((await admin.getKey('ed1')).restrictions).toEqual({ tags: ['berlin'] });
    await admin.removeKeyTag('ed1', 'berlin');
    expect(await statusOf(admin.removeKeyTag('ed1', 'berlin'))).toBe(404);
    await admin.setKeyLabel('ed1', 'renamed');
    expect((await admin.getKey('ed1')).label).toBe('renamed');
    await admin.removeKeyLabel('ed1');
    expect((await admin.getKey('ed1')).label).toBeUndefined();
    expect(await statusOf(operator.setKeyLabel('ed1', 'x'))).toBe(403);
    expect(await statusOf(admin.setKeyLabel('ed1', 'x'.repeat(33)))).toBe(400);
  });

  it('moves a key with its operations counter; an existing target is 409', async () => {
    const ops = (await admin.getKey('aes1')).operations;
    expect(ops).toBeGreaterThan(0);
    expect(await admin.moveKey('aes1', 'aes-moved')).toBe('aes-moved');
    expect((await admin.getKey('aes-moved')).operations).toBe(ops);
    expect(await statusOf(admin.moveKey('aes-moved', 'ed1'))).toBe(409);
  });
});

describe('users and namespaces', () => {
  it('creates users by PUT, POST and POST ns~, reads, lists and deletes them', async () => {
    expect(await admin.createUser({ realName: 'U1', role: 'Operator', passphrase: 'u1Passphrase' }, 'u1')).toBe('u1');
    const gen = await admin.createUser({ realName: 'U2', role: 'Metrics', passphrase: 'u2Passphrase' });
    expect(gen).toMatch(/^[0-9a-f]{20}$/);
    expect(await admin.getUser('u1')).toEqual({ realName: 'U1', role: 'Operator' });
    expect(await admin.listUsers()).toEqual(expect.arrayContaining(['admin', 'u1', gen, 'ns1~admin']));
    await admin.deleteUser(gen);
    expect(await statusOf(admin.getUser(gen))).toBe(404);
    expect(await statusOf(admin.createUser({ realName: 'U1', role: 'Operator', passphrase: 'u1Passphrase' }, 'u1'))).toBe(409);
    // POST /users/ns~ while ns does not exist yet (root may), then 403 once it exists.
    const nsUser = await admin.createUser({ realName: 'N', role: 'Administrator', passphrase: 'nsPassphrase' }, 'ns2~');
    expect(nsUser).toMatch(/^ns2~[0-9a-f]{20}$/);
    await admin.createNamespace('ns2');
    expect(await statusOf(admin.createUser({ realName: 'N', role: 'Operator', passphrase: 'nsPassphrase' }, 'ns2~'))).toBe(403);
    expect(await statusOf(admin.deleteUser('admin'))).toBe(400);
  });

  it('manages user tags and passphrases; tags on a non-Operator are 400', async () => {
    await admin.addUserTag('u1', 'berlin');
    await admin.addUserTag('u1', 'munich');
    expect(await admin.getUserTags('u1')).toEqual(['berlin', 'munich']);
    await admin.removeUserTag('u1', 'munich');
    expect(await admin.getUserTags('u1')).toEqual(['berlin']);
    expect(await statusOf(admin.addUserTag('admin', 'berlin'))).toBe(400);
    const u1 = root.withAuth('u1', 'u1Passphrase');
    await u1.setUserPassphrase('u1', 'u1NewPassphrase');
    expect(await root.withAuth('u1', 'u1NewPassphrase').getUser('u1')).toEqual({ realName: 'U1', role: 'Operator' });
    expect(await statusOf(admin.setUserPassphrase('u1', 'short'))).toBe(400);
  });

  it('lists, creates and deletes namespaces; an existing one is 400 and a namespaced admin gets 403', async () => {
    expect(await admin.listNamespaces()).toEqual(['ns1', 'ns2']);
    await admin.createNamespace('ns3');
    expect(await statusOf(admin.createNamespace('ns3'))).toBe(400);
    await admin.deleteNamespace('ns3');
    expect(await statusOf(admin.deleteNamespace('ns3'))).toBe(404);
    const nsAdmin = root.withAuth(sim.nsUsers.ns1!.admin.username, sim.nsUsers.ns1!.admin.password);
    expect(await statusOf(nsAdmin.listNamespaces())).toBe(403);
  });
});

describe('backup and restore', () => {
  it('writes a backup file with mode 0600; an existing file is refused and a failed backup leaves no file', async () => {
    const backup = root.withAuth(sim.users.backup.username, sim.users.backup.password);
    const file = path.join(dir, 'b1.bin');
    const size = await backup.backupToFile(file);
    const st = await stat(file);
    expect(st.size).toBe(size);
    expect(st.mode & 0o777).toBe(0o600);
    expect((await readFile(file)).subarray(-19).toString()).toBe('_NETHSM_BACKUP_END_');
    await expect(backup.backupToFile(file)).rejects.toBeInstanceOf(OutputExistsError);
    const refused = path.join(dir, 'refused.bin');
    expect(await statusOf(admin.backupToFile(refused))).toBe(403);
    await expect(stat(refused)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  // Before: backupToFile took no signal; a stalled backup held its caller (a stopping daemon) until the device answered.
  it('cuts a backup stalled before its answer when its signal aborts: rejects with the reason, no file, no descriptor', async () => {
    const backup = root.withAuth(sim.users.backup.username, sim.users.backup.password);
    const file = path.join(dir, 'cut-headers.bin');
    const hold = sim.hold({ method: 'POST', path: /\/system\/backup$/ });
    try {
      const stop = new AbortController();
      const reason = new Error('the daemon is stopping');
      const tap = tapBytes(async (bytes) => {
        for await (const _ of bytes) void _;
      });
      const taken = backup.backupToFile(file, tap, stop.signal).catch((e: unknown) => e);
      await hold.waitFor(1);
      stop.abort(reason);
      expect(await taken).toBe(reason);
      await expect(tap.result).rejects.toBe(reason);
      await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await openFdsOn(file)).toEqual([]);
      // The cut closed the connection: the held request is dropped, never served.
      await waitUntil(() => hold.held() === 0);
    } finally {
      hold.close();
    }
  });

  it('cuts a backup in the middle of its body when its signal aborts; an aborted signal creates nothing', async () => {
    const backup = root.withAuth(sim.users.backup.username, sim.users.backup.password);
    const file = path.join(dir, 'cut-body.bin');
    const stop = new AbortController();
    const reason = new Error('the daemon is stopping');
    let firstChunk: () => void = () => undefined;
    const gotChunk = new Promise<void>((r) => (firstChunk = r));
    // A reader that takes one chunk and then waits: back-pressure stalls the body mid-way (one chunk in flight).
    const tap = tapBytes(async (bytes) => {
      for await (const _ of bytes) {
        void _;
        firstChunk();
        await new Promise<void>(() => undefined);
      }
    });
    const taken = backup.backupToFile(file, tap, stop.signal).catch((e: unknown) => e);
    await gotChunk;
    stop.abort(reason);
    expect(await taken).toBe(reason);
    await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await openFdsOn(file)).toEqual([]);
    // Already aborted: rejects before a file exists or the device is asked.
    const backupsBefore = sim.backups;
    await expect(backup.backupToFile(file, undefined, stop.signal)).rejects.toBe(reason);
    await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(sim.backups).toBe(backupsBefore);
    // The pool still serves after the cuts.
    expect(await backup.backupToFile(file)).toBeGreaterThan(0);
  });

  it('restores from a file and from an async iterable, bringing back what was deleted', async () => {
    const backup = root.withAuth(sim.users.backup.username, sim.users.backup.password);
    const file = path.join(dir, 'b2.bin');
    await backup.backupToFile(file);
    await admin.deleteKey('ed1');
    // Contained, not equal: a key generated with a random hex id earlier in this file may start with 'ed' too.
    expect(await admin.listKeys({ prefix: 'ed' })).not.toContain('ed1');
    await admin.restore(file, { backupPassphrase: sim.backupPassphrase });
    expect(await admin.listKeys({ prefix: 'ed' })).toContain('ed1');

    await admin.deleteKey('ed1');
    async function* chunks(): AsyncGenerator<Uint8Array> {
      for await (const c of createReadStream(file, { highWaterMark: 1000 })) yield c as Buffer;
    }
    expect(await admin.listKeys({ prefix: 'ed' })).not.toContain('ed1');
    await admin.restore(chunks(), { backupPassphrase: sim.backupPassphrase });
    expect(await admin.listKeys({ prefix: 'ed' })).toContain('ed1');
  });

  it('refuses a restore with a wrong passphrase (400), of a file that is not a backup (400), or of a missing file', async () => {
    const file = path.join(dir, 'b2.bin');
    const wrong = (await admin.restore(file, { backupPassphrase: 'wrongPassphrase' }).catch((e: unknown) => e)) as NetHsmHttpError;
    expect(wrong.status).toBe(400);
    expect(wrong.message).not.toContain('wrongPassphrase');
    const junk = path.join(dir, 'junk.bin');
    await writeFile(junk, randomBytes(1000));
    expect(await statusOf(admin.restore(junk, { backupPassphrase: sim.backupPassphrase }))).toBe(400);
    expect(await statusOf(operator.restore(file, { backupPassphrase: sim.backupPassphrase }))).toBe(403);
    await expect(admin.restore(path.join(dir, 'absent.bin'), { backupPassphrase: sim.backupPassphrase })).rejects.toThrow(/absent\.bin cannot be read \(ENOENT\)/);
  });

  it('streams the backup body to the caller', async () => {
    const backup = root.withAuth(sim.users.backup.username, sim.users.backup.password);
    const stream = await backup.backup();
    let n = 0;
    for await (const c of stream) n += (c as Buffer).length;
    expect(n).toBeGreaterThan(1000);
    expect(await statusOf(admin.backup())).toBe(403);
  });
});
