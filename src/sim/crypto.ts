/**
 * The firmware's inner-layer primitives (FACTS §6.2, §6.5): AES-256-GCM sealing as `nonce ‖ ct ‖ tag`,
 * per-store keys derived from the domain key, scrypt for unlock and backup keys, HMAC user digests.
 * Pure functions; `gcmOpen` throws on authentication failure.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export interface KdfParams {
  N: number;
  r: number;
  p: number;
}
export const PRODUCTION_KDF: KdfParams = { N: 16384, r: 8, p: 16 };
export const TEST_KDF: KdfParams = { N: 2, r: 1, p: 1 };

/** AES-256-GCM with a random 12-byte nonce; `ad` is the ASCII associated data. */
export function gcmSeal(key: Buffer, ad: string, plaintext: Buffer): Buffer {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(ad, 'latin1'));
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([nonce, ct, c.getAuthTag()]);
}

/** Opens a {@link gcmSeal} blob. Throws `Error('authentication failed')` when the key, ad or bytes are wrong. */
export function gcmOpen(key: Buffer, ad: string, sealed: Buffer): Buffer {
  if (sealed.length <= 28) throw new Error('authentication failed: sealed value too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
    d.setAAD(Buffer.from(ad, 'latin1'));
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
  } catch {
    throw new Error('authentication failed');
  }
}

/** `SHA256(secret ‖ suffix)`: the firmware's store keys (`auth_store`, …) and the early config key. */
export function deriveSubKey(secret: Buffer, suffix: string): Buffer {
  return createHash('sha256').update(secret).update(suffix, 'latin1').digest();
}

/** scrypt(passphrase, salt) → 32 bytes, off the event loop. */
export function kdf(passphrase: string | Buffer, salt: Buffer, params: KdfParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(passphrase, salt, 32, { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 64 * 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

/** The user record digest: HMAC-SHA256(key = salt, message = passphrase). */
export function passphraseDigest(salt: Buffer, passphrase: string): Buffer {
  return createHmac('sha256', salt).update(passphrase, 'utf8').digest();
}

/** Constant-time comparison that tolerates different lengths. */
export function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
