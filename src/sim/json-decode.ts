/**
 * Typed decoding of request bodies the way the firmware's `ppx_deriving_yojson` decoders do it (FACTS-system §5), so
 * the simulator answers the same `Invalid data for JSON schema: …` texts with the same winner:
 * - a non-object body, or the first unknown key in input order → `Json.<type>`;
 * - a missing required field or a value of the wrong JSON type → `Json.<type>.<field>`;
 * - custom field types (IP addresses, roles, log levels) answer with their own text;
 * - duplicate keys: the last occurrence wins;
 * - with several bad fields the **last declared** one is reported (the decoder binds from the last field outwards).
 * Strings are byte strings (one char per byte), as Yojson delivers them.
 */
import { SimHttpError, invalidJson } from './http-error.js';
import { parseYojson, YojsonError, type YValue } from './yojson.js';

export type Result<T> = { ok: true; value: T } | { ok: false; error: string };

export const ok = <T>(value: T): Result<T> => ({ ok: true, value });
export const err = <T = never>(error: string): Result<T> => ({ ok: false, error });

/** Decodes one field value; `path` is `Json.<type>.<field>`, the text ppx uses for a mismatch. */
export type FieldDecoder<T> = (v: YValue, path: string) => Result<T>;

export interface FieldSpec {
  name: string;
  decode: FieldDecoder<unknown>;
  /** Present: the field may be omitted (`[@default …]`). */
  default?: { value: unknown };
}

export const field = <T>(name: string, decode: FieldDecoder<T>, dflt?: { value: T }): FieldSpec =>
  dflt === undefined ? { name, decode } : { name, decode, default: dflt };

/** A JSON string (a byte string); anything else, `null` included, is a mismatch. */
export const bytesField: FieldDecoder<string> = (v, path) => (v.t === 'string' ? ok(v.v) : err(path));

/** A JSON string decoded as UTF-8 text (what the simulator stores for names and passphrases). */
export const textField: FieldDecoder<string> = (v, path) => (v.t === 'string' ? ok(Buffer.from(v.v, 'latin1').toString('utf8')) : err(path));

/** A JSON integer in OCaml's native range; `2048.0`, `"2048"` and out-of-range literals are mismatches. */
export const intField: FieldDecoder<number> = (v, path) => (v.t === 'int' ? ok(Number(v.v)) : err(path));

/** `null` → undefined, else the inner decoder (ppx's `option`). */
export const optionField =
  <T>(inner: FieldDecoder<T>): FieldDecoder<T | undefined> =>
  (v, path) =>
    v.t === 'null' ? ok(undefined) : inner(v, path);

/** A record decoder with ppx's strict rules (see the module comment). `typeName` is the OCaml type, e.g. `provision_req`. */
export function record<T>(typeName: string, fields: FieldSpec[]): (v: YValue) => Result<T> {
  const top = `Json.${typeName}`;
  return (v) => {
    if (v.t !== 'assoc') return err(top);
    const slots: Result<unknown>[] = fields.map((f) => (f.default === undefined ? err(`${top}.${f.name}`) : ok(f.default.value)));
    for (const [key, value] of v.v) {
      const i = fields.findIndex((f) => f.name === key);
      if (i < 0) return err(top);
      slots[i] = fields[i]!.decode(value, `${top}.${fields[i]!.name}`);
    }
    const out: Record<string, unknown> = {};
    for (let i = fields.length - 1; i >= 0; i--) {
      const r = slots[i]!;
      if (!r.ok) return r as Result<T>;
      out[fields[i]!.name] = r.value;
    }
    return ok(out as T);
  };
}

/** Parses a body with the firmware's JSON reader: 400 `Invalid JSON: <Yojson message>.` when it is not JSON. */
export function parseBody(body: Buffer): YValue {
  try {
    return parseYojson(body);
  } catch (e) {
    if (e instanceof YojsonError) throw invalidJson(e.message);
    throw e;
  }
}

/** Parses and decodes a body: 400 `Invalid JSON: ….` or 400 `Invalid data for JSON schema: <decoder text>.`. */
export function decodeBody<T>(body: Buffer, decoder: (v: YValue) => Result<T>): T {
  return decodeValue(parseBody(body), decoder);
}

export function decodeValue<T>(v: YValue, decoder: (v: YValue) => Result<T>): T {
  const r = decoder(v);
  if (!r.ok) throw new SimHttpError(400, `Invalid data for JSON schema: ${r.error}.`);
  return r.value;
}

/** OCaml's `%S`: a double-quoted string literal with OCaml escapes (used by `Logs.level_of_string`'s message). */
export function ocamlQuoted(bytes: string): string {
  let out = '"';
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x08) out += '\\b';
    else if (c < 0x20 || c >= 0x7f) out += '\\' + String(c).padStart(3, '0');
    else out += bytes[i];
  }
  return out + '"';
}
