/**
 * Parses a request target (`req.url`, as received) into `/api/v1` path segments the gateway can classify with certainty.
 * Anything whose meaning could differ between the gateway and the NetHSM (dot segments, encoded slashes, empty segments,
 * absolute-form targets) is refused here, so the gateway never forwards a request it classified as something else.
 * Pure; never throws.
 */

export const API_PREFIX = '/api/v1';

export type ParsedTarget =
  | {
      ok: true;
      /** The target as received, forwarded byte for byte (path and query). */
      raw: string;
      /** Path segments below `/api/v1`, percent-decoded; a trailing slash is ignored. */
      segments: string[];
    }
  | { ok: false; status: 400 | 404; reason: string };

/** Segment characters after decoding: printable ASCII except `/` and `\` (NetHSM ids are far narrower). */
const SAFE_SEGMENT = /^[\x21-\x2e\x30-\x5b\x5d-\x7e]+$/;

export function parseTarget(url: string | undefined): ParsedTarget {
  if (url === undefined || !url.startsWith('/')) return { ok: false, status: 400, reason: 'request target must be a path' };
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  if (path !== API_PREFIX && !path.startsWith(API_PREFIX + '/')) {
    return { ok: false, status: 404, reason: 'the gateway serves the NetHSM API under /api/v1 only' };
  }
  let rest = path.slice(API_PREFIX.length + 1);
  if (rest.endsWith('/')) rest = rest.slice(0, -1);
  const rawSegments = rest === '' ? [] : rest.split('/');
  const segments: string[] = [];
  for (const s of rawSegments) {
    if (s === '') return { ok: false, status: 400, reason: 'empty path segment' };
    // Most segments hold no escape (`keys`, a key id, `sign`): decoding would return them unchanged, so it is skipped
    // (it was most of this function's cost, on every request).
    let d = s;
    if (s.includes('%')) {
      try {
        d = decodeURIComponent(s);
      } catch {
        return { ok: false, status: 400, reason: 'malformed percent-encoding in path' };
      }
    }
    if (d === '.' || d === '..') return { ok: false, status: 400, reason: 'dot segment in path' };
    if (!SAFE_SEGMENT.test(d)) return { ok: false, status: 400, reason: 'path segment holds a slash, backslash, space or control character' };
    segments.push(d);
  }
  return { ok: true, raw: url, segments };
}
