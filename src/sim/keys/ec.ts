/**
 * ECDSA over a caller-supplied digest and BIP340 Schnorr, which node:crypto does not offer directly (its `sign` always
 * hashes for EC keys). The scalar multiplications run in OpenSSL through `ECDH.setPrivateKey` (k·G); only the mod-n
 * arithmetic is done here with BigInt. Random nonces (`rand_k` in the firmware).
 */
import { createECDH, createHash, randomBytes, type KeyObject } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import type { CurveInfo } from './types.js';
import { bigToBytes, bytesToBig, sec1Scalar, tlv } from './der.js';

/** Group orders of the supported curves. */
const ORDER: Readonly<Record<string, bigint>> = {
  prime256v1: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  secp384r1: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
  secp521r1: 0x01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409n,
  secp256k1: 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n,
  brainpoolP256r1: 0xa9fb57dba1eea9bc3e660a909d838d718c397aa3b561a6f7901e0e82974856a7n,
  brainpoolP384r1: 0x8cb91e82a3386d280f5d6f7e50e641df152f7109ed5456b31f166e6cac0425a7cf3ab6af6b7fc3103b883202e9046565n,
  brainpoolP512r1: 0xaadd9db8dbe9c48b3fd4e6ae33c9fc07cb308db3b3c9d20ed6639cca70330870553e5c414ca92619418661197fac10471db1d381085ddaddb58796829ca90069n,
};

const mod = (a: bigint, n: bigint): bigint => ((a % n) + n) % n;
function inv(a: bigint, n: bigint): bigint {
  let [r0, r1, s0, s1] = [mod(a, n), n, 1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return mod(s0, n);
}

/** A uniformly distributed scalar in [1, n-1]. */
function randomScalar(n: bigint): bigint {
  const len = Math.ceil(n.toString(16).length / 2) + 8;
  return mod(bytesToBig(randomBytes(len)), n - 1n) + 1n;
}

/** k·G as the uncompressed point's (x, y). */
function mulG(curve: string, k: bigint, fieldBytes: number): { x: bigint; y: bigint } {
  const ecdh = createECDH(curve);
  const kb = bigToBytes(k, fieldBytes);
  try {
    ecdh.setPrivateKey(kb);
  } finally {
    kb.fill(0);
  }
  const p = ecdh.getPublicKey();
  return { x: bytesToBig(p.subarray(1, 1 + fieldBytes)), y: bytesToBig(p.subarray(1 + fieldBytes)) };
}

function scalarOf(key: KeyObject): bigint {
  // Not via JWK: node has no JWK names for the Brainpool curves.
  const der = key.export({ format: 'der', type: 'sec1' });
  try {
    return bytesToBig(sec1Scalar(der));
  } finally {
    der.fill(0);
  }
}

function derInt(v: bigint): Buffer {
  let b = bigToBytes(v);
  if ((b[0] ?? 0) & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return tlv(0x02, b);
}

/**
 * ECDSA over `digest` (which must have the size of the curve's hash, as X509.Private_key.sign checks), DER
 * `SEQUENCE { r, s }`. Throws SimHttpError 400 for a wrong digest size.
 */
export function ecdsaSignDigest(key: KeyObject, info: CurveInfo, digest: Buffer): Buffer {
  const hLen = { sha256: 32, sha384: 48, sha512: 64 }[info.hash];
  if (digest.length !== hLen) throw new SimHttpError(400, `digested data of invalid size: expected ${hLen} bytes, got ${digest.length}.`);
  const n = ORDER[info.curve];
  if (n === undefined) throw new SimHttpError(400, `ECDSA is not supported for ${info.curve}.`);
  const nBits = n.toString(2).length;
  let z = bytesToBig(digest);
  if (digest.length * 8 > nBits) z >>= BigInt(digest.length * 8 - nBits);
  const d = scalarOf(key);
  for (;;) {
    const k = randomScalar(n);
    const r = mod(mulG(info.curve, k, info.fieldBytes).x, n);
    if (r === 0n) continue;
    const s = mod(inv(k, n) * (z + r * d), n);
    if (s === 0n) continue;
    return tlv(0x30, Buffer.concat([derInt(r), derInt(s)]));
  }
}

function taggedHash(tag: string, ...parts: Buffer[]): Buffer {
  const t = createHash('sha256').update(tag).digest();
  const h = createHash('sha256').update(t).update(t);
  for (const p of parts) h.update(p);
  return h.digest();
}

/** BIP340 Schnorr signature `r ‖ s` (64 bytes) over the raw message, with fresh auxiliary randomness. */
export function bip340Sign(key: KeyObject, message: Buffer): Buffer {
  const n = ORDER['secp256k1'] ?? 0n;
  const d0 = scalarOf(key);
  const P = mulG('secp256k1', d0, 32);
  const d = P.y % 2n === 0n ? d0 : n - d0;
  const px = bigToBytes(P.x, 32);
  const t = bigToBytes(d ^ bytesToBig(taggedHash('BIP0340/aux', randomBytes(32))), 32);
  const k0 = mod(bytesToBig(taggedHash('BIP0340/nonce', t, px, message)), n);
  t.fill(0);
  if (k0 === 0n) throw new SimHttpError(400, 'Signing failure: nonce is zero.');
  const R = mulG('secp256k1', k0, 32);
  const k = R.y % 2n === 0n ? k0 : n - k0;
  const rx = bigToBytes(R.x, 32);
  const e = mod(bytesToBig(taggedHash('BIP0340/challenge', rx, px, message)), n);
  return Buffer.concat([rx, bigToBytes(mod(k + e * d, n), 32)]);
}
