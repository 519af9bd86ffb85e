/**
 * The peer API server: HTTPS with mutual TLS. TLS verifies the client certificate against the group CA; the
 * request is then mapped to a configured peer by the certificate's CN (and pinned fingerprint, if any). Every body
 * is validated. Long-lived part with idempotent start()/close().
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type { z } from 'zod';
import { NhrError, PeerMessageInvalidError } from '../errors.js';
import { parseItemsRequest, parseRangeSize, type IdRange } from '../namespaces/inventory-ranges.js';
import { silentLogger, type Logger } from '../log.js';
import { NO_LOG_PARAM, parseLogParam, parsePosition } from '../stream/protocol.js';
import type { TransportKeyInfo } from '../stream/transport-key.js';
import { identifyPeer, type PeerIdentity } from './identity.js';
import { PASSPHRASE_CHECK_ENDPOINT, PassphraseCheckLimiter, passphraseCheckRequestSchema, type PassphraseProof } from './passphrase-check.js';
import {
  PEER_API_PREFIX,
  SNAPSHOT_EPOCH_HEADER,
  SNAPSHOT_SITE_HEADER,
  epochAnnouncementSchema,
  handoffRequestSchema,
  namespaceIdSchema,
  type EpochAnnouncement,
  type EpochAnswer,
  type HandoffRequest,
  type PeerNethsm,
  type PeerStatus,
  type ServingView,
} from './messages.js';

/** What the daemon answers to its peers. `peer` is the authenticated site name. Handlers may throw NhrErrors. */
export interface PeerHandlers {
  status(peer: string): Promise<PeerStatus>;
  /** Streams a namespace snapshot; throws when this site is not primary for it. */
  snapshot(peer: string, namespace: string): Promise<{ epoch: number; site: string; body: Readable | AsyncIterable<Uint8Array> }>;
  announceEpoch(peer: string, namespace: string, announcement: EpochAnnouncement): Promise<EpochAnswer>;
  handoff(peer: string, namespace: string, request: HandoffRequest): Promise<{ epoch: number }>;
  /** The primary asks this replica to pull now; answers at once (the sync runs in the background). */
  requestSync(peer: string, namespace: string): Promise<{ started: boolean }>;
  /** A full device backup (for a peer's init-replica): streamed, encrypted under the device backup passphrase. */
  deviceBackup(peer: string): Promise<Readable | AsyncIterable<Uint8Array>>;
  /** What this site can serve to another site's gateway (cross-site crypto); 404 when absent. */
  serving?(peer: string): Promise<ServingView>;
  /** How this site's daemon last found its own NetHSM; 404 when absent. */
  nethsm?(peer: string): Promise<PeerNethsm>;
  /** This site's transport key (public half), for peers sealing imports to it. */
  transportKey?(peer: string): Promise<TransportKeyInfo>;
  /** The namespace's inventory (anti-entropy); only its primary answers. */
  inventory?(peer: string, namespace: string): Promise<unknown>;
  /**
   * The namespace's range digests (anti-entropy, src/namespaces/inventory-ranges.ts): NDJSON lines without their
   * newline, read from the device as they are sent. Only its primary answers (throws before the first line otherwise).
   */
  inventoryRanges?(peer: string, namespace: string, rangeSize: number, signal: AbortSignal): Promise<AsyncIterable<string>>;
  /** The namespace's items inside `ranges` (validated by the server), as NDJSON lines; only its primary answers. */
  inventoryItems?(peer: string, namespace: string, ranges: IdRange[], signal: AbortSignal): Promise<AsyncIterable<string>>;
  /** One key's certificate at the primary (anti-entropy repairs), or null when it has none. */
  certificate?(peer: string, namespace: string, keyId: string): Promise<{ contentType: string; data: Buffer } | null>;
  /**
   * The namespace's change stream after `after` (undefined: the peer has no position) in change log `log` (the `log`
   * parameter: undefined when absent, a peer older than log ids; null for `none`, a position without log id): NDJSON
   * lines without their newline, until `signal` aborts (the peer went away, or shutdown) or the stream ends. Throws
   * before the first line when this site is not the namespace's primary.
   */
  changes?(
    peer: string,
    namespace: string,
    after: { epoch: number; seq: number } | undefined,
    signal: AbortSignal,
    log?: string | null,
  ): Promise<AsyncIterable<string>>;
  /**
   * Seals `challenge` under this site's replication passphrase (src/peer/passphrase-check.ts), so the asking site can
   * tell whether it has the same passphrase. Rate-limited per peer by the server.
   */
  replicationPassphraseProof?(peer: string, challenge: Buffer): Promise<PassphraseProof>;
}

export interface PeerServerOptions {
  host: string;
  port: number;
  tls: { certPem: string; keyPem: string; caPem: string };
  peers: readonly PeerIdentity[];
  handlers: PeerHandlers;
  logger?: Logger;
  /** Longest a TLS handshake may take; then the connection is destroyed. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Bounds replication passphrase checks per peer (default: 5 a minute, one at a time). */
  passphraseCheckLimiter?: PassphraseCheckLimiter;
  /**
   * Longest a request may take to arrive, head and body (bodies are small JSON); the head alone gets at most 10 s.
   * Then the connection is cut. Long-lived answers (the change stream) are not bounded by it. Default 30 s.
   */
  requestTimeoutMs?: number;
}

const MAX_BODY = 64 * 1024;

export class PeerServer {
  private server: Server | undefined;
  /** Every raw connection, from accept to close (close() destroys them). */
  private readonly sockets = new Set<Socket>();
  private readonly log: Logger;
  private peers: readonly PeerIdentity[];
  private readonly passphraseChecks: PassphraseCheckLimiter;

  constructor(private readonly options: PeerServerOptions) {
    this.log = options.logger ?? silentLogger;
    this.peers = options.peers;
    this.passphraseChecks = options.passphraseCheckLimiter ?? new PassphraseCheckLimiter();
  }

  /**
   * The configured peers from now on (config reload: a changed pin). Every request is matched against them, also on
   * connections opened before, so a peer whose pin no longer matches is refused at its next request.
   */
  setPeers(peers: readonly PeerIdentity[]): void {
    this.peers = peers.map((p) => ({ ...p }));
  }

  /** The bound port (after start). */
  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  async start(): Promise<void> {
    if (this.server) return;
    const { tls } = this.options;
    const requestTimeout = this.options.requestTimeoutMs ?? 30_000;
    const headersTimeout = Math.min(10_000, requestTimeout);
    const server = createServer(
      {
        cert: tls.certPem,
        key: tls.keyPem,
        ca: tls.caPem,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.3',
        // A connection that never finishes its handshake, or its request, is cut (Node's defaults are minutes).
        handshakeTimeout: this.options.handshakeTimeoutMs ?? 10_000,
        requestTimeout,
        headersTimeout,
        connectionsCheckingInterval: Math.min(5_000, Math.ceil(headersTimeout / 4)),
      },
      (req, res) => void this.handle(req, res),
    );
    server.on('tlsClientError', (err) => this.log.warn({ err: { message: err.message } }, 'peer TLS handshake refused'));
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.log.info({ host: this.options.host, port: this.port }, 'peer API listening');
  }

  /**
   * Stops listening and cuts every connection, including one still in its TLS handshake (which the HTTP layer's
   * closeAllConnections() does not know yet, and which would otherwise keep close() waiting). Peers retry. Idempotent.
   */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const peer = identifyPeer((req.socket as TLSSocket).getPeerCertificate(), this.peers);
    if (!peer) {
      this.log.warn({ remote: req.socket.remoteAddress }, 'peer request with an unknown certificate refused');
      return sendJson(res, 403, { error: { code: 'NHR_ERR_PEER_IDENTITY', message: 'certificate is not a configured peer' } });
    }
    try {
      await this.route(peer.name, req, res);
    } catch (err) {
      const status = err instanceof NhrError ? (err.retryable ? 503 : 409) : err instanceof BadRequest ? err.status : 500;
      const body =
        err instanceof NhrError
          ? { error: { code: err.code, message: err.message, ...(err.epoch !== undefined ? { epoch: err.epoch } : {}) } }
          : err instanceof BadRequest
            ? { error: { code: err.code, message: err.message } }
            : { error: { code: 'NHR_ERR_INTERNAL', message: 'internal error' } };
      if (status === 500) this.log.error({ err, peer: peer.name }, 'peer request failed');
      if (res.headersSent) res.destroy();
      else sendJson(res, status, body, err instanceof BadRequest ? err.headers : undefined);
    }
  }

  /** A long-lived NDJSON response; ends when the handler's lines end or the peer goes away. */
  private async streamChanges(peer: string, ns: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const params = new URL(req.url ?? '/', 'https://peer').searchParams;
    const raw = params.get('after');
    const after = raw === null ? undefined : parsePosition(raw);
    if (raw !== null && after === undefined) throw new BadRequest(400, 'after must be <epoch>.<seq> (whole numbers)');
    const log = parseLogParam(params.get('log'));
    if (!log.ok) throw new BadRequest(400, `log must be a change log id (a UUID) or ${NO_LOG_PARAM}`);
    const changes = this.options.handlers.changes;
    if (!changes) throw new BadRequest(404, 'this site serves no change stream');
    return streamLines(res, (signal) => changes.call(this.options.handlers, peer, ns, after, signal, log.log));
  }

  private async route(peer: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'https://peer').pathname;
    const h = this.options.handlers;
    const inv = /^\/peer\/v1\/namespaces\/([^/]+)\/inventory\/(ranges|items)$/.exec(path);
    if (inv) {
      const ns = parse(namespaceIdSchema, decodeURIComponent(inv[1]!), 'namespace');
      if (inv[2] === 'ranges') {
        method(req, 'GET');
        if (!h.inventoryRanges) throw new BadRequest(404, 'this site serves no inventory ranges');
        const size = asBadRequest(() => parseRangeSize(new URL(req.url ?? '/', 'https://peer').searchParams.get('size')));
        return streamLines(res, (signal) => h.inventoryRanges!(peer, ns, size, signal));
      }
      method(req, 'POST');
      if (!h.inventoryItems) throw new BadRequest(404, 'this site serves no inventory items');
      const body = await readJson(req);
      const ranges = asBadRequest(() => parseItemsRequest(body));
      return streamLines(res, (signal) => h.inventoryItems!(peer, ns, ranges, signal));
    }
    return this.routeRest(peer, req, res, path);
  }
  private async routeRest(peer: string, req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const h = this.options.handlers;
    if (path === `${PEER_API_PREFIX}/status`) {
      method(req, 'GET');
      return sendJson(res, 200, await h.status(peer));
    }
    if (path === `${PEER_API_PREFIX}/serving`) {
      method(req, 'GET');
      if (!h.serving) throw new BadRequest(404, 'this site serves no gateway requests for peers');
      return sendJson(res, 200, await h.serving(peer));
    }
    if (path === `${PEER_API_PREFIX}/nethsm`) {
      method(req, 'GET');
      if (!h.nethsm) throw new BadRequest(404, 'this site does not report its NetHSM');
      return sendJson(res, 200, await h.nethsm(peer));
    }
    if (path === `${PEER_API_PREFIX}/device-backup`) {
      method(req, 'GET');
      const body = await h.deviceBackup(peer);
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      return sendBody(body instanceof Readable ? body : Readable.from(body), res);
    }
    if (path === `${PEER_API_PREFIX}/transport-key`) {
      method(req, 'GET');
      if (!h.transportKey) throw new BadRequest(404, 'this site publishes no transport key');
      return sendJson(res, 200, await h.transportKey(peer));
    }
    if (path === `${PEER_API_PREFIX}${PASSPHRASE_CHECK_ENDPOINT}`) {
      method(req, 'POST');
      if (!h.replicationPassphraseProof) throw new BadRequest(404, 'this site offers no replication passphrase check');
      const { challenge } = parse(passphraseCheckRequestSchema, await readJson(req), 'body');
      const wait = this.passphraseChecks.take(peer);
      if (wait !== undefined) {
        const seconds = Math.max(1, Math.ceil(wait / 1000));
        throw new BadRequest(429, `too many replication passphrase checks from ${peer}; retry in ${seconds}s`, 'NHR_ERR_PEER_REFUSED', { 'retry-after': String(seconds) });
      }
      try {
        this.log.info({ peer }, 'replication passphrase check');
        return sendJson(res, 200, await h.replicationPassphraseProof(peer, Buffer.from(challenge, 'base64')));
      } finally {
        this.passphraseChecks.release(peer);
      }
    }
    const cert = /^\/peer\/v1\/namespaces\/([^/]+)\/keys\/([^/]+)\/cert$/.exec(path);
    if (cert) {
      method(req, 'GET');
      if (!h.certificate) throw new BadRequest(404, 'this site serves no certificates');
      const ns = parse(namespaceIdSchema, decodeURIComponent(cert[1]!), 'namespace');
      const keyId = parse(namespaceIdSchema, decodeURIComponent(cert[2]!), 'key id');
      const c = await h.certificate(peer, ns, keyId);
      return sendJson(res, 200, c ? { contentType: c.contentType, data: c.data.toString('base64') } : { contentType: null, data: null });
    }
    const m = /^\/peer\/v1\/namespaces\/([^/]+)\/(snapshot|epoch|handoff|sync|changes|inventory)$/.exec(path);
    if (!m) throw new BadRequest(404, `no such peer endpoint: ${path}`);
    const ns = parse(namespaceIdSchema, decodeURIComponent(m[1]!), 'namespace');
    if (m[2] === 'changes') {
      method(req, 'GET');
      return this.streamChanges(peer, ns, req, res);
    }
    if (m[2] === 'inventory') {
      method(req, 'GET');
      if (!h.inventory) throw new BadRequest(404, 'this site serves no inventories');
      return sendJson(res, 200, await h.inventory(peer, ns));
    }
    if (m[2] === 'snapshot') {
      method(req, 'GET');
      const snap = await h.snapshot(peer, ns);
      // The snapshot may still be in the making: the status goes once its first bytes exist, so a failure before them
      // (a source replaying erased changes, a device fault) is answered as an error, not as a broken transfer.
      const body = await afterFirstChunk(snap.body);
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        [SNAPSHOT_EPOCH_HEADER]: String(snap.epoch),
        [SNAPSHOT_SITE_HEADER]: snap.site,
      });
      // A failure from here on destroys the response (pipeline, and handle()): the peer sees the transfer cut, never
      // a clean end of a truncated snapshot.
      return sendBody(body, res);
    }
    method(req, 'POST');
    const body = await readJson(req);
    if (m[2] === 'epoch') return sendJson(res, 200, await h.announceEpoch(peer, ns, parse(epochAnnouncementSchema, body, 'body')));
    if (m[2] === 'sync') return sendJson(res, 200, await h.requestSync(peer, ns));
    return sendJson(res, 200, await h.handoff(peer, ns, parse(handoffRequestSchema, body, 'body')));
  }
}

/**
 * A long-lived NDJSON response; ends when the lines end or the peer goes away (`signal` aborts). An error before the
 * first line is answered as usual (by the caller); after it, the connection is cut, so the peer sees a truncated answer.
 */
async function streamLines(res: ServerResponse, open: (signal: AbortSignal) => Promise<AsyncIterable<string>>): Promise<void> {
  const abort = new AbortController();
  const onClose = () => abort.abort();
  res.on('close', onClose);
  try {
    const lines = await open(abort.signal);
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
    res.flushHeaders();
    for await (const line of lines) {
      if (abort.signal.aborted) break;
      if (!res.write(line + '\n')) await new Promise<void>((resolve) => {
        const done = () => (res.off('drain', done), res.off('close', done), resolve());
        res.on('drain', done);
        res.on('close', done);
      });
    }
    if (!res.destroyed) res.end();
  } finally {
    abort.abort();
    res.off('close', onClose);
  }
}

/**
 * Sends a long answer's body. The peer may have left while it was prepared (a device backup, a snapshot's first bytes:
 * minutes): pipeline() never settles on a response already closed, and the body (a work file, a snapshot's spool and
 * its descriptor) would stay open for good, so it is closed instead.
 */
async function sendBody(body: Readable, res: ServerResponse): Promise<void> {
  if (res.destroyed) {
    body.destroy();
    return;
  }
  await pipeline(body, res);
}

/**
 * Waits for `body`'s first chunk (throwing its error, the body closed, when there is none) and returns a stream of the
 * whole body. An empty body is a stream that ends at once.
 */
async function afterFirstChunk(body: Readable | AsyncIterable<Uint8Array>): Promise<Readable> {
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>;
  let first: IteratorResult<Uint8Array>;
  try {
    first = await it.next();
  } catch (err) {
    await it.return?.();
    throw err;
  }
  const out = Readable.from(
    (async function* () {
      try {
        if (first.done) return;
        yield first.value;
        for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
      } finally {
        await it.return?.();
      }
    })(),
    { objectMode: false },
  );
  // A generator destroyed before its first read (the peer left while the first chunk was awaited) never runs its
  // finally: the body is closed here too, or a streamed snapshot's spool file and descriptor would stay (return() is
  // idempotent on the bodies served).
  out.once('close', () => void Promise.resolve(it.return?.()).catch(() => undefined));
  return out;
}

function asBadRequest<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof PeerMessageInvalidError) throw new BadRequest(400, err.message);
    throw err;
  }
}

class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code = 'NHR_ERR_PEER_MESSAGE_INVALID',
    readonly headers?: Record<string, string>,
  ) {
    super(message);
  }
}

function method(req: IncomingMessage, m: string): void {
  if (req.method !== m) throw new BadRequest(405, `use ${m}`);
}

function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue && issue.path.length > 0 ? `${what}.${issue.path.join('.')}` : what;
  throw new BadRequest(400, `${where} ${issue?.message ?? 'is invalid'}`);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new BadRequest(413, `body over ${MAX_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new BadRequest(400, 'body is not valid JSON');
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
