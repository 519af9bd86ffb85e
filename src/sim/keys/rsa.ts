/**
 * RSA primitives with the firmware's semantics (mirage-crypto), built on node:crypto's raw RSA:
 * PKCS#1 v1.5 type-1 signing of caller-supplied bytes, EMSA-PSS over a caller-supplied digest (salt length = hash
 * length, MGF1 with the same hash), and decryption RAW / PKCS#1 v1.5 / OAEP. PKCS#1 v1.5 decryption is unpadded here
 * rather than by OpenSSL, whose implicit rejection would return random bytes where the firmware answers an error.
 * Functions return undefined (or throw SimHttpError 400) on failure; none logs or echoes data.
 */
import { constants, createHash, privateDecrypt, privateEncrypt, randomBytes, type KeyObject } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { bigToBytes, bytesToBig } from './der.js';

export type RsaHash = 'md5' | 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512';
export const HASH_SIZE: Readonly<Record<RsaHash, number>> = { md5: 16, sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64 };

function modulus(key: KeyObject): { bits: number; k: number } {
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  return { bits, k: Math.ceil(bits / 8) };
}

/** EMSA-PKCS1-v1_5 type 1 over the given bytes, no hashing (the caller prepends DigestInfo). */
export function signPkcs1Raw(key: KeyObject, data: Buffer): Buffer {
  const { k } = modulus(key);
  if (data.length > k - 11) throw new SimHttpError(400, 'Signing failure: RSA key too short.');
  return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, data);
}

function mgf1(hash: RsaHash, seed: Buffer, len: number): Buffer {
  const out: Buffer[] = [];
  for (let c = 0, have = 0; have < len; c++) {
    const ctr = Buffer.alloc(4);
    ctr.writeUInt32BE(c);
    const h = createHash(hash).update(seed).update(ctr).digest();
    out.push(h);
    have += h.length;
  }
  return Buffer.concat(out).subarray(0, len);
}

/** RSASSA-PSS (RFC 8017 §8.1.1) over a digest the caller computed; sLen = hLen as mirage-crypto's default. */
export function signPssDigest(key: KeyObject, hash: RsaHash, digest: Buffer): Buffer {
  const hLen = HASH_SIZE[hash];
  if (digest.length !== hLen) throw new SimHttpError(400, `digested data of invalid size: expected ${hLen} bytes, got ${digest.length}.`);
  const { bits, k } = modulus(key);
  const emBits = bits - 1;
  const emLen = Math.ceil(emBits / 8);
  if (emLen < 2 * hLen + 2) throw new SimHttpError(400, 'Signing failure: RSA key too short.');
  const salt = randomBytes(hLen);
  const h = createHash(hash).update(Buffer.alloc(8)).update(digest).update(salt).digest();
  const db = Buffer.concat([Buffer.alloc(emLen - 2 * hLen - 2), Buffer.from([1]), salt]);
  const mask = mgf1(hash, h, emLen - hLen - 1);
  for (let i = 0; i < db.length; i++) db[i] = (db[i] ?? 0) ^ (mask[i] ?? 0);
  db[0] = (db[0] ?? 0) & (0xff >> (8 * emLen - emBits));
  const em = Buffer.concat([Buffer.alloc(k - emLen), db, h, Buffer.from([0xbc])]);
  return privateEncrypt({ key, padding: constants.RSA_NO_PADDING }, em);
}

/** m = c^d mod n, as k bytes; undefined when c ≥ n (mirage's `Insufficient_key`). */
export function decryptRaw(key: KeyObject, c: Buffer): Buffer | undefined {
  const { k } = modulus(key);
  const cv = bytesToBig(c);
  const padded = bigToBytes(cv, k);
  if (padded.length > k) return undefined;
  try {
    return privateDecrypt({ key, padding: constants.RSA_NO_PADDING }, padded);
  } catch {
    return undefined; // OpenSSL: data too large for modulus
  }
}

/** RSAES-PKCS1-v1_5 decryption; undefined for a wrong length or padding. */
export function decryptPkcs1(key: KeyObject, c: Buffer): Buffer | undefined {
  const { k } = modulus(key);
  if (c.length !== k) return undefined;
  const em = decryptRaw(key, c);
  if (em === undefined || em[0] !== 0 || em[1] !== 2) return undefined;
  const sep = em.indexOf(0, 2);
  if (sep < 10) return undefined; // at least 8 non-zero padding bytes
  return em.subarray(sep + 1);
}

/** RSAES-OAEP with MGF1 over the same hash and an empty label; undefined on failure. */
export function decryptOaep(key: KeyObject, hash: RsaHash, c: Buffer): Buffer | undefined {
  try {
    return privateDecrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, c);
  } catch {
    return undefined;
  }
}
