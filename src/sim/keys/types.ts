/**
 * The NetHSM key vocabulary (FACTS §2.2, §5.1): key types, mechanisms in the firmware's enum declaration order,
 * operation modes and which mechanism each mode needs. Pure data; nothing here throws.
 */

/** `KeyType`, in the order of the OpenAPI enum. */
export const KEY_TYPES = [
  'RSA',
  'Curve25519',
  'EC_P256',
  'EC_P384',
  'EC_P521',
  'EC_P256K1',
  'BrainpoolP256',
  'BrainpoolP384',
  'BrainpoolP512',
  'Generic',
] as const;
export type KeyType = (typeof KEY_TYPES)[number];

import { KEY_MECHANISMS, type KeyMechanism } from '../../nethsm/mechanisms.js';

export { KEY_MECHANISMS, type KeyMechanism };

export const SIGN_MODES = ['PKCS1', 'PSS_MD5', 'PSS_SHA1', 'PSS_SHA224', 'PSS_SHA256', 'PSS_SHA384', 'PSS_SHA512', 'EdDSA', 'ECDSA', 'BIP340'] as const;
export type SignMode = (typeof SIGN_MODES)[number];

export const DECRYPT_MODES = ['RAW', 'PKCS1', 'OAEP_MD5', 'OAEP_SHA1', 'OAEP_SHA224', 'OAEP_SHA256', 'OAEP_SHA384', 'OAEP_SHA512', 'AES_CBC'] as const;
export type DecryptMode = (typeof DECRYPT_MODES)[number];

export const ENCRYPT_MODES = ['AES_CBC'] as const;
export type EncryptMode = (typeof ENCRYPT_MODES)[number];

/**
 * A key as the simulator stores it: the content of the firmware's key JSON (FACTS §6.5) plus the type, which the
 * firmware does not store but infers from the private key.
 */
export interface KeyRecord {
  type: KeyType;
  /** Mechanisms in enum declaration order, no duplicates. */
  mechanisms: KeyMechanism[];
  /** PKCS#8 PEM for asymmetric keys. */
  privatePem?: string;
  /** Generic (AES) secret. */
  raw?: Buffer;
  cert: { contentType: string; data: Buffer } | null;
  operations: number;
  /** Restriction tags, sorted, no duplicates. */
  tags: string[];
  /** Absent (or empty) means no label. */
  label?: string;
}

const RSA_MECHANISMS: readonly KeyMechanism[] = KEY_MECHANISMS.filter((m) => m.startsWith('RSA_'));

/** Mechanisms `POST /keys/generate` accepts per type (FACTS §5.1). */
export const MECHANISMS_BY_TYPE: Readonly<Record<KeyType, readonly KeyMechanism[]>> = {
  RSA: RSA_MECHANISMS,
  Curve25519: ['EdDSA_Signature'],
  EC_P256: ['ECDSA_Signature'],
  EC_P384: ['ECDSA_Signature'],
  EC_P521: ['ECDSA_Signature'],
  EC_P256K1: ['ECDSA_Signature', 'BIP340_Signature'],
  BrainpoolP256: ['ECDSA_Signature'],
  BrainpoolP384: ['ECDSA_Signature'],
  BrainpoolP512: ['ECDSA_Signature'],
  Generic: ['AES_Encryption_CBC', 'AES_Decryption_CBC'],
};

export const SIGN_MODE_MECHANISM: Readonly<Record<SignMode, KeyMechanism>> = {
  PKCS1: 'RSA_Signature_PKCS1',
  PSS_MD5: 'RSA_Signature_PSS_MD5',
  PSS_SHA1: 'RSA_Signature_PSS_SHA1',
  PSS_SHA224: 'RSA_Signature_PSS_SHA224',
  PSS_SHA256: 'RSA_Signature_PSS_SHA256',
  PSS_SHA384: 'RSA_Signature_PSS_SHA384',
  PSS_SHA512: 'RSA_Signature_PSS_SHA512',
  EdDSA: 'EdDSA_Signature',
  ECDSA: 'ECDSA_Signature',
  BIP340: 'BIP340_Signature',
};

export const DECRYPT_MODE_MECHANISM: Readonly<Record<DecryptMode, KeyMechanism>> = {
  RAW: 'RSA_Decryption_RAW',
  PKCS1: 'RSA_Decryption_PKCS1',
  OAEP_MD5: 'RSA_Decryption_OAEP_MD5',
  OAEP_SHA1: 'RSA_Decryption_OAEP_SHA1',
  OAEP_SHA224: 'RSA_Decryption_OAEP_SHA224',
  OAEP_SHA256: 'RSA_Decryption_OAEP_SHA256',
  OAEP_SHA384: 'RSA_Decryption_OAEP_SHA384',
  OAEP_SHA512: 'RSA_Decryption_OAEP_SHA512',
  AES_CBC: 'AES_Decryption_CBC',
};

export const ENCRYPT_MODE_MECHANISM: Readonly<Record<EncryptMode, KeyMechanism>> = {
  AES_CBC: 'AES_Encryption_CBC',
};

/** Elliptic-curve types: OpenSSL curve name, field size in bytes and the hash ECDSA expects (FACTS §5.6). */
export interface CurveInfo {
  curve: string;
  fieldBytes: number;
  hash: 'sha256' | 'sha384' | 'sha512';
  /** DER of the curve OID (content bytes only). */
  oid: string;
}
export const EC_CURVES: Readonly<Partial<Record<KeyType, CurveInfo>>> = {
  EC_P256: { curve: 'prime256v1', fieldBytes: 32, hash: 'sha256', oid: '2a8648ce3d030107' },
  EC_P384: { curve: 'secp384r1', fieldBytes: 48, hash: 'sha384', oid: '2b81040022' },
  EC_P521: { curve: 'secp521r1', fieldBytes: 66, hash: 'sha512', oid: '2b81040023' },
  EC_P256K1: { curve: 'secp256k1', fieldBytes: 32, hash: 'sha256', oid: '2b8104000a' },
  BrainpoolP256: { curve: 'brainpoolP256r1', fieldBytes: 32, hash: 'sha256', oid: '2b2403030208010107' },
  BrainpoolP384: { curve: 'brainpoolP384r1', fieldBytes: 48, hash: 'sha384', oid: '2b240303020801010b' },
  BrainpoolP512: { curve: 'brainpoolP512r1', fieldBytes: 64, hash: 'sha512', oid: '2b240303020801010d' },
};

/** The key type of an OpenSSL named curve, or undefined. */
export function typeOfCurve(curve: string): KeyType | undefined {
  const aliases: Record<string, string> = { 'P-256': 'prime256v1', 'P-384': 'secp384r1', 'P-521': 'secp521r1' };
  const name = aliases[curve] ?? curve;
  for (const t of KEY_TYPES) if (EC_CURVES[t]?.curve === name) return t;
  return undefined;
}

/** Sorts mechanisms into enum declaration order and drops duplicates. */
export function sortMechanisms(ms: Iterable<KeyMechanism>): KeyMechanism[] {
  const set = new Set(ms);
  return KEY_MECHANISMS.filter((m) => set.has(m));
}

/** Sorts tags lexicographically by UTF-16 code unit (= byte order for the ASCII ID alphabet) and drops duplicates. */
export function sortTags(tags: Iterable<string>): string[] {
  return [...new Set(tags)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export function isKeyMechanism(x: unknown): x is KeyMechanism {
  return typeof x === 'string' && (KEY_MECHANISMS as readonly string[]).includes(x);
}
export function isKeyType(x: unknown): x is KeyType {
  return typeof x === 'string' && (KEY_TYPES as readonly string[]).includes(x);
}
