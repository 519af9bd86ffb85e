/**
 * JSON with byte strings, as the firmware's OCaml (Yojson) writes it: every string is a sequence of bytes, bytes ≥ 0x80
 * are emitted raw, control characters and DEL as `\u00XX` (with the short forms for \b \f \n \r \t).
 * The result is a latin1 buffer that is generally not valid UTF-8 (FACTS §6.5 gotcha).
 */

import { yojsonString } from './keys/record.js';

/** Encodes a byte string (a latin1 JS string or a Buffer) as a JSON string literal (the key records' writer). */
export function latin1JsonString(value: string | Buffer): string {
  return yojsonString(typeof value === 'string' ? value : value.toString('latin1'));
}

/** Parses latin1 JSON bytes; strings come back as latin1 JS strings (one char per byte). Throws on malformed JSON. */
export function parseLatin1Json(bytes: Buffer): unknown {
  return JSON.parse(bytes.toString('latin1'));
}

/** Encodes a UTF-8 JS string as the byte string the firmware would hold for it. */
export function utf8AsLatin1(s: string): string {
  return Buffer.from(s, 'utf8').toString('latin1');
}

/** The reverse of {@link utf8AsLatin1}. */
export function latin1AsUtf8(s: string): string {
  return Buffer.from(s, 'latin1').toString('utf8');
}
