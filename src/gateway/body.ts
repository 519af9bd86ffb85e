/**
 * Reading a request body whole, bounded in size and time, before the gateway acts on the request. Writes are read this
 * way before they take their place at the write gate, so a client trickling its upload is never counted as a write in
 * flight (it would keep a merge-restore from starting, and every other write waiting behind it). Bodies sent without
 * well-formed credentials are read the same way, so they cannot hold a connection open either.
 */
import type { IncomingMessage } from 'node:http';

export interface BodyLimits {
  /** Largest body accepted, in bytes. */
  maxBytes: number;
  /** Longest the whole body may take to arrive, from the call on. */
  timeoutMs: number;
}

export type BodyRead =
  /** The whole body (empty when the request has none). The caller zeroes it after use: it may hold key material. */
  | { ok: true; bytes: Buffer }
  /** Over `maxBytes` (declared by Content-Length, or counted while reading). What was read is zeroed. */
  | { ok: false; reason: 'too_large' }
  /** Not complete within `timeoutMs`. What was read is zeroed. */
  | { ok: false; reason: 'timeout'; received: number }
  /** The client went away (or the connection failed) before the body ended. What was read is zeroed. */
  | { ok: false; reason: 'aborted' };

/** Whether the request announces a body (chunked, or a Content-Length other than 0). */
export function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const cl = req.headers['content-length'];
  return cl !== undefined && cl !== '0';
}

/**
 * Reads `req`'s body whole. Never rejects. On failure the rest of the body is left unread: answer with
 * `Connection: close` so the connection ends instead of draining it.
 */
export function readBody(req: IncomingMessage, limits: BodyLimits): Promise<BodyRead> {
  if (!hasBody(req)) return Promise.resolve({ ok: true, bytes: Buffer.alloc(0) });
  // Node's parser has already refused a malformed or contradictory Content-Length; chunked bodies declare none.
  const declared = req.headers['transfer-encoding'] === undefined ? Number(req.headers['content-length']) : undefined;
  if (declared !== undefined && declared > limits.maxBytes) return Promise.resolve({ ok: false, reason: 'too_large' });
  return new Promise<BodyRead>((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (result: BodyRead): void => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onAbort);
      req.off('close', onAbort);
      if (!result.ok) req.pause();
      for (const c of chunks) c.fill(0);
      chunks.length = 0;
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      chunks.push(chunk);
      if (size > limits.maxBytes) finish({ ok: false, reason: 'too_large' });
    };
    const onEnd = (): void => finish({ ok: true, bytes: Buffer.concat(chunks, size) });
    const onAbort = (): void => finish({ ok: false, reason: 'aborted' });
    const timer = setTimeout(() => finish({ ok: false, reason: 'timeout', received: size }), limits.timeoutMs);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onAbort);
    // 'close' before 'end': the connection went away mid-body.
    req.once('close', onAbort);
  });
}

/**
 * The body, taken whole when it arrived with the head (a sign or decrypt call: the client writes head and body in one
 * TLS record). One microtask lets Node's parser hand over the bytes it already holds; nothing waits for the network.
 * Undefined when the body is chunked, over `maxBytes`, or still arriving (then nothing was read: the caller streams
 * it). The caller zeroes the buffer after use.
 */
export async function arrivedBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | undefined> {
  if (req.headers['transfer-encoding'] !== undefined) return undefined;
  const declared = Number(req.headers['content-length']);
  if (!(declared > 0 && declared <= maxBytes)) return undefined;
  await Promise.resolve();
  // Node's parser never passes on more than Content-Length bytes, so the body is all here once that many are.
  // (`req.complete` lags: the parser reports the message's end in a callback of its own.)
  if (req.readableLength !== declared) return undefined;
  const body = req.read() as Buffer | null; // paused mode: everything buffered, in one buffer
  // Flowing from here on, so the request still ends ('end', readableEnded) when the parser reports it complete.
  req.resume();
  return body ?? undefined;
}
