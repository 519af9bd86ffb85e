/**
 * Reads the Basic-auth user name from a request's Authorization header(s), only to learn the caller's namespace.
 * The password is never decoded (decoding stops at the colon), kept or returned; the header itself is forwarded
 * untouched. Pure; never throws; allocates little (it runs on every request).
 */
import { splitUserId } from '../nethsm/ids.js';

export type CallerIdentity =
  /** No Authorization header: the NetHSM answers (401 for protected calls; public calls such as /unlock work). */
  | { kind: 'none' }
  /** A well-formed Basic header whose user id follows the NetHSM's rule; `namespace` undefined = root user. */
  | { kind: 'user'; user: string; namespace: string | undefined }
  /**
   * Present but not something the gateway can read with certainty: several headers, another scheme, non-canonical
   * base64, no colon, or a user id the NetHSM would refuse. `reason` names which (no secret in it).
   */
  | { kind: 'unparsable'; reason: string };

const BASIC = /^Basic +([A-Za-z0-9+/]+={0,2})$/i;

/**
 * `values`: every Authorization header the client sent (from `rawHeaders`, so duplicates are visible).
 * Strict on purpose: a header the NetHSM might read differently from the gateway (duplicates, lenient base64) would let a
 * caller's namespace be misjudged, so such headers are reported as unparsable and the policy fails closed on them.
 */
export function parseBasicAuth(values: readonly string[]): CallerIdentity {
  if (values.length === 0) return { kind: 'none' };
  if (values.length > 1) return { kind: 'unparsable', reason: 'more than one Authorization header' };
  const m = BASIC.exec(values[0]!.trim());
  if (m === null) return { kind: 'unparsable', reason: 'Authorization is not HTTP Basic' };
  const b64 = m[1]!;
  // Canonical base64 only (no missing padding, no stray bits): what re-encoding the decoded bytes gives back unchanged.
  if (!isCanonicalBase64(b64)) return { kind: 'unparsable', reason: 'Basic credentials are not canonical base64' };
  const user = userPart(b64);
  if (user === undefined) return { kind: 'unparsable', reason: 'Basic credentials have no colon' };
  const split = splitUserId(user);
  if (split === undefined) return { kind: 'unparsable', reason: 'Basic user id is not a valid NetHSM user id' };
  return { kind: 'user', user, namespace: split.namespace };
}

/**
 * The bytes before the first colon of what canonical `b64` encodes, one latin1 character per byte (user ids are ASCII
 * by the NetHSM's rule, so any other byte fails it); undefined when there is no colon. Decodes no further than that
 * colon: the password is never decoded (no buffer holding it to zero), and nothing is allocated but the user id.
 */
function userPart(b64: string): string | undefined {
  let user = '';
  const end = b64.length - (b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0);
  let bits = 0;
  let nbits = 0;
  for (let i = 0; i < end; i++) {
    bits = ((bits << 6) | B64_ALPHABET.indexOf(b64[i]!)) & 0xffffff;
    nbits += 6;
    if (nbits < 8) continue;
    nbits -= 8;
    const byte = (bits >> nbits) & 0xff;
    if (byte === 0x3a) return user;
    user += String.fromCharCode(byte);
  }
  return undefined;
}

/**
 * Whether `b64` (characters of the base64 alphabet, then at most two `=`, as BASIC matched) is the one encoding of the
 * bytes it decodes to: whole 4-character groups, and the bits the padding leaves over in the last character are zero.
 * Same answer as `Buffer.from(b64, 'base64').toString('base64') === b64`, without decoding and encoding again.
 */
export function isCanonicalBase64(b64: string): boolean {
  if (b64.length === 0 || b64.length % 4 !== 0) return false;
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
  if (pad === 0) return true;
  const last = B64_ALPHABET.indexOf(b64[b64.length - 1 - pad]!);
  // One byte in the last group leaves 4 bits of its second character over; two bytes leave 2 of the third.
  return last >= 0 && (last & (pad === 2 ? 0x0f : 0x03)) === 0;
}

const B64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Every value of one header, in order, from Node's `rawHeaders` (name/value pairs). `name` is lower-case. */
export function headerValues(rawHeaders: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const n = rawHeaders[i]!;
    // Lengths first: most names are not the one asked for, and lower-casing each would allocate.
    if (n.length === name.length && (n === name || n.toLowerCase() === name)) out.push(rawHeaders[i + 1]!);
  }
  return out;
}
