/**
 * The conformance suite: the NetHSM rules the replicator relies on, asserted through the project's client.
 * It runs against the simulator always and against the real firmware (`nitrokey/nethsm:testing`) when Docker is
 * reachable, which is what shows the simulator answers like the firmware. The steps build on each other, so they run
 * in order on one fresh, Unprovisioned device.
 */
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetHsmHttpError, isRetryable } from '../../src/errors.js';
import { NetHsmClient, type TlsTrust } from '../../src/nethsm/client.js';

export interface ConformanceTarget {
  /** `https://host:port` of an Unprovisioned device. */
  url: string;
  tls: TlsTrust;
  /** Stops the device (idempotent). */
  close(): Promise<void>;
}

const UNLOCK = 'unlockPassphrase';
const ADMIN = 'adminPassphrase';
const OPERATOR = 'operatorPassphrase';
const BACKUP_PASSPHRASE = 'backupPassphrase1';

/** The NetHSM's answer status for a failing call (throws when the call succeeds or fails otherwise). */
async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    if (err instanceof NetHsmHttpError) return err.status;
    throw err;
  }
  throw new Error('expected the NetHSM to refuse, but it answered with success');
}

async function errorOf(p: Promise<unknown>): Promise<NetHsmHttpError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof NetHsmHttpError) return err;
    throw err;
  }
  throw new Error('expected the NetHSM to refuse, but it answered with success');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Past the firmware's one-second rate-limit window after a failed login or unlock. */
const pastRateLimit = () => sleep(1100);

export function runConformance(name: string, target: () => Promise<ConformanceTarget>): void {
  describe(`NetHSM conformance: ${name}`, () => {
    let t: ConformanceTarget;
    let anon: NetHsmClient;
    let admin: NetHsmClient;
    let operator: NetHsmClient;
    let dir: string;

    beforeAll(async () => {
      t = await target();
      anon = new NetHsmClient({ url: t.url, tls: t.tls, timeoutMs: 60_000 });
      admin = anon.withAuth('admin', ADMIN);
      operator = anon.withAuth('operator', OPERATOR);
      dir = await mkdtemp(path.join(tmpdir(), 'nhr-conformance-'));
    });
    afterAll(async () => {
      await anon?.close();
      await t?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    describe('in order', () => {
      it('is Unprovisioned: state, alive/ready, info, and 412 before any authentication check', async () => {
        expect(await anon.healthState()).toBe('Unprovisioned');
        expect(await anon.healthAlive()).toBe(true);
        expect(await anon.healthReady()).toBe(false);
        expect(await anon.info()).toEqual({ vendor: 'Nitrokey GmbH', product: 'NetHSM' });
        const e = await errorOf(anon.listKeys());
        expect(e.status).toBe(412);
        expect(e.retryable).toBe(true);
        expect(await statusOf(anon.withAuth('admin', 'wrong-password').listKeys())).toBe(412);
      });

      it('refuses a provision with a non-UTC system time or a short passphrase, then provisions to Operational', async () => {
        const body = { unlockPassphrase: UNLOCK, adminPassphrase: ADMIN, systemTime: '2024-01-01T00:00:00+01:00' };
        expect(await statusOf(anon.provision(body))).toBe(400);
        expect(await statusOf(anon.provision({ ...body, systemTime: '2024-01-01T00:00:00Z', adminPassphrase: 'short' }))).toBe(400);
        expect(await anon.healthState()).toBe('Unprovisioned');
        await anon.provision({ ...body, systemTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') });
        expect(await anon.healthState()).toBe('Operational');
        expect(await anon.healthReady()).toBe(true);
        expect(await anon.healthAlive()).toBe(false);
        expect(await statusOf(anon.provision({ ...body, systemTime: '2024-01-01T00:00:00Z' }))).toBe(412);
      });

      it('answers 401 without or with wrong credentials, then 429 even for the right password within a second', async () => {
        expect(await statusOf(anon.listUsers())).toBe(401);
        expect(await statusOf(anon.withAuth('admin', 'wrong-password').listUsers())).toBe(401);
        const limited = await errorOf(admin.listUsers());
        expect(limited.status).toBe(429);
        expect(isRetryable(limited)).toBe(true);
        await pastRateLimit();
        expect(await admin.listUsers()).toEqual(['admin']);
      });

      it('creates users by PUT and POST, reads them, and keeps tags to Operators', async () => {
        await admin.createUser({ realName: 'Op', role: 'Operator', passphrase: OPERATOR }, 'operator');
        expect(await statusOf(admin.createUser({ realName: 'Op', role: 'Operator', passphrase: OPERATOR }, 'operator'))).toBe(409);
        const generated = await admin.createUser({ realName: 'Gen', role: 'Metrics', passphrase: 'metricsPassphrase' });
        expect(generated).toMatch(/^[0-9a-f]{20}$/);
        await admin.createUser({ realName: 'Backup', role: 'Backup', passphrase: 'backupUserPassphrase' }, 'backup');
        expect(await admin.getUser('operator')).toEqual({ realName: 'Op', role: 'Operator' });
        expect(await admin.listUsers()).toEqual(['admin', 'backup', 'operator', generated].sort());
        await admin.addUserTag('operator', 'berlin');
        await admin.addUserTag('operator', 'berlin'); // 304 counts as success
        expect(await admin.getUserTags('operator')).toEqual(['berlin']);
        expect(await statusOf(admin.addUserTag('backup', 'berlin'))).toBe(400);
        expect(await operator.getUser('operator')).toEqual({ realName: 'Op', role: 'Operator' });
        expect(await statusOf(operator.getUser('admin'))).toBe(403);
        expect(await statusOf(operator.listUsers())).toBe(403);
        expect(await statusOf(admin.createUser({ realName: 'x', role: 'Operator', passphrase: 'short' }, 'shorty'))).toBe(400);
      });

      it('applies the root-versus-namespace rules for users and namespaces', async () => {
        // A root Administrator creates a namespace's first admin before the namespace exists.
        await admin.createUser({ realName: 'NS admin', role: 'Administrator', passphrase: 'nsAdminPassphrase' }, 'ns1~admin');
        await admin.createNamespace('ns1');
        expect(await statusOf(admin.createNamespace('ns1'))).toBe(400);
        expect(await admin.listNamespaces()).toEqual(['ns1']);
        const refused = await errorOf(admin.createUser({ realName: 'x', role: 'Operator', passphrase: OPERATOR }, 'ns1~late'));
        expect(refused.status).toBe(403);
        const nsAdmin = anon.withAuth('ns1~admin', 'nsAdminPassphrase');
        await nsAdmin.createUser({ realName: 'NS op', role: 'Operator', passphrase: OPERATOR }, 'ns1~operator');
        const gen = await nsAdmin.createUser({ realName: 'NS gen', role: 'Operator', passphrase: OPERATOR });
        expect(gen).toMatch(/^ns1~[0-9a-f]{20}$/);
        expect(await nsAdmin.listUsers()).toEqual(['ns1~admin', 'ns1~operator', gen].sort());
        expect(await admin.listUsers()).toContain('ns1~operator');
        expect(await admin.getUser('ns1~operator')).toEqual({ realName: 'NS op', role: 'Operator' });
        expect(await statusOf(nsAdmin.listNamespaces())).toBe(403);
        expect(await statusOf(nsAdmin.lock())).toBe(403);
        expect(await statusOf(nsAdmin.getUser('operator'))).toBe(403);
        expect(await statusOf(nsAdmin.createUser({ realName: 'x', role: 'Operator', passphrase: OPERATOR }, 'rootuser'))).toBe(403);

        // Keys are per namespace: the root admin does not see ns1's keys.
        await nsAdmin.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'nskey' });
        expect(await nsAdmin.listKeys()).toEqual(['nskey']);
        expect(await admin.listKeys()).toEqual([]);
        expect(await statusOf(admin.getKey('nskey'))).toBe(404);

        // Deleting a namespace removes its keys but keeps its users, who are refused until it exists again.
        await admin.deleteNamespace('ns1');
        expect(await statusOf(admin.deleteNamespace('ns1'))).toBe(404);
        expect(await statusOf(nsAdmin.listKeys())).toBe(403);
        expect(await admin.listUsers()).toContain('ns1~admin');
        await admin.createNamespace('ns1');
        expect(await nsAdmin.listKeys()).toEqual([]);
      });

      it('generates, lists, labels, tags and signs with keys, honouring mechanisms and tag restrictions', async () => {
        expect(await statusOf(admin.generateKey({ type: 'EC_P256', mechanisms: ['RSA_Signature_PKCS1'] }))).toBe(400);
        expect(await admin.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'sig1' })).toBe('sig1');
        const sig1 = await admin.getKey('sig1');
        expect(sig1).toMatchObject({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], operations: 0, restrictions: {} });
        expect(sig1.public?.data && Buffer.from(sig1.public.data, 'base64')[0]).toBe(4);
        expect(await statusOf(operator.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }))).toBe(403);

        const digest = createHash('sha256').update('conformance').digest();
        const signature = await operator.sign('sig1', 'ECDSA', digest);
        const pub = createPublicKey(await operator.publicKeyPem('sig1'));
        expect(verify('sha256', Buffer.from('conformance'), { key: pub, dsaEncoding: 'der' }, signature)).toBe(true);
        expect((await admin.getKey('sig1')).operations).toBe(1);
        expect(await statusOf(admin.sign('sig1', 'ECDSA', digest))).toBe(403);
        expect(await statusOf(operator.sign('sig1', 'EdDSA', digest))).toBe(400);
        expect(await statusOf(operator.sign('missing', 'ECDSA', digest))).toBe(404);

        await admin.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'sig2' });
        expect(await admin.listKeys({ prefix: 'sig' })).toEqual(['sig1', 'sig2']);
        await admin.setKeyLabel('sig2', 'my label');
        await admin.setKeyLabel('sig2', 'my label'); // 304 counts as success
        expect(await admin.listKeys({ label: 'my label' })).toEqual(['sig2']);
        expect((await admin.getKey('sig2')).label).toBe('my label');
        await admin.removeKeyLabel('sig2');
        expect((await admin.getKey('sig2')).label).toBeUndefined();

        await admin.addKeyTag('sig2', 'frankfurt');
        expect((await admin.getKey('sig2')).restrictions).toEqual({ tags: ['frankfurt'] });
        const e = await errorOf(operator.sign('sig2', 'ECDSA', digest));
        expect([e.status, e.nethsmMessage]).toEqual([403, 'tags restriction not met']);
        await admin.addKeyTag('sig2', 'berlin');
        await operator.sign('sig2', 'ECDSA', digest);
        expect(await statusOf(admin.removeKeyTag('sig2', 'munich'))).toBe(404);
        await admin.removeKeyTag('sig2', 'frankfurt');
      });

      it('imports keys from JSON and PEM, refuses an existing id with 400, and does AES-CBC both ways', async () => {
        const secret = randomBytes(32);
        const aes = { type: 'Generic', mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'], private: { data: secret.toString('base64') } } as const;
        expect(await admin.importKey({ ...aes, mechanisms: [...aes.mechanisms] }, 'aes1')).toBe('aes1');
        const again = await errorOf(admin.importKey({ ...aes, mechanisms: [...aes.mechanisms] }, 'aes1'));
        expect(again.status).toBe(400);
        expect(again.message).not.toContain(secret.toString('base64'));
        expect((await admin.getKey('aes1')).public).toBeUndefined();
        const message = randomBytes(32);
        const { encrypted, iv } = await operator.encrypt('aes1', 'AES_CBC', message);
        expect(iv).toHaveLength(16);
        expect(await operator.decrypt('aes1', 'AES_CBC', encrypted, iv)).toEqual(message);
        expect(await statusOf(operator.decrypt('aes1', 'AES_CBC', encrypted))).toBe(400);

        const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
        const id = await admin.importKeyPem({ mechanisms: ['ECDSA_Signature'] }, pem);
        expect(id).toMatch(/^[0-9a-f]{20}$/);
        const sig = await operator.sign(id, 'ECDSA', createHash('sha256').update('pem').digest());
        expect(verify('sha256', Buffer.from('pem'), { key: privateKey, dsaEncoding: 'der' }, sig)).toBe(true);
        await admin.importKeyPem({ mechanisms: ['ECDSA_Signature'] }, pem, 'pem2');
        expect((await admin.getKey('pem2')).type).toBe('EC_P256');
      });

      it('stores certificates, moves keys with their counters, and deletes them', async () => {
        expect(await admin.getCert('sig1')).toBeNull();
        expect(await statusOf(admin.getCert('missing'))).toBe(404);
        const cert = Buffer.from('-----BEGIN CERTIFICATE-----\nnot parsed by the NetHSM\n-----END CERTIFICATE-----\n');
        await admin.putCert('sig1', cert);
        expect(await statusOf(admin.putCert('sig1', cert))).toBe(409);
        expect(await operator.getCert('sig1')).toEqual({ contentType: 'application/octet-stream', data: cert });
        await admin.deleteCert('sig1');
        expect(await statusOf(admin.deleteCert('sig1'))).toBe(404);

        const before = (await admin.getKey('aes1')).operations;
        expect(await admin.moveKey('aes1', 'aes2')).toBe('aes2');
        expect(await statusOf(admin.getKey('aes1'))).toBe(404);
        expect((await admin.getKey('aes2')).operations).toBe(before);
        expect(await statusOf(admin.moveKey('aes2', 'sig1'))).toBe(409);
        await admin.deleteKey('aes2');
        expect(await statusOf(admin.deleteKey('aes2'))).toBe(404);
      });

      it('backs up (after a backup passphrase is set) and restores over an Operational device, removing what the file lacks', async () => {
        const backupUser = anon.withAuth('backup', 'backupUserPassphrase');
        expect(await statusOf(backupUser.backup())).toBe(412);
        expect(await statusOf(admin.backup())).toBe(403);
        await admin.setBackupPassphrase(BACKUP_PASSPHRASE, '');
        expect(await statusOf(admin.setBackupPassphrase('anotherPassphrase', 'wrongPassphrase'))).toBe(403);
        const file = path.join(dir, 'device.bin');
        const size = await backupUser.backupToFile(file);
        expect(size).toBeGreaterThan(200);

        await admin.deleteKey('sig2');
        await admin.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'after' });
        const wrong = await errorOf(admin.restore(file, { backupPassphrase: 'wrongPassphrase' }));
        expect(wrong.status).toBe(400);
        expect(await admin.listKeys({ prefix: 'after' })).toEqual(['after']);

        await admin.restore(createReadStream(file), { backupPassphrase: BACKUP_PASSPHRASE });
        expect(await anon.healthState()).toBe('Operational'); // same domain key: stays Operational
        const keys = await admin.listKeys();
        expect(keys).toContain('sig2');
        expect(keys).not.toContain('after');
        expect((await admin.getKey('sig2')).restrictions).toEqual({ tags: ['berlin'] });
        await operator.sign('sig2', 'ECDSA', createHash('sha256').update('restored').digest());
      });

      it('locks, refuses bad unlocks (400 short, 403 wrong, 429 right after a failure) and unlocks', async () => {
        await admin.lock();
        expect(await anon.healthState()).toBe('Locked');
        expect(await statusOf(admin.listKeys())).toBe(412);
        expect(await statusOf(anon.unlock('short'))).toBe(400);
        expect(await statusOf(anon.unlock(UNLOCK))).toBe(429);
        await pastRateLimit();
        expect(await statusOf(anon.unlock('wrongUnlockPassphrase'))).toBe(403);
        await pastRateLimit();
        await anon.unlock(UNLOCK);
        expect(await anon.healthState()).toBe('Operational');
        expect(await statusOf(anon.unlock(UNLOCK))).toBe(412);
        expect(await admin.listKeys({ prefix: 'sig' })).toEqual(['sig1', 'sig2']);
      });
    });
  });
}
