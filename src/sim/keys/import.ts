/**
 * Key import (FACTS §5.4): JSON `PrivateKey` (RSA from primes, EC scalar, Ed25519 seed, Generic secret) and the
 * multipart PEM variant. Invalid material answers 400 with a message that never repeats the material.
 */
import { checkPrimeSync, createECDH, createPrivateKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { EC_CURVES, KEY_TYPES, type KeyMechanism, type KeyRecord, type KeyType } from './types.js';
import { keyLabel, mechanismList, optString, reqEnum, restrictionTags, strictObject } from './validate.js';
import { bigToBytes, bytesToBig, ed25519Pkcs8, sec1PrivateKey } from './der.js';
import { pkcs8Pem, typeOfKeyObject } from './material.js';

const bad = (msg: string): SimHttpError => new SimHttpError(400, msg);

/** Decodes one `KeyPrivateData` field (default ""); the error names the field, never its value. */
function privateField(o: Record<string, unknown>, key: string): Buffer {
  const s = (optString(o, key, 'KeyPrivateData') ?? '').replace(/\n/g, '');
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) throw bad(`Invalid base64 encoded value in "${key}".`);
  return Buffer.from(s, 'base64');
}

const b64url = (n: bigint): string => bigToBytes(n).toString('base64url');

function modPow(b: bigint, e: bigint, m: bigint): bigint {
  let r = 1n;
  b %= m;
  for (; e > 0n; e >>= 1n, b = (b * b) % m) if (e & 1n) r = (r * b) % m;
  return r;
}
function modInv(a: bigint, m: bigint): bigint | undefined {
  let [r0, r1, s0, s1] = [((a % m) + m) % m, m, 1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return r0 === 1n ? ((s0 % m) + m) % m : undefined;
}

/** RSA from primeP, primeQ and publicExponent; derives n, d, dp, dq, qi like mirage-crypto's `priv_of_primes`. */
function rsaFromPrimes(pB: Buffer, qB: Buffer, eB: Buffer): KeyObject {
  const [p, q, e] = [bytesToBig(pB), bytesToBig(qB), bytesToBig(eB)];
  if (p < 3n || q < 3n || !checkPrimeSync(p) || !checkPrimeSync(q)) throw bad('Invalid RSA private key: primeP and primeQ must be primes.');
  if (p === q) throw bad('Invalid RSA private key: primeP and primeQ are the same number.');
  const phi = (p - 1n) * (q - 1n);
  const d = e < 3n || e % 2n === 0n ? undefined : modInv(e, phi);
  if (d === undefined) throw bad('Invalid RSA private key: invalid publicExponent.');
  const n = p * q;
  const qi = modInv(q, p);
  if (qi === undefined || modPow(modPow(2n, e, n), d, n) !== 2n) throw bad('Invalid RSA private key.');
  const jwk: JsonWebKey = { kty: 'RSA', n: b64url(n), e: b64url(e), d: b64url(d), p: b64url(p), q: b64url(q), dp: b64url(d % (p - 1n)), dq: b64url(d % (q - 1n)), qi: b64url(qi) };
  try {
    return createPrivateKey({ key: jwk, format: 'jwk' });
  } catch {
    throw bad('Invalid RSA private key.');
  }
}

/** EC from the big-endian scalar (exactly the field size, as mirage-crypto's `priv_of_octets` requires). */
function ecFromScalar(type: KeyType, scalar: Buffer): KeyObject {
  const info = EC_CURVES[type];
  if (info === undefined) throw bad(`Key type ${type} is not supported by the simulator.`);
  if (scalar.length !== info.fieldBytes) throw bad(`Invalid ${type} private key: expected a ${info.fieldBytes}-byte scalar, got ${scalar.length} bytes.`);
  let pub: Buffer;
  try {
    const ecdh = createECDH(info.curve);
    ecdh.setPrivateKey(scalar);
    pub = ecdh.getPublicKey();
  } catch {
    throw bad(`Invalid ${type} private key: the scalar is not valid for the curve.`);
  }
  const der = sec1PrivateKey(scalar, info.oid, pub);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'sec1' });
  } finally {
    der.fill(0);
  }
}

function ed25519FromSeed(seed: Buffer): KeyObject {
  if (seed.length !== 32) throw bad(`Invalid Curve25519 private key: expected a 32-byte seed, got ${seed.length} bytes.`);
  const der = ed25519Pkcs8(seed);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

const WHAT = 'PrivateKey';

/**
 * Validates a JSON `PrivateKey` body and builds the record (mechanisms are not checked against the type, as in the
 * firmware, FACTS c3). Throws SimHttpError 400 for schema errors and invalid material.
 */
export function importKeyJson(body: unknown): { record: KeyRecord } {
  const o = strictObject(body, WHAT, ['mechanisms', 'type', 'private', 'restrictions', 'label'], ['mechanisms', 'type', 'private']);
  const mechanisms = mechanismList(o['mechanisms'], WHAT);
  const type = reqEnum(o, 'type', WHAT, KEY_TYPES);
  const priv = strictObject(o['private'], `${WHAT}.private`, ['primeP', 'primeQ', 'publicExponent', 'data']);
  const tags = restrictionTags(o['restrictions'], WHAT);
  const label = keyLabel(o['label'], WHAT);
  const base = { type, mechanisms, cert: null, operations: 0, tags, ...(label === undefined ? {} : { label }) };
  if (type === 'Generic') {
    const raw = privateField(priv, 'data');
    if (raw.length === 0) throw bad('Invalid Generic key: "data" is empty.');
    return { record: { ...base, raw } };
  }
  let key: KeyObject;
  if (type === 'RSA') {
    const parts = [privateField(priv, 'primeP'), privateField(priv, 'primeQ'), privateField(priv, 'publicExponent')] as const;
    try {
      key = rsaFromPrimes(...parts);
    } finally {
      parts[0].fill(0);
      parts[1].fill(0);
    }
  } else {
    const data = privateField(priv, 'data');
    try {
      key = type === 'Curve25519' ? ed25519FromSeed(data) : ecFromScalar(type, data);
    } finally {
      data.fill(0);
    }
  }
  return { record: { ...base, privatePem: pkcs8Pem(key) } };
}

const PEM_KINDS = /^-----BEGIN (PRIVATE KEY|RSA PRIVATE KEY|EC PRIVATE KEY)-----\r?\n[\s\S]*-----END \1-----\s*$/;

/**
 * The multipart import: `args` is the first part's JSON `{mechanisms, restrictions?, label?}` (strict), `pem` the
 * private key (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`); the type is inferred and the
 * key is stored as PKCS#8. Throws SimHttpError 400 for bad arguments, unparsable or unsupported keys.
 */
export function importKeyPem(args: unknown, pem: string): { record: KeyRecord } {
  const what = 'arguments';
  const o = strictObject(args, what, ['mechanisms', 'restrictions', 'label'], ['mechanisms']);
  const mechanisms: KeyMechanism[] = mechanismList(o['mechanisms'], what);
  const tags = restrictionTags(o['restrictions'], what);
  const label = keyLabel(o['label'], what);
  const text = pem.trim() + '\n';
  if (!PEM_KINDS.test(text)) throw bad('Invalid private key PEM: expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY.');
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: text, format: 'pem' });
  } catch {
    throw bad('Invalid private key PEM: the key does not parse.');
  }
  const type = typeOfKeyObject(key);
  if (type === undefined) throw bad('Unsupported private key type.');
  const record: KeyRecord = { type, mechanisms, privatePem: pkcs8Pem(key), cert: null, operations: 0, tags };
  if (label !== undefined) record.label = label;
  return { record };
}

