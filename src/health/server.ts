/**
 * The health and metrics listener: its own address (config `health.listen`, default 127.0.0.1:9810), plain HTTP by
 * default, HTTPS when given a certificate and key. Endpoints are in `routes.ts`.
 *
 * Why plain HTTP is the default: the answers carry roles, lags and metrics, never secrets or key material, and the
 * callers (Prometheus, a load balancer's health checks) are usually local or on a management network. Bind it to
 * loopback, or give it TLS when it must be reached across a network; a non-loopback address without TLS is logged
 * as a warning at start.
 */
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { ConfigInvalidError, InternalError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { ScrapeSource } from '../metrics/nethsm-exporter.js';
import { route } from './routes.js';
import type { HealthSource } from './source.js';

export interface HealthServerOptions {
  /** Host to bind (an IP address or name); tests use 127.0.0.1. */
  host: string;
  /** Port; 0 lets the OS choose (tests). */
  port: number;
  source: HealthSource;
  /** The registry, or the NetHSM exporter (which reads the device on each scrape and renders the registry). */
  metrics: ScrapeSource;
  /** PEM certificate (chain) and private key: serve HTTPS instead of HTTP. */
  tls?: { certPem: string | Buffer; keyPem: string | Buffer };
  /** How long `/health/ready` waits for the readiness checks before answering 503. Default 5000 ms. */
  readyTimeoutMs?: number;
  logger?: Logger;
}

export interface HealthServerAddress {
  host: string;
  port: number;
  /** `http://127.0.0.1:9810` (IPv6 hosts in brackets). */
  url: string;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export class HealthServer {
  readonly #options: HealthServerOptions;
  readonly #logger: Logger;
  #server: http.Server | undefined;
  #starting: Promise<HealthServerAddress> | undefined;
  #closing: Promise<void> | undefined;
  readonly #sockets = new Set<Socket>();

  constructor(options: HealthServerOptions) {
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
  }

  /**
   * Listens. Idempotent: a second call returns the same address.
   * Throws ConfigInvalidError when the TLS certificate or key is unusable or the address cannot be bound
   * (in use, not local, no permission); InternalError after close().
   */
  start(): Promise<HealthServerAddress> {
    if (this.#closing) return Promise.reject(new InternalError('the health server was closed; create a new one'));
    this.#starting ??= this.#listen();
    return this.#starting;
  }

  /** Stops listening and drops open connections. Idempotent; safe before start(). */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#starting?.catch(() => undefined);
      const server = this.#server;
      if (!server) return;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of this.#sockets) socket.destroy();
      });
    })();
    return this.#closing;
  }

  /** The bound address once started; undefined before. */
  get address(): HealthServerAddress | undefined {
    const a = this.#server?.address() as AddressInfo | null | undefined;
    if (!a) return undefined;
    const scheme = this.#options.tls ? 'https' : 'http';
    const host = isIP(a.address) === 6 ? `[${a.address}]` : a.address;
    return { host: a.address, port: a.port, url: `${scheme}://${host}:${a.port}` };
  }

  async #listen(): Promise<HealthServerAddress> {
    const { host, port, tls } = this.#options;
    const where = `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
    let server: http.Server;
    try {
      server = tls ? https.createServer({ cert: tls.certPem, key: tls.keyPem }) : http.createServer();
    } catch (err) {
      throw new ConfigInvalidError(`the health listener's TLS certificate or key is unusable: ${(err as Error).message}`, {
        cause: err,
        path: 'health.tls',
        hint: 'Give a PEM certificate and the PEM private key that belongs to it.',
      });
    }
    // Bounded waits: a slow or stuck client must not keep a socket forever.
    server.headersTimeout = 10_000;
    server.requestTimeout = 15_000;
    server.keepAliveTimeout = 5_000;
    server.maxHeadersCount = 64;
    server.on('request', (req, res) => this.#handle(req, res));
    server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(
          new ConfigInvalidError(`cannot listen on ${where} for health and metrics: ${err.code ?? err.message}`, {
            cause: err,
            path: 'health.listen',
            hint: err.code === 'EADDRINUSE'
              ? 'Another process holds that port: choose another health.listen address or stop the other process.'
              : 'Choose an address of this host for health.listen (host:port).',
          }),
        );
      };
      server.once('error', onError);
      try {
        server.listen(port, host, () => {
          server.off('error', onError);
          resolve();
        });
      } catch (err) {
        // Synchronous refusals, e.g. a port outside 0..65535 (ERR_SOCKET_BAD_PORT).
        onError(err as NodeJS.ErrnoException);
      }
    });
    server.on('error', (err) => this.#logger.error({ err }, 'health server error'));
    this.#server = server;
    const address = this.address as HealthServerAddress;
    if (!tls && !LOOPBACK.has(host)) {
      this.#logger.warn({ listen: address.url }, 'health and metrics are served over plain HTTP on a non-loopback address');
    }
    this.#logger.info({ listen: address.url }, 'health and metrics listening');
    return address;
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const method = req.method ?? 'GET';
    // A body is never expected; drain it so the connection stays usable.
    req.resume();
    route(method, req.url ?? '/', {
      source: this.#options.source,
      metrics: this.#options.metrics,
      readyTimeoutMs: this.#options.readyTimeoutMs ?? 5000,
      logger: this.#logger,
    })
      .then((answer) => {
        if (answer.status >= 500) this.#logger.debug({ path: req.url, status: answer.status }, 'health check not ok');
        res.writeHead(answer.status, {
          'Content-Type': answer.contentType,
          'Content-Length': Buffer.byteLength(answer.body),
          'Cache-Control': 'no-store',
          'X-Content-Type-Options': 'nosniff',
          ...answer.headers,
        });
        res.end(method === 'HEAD' ? undefined : answer.body);
      })
      .catch((err: unknown) => {
        this.#logger.error({ err }, 'health request failed');
        if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end();
      });
  }
}
