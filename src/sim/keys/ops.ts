/**
 * `POST /keys/{id}/sign|decrypt|encrypt` (FACTS §5.6, c9) over a key record, in the firmware's check order: strict
 * body, base64 decoding, mechanism check, then the type-specific operation. Every failure is SimHttpError 400 with the
 * firmware's message; the caller (simcore) handles existence, tags (403) and the operations counter.
 */
import { createCipheriv, createDecipheriv, randomBytes, sign as nodeSign } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import {
  DECRYPT_MODES,
  DECRYPT_MODE_MECHANISM,
  EC_CURVES,
  ENCRYPT_MODES,
  ENCRYPT_MODE_MECHANISM,
  SIGN_MODES,
  SIGN_MODE_MECHANISM,
  type KeyRecord,
} from './types.js';
import { decodeBase64Field, optString, reqEnum, reqString, strictObject } from './validate.js';
import { privateKeyObject } from './material.js';
import { decryptOaep, decryptPkcs1, decryptRaw, signPkcs1Raw, signPssDigest, type RsaHash } from './rsa.js';
import { bip340Sign, ecdsaSignDigest } from './ec.js';

const bad = (m: string): SimHttpError => new SimHttpError(400, m);

function signBytes(r: KeyRecord, mode: (typeof SIGN_MODES)[number], data: Buffer): Buffer {
  if (r.type === 'Generic') throw bad("Generic keys can't sign.");
  const key = privateKeyObject(r);
  if (r.type === 'RSA' && mode === 'PKCS1') return signPkcs1Raw(key, data);
  if (r.type === 'RSA' && mode.startsWith('PSS_')) return signPssDigest(key, mode.slice(4).toLowerCase() as RsaHash, data);
  if (r.type === 'Curve25519' && mode === 'EdDSA') return nodeSign(null, data, key);
  if (r.type === 'EC_P256K1' && mode === 'BIP340') return bip340Sign(key, data);
  const curve = EC_CURVES[r.type];
  if (curve !== undefined && mode === 'ECDSA') return ecdsaSignDigest(key, curve, data);
  throw bad('invalid sign mode');
}

/** Signs `SignRequestData`; returns `{signature}` (base64). */
export function sign(r: KeyRecord, body: unknown): { signature: string } {
  const o = strictObject(body, 'SignRequestData', ['mode', 'message'], ['mode', 'message']);
  const mode = reqEnum(o, 'mode', 'SignRequestData', SIGN_MODES);
  const data = decodeBase64Field(reqString(o, 'message', 'SignRequestData'), 'message');
  if (!r.mechanisms.includes(SIGN_MODE_MECHANISM[mode])) throw bad('Key mechanisms do not allow requested signing.');
  return { signature: signBytes(r, mode, data).toString('base64') };
}

function aesCipherName(raw: Buffer, op: 'Encryption' | 'Decryption'): string {
  if (![16, 24, 32].includes(raw.length)) throw bad(`${op} failed: AES key length must be 16, 24 or 32 bytes, not ${raw.length}.`);
  return `aes-${raw.length * 8}-cbc`;
}

function aesCbc(raw: Buffer, iv: Buffer, data: Buffer, op: 'Encryption' | 'Decryption'): Buffer {
  const name = aesCipherName(raw, op);
  if (iv.length !== 16) throw bad(`${op} failed: IV must be 16 bytes, not ${iv.length}.`);
  if (data.length % 16 !== 0) throw bad(`${op} failed: data length ${data.length} is not a multiple of the block size 16.`);
  const c = op === 'Encryption' ? createCipheriv(name, raw, iv) : createDecipheriv(name, raw, iv);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

/** `AES_CBC` iv field: bad base64 is the AES failure of the firmware (`Base64.decode_exn` inside its try). */
function ivField(s: string, op: 'Encryption' | 'Decryption'): Buffer {
  try {
    return decodeBase64Field(s, 'iv');
  } catch {
    throw bad(`${op} failed: invalid base64 in iv.`);
  }
}

/** Decrypts `DecryptRequestData`; returns `{decrypted}` (base64). */
export function decrypt(r: KeyRecord, body: unknown): { decrypted: string } {
  const what = 'DecryptRequestData';
  const o = strictObject(body, what, ['mode', 'encrypted', 'iv'], ['mode', 'encrypted']);
  const mode = reqEnum(o, 'mode', what, DECRYPT_MODES);
  const iv = optString(o, 'iv', what);
  const data = decodeBase64Field(reqString(o, 'encrypted', what), 'encrypted');
  if (!r.mechanisms.includes(DECRYPT_MODE_MECHANISM[mode])) throw bad('Key mechanisms do not allow requested decryption.');
  if (r.type === 'Generic') {
    if (mode !== 'AES_CBC') throw bad('decrypt mode not supported by Generic key');
    if (iv === undefined) throw bad('AES-CBC decrypt requires IV');
    return { decrypted: aesCbc(r.raw ?? Buffer.alloc(0), ivField(iv, 'Decryption'), data, 'Decryption').toString('base64') };
  }
  if (r.type !== 'RSA') throw bad('Decryption only supported for RSA and Generic keys.');
  const key = privateKeyObject(r);
  let out: Buffer | undefined;
  if (mode === 'RAW') out = decryptRaw(key, data);
  else if (mode === 'PKCS1') out = decryptPkcs1(key, data);
  else if (mode.startsWith('OAEP_')) out = decryptOaep(key, mode.slice(5).toLowerCase() as RsaHash, data);
  if (out === undefined) throw bad('Decryption failure');
  return { decrypted: out.toString('base64') };
}

/** Encrypts `EncryptRequestData` (AES_CBC, Generic keys only; random IV when absent); returns `{encrypted, iv}`. */
export function encrypt(r: KeyRecord, body: unknown): { encrypted: string; iv: string } {
  const what = 'EncryptRequestData';
  const o = strictObject(body, what, ['mode', 'message', 'iv'], ['mode', 'message']);
  const mode = reqEnum(o, 'mode', what, ENCRYPT_MODES);
  const ivS = optString(o, 'iv', what);
  const data = decodeBase64Field(reqString(o, 'message', what), 'message');
  if (!r.mechanisms.includes(ENCRYPT_MODE_MECHANISM[mode])) throw bad('Key mechanisms do not allow requested encryption.');
  if (r.type !== 'Generic') throw bad('Encryption only supported for Generic keys.');
  const iv = ivS === undefined ? randomBytes(16) : ivField(ivS, 'Encryption');
  return { encrypted: aesCbc(r.raw ?? Buffer.alloc(0), iv, data, 'Encryption').toString('base64'), iv: iv.toString('base64') };
}
