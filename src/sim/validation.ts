/**
 * Field rules shared by the simulator's request bodies (FACTS §2.2, §3): passphrase length in bytes,
 * RFC 3339 times with a zero offset, the ID rule.
 */
import { z } from 'zod';
import { isValidId } from '../nethsm/ids.js';
import { SimHttpError } from './http-error.js';

export const PASSPHRASE_MIN_BYTES = 10;
export const PASSPHRASE_MAX_BYTES = 200;

/** Passphrase of 10..200 bytes (UTF-8 length). */
export const passphrase = z.string().refine((s) => {
  const n = Buffer.byteLength(s, 'utf8');
  return n >= PASSPHRASE_MIN_BYTES && n <= PASSPHRASE_MAX_BYTES;
}, `passphrase must be ${PASSPHRASE_MIN_BYTES} to ${PASSPHRASE_MAX_BYTES} bytes`);

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** Parses an RFC 3339 time whose offset is zero (`Z` or `+00:00`); undefined otherwise. */
export function parseZeroOffsetTime(s: string): Date | undefined {
  const m = RFC3339.exec(s);
  if (!m) return undefined;
  const off = m[8]!;
  if (!/^[Zz]$|^[+-]00:00$/.test(off)) return undefined;
  const d = new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${m[7] ?? ''}Z`);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

export const zeroOffsetTime = z.string().refine((s) => parseZeroOffsetTime(s) !== undefined, 'must be an RFC 3339 time with offset 0');

/** Throws 400 when `id` breaks the ID rule. */
export function requireId(id: string, what = 'ID'): void {
  if (!isValidId(id)) throw new SimHttpError(400, `Invalid ${what}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]* and be 1 to 128 characters.`);
}
