/**
 * Header hygiene between the client, the gateway and the NetHSM. End-to-end headers (Authorization, Content-Type,
 * Content-Length, Accept, ETag, If-None-Match, Location, WWW-Authenticate, …) pass untouched; hop-by-hop headers do not,
 * as RFC 9110 §7.6.1 asks of a proxy. Pure.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** Marks a request forwarded by another site's gateway (loop guard); value: that site's name. */
export const VIA_HEADER = 'x-nethsm-replicator-via';

/** On every forwarded answer: the site whose NetHSM made it (this one, or the peer that served the call). */
export const SERVED_BY_HEADER = 'x-nethsm-replicator-served-by';

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

/** Whether a Connection header names a header besides its usual `keep-alive` / `close` tokens. */
function namesHeaders(value: string): boolean {
  const v = value.trim().toLowerCase();
  return v !== '' && v !== 'keep-alive' && v !== 'close';
}

export interface UpstreamHeaderOptions {
  /** Added as the loop-guard marker (forwarding to another site's gateway). */
  via?: string;
  /** Replace the client's Content-Type and Content-Length (a substituted or re-framed body). */
  contentType?: string;
  contentLength?: number;
}

/**
 * Headers to send upstream, as a flat name/value list (undici takes it as is): the client's, as Node parsed them (a
 * repeated singleton header such as Content-Type counts once, as the gateway itself read it), less hop-by-hop ones,
 * those its Connection header names, the via marker, and what `options` replaces.
 */
export function requestHeadersForUpstream(headers: IncomingHttpHeaders, options: UpstreamHeaderOptions = {}): string[] {
  const connection = headers.connection;
  const named = connection !== undefined && namesHeaders(connection) ? connectionTokens(connection) : undefined;
  const out: string[] = [];
  for (const name in headers) {
    const value = headers[name];
    // Node's names are lower-case already.
    if (value === undefined || HOP_BY_HOP.has(name) || name === VIA_HEADER || named?.has(name) === true) continue;
    if ((options.contentLength !== undefined && name === 'content-length') || (options.contentType !== undefined && name === 'content-type')) continue;
    if (typeof value === 'string') out.push(name, value);
    else for (const v of value) out.push(name, v);
  }
  if (options.contentType !== undefined) out.push('content-type', options.contentType);
  if (options.contentLength !== undefined) out.push('content-length', String(options.contentLength));
  if (options.via !== undefined) out.push(VIA_HEADER, options.via);
  return out;
}

/**
 * Headers to send the client, as a flat name/value list for `writeHead`: the NetHSM's (as undici parsed them), less
 * hop-by-hop ones (Node frames the body itself); `close` adds `Connection: close`.
 */
export function responseHeadersForClient(headers: Record<string, string | string[] | undefined>, close = false): (string | string[])[] {
  const connection = headers['connection'];
  const named = connection !== undefined && (Array.isArray(connection) || namesHeaders(connection)) ? connectionTokens(connection) : undefined;
  const out: (string | string[])[] = [];
  for (const name in headers) {
    const value = headers[name];
    // undici's names are lower-case already.
    if (value === undefined || HOP_BY_HOP.has(name) || named?.has(name) === true) continue;
    out.push(name, value);
  }
  if (close) out.push('connection', 'close');
  return out;
}
