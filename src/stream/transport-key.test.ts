/**
 * TransportKey against the simulator over real HTTPS: creation inside the NetHSM, idempotence and races, refusal of a
 * wrong key in its place, unwrap through decrypt; and the schema that checks a peer's published info.
 */
import { constants, createHash, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InternalError, TransportKeyInvalidError } from '../errors.js';
import { NetHsmClient } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { DEFAULT_TRANSPORT_KEY_ID, ensureTransportKeyAt, TransportKey, transportKeyInfoSchema, type TransportKeyInfo } from './transport-key.js';

let sim: ProvisionedSimulator;
let root: NetHsmClient;
let admin: NetHsmClient;
let operator: NetHsmClient;

beforeAll(async () => {
  sim = await startProvisionedSimulator();
  root = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
  admin = root.withAuth(sim.users.admin.username, sim.users.admin.password);
  operator = root.withAuth(sim.users.operator.username, sim.users.operator.password);
});
afterAll(async () => {
  await root?.close();
  await sim?.close();
});

const tk = (keyId?: string, bits: 2048 | 3072 = 2048) => new TransportKey({ site: 'alpha', admin, operator, bits, ...(keyId ? { keyId } : {}) });

describe('TransportKey', () => {
  it('creates the default RSA-3072 OAEP-SHA256 key in the NetHSM and publishes its public half', async () => {
    const t = new TransportKey({ site: 'alpha', admin, operator });
    await expect(admin.getKey(DEFAULT_TRANSPORT_KEY_ID)).rejects.toMatchObject({ status: 404 });
    await t.ensure();
    const key = await admin.getKey(DEFAULT_TRANSPORT_KEY_ID);
    expect(key.type).toBe('RSA');
    expect(key.mechanisms).toEqual(['RSA_Decryption_OAEP_SHA256']);
    const info = t.publicInfo();
    expect(info.site).toBe('alpha');
    expect(info.keyId).toBe('nhrtransport');
    expect(info.publicKeyPem).toBe(await operator.publicKeyPem('nhrtransport'));
    const pub = createPublicKey(info.publicKeyPem);
    expect(pub.asymmetricKeyDetails?.modulusLength).toBe(3072);
    expect(info.fingerprint).toBe(createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex'));
  });

  it('is idempotent: a second ensure, and another instance, find the same key', async () => {
    const a = tk('tkidem');
    expect(await a.ensure()).toBe(true);
    const first = a.publicInfo();
    // Only read: the service's write ticket says `none` for it (a merge-restore it raced need not back up again).
    expect(await a.ensure()).toBe(false);
    const b = tk('tkidem');
    expect(await b.ensure()).toBe(false);
    expect(a.publicInfo()).toEqual(first);
    expect(b.publicInfo()).toEqual(first);
    expect((await admin.listKeys()).filter((k) => k === 'tkidem')).toHaveLength(1);
  });

  it('tolerates a concurrent creator', async () => {
    const [a, b, c] = [tk('tkrace'), tk('tkrace'), tk('tkrace')];
    await Promise.all([a.ensure(), b.ensure(), c.ensure()]);
    expect(b.publicInfo().fingerprint).toBe(a.publicInfo().fingerprint);
    expect(c.publicInfo().fingerprint).toBe(a.publicInfo().fingerprint);
  });

  it('refuses publicInfo before ensure', () => {
    expect(() => tk('tknever').publicInfo()).toThrow(InternalError);
  });

  it('refuses an invalid key id', () => {
    expect(() => tk('-bad')).toThrow(TransportKeyInvalidError);
    expect(() => tk('a/b')).toThrow(/not a valid NetHSM key id/);
  });

  it('refuses, and leaves alone, an existing key with extra mechanisms', async () => {
    await admin.generateKey({ type: 'RSA', mechanisms: ['RSA_Decryption_OAEP_SHA256', 'RSA_Decryption_RAW'], length: 2048, id: 'tkmech' });
    const before = await admin.publicKeyPem('tkmech');
    const err = await tk('tkmech').ensure().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportKeyInvalidError);
    expect((err as TransportKeyInvalidError).code).toBe('NHR_ERR_STREAM_TRANSPORT_KEY_INVALID');
    expect((err as Error).message).toBe(
      'root key "tkmech" is not a transport key: type RSA, mechanisms [RSA_Decryption_RAW, RSA_Decryption_OAEP_SHA256] (expected RSA with exactly RSA_Decryption_OAEP_SHA256)',
    );
    expect(await admin.publicKeyPem('tkmech')).toBe(before);
    expect((await admin.getKey('tkmech')).mechanisms).toHaveLength(2);
  });

  it('refuses an existing key of the wrong type or mechanism', async () => {
    await admin.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'tkec' });
    await expect(tk('tkec').ensure()).rejects.toThrow(/type EC_P256, mechanisms \[ECDSA_Signature\]/);
    await admin.generateKey({ type: 'RSA', mechanisms: ['RSA_Decryption_OAEP_SHA1'], length: 2048, id: 'tksha1' });
    await expect(tk('tksha1').ensure()).rejects.toThrow(TransportKeyInvalidError);
    expect((await admin.getKey('tksha1')).mechanisms).toEqual(['RSA_Decryption_OAEP_SHA1']);
  });

  it('refuses an existing RSA key below 2048 bits', async () => {
    await admin.generateKey({ type: 'RSA', mechanisms: ['RSA_Decryption_OAEP_SHA256'], length: 1024, id: 'tksmall' });
    await expect(tk('tksmall').ensure()).rejects.toThrow(/1024 bits, outside 2048\.\.8192/);
  });

  it('unwraps what was wrapped to its public half, through the NetHSM as the Operator', async () => {
    const t = tk('tkunwrap');
    await t.ensure();
    const secret = randomBytes(32);
    const wrapped = publicEncrypt({ key: t.publicInfo().publicKeyPem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, secret);
    const before = Number((await admin.getKey('tkunwrap')).operations);
    expect((await t.unwrap(wrapped)).equals(secret)).toBe(true);
    expect(Number((await admin.getKey('tkunwrap')).operations)).toBe(before + 1);
  });
});

describe('TransportKey after its key is moved away (rotation)', () => {
  it('reports the missing key on unwrap, and ensure() makes a new one with a new fingerprint', async () => {
    const t = tk('tkrot');
    await t.ensure();
    const old = t.publicInfo();
    await admin.moveKey('tkrot', 'tkrot-old');
    await expect(t.unwrap(randomBytes(256))).rejects.toThrow(/transport key "tkrot" is no longer in the NetHSM/);
    await t.ensure();
    expect(t.publicInfo().fingerprint).not.toBe(old.fingerprint);
    await t.check();
  });
});

describe('TransportKey.check', () => {
  it('proves the unwrap path through the NetHSM', async () => {
    const t = tk('tkcheck');
    await expect(t.check()).rejects.toThrow(InternalError);
    await t.ensure();
    await t.check();
  });

  it('names the root Operator credential when the NetHSM refuses its role (403) or its passphrase (401)', async () => {
    const wrongRole = new TransportKey({ site: 'alpha', keyId: 'tkcheck', admin, operator: admin, bits: 2048 });
    await wrongRole.ensure();
    const refused = { code: 'NHR_ERR_NETHSM_CREDENTIAL_REFUSED', path: 'nethsm.credentials.operator' };
    await expect(wrongRole.check()).rejects.toMatchObject(refused);
    await expect(wrongRole.check()).rejects.toThrow(/refused the root Operator credential \(nethsm\.credentials\.operator: 403/);
    const wrongPassphrase = root.withAuth(sim.users.operator.username, 'not-the-operator-passphrase');
    const t = new TransportKey({ site: 'alpha', keyId: 'tkcheck', admin, operator: wrongPassphrase, bits: 2048 });
    await t.ensure();
    // Once only: the NetHSM rate-limits failed logins (429).
    const err = await t.check().catch((e: unknown) => e);
    expect(err).toMatchObject(refused);
    expect((err as Error).message).toMatch(/refused the root Operator credential \(nethsm\.credentials\.operator: 401/);
  });
});

describe('transportKeyInfoSchema', () => {
  let info: TransportKeyInfo;
  beforeAll(async () => {
    const t = tk('tkschema');
    await t.ensure();
    info = t.publicInfo();
  });
  const problems = (v: unknown): string[] => {
    const r = transportKeyInfoSchema.safeParse(v);
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('accepts what publicInfo publishes', () => {
    expect(problems(info)).toEqual([]);
  });

  it('refuses a fingerprint that is not the key’s', () => {
    expect(problems({ ...info, fingerprint: 'ab'.repeat(32) })).toEqual(['fingerprint: does not match the public key']);
    expect(problems({ ...info, fingerprint: info.fingerprint.toUpperCase() })[0]).toMatch(/^fingerprint: must be 64 lowercase hex/);
  });

  it('refuses non-RSA and short RSA keys', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' });
    expect(problems({ ...info, publicKeyPem: ec })[0]).toMatch(/^publicKeyPem: transport public key is ec, not RSA/);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' });
    expect(problems({ ...info, publicKeyPem: small })[0]).toMatch(/1024 bits/);
    expect(problems({ ...info, publicKeyPem: 'not a pem' })[0]).toMatch(/^publicKeyPem: /);
  });

  it('refuses extra fields, bad ids and oversized PEMs', () => {
    expect(problems({ ...info, extra: 1 })).not.toEqual([]);
    expect(problems({ ...info, site: '../x' })[0]).toMatch(/^site: /);
    expect(problems({ ...info, keyId: '' })[0]).toMatch(/^keyId: /);
    expect(problems({ ...info, publicKeyPem: info.publicKeyPem + ' '.repeat(5000) })[0]).toMatch(/^publicKeyPem: /);
    const { site: _s, ...noSite } = info;
    expect(problems(noSite)[0]).toMatch(/^site: /);
  });
});

/**
 * The daemon's ensure at the device barrier: a restore's verification skips itself for any unscoped write holder
 * admitted since the restore (snapshot-apply.ts verifyAfter), so one that only finds the key must not be one.
 */
describe('ensureTransportKeyAt', () => {
  // Before: the ensure took a shared write hold (unscoped) to find the key, so every daemon start or retry that
  // overlapped a restore's verification skipped it ("restore not verified: writes that may touch anything").
  it('only reads when the key is there: no write passes the barrier, and the public half is known', async () => {
    await tk('tkfound').ensure();
    const barrier = new DeviceBarrier();
    const mark = barrier.markWrites();
    const t = tk('tkfound');
    await ensureTransportKeyAt(t, barrier);
    expect(barrier.writeGeneration).toBe(0);
    expect(barrier.scopesWrittenSince(mark)).toEqual(new Set());
    expect(t.publicInfo().keyId).toBe('tkfound');
  });

  it('creates an absent key as an unscoped writer (a root key, which a verification compares)', async () => {
    const barrier = new DeviceBarrier();
    const mark = barrier.markWrites();
    const t = tk('tkabsent');
    await ensureTransportKeyAt(t, barrier);
    expect(barrier.scopesWrittenSince(mark)).toEqual(new Set([null]));
    expect(barrier.unscopedSince(mark)).toEqual(['transport key creation']);
    expect(await admin.listKeys()).toContain('tkabsent');
  });
});
