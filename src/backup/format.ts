/**
 * The NetHSM backup file layout (FACTS §6.2–6.3): constants, field framing and the firmware's entry order.
 *
 * Layout (v1; v0 stops after the entries and has no fields 5, 6, 8, 9):
 *   1. magic `_NETHSM_BACKUP_` (15 ASCII) ‖ version byte
 *   2. field(salt)                                   16-byte scrypt salt, plaintext
 *   3. field(GCM(bk, "backup-version", version))     29 bytes sealed
 *   4. field(GCM(bk, "domain-key", lockedDomainKey))
 *   5. field(GCM(bk, "backup-device-id", deviceId))
 *   6. field(GCM(bk, "backup-config-store-key", configStoreKey))
 *   7. entries: field(GCM(bk, "backup", u24(len(path)) ‖ path ‖ value))
 *   8. end marker 00 00 00
 *   9. trailer `_NETHSM_BACKUP_END_` (19 ASCII)
 * where field(x) = u24be(len(x)) ‖ x. Pure module: no I/O.
 */

export const BACKUP_MAGIC = '_NETHSM_BACKUP_';
export const BACKUP_TRAILER = '_NETHSM_BACKUP_END_';
export const BACKUP_MAGIC_BYTES: Buffer = Buffer.from(BACKUP_MAGIC, 'ascii');
export const BACKUP_TRAILER_BYTES: Buffer = Buffer.from(BACKUP_TRAILER, 'ascii');
/** The version-1 end marker: a zero field length. */
export const END_MARKER: Buffer = Buffer.from([0, 0, 0]);

/** The only version the firmware (and our writer) writes; the reader also reads 0. */
export const WRITE_VERSION = 1;
export type BackupVersion = 0 | 1;

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}
/** The firmware's backup-key KDF parameters (16 MiB of RAM per derivation). */
export const PRODUCTION_SCRYPT: ScryptParams = Object.freeze({ N: 16384, r: 8, p: 16 });
/** The firmware's unit-test / `--no-scrypt` build parameters; cheap, for tests only. */
export const TEST_SCRYPT: ScryptParams = Object.freeze({ N: 2, r: 1, p: 1 });

/** Additional-data strings of the sealed fields (FACTS §6.3), byte for byte. */
export const AD = Object.freeze({
  version: 'backup-version',
  domainKey: 'domain-key',
  deviceId: 'backup-device-id',
  configStoreKey: 'backup-config-store-key',
  entry: 'backup',
});

export const SALT_LENGTH = 16;
export const U24_MAX = 0xff_ff_ff;
/** AES-GCM framing: 12-byte nonce before, 16-byte tag after the ciphertext. */
export const GCM_NONCE_LENGTH = 12;
export const GCM_TAG_LENGTH = 16;
export const GCM_OVERHEAD = GCM_NONCE_LENGTH + GCM_TAG_LENGTH;
/** Sealed size of the one-byte version field. */
export const VERSION_FIELD_LENGTH = GCM_OVERHEAD + 1;

/** Reads a 3-byte big-endian length at `offset` (caller guarantees 3 bytes). */
export function readU24(buf: Uint8Array, offset = 0): number {
  return ((buf[offset] ?? 0) << 16) | ((buf[offset + 1] ?? 0) << 8) | (buf[offset + 2] ?? 0);
}

/** Writes `n` (0..0xFFFFFF) as 3 bytes big-endian; throws RangeError outside that range. */
export function writeU24(buf: Uint8Array, n: number, offset = 0): void {
  if (!Number.isInteger(n) || n < 0 || n > U24_MAX) throw new RangeError(`u24 value out of range: ${n}`);
  buf[offset] = (n >>> 16) & 0xff;
  buf[offset + 1] = (n >>> 8) & 0xff;
  buf[offset + 2] = n & 0xff;
}

/** `u24(len(x)) ‖ x`; throws RangeError when x is 16 MiB or more. */
export function frameField(x: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(3 + x.length);
  writeU24(out, x.length);
  out.set(x, 3);
  return out;
}

/**
 * The firmware's depth-first lexicographic order of the KV tree: paths are compared segment by segment
 * (segments split at `/`), each segment by code point (= UTF-8 byte order, as OCaml's String.compare),
 * a shorter segment that is a prefix of the other first. So every entry below a directory sorts before a
 * sibling that sorts after the directory's name: `/a/b/c` < `/a/b-` (plain string order says the opposite),
 * and `/key/.ns/a` < `/key/.version` < `/key/k1`.
 * Pure, allocation-free; a total order consistent with equality (0 only for identical strings).
 */
export function compareBackupPaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca === cb) continue;
    // One segment ends where the other continues: the ended (shorter) segment sorts first.
    if (ca === SLASH) return -1;
    if (cb === SLASH) return 1;
    return codePointOrder(ca) - codePointOrder(cb);
  }
  return a.length - b.length;
}

const SLASH = 0x2f;

/** Maps a UTF-16 code unit so that unit order equals code point order (surrogates above U+E000..U+FFFF). */
function codePointOrder(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}
