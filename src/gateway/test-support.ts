/**
 * Test helpers for the gateway's tests (not shipped behaviour): HTTPS calls with raw control over headers, a raw TLS
 * request for targets that URL parsers would normalise, and a logger whose output the test can search.
 */
import tls from 'node:tls';
import { Agent, request } from 'undici';
import { createLogger, type Logger } from '../log.js';

export interface Cred {
  username: string;
  password: string;
}

export const basicHeader = (c: Cred): string => 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64');

export interface CallResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A caller over one keep-alive agent trusting `caPem`. */
export function httpsCaller(baseUrl: string, caPem: string) {
  const dispatcher = new Agent({ connect: { ca: caPem } });
  return {
    async call(
      method: string,
      path: string,
      opts: { auth?: Cred; json?: unknown; headers?: Record<string, string>; body?: Buffer | string } = {},
    ): Promise<CallResult> {
      const headers: Record<string, string> = { ...opts.headers };
      if (opts.auth) headers['authorization'] = basicHeader(opts.auth);
      let body: Buffer | string | undefined = opts.body;
      if (opts.json !== undefined) {
        headers['content-type'] = 'application/json';
        body = JSON.stringify(opts.json);
      }
      const res = await request(baseUrl + '/api/v1' + path, { method: method as 'GET', headers, body, dispatcher });
      return { status: res.statusCode, headers: res.headers, body: await res.body.text() };
    },
    close: () => dispatcher.close(),
  };
}

/** Sends bytes as written (no URL normalisation) and returns the raw response head and body. */
export function rawTlsRequest(port: number, caPem: string, head: string, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost' }, () => socket.write(head));
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(new Error('raw request timed out')), timeoutMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (e) => {
      clearTimeout(timer);
      // A server that closes after answering may reset: the answer read so far counts.
      if (chunks.length > 0) resolve(Buffer.concat(chunks).toString('latin1'));
      else reject(e);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
  });
}

/** A debug-level project logger writing into an array of lines. */
export function capturingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (s: string) => void lines.push(s) } });
  return { logger, lines };
}

/** Waits (without a time bound of its own) until `cond` holds, yielding to the event loop between checks. */
export async function until(cond: () => boolean, what: string, maxTurns = 100_000): Promise<void> {
  for (let i = 0; i < maxTurns; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`never happened: ${what}`);
}
