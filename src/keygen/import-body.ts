/**
 * The NetHSM JSON import body (`PrivateKey`, FACTS §5.4) assembled without the key material ever becoming a JavaScript
 * string: strings cannot be zeroed, Buffers can. Secret fields are base64-encoded straight into Buffers, the JSON is
 * concatenated from those and from the (public) metadata, and every intermediate Buffer is zeroed. The caller zeroes
 * the result.
 */
import type { GenerateRequest } from './request.js';

const ALPHABET = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', 'latin1');
const PAD = 0x3d; // '='

/** Standard padded base64 of `src`, as a new Buffer (no string on the way). */
export function base64Bytes(src: Uint8Array): Buffer {
  const out = Buffer.alloc(Math.ceil(src.length / 3) * 4);
  let o = 0;
  for (let i = 0; i < src.length; i += 3) {
    const a = src[i]!;
    const b = src[i + 1];
    const c = src[i + 2];
    const n = (a << 16) | ((b ?? 0) << 8) | (c ?? 0);
    out[o++] = ALPHABET[(n >> 18) & 63]!;
    out[o++] = ALPHABET[(n >> 12) & 63]!;
    out[o++] = b === undefined ? PAD : ALPHABET[(n >> 6) & 63]!;
    out[o++] = c === undefined ? PAD : ALPHABET[n & 63]!;
  }
  return out;
}

/** `private` fields: name → raw bytes (views into the caller's buffers; not modified here). */
export type PrivateFields = ReadonlyArray<readonly [name: 'primeP' | 'primeQ' | 'publicExponent' | 'data', value: Uint8Array]>;

/**
 * `{"type":…,"mechanisms":[…],"private":{…},"restrictions":{"tags":[…]},"label":…}` as JSON bytes. `restrictions`
 * only with tags, `label` only when set. The returned Buffer holds key material: the caller zeroes it.
 */
export function importBodyBytes(req: Pick<GenerateRequest, 'type' | 'mechanisms' | 'tags' | 'label'>, fields: PrivateFields): Buffer {
  const parts: Buffer[] = [Buffer.from(`{"type":${JSON.stringify(req.type)},"mechanisms":${JSON.stringify(req.mechanisms)},"private":{`)];
  const secrets: Buffer[] = [];
  fields.forEach(([name, value], i) => {
    parts.push(Buffer.from(`${i === 0 ? '' : ','}"${name}":"`));
    const encoded = base64Bytes(value);
    secrets.push(encoded);
    parts.push(encoded, Buffer.from('"'));
  });
  let tail = '}';
  if (req.tags.length > 0) tail += `,"restrictions":{"tags":${JSON.stringify(req.tags)}}`;
  if (req.label !== undefined) tail += `,"label":${JSON.stringify(req.label)}`;
  parts.push(Buffer.from(`${tail}}`));
  try {
    return Buffer.concat(parts);
  } finally {
    for (const s of secrets) s.fill(0);
  }
}
