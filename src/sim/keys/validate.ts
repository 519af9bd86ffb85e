/**
 * Strict request-body checks shaped like the firmware's derived JSON parsers (FACTS §10): unknown properties, missing
 * required fields and mistyped values are 400 `Invalid data for JSON schema: …`. Every function throws SimHttpError.
 */
import { SimHttpError, invalidSchema } from '../http-error.js';
import { isValidId } from '../../nethsm/ids.js';
import { isKeyMechanism, sortMechanisms, sortTags, type KeyMechanism } from './types.js';

export type JsonObject = Record<string, unknown>;

/** Asserts `body` is a plain object whose keys are all in `allowed` and that has every key in `required`. */
export function strictObject(body: unknown, what: string, allowed: readonly string[], required: readonly string[] = []): JsonObject {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalidSchema(`${what}: expected an object.`);
  const obj = body as JsonObject;
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw invalidSchema(`${what}: unknown property ${JSON.stringify(k)}.`);
  }
  for (const k of required) {
    if (obj[k] === undefined) throw invalidSchema(`${what}: missing required property ${JSON.stringify(k)}.`);
  }
  return obj;
}

export function optString(obj: JsonObject, key: string, what: string): string | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidSchema(`${what}.${key}: expected a string.`);
  return v;
}

export function reqString(obj: JsonObject, key: string, what: string): string {
  const v = optString(obj, key, what);
  if (v === undefined) throw invalidSchema(`${what}: missing required property ${JSON.stringify(key)}.`);
  return v;
}

/** An enum-valued string property (mode, type); unknown values are schema errors as in the firmware. */
export function reqEnum<T extends string>(obj: JsonObject, key: string, what: string, values: readonly T[]): T {
  const v = reqString(obj, key, what);
  if (!(values as readonly string[]).includes(v)) throw invalidSchema(`${what}.${key}: unknown value ${JSON.stringify(v)}.`);
  return v as T;
}

/** A list of mechanisms, returned in enum declaration order without duplicates. Emptiness is the caller's rule. */
export function mechanismList(v: unknown, what: string): KeyMechanism[] {
  if (!Array.isArray(v)) throw invalidSchema(`${what}.mechanisms: expected a list.`);
  for (const m of v) {
    if (!isKeyMechanism(m)) throw invalidSchema(`${what}.mechanisms: unknown mechanism ${JSON.stringify(m)}.`);
  }
  return sortMechanisms(v as KeyMechanism[]);
}

/** `KeyRestrictions` `{tags?: ID[]}`: tags sorted, deduplicated, each satisfying the ID rule (400 otherwise). */
export function restrictionTags(v: unknown, what: string): string[] {
  if (v === undefined) return [];
  const obj = strictObject(v, `${what}.restrictions`, ['tags']);
  const tags = obj['tags'];
  if (tags === undefined) return [];
  if (!Array.isArray(tags)) throw invalidSchema(`${what}.restrictions.tags: expected a list.`);
  for (const t of tags) {
    if (typeof t !== 'string') throw invalidSchema(`${what}.restrictions.tags: expected strings.`);
    if (!isValidId(t)) throw new SimHttpError(400, `Invalid tag ${JSON.stringify(t)}: a tag must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ and be 1..128 characters.`);
  }
  return sortTags(tags as string[]);
}

export const LABEL_MAX_BYTES = 32;

/** A key label: ≤ 32 bytes of UTF-8 (FACTS c8). Returns undefined for absent or empty. */
export function keyLabel(v: unknown, what: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidSchema(`${what}.label: expected a string.`);
  if (Buffer.byteLength(v, 'utf8') > LABEL_MAX_BYTES) throw new SimHttpError(400, `Label is longer than ${LABEL_MAX_BYTES} bytes.`);
  return v === '' ? undefined : v;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Decodes a base64 request field as the firmware does: newlines are removed first, then strict RFC 4648 decoding
 * (padding required). Throws 400 `Couldn't decode data from base64: …` otherwise.
 */
export function decodeBase64Field(s: string, field: string): Buffer {
  const oneline = s.replace(/\n/g, '');
  if (oneline.length % 4 !== 0 || !BASE64.test(oneline)) {
    throw new SimHttpError(400, `Couldn't decode data from base64: invalid base64 in ${field}.`);
  }
  return Buffer.from(oneline, 'base64');
}
