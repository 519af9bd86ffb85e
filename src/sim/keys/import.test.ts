import { describe, expect, it } from 'vitest';
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { importKeyJson, importKeyPem } from './import.js';
import { publicKeyPem, publicKeyView } from './view.js';

function status400(f: () => unknown, message: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SimHttpError);
  expect((err as SimHttpError).status).toBe(400);
  expect((err as SimHttpError).body?.message).toMatch(message);
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
const b64 = (u: string | undefined): string => Buffer.from(u ?? '', 'base64url').toString('base64');
const rsaJwk = rsa.privateKey.export({ format: 'jwk' });
const spki = (k: KeyObject): string => k.export({ type: 'spki', format: 'pem' }) as string;

describe('importKeyJson', () => {
  it('imports RSA from primes and derives the same key', () => {
    const { record } = importKeyJson({
      type: 'RSA',
      mechanisms: ['RSA_Decryption_PKCS1', 'RSA_Signature_PKCS1'],
      private: { primeP: b64(rsaJwk.p), primeQ: b64(rsaJwk.q), publicExponent: b64(rsaJwk.e) },
      restrictions: { tags: ['b', 'a'] },
      label: 'imported',
    });
    expect(record.type).toBe('RSA');
    expect(publicKeyPem(record)).toBe(spki(rsa.publicKey));
    expect(record.tags).toEqual(['a', 'b']);
    expect(record.label).toBe('imported');
    // d differs from OpenSSL's (φ vs λ) but the key is equivalent: the public halves match above, and it is usable.
    expect(createPrivateKey(record.privatePem ?? '').asymmetricKeyDetails?.modulusLength).toBe(1024);
  });

  it('imports EC scalars of every curve and derives the public point', () => {
    const curves = { EC_P256: 'prime256v1', EC_P384: 'secp384r1', EC_P521: 'secp521r1', EC_P256K1: 'secp256k1', BrainpoolP256: 'brainpoolP256r1', BrainpoolP384: 'brainpoolP384r1', BrainpoolP512: 'brainpoolP512r1' } as const;
    for (const [type, namedCurve] of Object.entries(curves)) {
      const pair = generateKeyPairSync('ec', { namedCurve });
      const der = pair.privateKey.export({ format: 'der', type: 'sec1' });
      // SEC1: 30 len 02 01 01 04 <len> <scalar>
      const lenOff = der[1] === 0x81 ? 3 : 2;
      const scalarLen = der[lenOff + 4] ?? 0;
      const scalar = der.subarray(lenOff + 5, lenOff + 5 + scalarLen);
      const { record } = importKeyJson({ type, mechanisms: ['ECDSA_Signature'], private: { data: scalar.toString('base64') } });
      expect(record.type).toBe(type);
      expect(publicKeyPem(record), type).toBe(spki(pair.publicKey));
    }
  });

  it('imports an Ed25519 seed and a Generic secret', () => {
    const ed = generateKeyPairSync('ed25519');
    const seed = ed.privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(16);
    const { record } = importKeyJson({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: seed.toString('base64') } });
    expect(publicKeyPem(record)).toBe(spki(ed.publicKey));
    const generic = importKeyJson({ type: 'Generic', mechanisms: ['AES_Encryption_CBC'], private: { data: Buffer.alloc(24, 1).toString('base64') } }).record;
    expect(generic.raw).toEqual(Buffer.alloc(24, 1));
    expect(publicKeyView(generic)).not.toHaveProperty('public');
  });

  it('does not check mechanisms against the type (FACTS c3) but does check the schema', () => {
    const { record } = importKeyJson({ type: 'Generic', mechanisms: ['RSA_Signature_PKCS1'], private: { data: 'AAAAAAAAAAAAAAAAAAAAAA==' } });
    expect(record.mechanisms).toEqual(['RSA_Signature_PKCS1']);
    status400(() => importKeyJson({ type: 'Generic', mechanisms: [], private: {}, extra: 1 }), /Invalid data for JSON schema.*"extra"/);
    status400(() => importKeyJson({ type: 'Generic', mechanisms: [], private: { secret: 'AA==' } }), /Invalid data for JSON schema.*"secret"/);
    status400(() => importKeyJson({ type: 'Generic', mechanisms: [] }), /missing required property "private"/);
    status400(() => importKeyJson({ type: 'Generic', mechanisms: [], private: { data: 5 } }), /data: expected a string/);
    status400(() => importKeyJson({ type: 'Generic', mechanisms: [], private: { data: 'AA==' }, label: 'x'.repeat(33) }), /Label is longer/);
    status400(() => importKeyJson({ type: 'Generic', mechanisms: [], private: { data: 'AA==' }, restrictions: { tags: ['~'] } }), /Invalid tag/);
  });

  it('refuses invalid material with a message that does not echo it', () => {
    const p = b64(rsaJwk.p);
    status400(() => importKeyJson({ type: 'RSA', mechanisms: [], private: { primeP: 'no*base64', primeQ: p, publicExponent: 'AQAB' } }), /^Invalid base64 encoded value in "primeP"\.$/);
    status400(() => importKeyJson({ type: 'RSA', mechanisms: [], private: { primeP: p, primeQ: p, publicExponent: 'AQAB' } }), /same number/);
    status400(() => importKeyJson({ type: 'RSA', mechanisms: [], private: { primeP: p, primeQ: 'AAAAAQ==', publicExponent: 'AQAB' } }), /must be primes/);
    status400(() => importKeyJson({ type: 'RSA', mechanisms: [], private: { primeP: p, primeQ: b64(rsaJwk.q), publicExponent: 'AAI=' } }), /invalid publicExponent/);
    status400(() => importKeyJson({ type: 'RSA', mechanisms: [], private: { primeP: p, primeQ: b64(rsaJwk.q) } }), /invalid publicExponent/);
    status400(() => importKeyJson({ type: 'EC_P256', mechanisms: [], private: { data: Buffer.alloc(31, 1).toString('base64') } }), /expected a 32-byte scalar, got 31/);
    status400(() => importKeyJson({ type: 'EC_P256', mechanisms: [], private: { data: Buffer.alloc(32, 0).toString('base64') } }), /not valid for the curve/);
    status400(() => importKeyJson({ type: 'EC_P256', mechanisms: [], private: { data: Buffer.alloc(32, 0xff).toString('base64') } }), /not valid for the curve/);
    status400(() => importKeyJson({ type: 'Curve25519', mechanisms: [], private: { data: 'AAAA' } }), /32-byte seed/);
    status400(() => importKeyJson({ type: 'Generic', mechanisms: [], private: {} }), /"data" is empty/);
    let msg = '';
    try {
      importKeyJson({ type: 'RSA', mechanisms: [], private: { primeP: p, primeQ: p, publicExponent: 'AQAB' } });
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).not.toContain(p.slice(0, 20));
  });
});

describe('importKeyPem', () => {
  const ecPair = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  it('accepts PKCS#8, PKCS#1 and SEC1 PEM, infers the type and stores PKCS#8', () => {
    const cases: Array<[string, KeyObject, string]> = [
      [rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, rsa.publicKey, 'RSA'],
      [rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string, rsa.publicKey, 'RSA'],
      [ecPair.privateKey.export({ type: 'sec1', format: 'pem' }) as string, ecPair.publicKey, 'EC_P384'],
    ];
    const ed = generateKeyPairSync('ed25519');
    cases.push([ed.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, ed.publicKey, 'Curve25519']);
    for (const [pem, pub, type] of cases) {
      const { record } = importKeyPem({ mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['t'] }, label: 'pem' }, pem);
      expect(record.type).toBe(type);
      expect(record.privatePem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
      expect(publicKeyPem(record)).toBe(spki(pub));
      expect(record.tags).toEqual(['t']);
      expect(record.label).toBe('pem');
    }
  });

  it('refuses bad arguments, other PEM kinds, garbage and unsupported key types', () => {
    const pem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    status400(() => importKeyPem({ mechanisms: [], color: 1 }, pem), /Invalid data for JSON schema.*"color"/);
    status400(() => importKeyPem({}, pem), /missing required property "mechanisms"/);
    status400(() => importKeyPem('x', pem), /Invalid data for JSON schema/);
    status400(() => importKeyPem({ mechanisms: [] }, spki(rsa.publicKey)), /expected PRIVATE KEY/);
    status400(() => importKeyPem({ mechanisms: [] }, 'hello'), /expected PRIVATE KEY/);
    status400(() => importKeyPem({ mechanisms: [] }, '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'), /does not parse/);
    const encrypted = rsa.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-128-cbc', passphrase: 'pw' }) as string;
    status400(() => importKeyPem({ mechanisms: [] }, encrypted), /expected PRIVATE KEY/);
    const x448 = generateKeyPairSync('x448').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    status400(() => importKeyPem({ mechanisms: [] }, x448), /Unsupported private key type/);
  });
});
