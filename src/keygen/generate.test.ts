/**
 * Replicated generation against the simulator over real HTTPS: each type's import body is PUT byte for byte, the key
 * then signs/decrypts/encrypts there with the public part the body implies; every refusal matches the simulator's
 * own answer to the same body sent to `/keys/generate`.
 */
import { constants, createECDH, createHash, createPrivateKey, createPublicKey, createDecipheriv, publicEncrypt, randomBytes, verify } from 'node:crypto';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GenerateRequestInvalidError } from '../errors.js';
import { startProvisionedSimulator, type Cred, type ProvisionedSimulator } from '../sim/fixture.js';
import { EC_CURVES, type KeyType } from '../sim/keys/types.js';
import { base64Bytes, generateForImport, generateForImportAsync, parseGenerateRequestBytes } from './index.js';

let sim: ProvisionedSimulator;
let agent: Agent;
let admin: Cred;
let operator: Cred;

beforeAll(async () => {
  sim = await startProvisionedSimulator({ namespaces: ['ns1'] });
  agent = new Agent({ connect: { ca: sim.certPem } });
  admin = sim.nsUsers['ns1']!.admin;
  operator = sim.nsUsers['ns1']!.operator;
});
afterAll(async () => {
  await agent?.close();
  await sim?.close();
});

/** A raw HTTPS call (bytes in, status and text out), so the body sent is exactly the one under test. */
async function call(method: string, path: string, auth: Cred, body?: Buffer | string): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = { authorization: 'Basic ' + Buffer.from(`${auth.username}:${auth.password}`).toString('base64') };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await request(sim.apiUrl + path, { method: method as 'GET', headers, body, dispatcher: agent });
  return { status: res.statusCode, text: await res.body.text() };
}
async function json(method: string, path: string, auth: Cred, body?: unknown): Promise<Record<string, unknown>> {
  const r = await call(method, path, auth, body === undefined ? undefined : JSON.stringify(body));
  expect(r.status, `${method} ${path}: ${r.text}`).toBe(200);
  return JSON.parse(r.text) as Record<string, unknown>;
}

/** Generates, imports the body byte for byte, zeroes it; returns the parsed body (for deriving the expected public part). */
async function generateAndImport(body: Record<string, unknown>): Promise<{ id: string; priv: Record<string, string> }> {
  const g = generateForImport(body);
  const parsed = JSON.parse(g.importBody.toString('utf8')) as { private: Record<string, string> };
  const put = await call('PUT', `/keys/${g.id}`, admin, g.importBody);
  g.importBody.fill(0);
  expect(put.status, put.text).toBe(204);
  return { id: g.id, priv: parsed.private };
}

const keyView = async (id: string) => JSON.parse((await call('GET', `/keys/${id}`, admin)).text) as { type: string; mechanisms: string[]; public?: Record<string, string>; restrictions: { tags?: string[] }; label?: string };
const b = (s: string | undefined) => Buffer.from(s ?? '', 'base64');

describe('generateForImport: each type imports and works in the NetHSM', () => {
  it('RSA: primes and exponent give the modulus the NetHSM shows; it signs (PSS) and decrypts (OAEP) there', async () => {
    const { id, priv } = await generateAndImport({
      type: 'RSA',
      length: 2048,
      mechanisms: ['RSA_Signature_PSS_SHA256', 'RSA_Decryption_OAEP_SHA256'],
      id: 'rsa1',
      restrictions: { tags: ['berlin'] },
      label: 'Signing key №1',
    });
    expect(id).toBe('rsa1');
    const view = await keyView(id);
    expect(view).toMatchObject({ type: 'RSA', mechanisms: ['RSA_Decryption_OAEP_SHA256', 'RSA_Signature_PSS_SHA256'], restrictions: { tags: ['berlin'] }, label: 'Signing key №1' });
    const n = BigInt('0x' + b(priv['primeP']).toString('hex')) * BigInt('0x' + b(priv['primeQ']).toString('hex'));
    expect(BigInt('0x' + b(view.public?.['modulus']).toString('hex'))).toBe(n);
    expect(b(priv['publicExponent']).toString('hex')).toBe('010001');
    expect(b(priv['primeP'])[0]).not.toBe(0);

    await call('PUT', `/users/${operator.username}/tags/berlin`, admin, '');
    const pem = (await call('GET', `/keys/${id}/public.pem`, operator)).text;
    const digest = createHash('sha256').update('hello').digest();
    const sig = b((await json('POST', `/keys/${id}/sign`, operator, { mode: 'PSS_SHA256', message: digest.toString('base64') }))['signature'] as string);
    expect(verify('sha256', Buffer.from('hello'), { key: pem, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig)).toBe(true);
    const secret = randomBytes(32);
    const enc = publicEncrypt({ key: pem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, secret);
    const dec = await json('POST', `/keys/${id}/decrypt`, operator, { mode: 'OAEP_SHA256', encrypted: enc.toString('base64') });
    expect(b(dec['decrypted'] as string).equals(secret)).toBe(true);
  });

  it.each(['EC_P256', 'EC_P384', 'EC_P521', 'EC_P256K1', 'BrainpoolP256', 'BrainpoolP384', 'BrainpoolP512'] as KeyType[])(
    '%s: the scalar, padded to the field size, gives the public point the NetHSM shows; it signs there',
    async (type) => {
      const curve = EC_CURVES[type]!;
      const { id, priv } = await generateAndImport({ type, mechanisms: ['ECDSA_Signature'] });
      expect(id).toMatch(/^[0-9a-f]{20}$/);
      const scalar = b(priv['data']);
      expect(scalar).toHaveLength(curve.fieldBytes);
      const ecdh = createECDH(curve.curve);
      ecdh.setPrivateKey(scalar);
      const view = await keyView(id);
      expect(view.type).toBe(type);
      expect(b(view.public?.['data']).equals(ecdh.getPublicKey())).toBe(true);
      const digest = createHash(curve.hash).update('hello').digest();
      const sig = b((await json('POST', `/keys/${id}/sign`, operator, { mode: 'ECDSA', message: digest.toString('base64') }))['signature'] as string);
      const pem = (await call('GET', `/keys/${id}/public.pem`, operator)).text;
      expect(verify(curve.hash, Buffer.from('hello'), pem, sig)).toBe(true);
    },
  );

  it('Curve25519: the 32-byte seed gives the public key the NetHSM shows; it signs (EdDSA) there', async () => {
    const { id, priv } = await generateAndImport({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], length: 0, label: '' });
    const seed = b(priv['data']);
    expect(seed).toHaveLength(32);
    const local = createPublicKey(createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' }));
    const view = await keyView(id);
    expect(view.label).toBeUndefined();
    expect(b(view.public?.['data']).equals(local.export({ format: 'der', type: 'spki' }).subarray(12))).toBe(true);
    const sig = b((await json('POST', `/keys/${id}/sign`, operator, { mode: 'EdDSA', message: Buffer.from('hello').toString('base64') }))['signature'] as string);
    expect(verify(null, Buffer.from('hello'), local, sig)).toBe(true);
  });

  it('Generic: length rounded up to bytes; the NetHSM encrypts with the same AES key', async () => {
    const odd = generateForImport({ type: 'Generic', mechanisms: ['AES_Encryption_CBC'], length: 200 });
    expect(b((JSON.parse(odd.importBody.toString()) as { private: { data: string } }).private.data)).toHaveLength(25);
    const { id, priv } = await generateAndImport({ type: 'Generic', mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'], length: 256, id: 'aes1' });
    const key = b(priv['data']);
    expect(key).toHaveLength(32);
    const message = randomBytes(32);
    const r = await json('POST', `/keys/${id}/encrypt`, operator, { mode: 'AES_CBC', message: message.toString('base64') });
    const d = createDecipheriv('aes-256-cbc', key, b(r['iv'] as string)).setAutoPadding(false);
    expect(Buffer.concat([d.update(b(r['encrypted'] as string)), d.final()]).equals(message)).toBe(true);
  });

  it('generates off the event loop with the same result shape', async () => {
    const g = await generateForImportAsync({ type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_PKCS1'], id: 'async1' });
    expect(g).toMatchObject({ id: 'async1', type: 'RSA' });
    const put = await call('PUT', '/keys/async1', admin, g.importBody);
    expect(put.status, put.text).toBe(204);
    await expect(generateForImportAsync({ type: 'RSA', length: 512, mechanisms: ['RSA_Signature_PKCS1'] })).rejects.toBeInstanceOf(GenerateRequestInvalidError);
  });

  it('gives fresh material and ids on every call', () => {
    const body = { type: 'EC_P256', mechanisms: ['ECDSA_Signature'] };
    const [x, y] = [generateForImport(body), generateForImport(body)];
    expect(x.id).not.toBe(y.id);
    expect(x.importBody.equals(y.importBody)).toBe(false);
  });
});

describe('validation matches the NetHSM (simulator) answer for answer', () => {
  const ok = { type: 'RSA', mechanisms: ['RSA_Signature_PKCS1'], length: 2048 };
  const bad: Record<string, unknown> = {
    'not an object': [ok],
    'null': null,
    'unknown property': { ...ok, public: 'x' },
    'missing mechanisms': { type: 'RSA', length: 2048 },
    'missing type': { mechanisms: ['RSA_Signature_PKCS1'] },
    'mechanisms not a list': { ...ok, mechanisms: 'RSA_Signature_PKCS1' },
    'unknown mechanism': { ...ok, mechanisms: ['RSA_Signature_PSS_SHA3'] },
    'unknown type': { ...ok, type: 'EC_P224' },
    'length not an integer': { ...ok, length: 2048.5 },
    'length a string': { ...ok, length: '2048' },
    'id not a string': { ...ok, id: 7 },
    'RSA too short': { ...ok, length: 512 },
    'RSA too long': { ...ok, length: 8200 },
    'RSA length defaulted to 0': { type: 'RSA', mechanisms: ['RSA_Signature_PKCS1'] },
    'mechanism for another type': { type: 'EC_P256', mechanisms: ['RSA_Signature_PKCS1'] },
    'BIP340 on P-256': { type: 'EC_P256', mechanisms: ['BIP340_Signature'] },
    'empty mechanisms': { type: 'Curve25519', mechanisms: [] },
    'invalid id': { ...ok, id: '-x' },
    'id too long': { ...ok, id: 'a'.repeat(129) },
    'Generic too short': { type: 'Generic', mechanisms: ['AES_Encryption_CBC'], length: 64 },
    'Generic too long': { type: 'Generic', mechanisms: ['AES_Encryption_CBC'], length: 9000 },
    'bad tag': { ...ok, restrictions: { tags: ['a b'] } },
    'tags not a list': { ...ok, restrictions: { tags: 'x' } },
    'unknown restriction': { ...ok, restrictions: { users: [] } },
    'label too long': { ...ok, label: 'é'.repeat(17) },
    'label not a string': { ...ok, label: 5 },
    'several faults: schema first': { type: 'RSA', mechanisms: [], length: 10, extra: 1 },
    'several faults: RSA length before mechanisms': { type: 'RSA', mechanisms: [], length: 10 },
    'several faults: mechanisms before id': { type: 'EC_P384', mechanisms: ['EdDSA_Signature'], id: '..' },
    'several faults: id before Generic length': { type: 'Generic', mechanisms: ['AES_Decryption_CBC'], id: '_', length: 1 },
  };

  it.each(Object.entries(bad))('%s', async (_name, body) => {
    const theirs = await call('POST', '/keys/generate', admin, JSON.stringify(body));
    expect(theirs.status).toBe(400);
    let ours: unknown;
    try {
      generateForImport(body);
    } catch (err) {
      ours = err;
    }
    expect(ours).toBeInstanceOf(GenerateRequestInvalidError);
    const e = ours as GenerateRequestInvalidError;
    expect({ status: e.status, message: e.message }).toEqual({ status: theirs.status, message: (JSON.parse(theirs.text) as { message: string }).message });
    expect(e.code).toBe('NHR_ERR_KEYGEN_REQUEST_INVALID');
  });

  it('refuses unparsable JSON bytes as the NetHSM does', async () => {
    for (const text of ['{"type":', 'not json', '']) {
      const theirs = await call('POST', '/keys/generate', admin, text);
      let ours: unknown;
      try {
        parseGenerateRequestBytes(Buffer.from(text));
      } catch (err) {
        ours = err;
      }
      expect(ours, text).toBeInstanceOf(GenerateRequestInvalidError);
      expect({ status: (ours as GenerateRequestInvalidError).status, message: (ours as Error).message }).toEqual({
        status: theirs.status,
        message: (JSON.parse(theirs.text) as { message: string }).message,
      });
    }
  });

  it('accepts what the NetHSM accepts: the same body generates in the simulator', async () => {
    const goods = [
      { type: 'RSA', mechanisms: ['RSA_Signature_PKCS1', 'RSA_Signature_PKCS1'], length: 1024, id: 'same.id_1-x', restrictions: {} },
      { type: 'EC_P256K1', mechanisms: ['BIP340_Signature', 'ECDSA_Signature'], length: 99999, label: 'x'.repeat(32) },
      { type: 'Generic', mechanisms: ['AES_Decryption_CBC'], length: 8192, id: '' },
    ];
    for (const body of goods) {
      expect((await call('POST', '/keys/generate', admin, JSON.stringify(body))).status).toBe(201);
      const g = generateForImport(body);
      const put = await call('PUT', `/keys/ours-${g.id}`, admin, g.importBody);
      expect(put.status, put.text).toBe(204);
    }
  });
});

describe('base64Bytes', () => {
  it('encodes as Buffer.toString("base64") does, for every tail length', () => {
    for (let n = 0; n < 70; n++) {
      const x = randomBytes(n);
      expect(base64Bytes(x).toString('latin1')).toBe(x.toString('base64'));
    }
  });
});
