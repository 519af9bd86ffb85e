/**
 * Reads the Basic-auth user name from a request's Authorization header(s), only to learn the caller's namespace.
 * The password is never decoded into a string, kept or returned; the header itself is forwarded untouched.
 * Pure; never throws.
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
  const decoded = Buffer.from(b64, 'base64');
  try {
    // Canonical base64 only: re-encoding must give the same text (no missing padding, no stray bits).
    if (b64.length % 4 !== 0 || decoded.toString('base64') !== b64) {
      return { kind: 'unparsable', reason: 'Basic credentials are not canonical base64' };
    }
    const colon = decoded.indexOf(0x3a);
    if (colon < 0) return { kind: 'unparsable', reason: 'Basic credentials have no colon' };
    // User ids are ASCII by the NetHSM's rule; latin1 maps each byte to one character, so any other byte fails the rule.
    const user = decoded.subarray(0, colon).toString('latin1');
    const split = splitUserId(user);
    if (split === undefined) return { kind: 'unparsable', reason: 'Basic user id is not a valid NetHSM user id' };
    return { kind: 'user', user, namespace: split.namespace };
  } finally {
    decoded.fill(0); // held the password
  }
}

/** Every value of one header, in order, from Node's `rawHeaders` (name/value pairs). */
export function headerValues(rawHeaders: readonly string[], name: string): string[] {
  const out: string[] = [];
  const lower = name.toLowerCase();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === lower) out.push(rawHeaders[i + 1]!);
  }
  return out;
}
