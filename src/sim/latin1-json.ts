/**
 * JSON with byte strings, as the firmware's OCaml (Yojson) writes it: every string is a sequence of bytes, bytes ≥ 0x80
 * are emitted raw, control characters and DEL as `\u00XX` (with the short forms for \b \f \n \r \t).
 * The result is a latin1 buffer that is generally not valid UTF-8 (FACTS §6.5 gotcha).
 */

/** Encodes a byte string (a latin1 JS string or a Buffer) as a JSON string literal. */
export function latin1JsonString(value: string | Buffer): string {
  const s = typeof value === 'string' ? value : value.toString('latin1');
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += '\\u00' + c.toString(16).padStart(2, '0');
    else out += s[i];
  }
  return out + '"';
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
