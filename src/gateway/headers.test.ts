import { describe, expect, it } from 'vitest';
import { requestHeadersForUpstream, responseHeadersForClient, VIA_HEADER } from './headers.js';

/** Flat name/value list → pairs, for readable expectations. */
const pairs = (flat: readonly (string | string[])[]): [string | string[], string | string[]][] => {
  const out: [string | string[], string | string[]][] = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
};

describe('headers between client, gateway and NetHSM', () => {
  it('forwards end-to-end request headers and drops hop-by-hop ones, those Connection names, and a client-sent via marker', () => {
    const out = requestHeadersForUpstream({
      host: 'gw:8443',
      authorization: 'Basic YTpi',
      'content-type': 'application/json',
      'content-length': '12',
      accept: 'application/json',
      connection: 'keep-alive, X-Trace',
      'keep-alive': 'timeout=5',
      'x-trace': 'abc',
      te: 'trailers',
      expect: '100-continue',
      [VIA_HEADER]: 'forged',
    });
    expect(pairs(out)).toEqual([
      ['authorization', 'Basic YTpi'],
      ['content-type', 'application/json'],
      ['content-length', '12'],
      ['accept', 'application/json'],
    ]);
  });

  it('replaces Content-Type and Content-Length when asked, and adds the via marker', () => {
    const out = requestHeadersForUpstream(
      { 'content-type': 'multipart/form-data; boundary=x', 'content-length': '900', 'transfer-encoding': 'chunked', authorization: 'Basic YTpi' },
      { contentType: 'application/json', contentLength: 42, via: 'site-b' },
    );
    expect(pairs(out)).toEqual([
      ['authorization', 'Basic YTpi'],
      ['content-type', 'application/json'],
      ['content-length', '42'],
      [VIA_HEADER, 'site-b'],
    ]);
  });

  it('keeps a repeated request header (as Node parsed it) as separate lines', () => {
    expect(pairs(requestHeadersForUpstream({ 'x-list': ['a', 'b'] } as never))).toEqual([
      ['x-list', 'a'],
      ['x-list', 'b'],
    ]);
  });

  it("passes the NetHSM's end-to-end response headers and drops hop-by-hop ones", () => {
    const out = responseHeadersForClient({
      'content-type': 'application/json',
      'content-length': '20',
      etag: '"e1"',
      location: '/api/v1/keys/k1',
      'www-authenticate': 'Basic realm="NetHSM"',
      'set-cookie': ['a=1', 'b=2'],
      connection: 'keep-alive',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      vary: undefined,
    });
    expect(pairs(out)).toEqual([
      ['content-type', 'application/json'],
      ['content-length', '20'],
      ['etag', '"e1"'],
      ['location', '/api/v1/keys/k1'],
      ['www-authenticate', 'Basic realm="NetHSM"'],
      ['set-cookie', ['a=1', 'b=2']],
    ]);
  });

  it('drops response headers the NetHSM names in Connection, and marks the answer as the last when asked', () => {
    const out = responseHeadersForClient({ 'content-type': 'text/plain', connection: 'x-hop, close', 'x-hop': '1' }, true);
    expect(pairs(out)).toEqual([
      ['content-type', 'text/plain'],
      ['connection', 'close'],
    ]);
  });
});
