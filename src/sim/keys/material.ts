/**
 * Private key material of a KeyRecord as node:crypto KeyObjects, and the type the firmware infers from a key.
 */
import { createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { typeOfCurve, type KeyRecord, type KeyType } from './types.js';

/** 20 lowercase hex characters from 10 random bytes, like the firmware's generated key and user ids (FACTS §3.1). */
export function generateId(): string {
  return randomBytes(10).toString('hex');
}

/** The NetHSM type of a node KeyObject holding an asymmetric key, or undefined for a type the NetHSM lacks. */
export function typeOfKeyObject(k: KeyObject): KeyType | undefined {
  switch (k.asymmetricKeyType) {
    case 'rsa':
      return 'RSA';
    case 'ed25519':
      return 'Curve25519';
    case 'ec': {
      const curve = k.asymmetricKeyDetails?.namedCurve;
      return curve === undefined ? undefined : typeOfCurve(curve);
    }
    default:
      return undefined;
  }
}

// Parsing a PEM costs more than an EC signature; records are re-created by the caller's store, so cache by PEM text.
const CACHE_LIMIT = 512;
const cache = new Map<string, KeyObject>();

/** Parses a private key PEM through the cache. Throws node's error when it does not parse. */
function loadPrivateKey(pem: string): KeyObject {
  let k = cache.get(pem);
  if (k === undefined) {
    k = createPrivateKey(pem);
    if (cache.size >= CACHE_LIMIT) {
      const first = cache.keys().next();
      if (!first.done) cache.delete(first.value);
    }
    cache.set(pem, k);
  }
  return k;
}

/** The type of a private key PEM, or undefined when it does not parse or is of a type the NetHSM does not have. */
export function typeOfPrivateKey(pem: string): KeyType | undefined {
  try {
    return typeOfKeyObject(loadPrivateKey(pem));
  } catch {
    return undefined;
  }
}

/**
 * The private KeyObject of an asymmetric record. Throws SimHttpError 400 for Generic records (no asymmetric key) and
 * Error when the stored PEM does not parse (a corrupted store, not a client error).
 */
export function privateKeyObject(r: KeyRecord): KeyObject {
  if (r.privatePem === undefined) throw new SimHttpError(400, 'Generic keys have no public key');
  return loadPrivateKey(r.privatePem);
}

export function publicKeyObject(r: KeyRecord): KeyObject {
  return createPublicKey(privateKeyObject(r));
}

/** PKCS#8 PEM of a private KeyObject, as the firmware stores it (`X509.Private_key.encode_pem`). */
export function pkcs8Pem(k: KeyObject): string {
  return k.export({ type: 'pkcs8', format: 'pem' }) as string;
}
