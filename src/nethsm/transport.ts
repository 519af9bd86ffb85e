/**
 * One keep-alive connection pool to one NetHSM, shared by every client derived with `withAuth`.
 * Sends requests under `/api/v1`, maps failures to registry errors and answers with the raw undici response.
 */
import { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { Logger } from '../log.js';
import { InputInvalidError, InternalError, NetHsmCredentialRefusedError, NetHsmResponseInvalidError } from '../errors.js';
import { connectorFor, parseTrust, type TlsTrust, type TrustMode } from './tls-trust.js';
import { httpError, mapTransportError } from './error-map.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface RequestSpec {
  method: HttpMethod;
  /** Path below `/api/v1`, already percent-encoded, without query. */
  path: string;
  query?: Record<string, string | undefined>;
  /** JSON request body (serialised here) … */
  json?: unknown;
  /** … or a raw body with its content type. */
  body?: Buffer | AsyncIterable<Uint8Array>;
  contentType?: string;
  contentLength?: number;
  accept?: string;
  /** Success statuses; any other status becomes a NetHsmHttpError. */
  expect: readonly number[];
  /** Values sent in this request that must never appear in an error (passphrases, key material). */
  secrets?: readonly string[];
  /** The endpoint needs no login (health, info, provision, unlock): its success says nothing about the credential. */
  public?: boolean;
  /**
   * Aborting it cuts the request, waiting for the headers or (the caller's to map, see `mapError`) the body alike; the
   * request then rejects with `signal.reason`, never with a device error.
   */
  signal?: AbortSignal;
}

/** Which config setting a client's credential comes from, so a refusal can name it. */
export interface CredentialLabel {
  /** Config path: `nethsm.credentials.admin`. */
  setting: string;
  /** Short name operators know it by (the systemd credential of the shipped unit): `nethsm-admin`. */
  name: string;
}

/**
 * Told the outcome of every request made with a labelled credential: `refused` set for a 401, undefined for a success
 * (2xx). Other answers say nothing about the credential and are not reported.
 */
export type CredentialObserver = (credential: CredentialLabel & { user: string }, refused: NetHsmCredentialRefusedError | undefined) => void;

/** The credential a request is sent with. */
export interface RequestAuth {
  header: string;
  user: string;
  credential?: CredentialLabel | undefined;
}

export interface TransportOptions {
  url: string;
  tls: TlsTrust;
  timeoutMs?: number;
  connections?: number;
  logger: Logger;
  onCredential?: CredentialObserver;
}

/** Largest non-streamed response body accepted (JSON lists of thousands of keys stay far below). */
const MAX_BODY_BYTES = 64 * 1024 * 1024;
/** Error bodies are short `{"message": …}`; read at most this much of one. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;

export class Transport {
  readonly origin: string;
  readonly timeoutMs: number;
  /** Keep-alive connections the pool opens at most (requests beyond that wait in the pool). */
  readonly connections: number;
  readonly logger: Logger;
  #pool: Pool;
  #mode: TrustMode;
  readonly #onCredential: CredentialObserver | undefined;
  #closed = false;

  /** Throws InputInvalidError for a bad URL or TLS trust. */
  constructor(options: TransportOptions) {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new InputInvalidError(`NetHSM url is not a URL: ${JSON.stringify(options.url)}`);
    }
    if (url.protocol !== 'https:') throw new InputInvalidError(`NetHSM url must be https://…, got ${url.protocol}`);
    if (url.username || url.password) throw new InputInvalidError('NetHSM url must not carry credentials; pass auth instead');
    const trust = parseTrust(options.tls);
    this.timeoutMs = options.timeoutMs ?? 30_000;
    if (!Number.isFinite(this.timeoutMs) || this.timeoutMs <= 0) throw new InputInvalidError('timeoutMs must be a positive number');
    this.origin = url.origin;
    this.connections = options.connections ?? 8;
    if (!Number.isInteger(this.connections) || this.connections < 1) throw new InputInvalidError('connections must be a whole number ≥ 1');
    this.logger = options.logger;
    if (trust.kind === 'insecure') {
      this.logger.warn({ url: this.origin }, 'TLS certificate verification is disabled for this NetHSM (insecure: true)');
    }
    this.#onCredential = options.onCredential;
    this.#mode = trust;
    this.#pool = this.#newPool(trust);
  }

  #newPool(trust: TrustMode): Pool {
    return new Pool(this.origin, {
      connections: this.connections,
      connect: connectorFor(trust, this.timeoutMs),
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      keepAliveTimeout: 10_000,
    });
  }

  /**
   * Trusts the NetHSM's certificate another way from now on (config reload): new requests go over new connections
   * checked against `tls`; requests already running finish on the old connections, which then close. Throws
   * InputInvalidError for a bad trust, changing nothing. Returns whether the trust changed.
   */
  setTrust(tls: TlsTrust): boolean {
    const trust = parseTrust(tls);
    if (sameTrust(trust, this.#mode) || this.#closed) return false;
    const old = this.#pool;
    this.#pool = this.#newPool(trust);
    this.#mode = trust;
    if (trust.kind === 'insecure') this.logger.warn({ url: this.origin }, 'TLS certificate verification is disabled for this NetHSM (insecure: true)');
    void old.close().catch(() => undefined);
    return true;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Sends one request. Resolves with the response when its status is in `spec.expect` (body not yet read);
   * throws NetHsmHttpError, NetHsmTimeoutError, NetHsmUnreachableError, TlsPinMismatchError or NetHsmTlsUntrustedError.
   */
  async request(spec: RequestSpec, auth: RequestAuth | undefined): Promise<Dispatcher.ResponseData> {
    const operation = `${spec.method} ${spec.path}`;
    if (this.#closed) throw new InternalError(`NetHSM client used after close() (${operation})`, { operation });
    const headers: Record<string, string> = { accept: spec.accept ?? 'application/json' };
    if (auth !== undefined) headers.authorization = auth.header;
    let body: Buffer | Readable | undefined =
      spec.body === undefined || Buffer.isBuffer(spec.body) ? spec.body : Readable.from(spec.body, { objectMode: false });
    if (spec.json !== undefined) {
      body = Buffer.from(JSON.stringify(spec.json));
      headers['content-type'] = 'application/json';
    } else if (spec.contentType !== undefined) {
      headers['content-type'] = spec.contentType;
    }
    if (spec.contentLength !== undefined) headers['content-length'] = String(spec.contentLength);
    const started = performance.now();
    let res: Dispatcher.ResponseData;
    try {
      res = await this.#pool.request({
        method: spec.method,
        path: `/api/v1${spec.path}${queryString(spec.query)}`,
        headers,
        body: body ?? null,
        ...(spec.signal ? { signal: spec.signal } : {}),
      });
    } catch (err) {
      if (spec.signal?.aborted) throw spec.signal.reason;
      const mapped = mapTransportError(err, operation, this.timeoutMs);
      this.logger.debug({ operation, err: mapped.toJSON() }, 'NetHSM request failed');
      throw mapped;
    }
    this.logger.debug({ operation, status: res.statusCode, ms: Math.round(performance.now() - started) }, 'NetHSM request');
    const labelled = auth?.credential ? { ...auth.credential, user: auth.user } : undefined;
    if (spec.expect.includes(res.statusCode)) {
      if (labelled && res.statusCode < 300 && spec.public !== true) this.#onCredential?.(labelled, undefined);
      return res;
    }
    const text = await readText(res, MAX_ERROR_BODY_BYTES, operation, this.timeoutMs, true);
    const err = httpError(res.statusCode, text, operation, spec.secrets ?? [], { user: auth?.user, credential: auth?.credential });
    if (labelled && err instanceof NetHsmCredentialRefusedError) this.#onCredential?.(labelled, err);
    throw err;
  }

  /** Reads a whole (bounded) response body as text. */
  async text(res: Dispatcher.ResponseData, operation: string): Promise<string> {
    return readText(res, MAX_BODY_BYTES, operation, this.timeoutMs, false);
  }

  /** Reads a whole (bounded) response body as bytes. */
  async bytes(res: Dispatcher.ResponseData, operation: string): Promise<Buffer> {
    return readBytes(res, MAX_BODY_BYTES, operation, this.timeoutMs, false);
  }

  /** Reads and parses a JSON body; unparsable → NetHsmResponseInvalidError. */
  async json(res: Dispatcher.ResponseData, operation: string): Promise<unknown> {
    const text = await this.text(res, operation);
    try {
      return JSON.parse(text) as unknown;
    } catch {
      // Neither the body nor the parser's message (which quotes it) is kept: it may be a decrypted message or other sensitive output.
      const type = String(res.headers['content-type'] ?? 'no content type');
      throw new NetHsmResponseInvalidError(`expected JSON from the NetHSM, got ${text.length} bytes of ${type} that do not parse`, { operation });
    }
  }

  mapError(err: unknown, operation: string): Error {
    return mapTransportError(err, operation, this.timeoutMs);
  }

  /** Closes the pool (waits for running requests). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.close();
  }
}

function sameTrust(a: TrustMode, b: TrustMode): boolean {
  if (a.kind === 'ca' && b.kind === 'ca') return a.caPem === b.caPem;
  if (a.kind === 'pin' && b.kind === 'pin') return a.fingerprint256 === b.fingerprint256;
  return a.kind === b.kind;
}

function queryString(query: Record<string, string | undefined> | undefined): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.append(k, v);
  const s = params.toString();
  return s ? `?${s}` : '';
}

async function readBytes(res: Dispatcher.ResponseData, limit: number, operation: string, timeoutMs: number, truncate: boolean): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of res.body) {
      const buf = chunk as Buffer;
      total += buf.length;
      if (total > limit) {
        if (truncate) {
          res.body.destroy();
          break;
        }
        res.body.destroy();
        throw new NetHsmResponseInvalidError(`NetHSM response body exceeds ${limit} bytes`, { operation });
      }
      chunks.push(buf);
    }
  } catch (err) {
    throw mapTransportError(err, operation, timeoutMs);
  }
  return Buffer.concat(chunks);
}

async function readText(res: Dispatcher.ResponseData, limit: number, operation: string, timeoutMs: number, truncate: boolean): Promise<string> {
  return (await readBytes(res, limit, operation, timeoutMs, truncate)).toString('utf8');
}
