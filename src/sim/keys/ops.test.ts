import { describe, expect, it } from 'vitest';
import { constants, createCipheriv, createHash, createPrivateKey, publicEncrypt, randomBytes, verify } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { generateKey } from './generate.js';
import { importKeyJson } from './import.js';
import { decrypt, encrypt, sign } from './ops.js';
import { publicKeyPem, publicKeyView } from './view.js';
import { EC_CURVES, KEY_MECHANISMS, type KeyRecord } from './types.js';

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

const b64 = (b: Buffer): string => b.toString('base64');
const unb64 = (s: string): Buffer => Buffer.from(s, 'base64');
const msg = Buffer.from('the quick brown fox');

// One RSA-2048 key for the whole file, with every RSA mechanism.
const rsa = generateKey({ type: 'RSA', length: 2048, mechanisms: KEY_MECHANISMS.filter((m) => m.startsWith('RSA_')) }).record;
const rsaPub = publicKeyPem(rsa);
const HASHES = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512'] as const;

describe('RSA', () => {
  it('PKCS1 signs the given bytes as EMSA-PKCS1-v1_5 without hashing them', () => {
    const digestInfoSha256 = Buffer.from('3031300d060960864801650304020105000420', 'hex');
    const data = Buffer.concat([digestInfoSha256, createHash('sha256').update(msg).digest()]);
    const { signature } = sign(rsa, { mode: 'PKCS1', message: b64(data) });
    expect(unb64(signature)).toHaveLength(256);
    expect(verify('sha256', msg, rsaPub, unb64(signature))).toBe(true);
    // Arbitrary bytes up to k-11 are fine, one more is not.
    expect(sign(rsa, { mode: 'PKCS1', message: b64(Buffer.alloc(245, 7)) }).signature).toBeTruthy();
    status400(() => sign(rsa, { mode: 'PKCS1', message: b64(Buffer.alloc(246, 7)) }), /^Signing failure: RSA key too short\.$/);
  });

  it('PSS_* signs the given digest (salt = hash length) so that it verifies over the original message', () => {
    for (const h of HASHES) {
      const digest = createHash(h).update(msg).digest();
      const mode = `PSS_${h.toUpperCase()}`;
      const sig = unb64(sign(rsa, { mode, message: b64(digest) }).signature);
      expect(verify(h, msg, { key: rsaPub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: digest.length }, sig), mode).toBe(true);
      status400(() => sign(rsa, { mode, message: b64(Buffer.concat([digest, Buffer.from([0])])) }), /digested data of invalid size/);
    }
  });

  it('decrypts RAW, PKCS1 and every OAEP hash', () => {
    const block = Buffer.concat([Buffer.from([0]), randomBytes(255)]);
    const raw = publicEncrypt({ key: rsaPub, padding: constants.RSA_NO_PADDING }, block);
    expect(unb64(decrypt(rsa, { mode: 'RAW', encrypted: b64(raw) }).decrypted)).toEqual(block);
    const pkcs1 = publicEncrypt({ key: rsaPub, padding: constants.RSA_PKCS1_PADDING }, msg);
    expect(unb64(decrypt(rsa, { mode: 'PKCS1', encrypted: b64(pkcs1) }).decrypted)).toEqual(msg);
    for (const h of HASHES) {
      const c = publicEncrypt({ key: rsaPub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: h }, msg);
      expect(unb64(decrypt(rsa, { mode: `OAEP_${h.toUpperCase()}`, encrypted: b64(c) }).decrypted), h).toEqual(msg);
      const other = h === 'sha256' ? 'OAEP_SHA1' : 'OAEP_SHA256';
      status400(() => decrypt(rsa, { mode: other, encrypted: b64(c) }), /^Decryption failure$/);
    }
  });

  it('answers "Decryption failure" for bad padding, wrong lengths and values ≥ n', () => {
    const notType2 = publicEncrypt({ key: rsaPub, padding: constants.RSA_NO_PADDING }, Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(254, 0xff)]));
    status400(() => decrypt(rsa, { mode: 'PKCS1', encrypted: b64(notType2) }), /^Decryption failure$/);
    status400(() => decrypt(rsa, { mode: 'PKCS1', encrypted: b64(notType2.subarray(1)) }), /^Decryption failure$/);
    status400(() => decrypt(rsa, { mode: 'RAW', encrypted: b64(Buffer.alloc(256, 0xff)) }), /^Decryption failure$/);
    status400(() => decrypt(rsa, { mode: 'RAW', encrypted: b64(Buffer.alloc(257, 1)) }), /^Decryption failure$/);
  });

  it('refuses modes whose mechanism the key lacks, and modes of other key types', () => {
    const only = generateKey({ type: 'RSA', length: 1024, mechanisms: ['RSA_Decryption_OAEP_SHA256'] }).record;
    status400(() => sign(only, { mode: 'PKCS1', message: 'AA==' }), /^Key mechanisms do not allow requested signing\.$/);
    status400(() => decrypt(only, { mode: 'PKCS1', encrypted: 'AA==' }), /^Key mechanisms do not allow requested decryption\.$/);
    status400(() => decrypt(rsa, { mode: 'AES_CBC', encrypted: 'AA==', iv: b64(Buffer.alloc(16)) }), /^Key mechanisms do not allow requested decryption\.$/);
    status400(() => encrypt(rsa, { mode: 'AES_CBC', message: 'AA==' }), /^Key mechanisms do not allow requested encryption\.$/);
    // JSON import does not check mechanisms against the type, so these combinations exist on a NetHSM.
    const jwk = createPrivateKey(rsa.privatePem ?? '').export({ format: 'jwk' });
    const u = (s: string | undefined): string => Buffer.from(s ?? '', 'base64url').toString('base64');
    const odd = importKeyJson({ type: 'RSA', mechanisms: [...KEY_MECHANISMS], private: { primeP: u(jwk.p), primeQ: u(jwk.q), publicExponent: u(jwk.e) } }).record;
    status400(() => sign(odd, { mode: 'ECDSA', message: b64(Buffer.alloc(32)) }), /^invalid sign mode$/);
    status400(() => decrypt(odd, { mode: 'AES_CBC', encrypted: 'AA==', iv: b64(Buffer.alloc(16)) }), /^Decryption failure$/);
    status400(() => encrypt(odd, { mode: 'AES_CBC', message: 'AA==' }), /^Encryption only supported for Generic keys\.$/);
  });
});

describe('elliptic curves', () => {
  it('ECDSA signs the given digest for every curve; the DER signature verifies over the original message', () => {
    for (const [type, info] of Object.entries(EC_CURVES)) {
      const { record } = generateKey({ type, mechanisms: ['ECDSA_Signature'] });
      const digest = createHash(info.hash).update(msg).digest();
      for (let i = 0; i < 3; i++) {
        const sig = unb64(sign(record, { mode: 'ECDSA', message: b64(digest) }).signature);
        expect(sig[0], type).toBe(0x30);
        expect(verify(info.hash, msg, publicKeyPem(record), sig), type).toBe(true);
      }
      status400(() => sign(record, { mode: 'ECDSA', message: b64(digest.subarray(1)) }), /digested data of invalid size/);
      status400(() => sign(record, { mode: 'EdDSA', message: 'AA==' }), /^Key mechanisms do not allow requested signing\.$/);
      status400(() => decrypt(record, { mode: 'RAW', encrypted: 'AA==' }), /^Key mechanisms do not allow requested decryption\.$/);
    }
  });

  it('EdDSA signs the raw message with a 64-byte signature', () => {
    const { record } = generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'] });
    const sig = unb64(sign(record, { mode: 'EdDSA', message: b64(msg) }).signature);
    expect(sig).toHaveLength(64);
    expect(verify(null, msg, publicKeyPem(record), sig)).toBe(true);
    expect(verify(null, Buffer.from('other'), publicKeyPem(record), sig)).toBe(false);
  });

  it('BIP340 signs with secp256k1 keys; the Schnorr signature verifies against the x-only public key', () => {
    const { record } = generateKey({ type: 'EC_P256K1', mechanisms: ['BIP340_Signature', 'ECDSA_Signature'] });
    // The test verifier itself agrees with BIP340 test vector 0 (secret key 3, message 0³²).
    const v0 = Buffer.from('E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA821525F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0', 'hex');
    expect(bip340Verify(Buffer.from('F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9', 'hex'), Buffer.alloc(32), v0)).toBe(true);
    const point = unb64((publicKeyView(record) as { public: { data: string } }).public.data);
    for (const m of [msg, Buffer.alloc(0), randomBytes(100)]) {
      const sig = unb64(sign(record, { mode: 'BIP340', message: b64(m) }).signature);
      expect(sig).toHaveLength(64);
      expect(bip340Verify(point.subarray(1, 33), m, sig)).toBe(true);
      expect(bip340Verify(point.subarray(1, 33), Buffer.concat([m, Buffer.from([1])]), sig)).toBe(false);
    }
  });

  it('refuses decryption and encryption with EC keys, whatever their mechanisms', () => {
    const d = Buffer.alloc(32, 3).toString('base64');
    const odd = importKeyJson({ type: 'EC_P256', mechanisms: ['RSA_Decryption_RAW', 'AES_Encryption_CBC'], private: { data: d } }).record;
    status400(() => decrypt(odd, { mode: 'RAW', encrypted: 'AA==' }), /^Decryption only supported for RSA and Generic keys\.$/);
    status400(() => encrypt(odd, { mode: 'AES_CBC', message: 'AA==' }), /^Encryption only supported for Generic keys\.$/);
  });
});

describe('Generic (AES-CBC)', () => {
  it('encrypts and decrypts without padding for 128, 192 and 256-bit keys, with a given or a random IV', () => {
    for (const length of [128, 192, 256]) {
      const { record } = generateKey({ type: 'Generic', length, mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'] });
      const data = randomBytes(48);
      const iv = randomBytes(16);
      const { encrypted, iv: ivOut } = encrypt(record, { mode: 'AES_CBC', message: b64(data), iv: b64(iv) });
      expect(ivOut).toBe(b64(iv));
      const c = createCipheriv(`aes-${length}-cbc`, record.raw ?? Buffer.alloc(0), iv).setAutoPadding(false);
      expect(unb64(encrypted)).toEqual(Buffer.concat([c.update(data), c.final()]));
      expect(unb64(decrypt(record, { mode: 'AES_CBC', encrypted, iv: ivOut }).decrypted)).toEqual(data);
      const random = encrypt(record, { mode: 'AES_CBC', message: b64(data) });
      expect(unb64(random.iv)).toHaveLength(16);
      expect(random.iv).not.toBe(b64(iv));
      expect(unb64(decrypt(record, { mode: 'AES_CBC', encrypted: random.encrypted, iv: random.iv }).decrypted)).toEqual(data);
    }
  });

  it('answers the firmware errors for AES misuse', () => {
    const { record } = generateKey({ type: 'Generic', length: 128, mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'] });
    status400(() => decrypt(record, { mode: 'AES_CBC', encrypted: b64(Buffer.alloc(16)) }), /^AES-CBC decrypt requires IV$/);
    status400(() => decrypt(record, { mode: 'AES_CBC', encrypted: b64(Buffer.alloc(15)), iv: b64(Buffer.alloc(16)) }), /^Decryption failed: .*multiple of the block size/);
    status400(() => encrypt(record, { mode: 'AES_CBC', message: b64(Buffer.alloc(17)) }), /^Encryption failed: .*multiple of the block size/);
    status400(() => encrypt(record, { mode: 'AES_CBC', message: b64(Buffer.alloc(16)), iv: b64(Buffer.alloc(8)) }), /^Encryption failed: IV must be 16 bytes/);
    status400(() => decrypt(record, { mode: 'AES_CBC', encrypted: b64(Buffer.alloc(16)), iv: '***' }), /^Decryption failed: invalid base64 in iv/);
    status400(() => sign(record, { mode: 'PKCS1', message: 'AA==' }), /^Key mechanisms do not allow requested signing\.$/);
    const big = generateKey({ type: 'Generic', length: 512, mechanisms: ['AES_Encryption_CBC'] }).record;
    status400(() => encrypt(big, { mode: 'AES_CBC', message: b64(Buffer.alloc(16)) }), /^Encryption failed: AES key length must be 16, 24 or 32 bytes, not 64\.$/);
    const odd = importKeyJson({ type: 'Generic', mechanisms: ['RSA_Signature_PKCS1', 'RSA_Decryption_RAW'], private: { data: b64(Buffer.alloc(16)) } }).record;
    status400(() => sign(odd, { mode: 'PKCS1', message: 'AA==' }), /^Generic keys can't sign\.$/);
    status400(() => decrypt(odd, { mode: 'RAW', encrypted: 'AA==' }), /^decrypt mode not supported by Generic key$/);
  });
});

describe('request bodies', () => {
  const generic: KeyRecord = generateKey({ type: 'Generic', length: 128, mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'] }).record;
  it('are strict: unknown properties, missing fields, unknown modes and wrong types are schema errors', () => {
    status400(() => sign(rsa, { mode: 'PKCS1', message: 'AA==', extra: true }), /^Invalid data for JSON schema: .*"extra"/);
    status400(() => sign(rsa, { mode: 'PKCS1' }), /^Invalid data for JSON schema: .*"message"/);
    status400(() => sign(rsa, { mode: 'PKCS2', message: 'AA==' }), /^Invalid data for JSON schema: .*"PKCS2"/);
    status400(() => sign(rsa, 'PKCS1'), /^Invalid data for JSON schema/);
    status400(() => decrypt(rsa, { mode: 'RAW', encrypted: 5 }), /^Invalid data for JSON schema/);
    status400(() => decrypt(rsa, { mode: 'RAW', encrypted: 'AA==', iv: 1 }), /^Invalid data for JSON schema/);
    status400(() => encrypt(generic, { mode: 'RAW', message: 'AA==' }), /^Invalid data for JSON schema: .*"RAW"/);
    status400(() => encrypt(generic, { mode: 'AES_CBC', message: 'AA==', encrypted: 'AA==' }), /^Invalid data for JSON schema: .*"encrypted"/);
  });

  it('decode base64 strictly after removing newlines', () => {
    status400(() => sign(rsa, { mode: 'PKCS1', message: 'AA=' }), /^Couldn't decode data from base64: /);
    status400(() => sign(rsa, { mode: 'PKCS1', message: 'A A=' }), /^Couldn't decode data from base64: /);
    status400(() => decrypt(rsa, { mode: 'RAW', encrypted: '%%%%' }), /^Couldn't decode data from base64: /);
    status400(() => encrypt(generic, { mode: 'AES_CBC', message: 'AAA' }), /^Couldn't decode data from base64: /);
    const data = randomBytes(32);
    const wrapped = b64(data).replace(/(.{8})/g, '$1\n');
    const a = encrypt(generic, { mode: 'AES_CBC', message: wrapped, iv: b64(Buffer.alloc(16)) });
    const b = encrypt(generic, { mode: 'AES_CBC', message: b64(data), iv: b64(Buffer.alloc(16)) });
    expect(a.encrypted).toBe(b.encrypted);
  });
});

// --- BIP340 verification (test-only affine secp256k1 arithmetic) ---
const P = 2n ** 256n - 2n ** 32n - 977n;
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const G = { x: 0x79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798n, y: 0x483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8n };
type Pt = { x: bigint; y: bigint } | null;
const md = (a: bigint, m = P): bigint => ((a % m) + m) % m;
function pw(b: bigint, e: bigint, m = P): bigint {
  let r = 1n;
  for (b = md(b, m); e > 0n; e >>= 1n, b = (b * b) % m) if (e & 1n) r = (r * b) % m;
  return r;
}
function add(a: Pt, b: Pt): Pt {
  if (a === null) return b;
  if (b === null) return a;
  if (a.x === b.x && md(a.y + b.y) === 0n) return null;
  const l = a.x === b.x ? md(3n * a.x * a.x * pw(2n * a.y, P - 2n)) : md((b.y - a.y) * pw(b.x - a.x, P - 2n));
  const x = md(l * l - a.x - b.x);
  return { x, y: md(l * (a.x - x) - a.y) };
}
function mul(k: bigint, p: Pt): Pt {
  let r: Pt = null;
  for (let q = p; k > 0n; k >>= 1n, q = add(q, q)) if (k & 1n) r = add(r, q);
  return r;
}
const big = (b: Buffer): bigint => BigInt('0x' + (b.toString('hex') || '0'));
function tagged(tag: string, ...parts: Buffer[]): Buffer {
  const t = createHash('sha256').update(tag).digest();
  const h = createHash('sha256').update(t).update(t);
  parts.forEach((p) => h.update(p));
  return h.digest();
}
function bip340Verify(px: Buffer, m: Buffer, sig: Buffer): boolean {
  const x = big(px);
  let y = pw(md(x * x * x + 7n), (P + 1n) / 4n);
  if (y % 2n) y = P - y;
  const r = big(sig.subarray(0, 32));
  const s = big(sig.subarray(32));
  const e = md(big(tagged('BIP0340/challenge', sig.subarray(0, 32), px, m)), N);
  const R = add(mul(s, G), mul(N - e, { x, y }));
  return R !== null && R.y % 2n === 0n && R.x === r;
}
