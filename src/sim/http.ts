/**
 * HTTP plumbing shared by the simulator's routes: request context, replies, body reading with a size limit,
 * strict JSON body parsing with the firmware's error texts, media-type matching.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { z } from 'zod';
import { SimHttpError, invalidSchema } from './http-error.js';
import { parseBody } from './json-decode.js';
import { toPlain } from './yojson.js';
import type { UserRecord } from './users.js';

export const MIB = 1024 * 1024;
export const DEFAULT_BODY_LIMIT = MIB;
/** sign/decrypt/encrypt accept bigger bodies (FACTS c9). */
export const CRYPTO_BODY_LIMIT = 67 * MIB;

export interface Caller {
  userId: string;
  /** Namespace of the caller, undefined for root users. */
  namespace: string | undefined;
  user: UserRecord;
}

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  params: Record<string, string>;
  query: URLSearchParams;
  ip: string;
  caller: Caller | undefined;
  /** The request body, read before the handler unless the route streams it. */
  body: Buffer;
}

export interface Reply {
  status: number;
  json?: unknown;
  text?: string;
  bytes?: Buffer;
  contentType?: string;
  headers?: Record<string, string>;
}

/** The caller, for routes that require authentication (the router guarantees it is set). */
export function callerOf(ctx: RequestContext): Caller {
  if (ctx.caller === undefined) throw new Error('route requires an authenticated caller');
  return ctx.caller;
}

/** Lower-case media type without parameters; a missing header counts as `application/octet-stream` (FACTS §10). */
export function mediaType(header: string | undefined): string {
  if (header === undefined || header.trim() === '') return 'application/octet-stream';
  return header.split(';')[0]!.trim().toLowerCase();
}

/** Whether an Accept header admits `produced` (absent header admits everything). */
export function acceptable(accept: string | undefined, produced: string): boolean {
  if (accept === undefined || accept.trim() === '') return true;
  const [type] = produced.split('/');
  return accept.split(',').some((range) => {
    const parts = range.split(';');
    const r = parts[0]!.trim().toLowerCase();
    const q = parts.slice(1).find((p) => p.trim().startsWith('q='));
    if (q !== undefined && Number(q.trim().slice(2)) === 0) return false;
    return r === '*/*' || r === produced || r === `${type}/*`;
  });
}

/** Reads the whole body; rejects with 413 beyond `limit` bytes. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > limit) {
        failed = true;
        reject(new SimHttpError(413));
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    req.on('error', (err) => {
      if (!failed) reject(err);
    });
  });
}

/**
 * Parses a JSON body with the firmware's reader (unquoted keys, comments and `NaN` accepted; single quotes and trailing
 * commas refused; FACTS-system §5) or throws 400 `Invalid JSON: <Yojson message>.`. Strings are decoded as UTF-8.
 */
export function parseJsonBody(body: Buffer): unknown {
  return toPlain(parseBody(body), 'utf8');
}

/** Parses and validates a JSON body against a strict zod schema; unknown properties → 400 `Invalid data for JSON schema: …`. */
export function parseStrict<T>(body: Buffer, schema: z.ZodType<T>): T {
  return validateStrict(parseJsonBody(body), schema);
}

export function validateStrict<T>(value: unknown, schema: z.ZodType<T>): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
    throw invalidSchema(`${where}${issue?.message ?? 'invalid'}`);
  }
  return r.data;
}

export function badRequest(message: string): SimHttpError {
  return new SimHttpError(400, message);
}

export const NO_CONTENT: Reply = { status: 204 };
