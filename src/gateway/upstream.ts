/**
 * Keep-alive connection pools from the gateway to the site's NetHSM and to other sites' gateways, with the NetHSM
 * client's TLS trust (CA PEM, pinned SHA-256 fingerprint, or insecure opt-in). Bodies stream both ways.
 */
import type { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import { InputInvalidError } from '../errors.js';
import type { Logger } from '../log.js';
import { connectorFor, parseTrust, type ClientIdentity, type TlsTrust, type TrustMode } from '../nethsm/tls-trust.js';
import { Relay } from './relay.js';

/**
 * Default pool size (`gateway.nethsmConnections`, docs/configuration.md): the most requests the gateway has in flight
 * at the NetHSM; more wait in the gateway, in arrival order. All of a site's applications share it, so it must not be
 * smaller than the concurrency they would otherwise open to the device themselves. Connections open on demand and
 * close after 10 s idle, so a quiet site holds few; the bound keeps a burst from opening hundreds of TLS sessions on
 * the appliance at once.
 */
export const DEFAULT_UPSTREAM_CONNECTIONS = 64;

export interface UpstreamOptions {
  /** `https://host:port`; a path (such as `/api/v1`) is ignored: the gateway forwards the client's own path. */
  url: string;
  tls: TlsTrust;
  /** Keep-alive connections (requests in flight). Default DEFAULT_UPSTREAM_CONNECTIONS. */
  connections?: number;
  /** Connect timeout, and the longest wait for response headers and between body chunks. Default 5 min (backups). */
  timeoutMs?: number;
  /** The certificate this gateway presents (mutual TLS with other sites' gateways); none towards the NetHSM. */
  clientIdentity?: ClientIdentity;
  logger: Logger;
}

export interface UpstreamRequest {
  method: string;
  /** Path and query, as received from the client. */
  path: string;
  /** Flat name/value list, as Node's `rawHeaders` (see headers.ts). */
  headers: string[];
  body?: Readable | Buffer;
}

export class Upstream {
  readonly origin: string;
  readonly timeoutMs: number;
  #pool: Pool;
  #mode: TrustMode;
  readonly #connections: number;
  readonly #identity: ClientIdentity | undefined;
  readonly #logger: Logger;
  #closed = false;

  /** Throws InputInvalidError for a URL that is not https or a bad TLS trust. */
  constructor(options: UpstreamOptions) {
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new InputInvalidError(`upstream url is not a URL: ${JSON.stringify(options.url)}`);
    }
    if (url.protocol !== 'https:') throw new InputInvalidError(`upstream url must be https://…, got ${url.protocol}`);
    if (url.username || url.password) throw new InputInvalidError('upstream url must not carry credentials');
    const trust = parseTrust(options.tls);
    this.timeoutMs = options.timeoutMs ?? 300_000;
    this.origin = url.origin;
    this.#connections = options.connections ?? DEFAULT_UPSTREAM_CONNECTIONS;
    this.#logger = options.logger;
    this.#identity = options.clientIdentity;
    this.#mode = trust;
    this.#pool = this.#newPool(trust);
  }

  #newPool(trust: TrustMode): Pool {
    if (trust.kind === 'insecure') {
      this.#logger.warn({ url: this.origin }, 'gateway: TLS certificate verification is disabled for this upstream (insecure: true)');
    }
    return new Pool(this.origin, {
      connections: this.#connections,
      connect: connectorFor(trust, Math.min(this.timeoutMs, 30_000), this.#identity),
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      keepAliveTimeout: 10_000,
    });
  }

  /**
   * Trusts the upstream's certificate another way from now on (config reload): new requests use new connections;
   * requests in flight finish on the old ones. Throws InputInvalidError for a bad trust, changing nothing.
   */
  setTrust(tls: TlsTrust): void {
    const trust = parseTrust(tls);
    if (this.#closed) return;
    const old = this.#pool;
    this.#pool = this.#newPool(trust);
    this.#mode = trust;
    void old.close().catch(() => undefined);
  }

  /** How the upstream's certificate is trusted now. */
  get trust(): TrustMode {
    return this.#mode;
  }

  /** Sends one request; the answer comes through the returned relay (its `head` rejects with undici's error). */
  relay(r: UpstreamRequest): Relay {
    const relay = new Relay();
    this.#pool.dispatch({ method: r.method as Dispatcher.HttpMethod, path: r.path, headers: r.headers, body: r.body ?? null }, relay);
    return relay;
  }

  /** Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.destroy();
  }
}

/** Pools to other sites' gateways, made on first use, one per origin, all with the same TLS trust. */
export class PeerGateways {
  readonly #pools = new Map<string, Upstream>();
  constructor(private readonly options: Omit<UpstreamOptions, 'url'>) {}

  /** Throws InputInvalidError for a bad URL. */
  for(url: string): Upstream {
    let origin: string;
    try {
      origin = new URL(url).origin;
    } catch {
      throw new InputInvalidError(`primary gateway url is not a URL: ${JSON.stringify(url)}`);
    }
    let u = this.#pools.get(origin);
    if (u === undefined) {
      u = new Upstream({ ...this.options, url: origin });
      this.#pools.set(origin, u);
    }
    return u;
  }

  /** Idempotent. */
  async close(): Promise<void> {
    const all = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(all.map((u) => u.close()));
  }
}
