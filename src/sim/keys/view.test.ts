import { describe, expect, it } from 'vitest';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { generateKey } from './generate.js';
import { publicKeyPem, publicKeyView, tagsAllow } from './view.js';
import type { KeyRecord } from './types.js';

const u = (s: string | undefined): Buffer => Buffer.from(s ?? '', 'base64url');
const pemOf = (k: ReturnType<typeof generateKeyPairSync>['privateKey']): string => k.export({ type: 'pkcs8', format: 'pem' }) as string;

describe('publicKeyView', () => {
  it('shows RSA modulus and exponent as big-endian base64 without leading zeros, in the firmware field order', () => {
    const { record } = generateKey({ type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_PKCS1', 'RSA_Decryption_RAW'], restrictions: { tags: ['b', 'a'] }, label: 'L' });
    const jwk = createPublicKey(publicKeyPem(record)).export({ format: 'jwk' });
    const modulus = u(jwk.n);
    expect(modulus[0]).not.toBe(0);
    expect(JSON.stringify(publicKeyView({ ...record, operations: 7 }))).toBe(
      JSON.stringify({
        mechanisms: ['RSA_Decryption_RAW', 'RSA_Signature_PKCS1'],
        type: 'RSA',
        operations: 7,
        public: { modulus: modulus.toString('base64'), publicExponent: 'AQAB' },
        restrictions: { tags: ['a', 'b'] },
        label: 'L',
      }),
    );
  });

  it('shows EC points as 04‖X‖Y padded to the field size, also when X has leading zero bytes', () => {
    let found: { pem: string; x: Buffer; y: Buffer } | undefined;
    for (let i = 0; i < 20000 && found === undefined; i++) {
      const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const jwk = pair.publicKey.export({ format: 'jwk' });
      const x = u(jwk.x);
      if (x[0] === 0) found = { pem: pemOf(pair.privateKey), x, y: u(jwk.y) };
    }
    expect(found).toBeDefined();
    const r: KeyRecord = { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], privatePem: found?.pem ?? '', cert: null, operations: 0, tags: [] };
    const data = Buffer.from((publicKeyView(r) as { public: { data: string } }).public.data, 'base64');
    expect(data).toHaveLength(65);
    expect(data).toEqual(Buffer.concat([Buffer.from([4]), found?.x ?? Buffer.alloc(0), found?.y ?? Buffer.alloc(0)]));
    for (const [type, len] of [['EC_P384', 97], ['EC_P521', 133], ['EC_P256K1', 65], ['BrainpoolP512', 129]] as const) {
      const v = publicKeyView(generateKey({ type, mechanisms: ['ECDSA_Signature'] }).record) as { public: { data: string } };
      const d = Buffer.from(v.public.data, 'base64');
      expect(d, type).toHaveLength(len);
      expect(d[0]).toBe(4);
    }
  });

  it('shows the raw 32-byte Ed25519 public key', () => {
    const pair = generateKeyPairSync('ed25519');
    const r: KeyRecord = { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], privatePem: pemOf(pair.privateKey), cert: null, operations: 1, tags: [] };
    expect(publicKeyView(r)).toEqual({ mechanisms: ['EdDSA_Signature'], type: 'Curve25519', operations: 1, public: { data: u(pair.publicKey.export({ format: 'jwk' }).x).toString('base64') }, restrictions: {} });
  });

  it('omits public for Generic keys, label when empty, and writes restrictions {} without tags', () => {
    const r: KeyRecord = { type: 'Generic', mechanisms: ['AES_Decryption_CBC', 'AES_Encryption_CBC'], raw: Buffer.alloc(16), cert: null, operations: 2, tags: [], label: '' };
    expect(JSON.stringify(publicKeyView(r))).toBe('{"mechanisms":["AES_Encryption_CBC","AES_Decryption_CBC"],"type":"Generic","operations":2,"restrictions":{}}');
  });
});

describe('publicKeyPem', () => {
  it('is the SubjectPublicKeyInfo PEM, and a 400 for Generic keys', () => {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const r: KeyRecord = { type: 'EC_P384', mechanisms: [], privatePem: pemOf(pair.privateKey), cert: null, operations: 0, tags: [] };
    expect(publicKeyPem(r)).toBe(pair.publicKey.export({ type: 'spki', format: 'pem' }));
    const generic: KeyRecord = { type: 'Generic', mechanisms: [], raw: Buffer.alloc(16), cert: null, operations: 0, tags: [] };
    let err: unknown;
    try {
      publicKeyPem(generic);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SimHttpError);
    expect((err as SimHttpError).status).toBe(400);
    expect((err as SimHttpError).body).toEqual({ message: 'Generic keys have no public key' });
  });
});

describe('tagsAllow', () => {
  const base: KeyRecord = { type: 'Generic', mechanisms: [], raw: Buffer.alloc(16), cert: null, operations: 0, tags: [] };
  it('lets everyone use an untagged key and requires a shared tag otherwise', () => {
    expect(tagsAllow(base, [])).toBe(true);
    expect(tagsAllow(base, ['berlin'])).toBe(true);
    expect(tagsAllow({ ...base, tags: ['berlin', 'paris'] }, ['berlin'])).toBe(true);
    expect(tagsAllow({ ...base, tags: ['berlin'] }, ['frankfurt'])).toBe(false);
    expect(tagsAllow({ ...base, tags: ['berlin'] }, [])).toBe(false);
  });
});
