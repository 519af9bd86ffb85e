/**
 * The backup file's crypto primitives (FACTS §6.2): scrypt key derivation and AES-256-GCM sealed fields
 * laid out `nonce(12) ‖ ciphertext ‖ tag(16)` with an ASCII additional-data string.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject, randomBytes, scrypt } from 'node:crypto';
import { BackupCorruptedError, InputInvalidError } from '../errors.js';
import { GCM_NONCE_LENGTH, GCM_OVERHEAD, GCM_TAG_LENGTH, PRODUCTION_SCRYPT, type ScryptParams } from './format.js';

export const BACKUP_KEY_LENGTH = 32;

/**
 * A raw 32-byte key or a KeyObject made from it (see {@link gcmKey}). Passing a KeyObject is ~6x faster per field:
 * Node re-imports a raw Buffer key on every cipher, which dominates the cost of a 2 KB entry.
 */
export type GcmKey = Buffer | KeyObject;

/** Wraps a raw key for repeated use; the KeyObject holds its own native copy, so the Buffer may be zeroed after. */
export function gcmKey(raw: Buffer): KeyObject {
  return createSecretKey(raw);
}

const adCache = new Map<string, Buffer>();
function adBytes(ad: string): Buffer {
  let b = adCache.get(ad);
  if (b === undefined) {
    b = Buffer.from(ad, 'ascii');
    if (adCache.size < 64) adCache.set(ad, b);
  }
  return b;
}

/**
 * Derives the 32-byte backup key `scrypt(passphrase, salt)` with async (thread-pool) scrypt, so the event loop keeps
 * serving during the ~16 MiB production derivation. A string passphrase is taken as its UTF-8 bytes (as the firmware).
 * The caller owns the returned buffer and zeroes it when done. Throws InputInvalidError on nonsensical parameters.
 */
export async function deriveBackupKey(
  passphrase: string | Buffer,
  salt: Buffer,
  params: ScryptParams = PRODUCTION_SCRYPT,
): Promise<Buffer> {
  checkScryptParams(params);
  const pw = typeof passphrase === 'string' ? Buffer.from(passphrase, 'utf8') : passphrase;
  // Node's scrypt needs about 128·N·r bytes (+128·r·p); leave headroom so production params never hit the default cap.
  const maxmem = Math.max(32 * 1024 * 1024, 256 * params.N * params.r + 256 * params.r * params.p);
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      scrypt(pw, salt, BACKUP_KEY_LENGTH, { N: params.N, r: params.r, p: params.p, maxmem }, (err, key) =>
        err ? reject(err) : resolve(key),
      );
    });
  } finally {
    if (pw !== passphrase) pw.fill(0);
  }
}

function checkScryptParams(p: ScryptParams): void {
  const ok =
    Number.isInteger(p.N) && p.N > 1 && (p.N & (p.N - 1)) === 0 && p.N <= 1 << 20 &&
    Number.isInteger(p.r) && p.r >= 1 && p.r <= 32 &&
    Number.isInteger(p.p) && p.p >= 1 && p.p <= 64;
  if (!ok) {
    throw new InputInvalidError(`scrypt parameters N=${p.N}, r=${p.r}, p=${p.p} are not usable`, {
      hint: 'Use PRODUCTION_SCRYPT (16384, 8, 16) or TEST_SCRYPT (2, 1, 1).',
    });
  }
}

/**
 * Random nonces drawn from the CSPRNG in blocks: one `randomBytes` call per 4096 nonces instead of one per sealed
 * field (a call costs a few µs, as much as sealing a 1 KB entry). Each nonce is still 96 fresh random bits, used once;
 * nonces are public (they are written in clear before each ciphertext), so holding a block of them reveals nothing.
 */
const NONCES_PER_BLOCK = 4096;
let nonceBlock = Buffer.alloc(0);
let noncePos = 0;

function nextNonce(): Buffer {
  if (noncePos >= nonceBlock.length) {
    nonceBlock = randomBytes(GCM_NONCE_LENGTH * NONCES_PER_BLOCK);
    noncePos = 0;
  }
  const n = nonceBlock.subarray(noncePos, noncePos + GCM_NONCE_LENGTH);
  noncePos += GCM_NONCE_LENGTH;
  return n;
}

/** AES-256-GCM with a fresh random nonce: returns `nonce(12) ‖ ciphertext ‖ tag(16)`. Throws if key is not 32 bytes. */
export function gcmSeal(key: GcmKey, ad: string, plaintext: Buffer): Buffer {
  const out = Buffer.allocUnsafe(GCM_OVERHEAD + plaintext.length);
  gcmSealInto(key, ad, plaintext, out, 0);
  return out;
}

/**
 * As gcmSeal, written into `out` at `offset` (which must have room for GCM_OVERHEAD + plaintext.length bytes):
 * a writer seals straight into its output buffer. Returns the bytes written.
 */
export function gcmSealInto(key: GcmKey, ad: string, plaintext: Buffer, out: Buffer, offset: number): number {
  const nonce = nextNonce();
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: GCM_TAG_LENGTH });
  cipher.setAAD(adBytes(ad));
  nonce.copy(out, offset);
  let pos = offset + GCM_NONCE_LENGTH;
  pos += cipher.update(plaintext).copy(out, pos);
  pos += cipher.final().copy(out, pos);
  pos += cipher.getAuthTag().copy(out, pos);
  return pos - offset;
}

/**
 * The keystream of the first `blocks` 16-byte plaintext blocks of each sealed field (`nonce(12) ‖ ct ‖ tag`), for many
 * fields in ONE aes-256-ecb call: GCM encrypts with AES-CTR, plaintext block b under the counter block
 * `nonce ‖ u32be(2 + b)` for a 96-bit nonce (J0 = nonce ‖ 1). Field i's keystream is at `[i·blocks·16, (i+1)·blocks·16)`.
 * This is NOT authentication: bytes decrypted with it are unchecked (docs/backup-format.md, "Entries read by their path
 * only"). The caller zeroes the result.
 */
export function gcmKeystreamPrefixes(key: GcmKey, sealed: readonly Buffer[], blocks: number): Buffer {
  const span = blocks * 16;
  const counters = Buffer.allocUnsafe(sealed.length * span);
  for (let i = 0; i < sealed.length; i++) {
    for (let b = 0; b < blocks; b++) {
      const at = i * span + b * 16;
      sealed[i]!.copy(counters, at, 0, GCM_NONCE_LENGTH);
      counters.writeUInt32BE(2 + b, at + GCM_NONCE_LENGTH);
    }
  }
  const ecb = createCipheriv('aes-256-ecb', key, null);
  ecb.setAutoPadding(false);
  return ecb.update(counters);
}

/**
 * Opens a sealed field. Throws BackupCorruptedError (no offset: callers add where it was) when the blob is
 * 28 bytes or shorter (the firmware refuses those too) or does not authenticate under `key` and `ad`.
 */
export function gcmOpen(key: GcmKey, ad: string, sealed: Buffer): Buffer {
  if (sealed.length <= GCM_OVERHEAD) {
    throw new BackupCorruptedError(`sealed field "${ad}" is ${sealed.length} bytes, too short to hold any data`);
  }
  const nonce = sealed.subarray(0, GCM_NONCE_LENGTH);
  const tag = sealed.subarray(sealed.length - GCM_TAG_LENGTH);
  const ct = sealed.subarray(GCM_NONCE_LENGTH, sealed.length - GCM_TAG_LENGTH);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: GCM_TAG_LENGTH });
  decipher.setAAD(adBytes(ad));
  decipher.setAuthTag(tag);
  const pt = decipher.update(ct);
  try {
    decipher.final();
  } catch (cause) {
    pt.fill(0);
    throw new BackupCorruptedError(`sealed field "${ad}" failed authentication`, { cause });
  }
  return pt;
}
