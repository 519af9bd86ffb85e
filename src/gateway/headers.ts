/**
 * Header hygiene between the client, the gateway and the NetHSM. End-to-end headers (Authorization, Content-Type,
 * Content-Length, Accept, ETag, If-None-Match, Location, WWW-Authenticate, …) pass untouched; hop-by-hop headers do not,
 * as RFC 9110 §7.6.1 asks of a proxy. Pure.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** Marks a request forwarded by another site's gateway (loop guard); value: that site's name. */
export const VIA_HEADER = 'x-nethsm-replicator-via';

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  // Node answers `Expect: 100-continue` itself; undici refuses to send it.
  'expect',
  // Set by the connection to the next hop.
  'host',
  'http2-settings',
]);

function connectionTokens(value: string | string[] | undefined): Set<string> {
  const all = Array.isArray(value) ? value.join(',') : (value ?? '');
  return new Set(all.split(',').map((t) => t.trim().toLowerCase()).filter(Boolean));
}

/** Headers to send upstream: the client's, less hop-by-hop ones, those its Connection header names, and the via marker. */
export function requestHeadersForUpstream(headers: IncomingHttpHeaders, via?: string): Record<string, string | string[]> {
  const named = connectionTokens(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name) || name === VIA_HEADER) continue;
    out[name] = value;
  }
  if (via !== undefined) out[VIA_HEADER] = via;
  return out;
}

/** Headers to send the client: the NetHSM's, less hop-by-hop ones (Node frames the body itself). */
export function responseHeadersForClient(headers: Record<string, string | string[] | undefined>): OutgoingHttpHeaders {
  const named = connectionTokens(headers.connection);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (value === undefined || HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    out[lower] = value;
  }
  return out;
}
