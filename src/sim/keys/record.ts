/**
 * The firmware's key JSON (FACTS §6.5), as stored (inner-encrypted) under `/key/<id>` and `/key/.<ns>/<id>`:
 *
 *   {"mechanisms":[...],"priv":{"PEM":"<PKCS#8>"}|{"raw":"<b64>"},"cert":null|["<content-type>","<bytes>"],
 *    "operations":N,"restrictions":{"tags":[...]}|{},"label":"..."}
 *
 * Written by OCaml Yojson (`Yojson.Safe.to_string`), so: no whitespace, fields in record order, strings are **bytes**
 * (`cert` data is the raw certificate, not base64: ppx_deriving_yojson emits `(string * string) option` as
 * `null` / `[ct, data]`), bytes ≥ 0x80 are emitted raw, `"` `\` `\b` `\f` `\n` `\r` `\t` as two-character escapes and
 * other control bytes (and 0x7F) as lowercase `\u00xx`. We therefore build and parse the JSON over latin1 strings,
 * where one char is one byte.
 *
 * The firmware stores no type: it infers it from the private key (`raw` ⇒ Generic). `decodeKeyRecord` does the same.
 * Verified byte for byte against `my_backup.bin`'s RSA key (see record.test.ts). The `label` field is omitted when
 * empty (FACTS §6.5; the fixture's key has no label, so the field position after `restrictions` follows FACTS).
 */
import { KEY_MECHANISMS, isKeyMechanism, sortMechanisms, sortTags, type KeyRecord } from './types.js';
import { typeOfPrivateKey } from './material.js';

/** Yojson's string writer over a byte string (latin1 JS string, one char per byte). */
export function yojsonString(bytes: string): string {
  let out = '"';
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += '\\u00' + c.toString(16).padStart(2, '0');
    else out += bytes[i];
  }
  return out + '"';
}

const latin1 = (b: Buffer): string => b.toString('latin1');
const utf8AsLatin1 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

/**
 * Encodes a record as the firmware's key JSON bytes. Pure; throws Error when the record has neither or both of
 * `privatePem` and `raw`.
 */
export function encodeKeyRecord(r: KeyRecord): Buffer {
  if ((r.privatePem === undefined) === (r.raw === undefined)) throw new Error('key record needs exactly one of privatePem and raw');
  const parts: string[] = [];
  parts.push('"mechanisms":[' + sortMechanisms(r.mechanisms).map((m) => yojsonString(m)).join(',') + ']');
  const priv = r.raw !== undefined ? `{"raw":${yojsonString(r.raw.toString('base64'))}}` : `{"PEM":${yojsonString(utf8AsLatin1(r.privatePem ?? ''))}}`;
  parts.push('"priv":' + priv);
  parts.push('"cert":' + (r.cert === null ? 'null' : `[${yojsonString(utf8AsLatin1(r.cert.contentType))},${yojsonString(latin1(r.cert.data))}]`));
  parts.push('"operations":' + String(Math.trunc(r.operations)));
  const tags = sortTags(r.tags);
  parts.push('"restrictions":' + (tags.length === 0 ? '{}' : '{"tags":[' + tags.map((t) => yojsonString(utf8AsLatin1(t))).join(',') + ']}'));
  if (r.label !== undefined && r.label !== '') parts.push('"label":' + yojsonString(utf8AsLatin1(r.label)));
  return Buffer.from('{' + parts.join(',') + '}', 'latin1');
}

const fromLatin1Utf8 = (s: string): string => Buffer.from(s, 'latin1').toString('utf8');

function fail(why: string): never {
  throw new Error(`malformed key record: ${why}`);
}

/**
 * Decodes the firmware's key JSON. Throws Error (never echoing key material) when it is not JSON, has unknown or
 * missing fields, an unknown mechanism, or a private key that does not parse.
 */
export function decodeKeyRecord(b: Buffer): KeyRecord {
  let v: unknown;
  try {
    // JSON.parse over latin1: raw bytes ≥ 0x80 become chars U+0080..U+00FF, \u00xx escapes likewise — one char per byte.
    v = JSON.parse(b.toString('latin1'));
  } catch {
    fail('not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('not an object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['mechanisms', 'priv', 'cert', 'operations', 'restrictions', 'label'].includes(k)) fail(`unknown field ${k}`);
  const ms = o['mechanisms'];
  if (!Array.isArray(ms) || !ms.every(isKeyMechanism)) fail('mechanisms');
  const ops = o['operations'];
  if (typeof ops !== 'number' || !Number.isInteger(ops) || ops < 0) fail('operations');
  const restr = o['restrictions'];
  if (typeof restr !== 'object' || restr === null || Array.isArray(restr)) fail('restrictions');
  const tagsV = (restr as Record<string, unknown>)['tags'] ?? [];
  if (!Array.isArray(tagsV) || !tagsV.every((t) => typeof t === 'string')) fail('restrictions.tags');
  const label = o['label'];
  if (label !== undefined && typeof label !== 'string') fail('label');
  const certV = o['cert'];
  let cert: KeyRecord['cert'] = null;
  if (certV !== null) {
    if (!Array.isArray(certV) || certV.length !== 2 || typeof certV[0] !== 'string' || typeof certV[1] !== 'string') fail('cert');
    cert = { contentType: fromLatin1Utf8(certV[0]), data: Buffer.from(certV[1], 'latin1') };
  }
  const priv = o['priv'];
  if (typeof priv !== 'object' || priv === null || Array.isArray(priv)) fail('priv');
  const pk = priv as Record<string, unknown>;
  const keys = Object.keys(pk);
  const record: KeyRecord = {
    type: 'Generic',
    mechanisms: sortMechanisms(ms.filter((m): m is (typeof KEY_MECHANISMS)[number] => isKeyMechanism(m))),
    cert,
    operations: ops,
    tags: sortTags((tagsV as string[]).map(fromLatin1Utf8)),
  };
  if (label !== undefined && label !== '') record.label = fromLatin1Utf8(label);
  if (keys.length === 1 && keys[0] === 'raw' && typeof pk['raw'] === 'string') {
    const s = pk['raw'];
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) fail('priv.raw is not base64');
    record.raw = Buffer.from(s, 'base64');
  } else if (keys.length === 1 && keys[0] === 'PEM' && typeof pk['PEM'] === 'string') {
    const pem = fromLatin1Utf8(pk['PEM']);
    const type = typeOfPrivateKey(pem);
    if (type === undefined) fail('priv.PEM is not a supported private key');
    record.type = type;
    record.privatePem = pem;
  } else {
    fail('priv must be {"PEM":…} or {"raw":…}');
  }
  return record;
}
