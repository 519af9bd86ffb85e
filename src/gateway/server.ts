/**
 * The gateway: an HTTPS server with the NetHSM's own API under `/api/v1` that applications use in place of the NetHSM.
 * Every request is classified (classify.ts), judged against the namespace roles (policy.ts), and then refused, forwarded
 * to the site's NetHSM, or forwarded to the primary site's gateway. Reads, crypto and responses stream (a small body
 * that came with its head goes upstream in one piece; answers come back through a Relay, relay.ts); a write's body is
 * read whole (bounded in size and time) before the write waits at the write gate, so only writes with their body in
 * hand count as in flight there. Basic auth and end-to-end headers pass untouched. Writes for primary namespaces go
 * through the change-capture hook. Slow clients (TLS handshake, request head, body) are cut. Nothing here logs headers
 * or bodies. See docs/gateway.md.
 */
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import {
  GatewayBodyTimeoutError,
  GatewayBodyTooLargeError,
  GatewayCaptureFailedError,
  GatewayHoldTimeoutError,
  GatewayLocalDownError,
  GatewayNoPeerError,
  GatewayRequestInvalidError,
  InternalError,
  NetHsmTimeoutError,
  NetHsmTlsUntrustedError,
  NetHsmUnreachableError,
  NhrError,
  TlsPinMismatchError,
} from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { mapTransportError } from '../nethsm/error-map.js';
import type { ClientIdentity, TlsTrust } from '../nethsm/tls-trust.js';
import { headerValues, parseBasicAuth, type CallerIdentity } from './basic-auth.js';
import { arrivedBody, hasBody, readBody } from './body.js';
import { classify, isKeyBodyOperation, type Classification } from './classify.js';
import { requestHeadersForUpstream, responseHeadersForClient, SERVED_BY_HEADER, VIA_HEADER } from './headers.js';
import { mutationBody, type KeyHold, type MutationBody, type MutationEnd, type MutationObserver, type MutationStart, type Substitution } from './observer.js';
import { decide, type Decision, type GatewayOutcome, type NamespaceRoles, type PolicyInput } from './policy.js';
import type { RemoteServing } from './remote-serving.js';
import { answerLocally, type LocalAnswer } from './respond.js';
import { parseTarget } from './target.js';
import type { Relay, RelayHead } from './relay.js';
import { PeerGateways, Upstream } from './upstream.js';
import { writeScope } from './write-scope.js';
import { DeviceBarrier, writeTicket, type WriteReplay, type WriteTicket } from '../concurrency/barrier.js';

/** How much longer than the longest wait for an answer (gate, then upstream) a client's socket may stay idle. */
const IDLE_MARGIN_MS = 5_000;

export interface GatewayRequestEvent {
  /** The caller's namespace; `null` for a root user; `undefined` when there were no (readable) credentials. */
  namespace: string | null | undefined;
  /** The metrics module's request classes: namespace reads, crypto, namespace mutations, and `other` (device level). */
  class: 'read' | 'crypto' | 'mutation' | 'other';
  outcome: GatewayOutcome;
  /** The status the client got (absent when the connection was cut). */
  status?: number;
  /** Milliseconds the request waited at the write gate (writes only): for its key locks, then for the barrier. */
  heldMs?: number;
  /** Served (or tried) at this peer site's gateway while this site's NetHSM is down (outcome served_remote or error). */
  peer?: string;
}

export interface GatewayOptions {
  /** This site's name: used in refusal messages and as the loop-guard marker when forwarding to a primary. */
  site: string;
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  /** The gateway's own TLS identity, as applications will see it. */
  tls: { certPem: string; keyPem: string };
  /** The site's NetHSM. */
  nethsm: { url: string; tls: TlsTrust; connections?: number; timeoutMs?: number };
  roles: NamespaceRoles;
  /**
   * The site's device barrier (src/concurrency/barrier.ts): each forwarded write is a shared holder, so the daemon's
   * merge-restores and fence exports (exclusive) wait for it and writes wait for them. Default: one of its own.
   */
  gate?: DeviceBarrier;
  /** Change capture for namespaces primary here (streaming). */
  observer?: MutationObserver;
  /**
   * Re-applies of erased writes running right after a merge-restore's hold (src/daemon/race-replayer.ts `running`):
   * a write to such a namespace passes at once when it cannot meet the replay, and otherwise waits for its end.
   * Absent: a pending re-apply refuses writes to its namespace unless a hold runs.
   */
  replays?: RunningReplays;
  /**
   * Trust for other sites' gateways. Without it, replica-namespace writes are refused even where the role names the
   * primary's gateway URL.
   */
  primaryGateways?: { tls: TlsTrust; timeoutMs?: number; clientIdentity?: ClientIdentity };
  /**
   * Cross-site serving while this site's NetHSM is down (remote-serving.ts): reads and crypto go to a peer's gateway.
   * Needs `primaryGateways` (the trust and client certificate for other gateways). The daemon reports the NetHSM's
   * health to it; the gateway reports connection failures to the NetHSM through `onNethsmUnreachable`.
   */
  remoteServing?: RemoteServing;
  /**
   * The group CA (PEM): the gateway asks clients for a certificate (optional: applications send none) and accepts the
   * forwarding marker `x-nethsm-replicator-via` only from a client whose certificate that CA signed (another site's
   * gateway, mutual TLS); otherwise the request is refused. Without it the marker is taken as it comes (it only ever
   * makes the gateway refuse where it would forward).
   */
  peerCaPem?: string;
  /** The site's NetHSM could not be reached by a forwarded call (a faster signal than the next health probe). Must not throw. */
  onNethsmUnreachable?: (err: Error) => void;
  /**
   * The site's NetHSM answered a namespace call with 412: it checks its state before anything else, so it is not
   * Operational (Locked, …; FACTS.md). The daemon checks it at once rather than at the next probe. Must not throw.
   */
  onNethsmNotOperational?: () => void;
  /** Called once per request; must not throw (a throw is logged and ignored). */
  onRequest?: (event: GatewayRequestEvent) => void;
  logger?: Logger;
  /** Largest request head accepted (bytes); larger gets 431 without forwarding. Default 16 KiB. */
  maxHeaderBytes?: number;
  /**
   * Largest body of a write forwarded to the site's NetHSM, and of any body sent without well-formed Basic credentials
   * (both are read whole before the gateway acts); larger gets 413 without forwarding. Default 1 MiB: the NetHSM's own
   * limit for every call but sign/decrypt/encrypt (which stream), restore (refused) and update.
   */
  maxWriteBodyBytes?: number;
  /** Longest such a body may take to arrive, whole; then 408 and the connection is closed, nothing forwarded. Default 30 s. */
  writeBodyTimeoutMs?: number;
  /** Longest any request may take to arrive, head and body (streamed crypto bodies too); then the connection is cut. Default 5 min. */
  requestTimeoutMs?: number;
  /** Longest a request head may take to arrive; then 408 and the connection is cut. Default 30 s (at most requestTimeoutMs). */
  headersTimeoutMs?: number;
  /** Longest a TLS handshake may take; then the connection is destroyed. Default 10 s. */
  handshakeTimeoutMs?: number;
}

const NONE: WriteReplay = { kind: 'none' };

/** A re-apply of erased writes running after its merge-restore's hold, as the gateway needs it. */
export interface ReplayInProgress {
  /** Whether this write can pass at once (none of its keys is replayed, and its kind is always re-appliable). */
  admits(m: MutationStart): boolean;
  /** Resolves when the replay has ended, done or failed (then decide again). */
  readonly done: Promise<void>;
}

/** Where the gateway asks for a namespace's running re-apply (GatewayOptions.replays). */
export interface RunningReplays {
  running(namespace: string): ReplayInProgress | undefined;
}

/**
 * What a write did, for a merge-restore it raced (WriteTicket): `none` when the NetHSM refused it (4xx) or the
 * capture dropped it as not done after a lost answer (status 0); `log` when the capture committed a change the log
 * alone can re-apply; `unknown` otherwise (5xx, an unsettled lost answer, no capture, a change it cannot re-apply).
 */
function replayOf(status: number, ended: MutationEnd | undefined): WriteReplay {
  if (status >= 400 && status < 500) return NONE;
  if (status === 0 && ended?.recorded === 'dropped') return NONE;
  if ((status === 0 || (status >= 200 && status < 300)) && ended?.recorded === 'change' && ended.replayable) {
    return { kind: 'log', namespace: ended.namespace, seq: ended.seq };
  }
  return { kind: 'unknown' };
}

/** Defaults of the limits above (docs/gateway.md). */
export const GATEWAY_LIMIT_DEFAULTS = {
  maxWriteBodyBytes: 1024 * 1024,
  writeBodyTimeoutMs: 30_000,
  requestTimeoutMs: 300_000,
  headersTimeoutMs: 30_000,
  handshakeTimeoutMs: 10_000,
} as const;

/**
 * The exchange in progress on a client connection (for a cut by Node's request timeout), kept on the socket itself: a
 * WeakMap entry per request cost an ephemeron for the garbage collector to trace.
 */
const EXCHANGE = Symbol('gateway exchange');
type ClientSocket = Duplex & { [EXCHANGE]?: Exchange | undefined };

/** Largest body taken whole when it arrived with its request head (see arrivedBody); larger ones stream. */
const ARRIVED_BODY_MAX_BYTES = 64 * 1024;

type GatewayLimits = Record<keyof typeof GATEWAY_LIMIT_DEFAULTS, number>;

interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  raw: string;
  /** Path segments below `/api/v1`, decoded (parseTarget). */
  segments: string[];
  caller: CallerIdentity;
  classification: Classification;
  via: string | undefined;
  /** The client's connection closed before its answer was complete. */
  gone: boolean;
  /** The exchange with the upstream, once started (cut when the client goes, unless `holding`). */
  relay?: Relay;
  /**
   * The write holds the device barrier (admitted at the gate). Its upstream call then runs to the NetHSM's answer even
   * when the client goes: the hold must last until the device can no longer apply the write, or an exclusive holder
   * (a merge-restore) could back up or restore under a write that lands a moment later (docs/concurrency.md).
   */
  holding?: boolean;
  /** Only while the request waits at the write gate: for its key locks, then the barrier (cut when the client goes). */
  gateWait?: AbortController;
  /** When the write began to wait (a running re-apply, its key locks, the gate): all share the gate's `maxWaitMs`. */
  waitStart?: number;
  /**
   * What the change capture sees of the write (#mutationStart), made once: its key locks are taken before the gate and
   * its `begin` runs after, and an import's body is parsed (key material in strings that cannot be zeroed) only once.
   */
  observed?: MutationStart;
  heldMs?: number;
  /** The request body, read whole (writes, and bodies sent without credentials); forwarded in place of the stream. Zeroed when the exchange ends. */
  body?: Buffer;
  /** Node cut the connection because the request did not arrive within requestTimeoutMs. */
  cutSlow?: boolean;
  /** The peer site whose gateway serves this call (this site's NetHSM is down). */
  servedBy?: string;
  /** The site a write was forwarded to (its primary). */
  sentTo?: string;
  /**
   * The write's barrier ticket (admitted at the gate): what it did to this site's NetHSM, set before the hold ends, so
   * a merge-restore it raced can re-apply it (replayOf).
   */
  ticket?: WriteTicket;
}

export class GatewayServer {
  readonly gate: DeviceBarrier;
  readonly #options: GatewayOptions;
  readonly #log: Logger;
  readonly #server: https.Server;
  readonly #sockets = new Set<Socket>();
  readonly #limits: GatewayLimits;
  readonly #nethsm: Upstream;
  readonly #peers: PeerGateways | undefined;
  #starting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #port = 0;

  /** Throws InputInvalidError for a bad NetHSM URL or TLS trust, RangeError for a limit that is not a positive integer. Does not listen until start(). */
  constructor(options: GatewayOptions) {
    this.#options = options;
    this.#limits = limitsOf(options);
    this.#log = (options.logger ?? silentLogger).child({ component: 'gateway' });
    this.gate = options.gate ?? new DeviceBarrier();
    this.#nethsm = new Upstream({ ...options.nethsm, logger: this.#log });
    const pg = options.primaryGateways;
    const peerTimeoutMs = pg ? (pg.timeoutMs ?? 60_000) : 0;
    if (options.remoteServing && !pg) throw new RangeError('gateway option remoteServing needs primaryGateways (trust for the peer gateways)');
    this.#peers = pg
      ? new PeerGateways({
          tls: pg.tls,
          timeoutMs: peerTimeoutMs,
          ...(pg.clientIdentity ? { clientIdentity: pg.clientIdentity } : {}),
          logger: this.#log,
        })
      : undefined;
    this.#server = https.createServer(
      {
        cert: options.tls.certPem,
        key: options.tls.keyPem,
        ...(options.peerCaPem !== undefined ? { requestCert: true, rejectUnauthorized: false, ca: options.peerCaPem } : {}),
        maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024,
        // Every bound on a client that is slow on purpose: the TLS handshake, the request head, the whole request (a
        // streamed sign body of 67 MiB must fit: 5 min by default), and, below, the whole body of a write.
        handshakeTimeout: this.#limits.handshakeTimeoutMs,
        requestTimeout: this.#limits.requestTimeoutMs,
        headersTimeout: this.#limits.headersTimeoutMs,
        connectionsCheckingInterval: Math.min(5_000, Math.ceil(this.#limits.headersTimeoutMs / 4)),
        keepAliveTimeout: 10_000,
      },
      (req, res) => void this.#handle(req, res),
    );
    this.#server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => this.#clientError(err, socket));
    // A socket idle that long (a stalled upload or download) is closed. A client's socket is idle too while its call
    // waits at the write gate and then for the NetHSM (or a peer gateway), so the bound outlasts both: the gateway's
    // own answer to a late upstream (504) must reach the client before its connection is closed under it.
    this.#server.setTimeout(this.gate.maxWaitMs + Math.max(this.#nethsm.timeoutMs, peerTimeoutMs) + IDLE_MARGIN_MS);
    this.#server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
  }

  /** `https://<host>:<port>` once started; applications append `/api/v1` as they do for a NetHSM. */
  get url(): string {
    const host = this.#options.host ?? '127.0.0.1';
    return `https://${host.includes(':') ? `[${host}]` : host}:${this.#port}`;
  }

  get port(): number {
    return this.#port;
  }

  /**
   * Trusts the NetHSM's certificate another way from now on (config reload of `nethsm.tls`). Throws InputInvalidError
   * for a bad trust, changing nothing.
   */
  setNethsmTrust(tls: TlsTrust): void {
    this.#nethsm.setTrust(tls);
  }

  /** The gateway's log level from now on (config reload of `logging.level`; its logger is a child of the daemon's). */
  setLogLevel(level: string): void {
    this.#log.level = level;
  }

  /** Starts listening. Idempotent; rejects when the address is taken. */
  start(): Promise<void> {
    this.#starting ??= new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#server.once('error', onError);
      this.#server.listen(this.#options.port ?? 0, this.#options.host ?? '127.0.0.1', () => {
        this.#server.off('error', onError);
        this.#port = (this.#server.address() as AddressInfo).port;
        this.#log.info({ url: this.url, nethsm: this.#nethsm.origin }, 'gateway listening');
        resolve();
      });
    });
    return this.#starting;
  }

  /** Stops listening, cuts open connections, closes the upstream pools. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#server.listening) {
        const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
        // Every raw connection, also one still in its TLS handshake (closeAllConnections() does not know those yet).
        for (const socket of this.#sockets) socket.destroy();
        this.#sockets.clear();
        await closed;
      }
      await Promise.all([this.#nethsm.close(), this.#peers?.close()]);
    })();
    return this.#closing;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = parseTarget(req.url);
    if (!target.ok) {
      const error = new GatewayRequestInvalidError(`request not forwarded: ${target.reason}`);
      this.#local(undefined, req, res, { status: target.status, error }, 'rejected_input', 'other');
      return;
    }
    const vias = headerValues(req.rawHeaders, VIA_HEADER);
    const x: Exchange = {
      req,
      res,
      raw: target.raw,
      segments: target.segments,
      caller: parseBasicAuth(headerValues(req.rawHeaders, 'authorization')),
      classification: classify(req.method ?? 'GET', target.segments),
      // Only ever shown in a refusal message; capped so a client cannot fill the log through it.
      via: vias.length > 0 ? vias.join(',').slice(0, 100) : undefined,
      gone: false,
    };
    const socket = req.socket as ClientSocket;
    socket[EXCHANGE] = x;
    if (x.via !== undefined && this.#options.peerCaPem !== undefined && (req.socket as TLSSocket).authorized !== true) {
      const error = new GatewayRequestInvalidError(`${VIA_HEADER} is accepted only from another site's gateway, presenting a certificate of the group CA`);
      this.#local(x, req, res, { status: 403, error }, 'rejected_input');
      return;
    }
    // 'close' comes once; `on` spares the wrapper `once` makes per request.
    res.on('close', () => {
      if (socket[EXCHANGE] === x) socket[EXCHANGE] = undefined;
      if (res.writableFinished) return;
      // The client went away: whatever the request is waiting for (the gate, the upstream) stops.
      x.gone = true;
      const reason = new Error('client closed the connection');
      x.gateWait?.abort(reason);
      if (!x.holding) x.relay?.abort(reason);
    });
    try {
      const d = await this.#decideAroundReplay(x);
      if (d === undefined) return;
      if (this.#options.remoteServing?.remote === true && (await this.#serveWhileDown(x, d))) return;
      await this.#execute(x, d, false);
    } catch (err) {
      // Only reached on a bug: every expected failure is answered inside #execute.
      this.#log.error({ err: describe(err), operation: x.classification.operation }, 'gateway: request failed');
      this.#local(x, req, res, { status: 500, error: err instanceof NhrError ? err : new InternalError('internal gateway error') }, 'error');
    } finally {
      x.body?.fill(0); // may hold key material or passphrases
    }
  }

  /**
   * Errors Node reports before or around a request: TLS failures and handshake timeouts, malformed or oversized heads,
   * and requests not received within requestTimeoutMs / headersTimeoutMs. Answers as Node would (431, 408, 400, or
   * nothing for TLS and transport errors), counts the slow ones, and destroys the connection.
   */
  #clientError(err: Error & { code?: string }, socket: Duplex): void {
    const code = err.code ?? '';
    const slow = code === 'ERR_HTTP_REQUEST_TIMEOUT' || code === 'ERR_TLS_HANDSHAKE_TIMEOUT';
    const http = code === 'ERR_HTTP_REQUEST_TIMEOUT' || code.startsWith('HPE_');
    const x = (socket as ClientSocket)[EXCHANGE];
    const remote = (socket as Socket).remoteAddress;
    if (http && socket.writable && (x === undefined || !x.res.headersSent)) {
      const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW' ? 413 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      socket.write(rawAnswer(status, status === 408 ? new GatewayBodyTimeoutError(this.#requestTimeoutMessage(x)) : undefined));
    }
    socket.destroy();
    if (x !== undefined) {
      // The handler sees its request aborted and reports it (as cut_slow).
      if (slow) x.cutSlow = true;
      return;
    }
    if (slow) {
      this.#log.info({ code, remote }, 'gateway: slow client cut');
      this.#emit({ namespace: undefined, class: 'other', outcome: 'cut_slow', ...(http ? { status: 408 } : {}) });
    }
  }

  #requestTimeoutMessage(x: Exchange | undefined): string {
    return x === undefined
      ? `request head not received within ${this.#limits.headersTimeoutMs} ms; connection closed`
      : `request not received within ${this.#limits.requestTimeoutMs} ms; connection closed`;
  }

  /**
   * Reads the exchange's body whole into `x.body`. Answers the client (413, 408, or a cut) and returns false when the
   * body is too large, too slow, or the client went away; nothing was forwarded then.
   */
  async #readBody(x: Exchange): Promise<boolean> {
    const { maxWriteBodyBytes: maxBytes, writeBodyTimeoutMs: timeoutMs } = this.#limits;
    const read = await readBody(x.req, { maxBytes, timeoutMs });
    if (read.ok) {
      x.body = read.bytes;
      return true;
    }
    const operation = x.classification.operation;
    if (read.reason === 'too_large') {
      const error = new GatewayBodyTooLargeError(`request body over ${maxBytes} bytes, the gateway's limit for writes; not forwarded`, { operation });
      this.#local(x, x.req, x.res, { status: 413, error }, 'rejected_too_large');
    } else if (read.reason === 'timeout') {
      const message = `request body not received within ${timeoutMs} ms (${read.received} bytes arrived); not forwarded, connection closed`;
      this.#local(x, x.req, x.res, { status: 408, error: new GatewayBodyTimeoutError(message, { operation }) }, 'cut_slow');
    } else {
      this.#report(x, 'error');
      x.res.destroy();
    }
    return false;
  }

  /**
   * The decision for a write that may meet a pending re-apply of erased writes (docs/concurrency.md, "Racing writes
   * re-applied"); undefined when the write was answered here (it waited past the gate's bound, or the client left).
   * - While an exclusive hold runs (likely the one restoring), the write waits at the gate like any held write and is
   *   decided again once admitted: it is decided as if no re-apply were pending, so its key locks are taken first.
   * - While the re-apply runs after its hold, a write it cannot meet (`ReplayInProgress.admits`) passes at once, as if
   *   none were pending; any other waits for its end (same bound as the gate) and is decided again.
   * - Otherwise (the re-apply failed, or a crash left it) the refusal stands: 503 NHR_ERR_GATEWAY_REPLAY_PENDING.
   */
  async #decideAroundReplay(x: Exchange): Promise<Decision | undefined> {
    for (;;) {
      const d = this.#decide(x);
      // Administrators pending: while an exclusive hold runs (the promote itself, or the restore's retry) the write
      // waits at the gate and is decided again once admitted; otherwise the refusal stands (503).
      if (d.action === 'refuse' && d.outcome === 'refused_admins') return this.gate.held ? this.#decide(x, true) : d;
      if (d.action !== 'refuse' || d.outcome !== 'refused_replay') return d;
      const run = d.error.namespace !== undefined ? this.#options.replays?.running(d.error.namespace) : undefined;
      if (run === undefined) return this.gate.held ? this.#decide(x, true) : d;
      const free = this.#decide(x, true);
      if (free.action === 'forward' && free.observe === d.error.namespace) {
        // What the write changes depends on its body (an import's id, a move's target): read it first.
        if (x.body === undefined && hasBody(x.req) && !(await this.#readBody(x))) return undefined;
        const start = this.#mutationStart(x, free.observe);
        if (start !== undefined && run.admits(start)) return free;
      }
      if (!(await this.#waitForReplay(x, run, d.error.namespace!))) return undefined;
    }
  }

  /**
   * Waits for a running re-apply to end, within what is left of the gate's `maxWaitMs` for this write; false when the
   * write was answered instead (503 NHR_ERR_GATEWAY_HOLD_TIMEOUT past the bound; nothing when the client left).
   */
  async #waitForReplay(x: Exchange, run: ReplayInProgress, namespace: string): Promise<boolean> {
    const started = (x.waitStart ??= performance.now());
    const bound = this.gate.maxWaitMs;
    const wait = new AbortController();
    x.gateWait = wait;
    if (x.gone) wait.abort(new Error('client closed the connection'));
    const timer = setTimeout(() => {
      const waited = Math.round(performance.now() - started);
      wait.abort(new GatewayHoldTimeoutError(`writes to namespace ${namespace} that may meet the re-apply of writes a restore erased wait for it; waited ${waited} ms (limit ${bound} ms)`));
    }, Math.max(1, bound - (performance.now() - started)));
    const aborted = new Promise<void>((resolve) => wait.signal.addEventListener('abort', () => resolve(), { once: true }));
    try {
      await Promise.race([run.done, aborted]);
    } finally {
      clearTimeout(timer);
      x.gateWait = undefined;
    }
    if (!wait.signal.aborted) return true;
    x.heldMs = Math.round(performance.now() - started);
    const reason: unknown = wait.signal.reason;
    if (x.gone || !(reason instanceof GatewayHoldTimeoutError)) this.#report(x, 'error');
    else this.#local(x, x.req, x.res, { status: 503, error: reason, retryAfterSeconds: this.gate.retryAfterSeconds }, 'held_timeout');
    return false;
  }

  /**
   * `ignoreReplay`: as if no namespace had a re-apply or an administrator restore pending (a write that will wait at the
   * gate while one may run).
   */
  #decide(x: Exchange, ignoreReplay = false): Decision {
    const input: PolicyInput = {
      classification: x.classification,
      caller: x.caller,
      site: this.#options.site,
      // Forwarding to a primary needs trust for its gateway; without it the write is refused as read-only.
      canForwardToPrimary: this.#peers !== undefined,
    };
    if (x.via !== undefined) input.viaGateway = x.via;
    const { roles } = this.#options;
    if (!ignoreReplay) return decide(input, roles);
    return decide(input, {
      roleOf: (ns) => {
        const r = roles.roleOf(ns);
        return r?.replayPending === true || r?.adminsPending === true ? { ...r, replayPending: false, adminsPending: false } : r;
      },
    });
  }

  /**
   * This site's NetHSM is down: reads and crypto of a replicated namespace go to a peer's gateway that may serve them
   * (remote-serving.ts); what only this NetHSM can serve (writes for namespaces primary here, root and unreplicated
   * calls, calls another gateway sent) gets 503 naming the cause. Device calls (an unlock above all: it is how a Locked
   * NetHSM comes back), refusals and writes forwarded to the primary's gateway go on as usual (returns false).
   */
  async #serveWhileDown(x: Exchange, d: Decision): Promise<boolean> {
    const remote = this.#options.remoteServing!;
    const k = x.classification.kind;
    if (k === 'device-read' || k === 'device-write' || d.action !== 'forward') return false;
    const site = this.#options.site;
    const down = `the NetHSM of site ${site} is down (${remote.state.cause ?? 'unknown'})`;
    const refuse = (message: string, namespace?: string): void => {
      const error = new GatewayLocalDownError(message, { operation: x.classification.operation, site, ...(namespace ? { namespace } : {}) });
      this.#local(x, x.req, x.res, { status: 503, error, retryAfterSeconds: this.gate.retryAfterSeconds }, 'refused_local_down');
    };
    if (k === 'mutation') {
      const ns = d.observe;
      refuse(ns !== undefined ? `namespace ${ns} is primary at site ${site} and ${down}; writes wait for it and are never sent to a replica` : `${down}; this write needs it`, ns);
      return true;
    }
    const ns = x.caller.kind === 'user' ? x.caller.namespace : undefined;
    if (x.via !== undefined) {
      refuse(`${down}; the call came through the gateway of site ${x.via} and is not forwarded again`);
      return true;
    }
    const role = ns !== undefined ? this.#options.roles.roleOf(ns) : undefined;
    if (ns === undefined || role === undefined) {
      refuse(`${down}; ${ns === undefined ? 'root-namespace calls' : `calls for namespace ${ns}, which is not replicated,`} are served by this site's NetHSM only`, ns);
      return true;
    }
    const choice = await remote.choose(ns, role.epoch);
    if (!choice.ok) {
      const error = new GatewayNoPeerError(`${down} and ${choice.cause}`, { operation: x.classification.operation, namespace: ns, site });
      this.#local(x, x.req, x.res, { status: 503, error, retryAfterSeconds: this.gate.retryAfterSeconds }, 'refused_no_peer');
      return true;
    }
    let peer: Upstream;
    try {
      peer = this.#peers!.for(choice.url);
    } catch {
      this.#local(x, x.req, x.res, { status: 502, error: new NetHsmUnreachableError(`the gateway URL of site ${choice.peer} is not usable`) }, 'error');
      return true;
    }
    x.servedBy = choice.peer;
    if (x.body === undefined && hasBody(x.req)) x.body = await arrivedBody(x.req, ARRIVED_BODY_MAX_BYTES);
    await this.#forward(x, peer, 'served_remote', undefined, site);
    return true;
  }

  /**
   * A read or crypto call found this site's NetHSM unreachable (no answer came): with remote serving, it is marked down
   * (serving goes remote) and this very call is served by a peer instead of failing, when its body is in hand to send
   * again (not a large body already streaming). Returns false when the call is not retried (the caller answers 502).
   */
  async #retryAtPeer(x: Exchange, up: Upstream, err: unknown): Promise<boolean> {
    const remote = this.#options.remoteServing;
    const k = x.classification.kind;
    if (remote === undefined || up !== this.#nethsm || x.gone || (k !== 'read' && k !== 'crypto')) return false;
    if (x.body === undefined && hasBody(x.req)) return false;
    const detail = mapTransportError(err, x.classification.operation, up.timeoutMs);
    if (!(detail instanceof NetHsmUnreachableError)) return false;
    this.#nethsmUnreachable(detail);
    if (!remote.remote) return false;
    this.#log.info(this.#fields(x, { err: detail.message }), 'gateway: the NetHSM is unreachable; serving the call from a peer');
    return this.#serveWhileDown(x, { action: 'forward', hold: false });
  }

  async #execute(x: Exchange, d: Decision, admitted: boolean): Promise<void> {
    if (d.action === 'refuse') {
      const extra = { ...(d.emptyBody ? { emptyBody: true } : {}), ...(d.retryAfter ? { retryAfterSeconds: this.gate.retryAfterSeconds } : {}) };
      this.#local(x, x.req, x.res, { status: d.status, error: d.error, ...extra }, d.outcome);
      return;
    }
    // A write that will wait at the gate is counted in flight there only with its body in hand; a body sent without
    // well-formed credentials is not streamed to the NetHSM at the client's pace either. Both are read whole first.
    const buffer = d.action === 'forward' && ((d.hold && !admitted) || x.caller.kind !== 'user');
    if (buffer && x.body === undefined && !(await this.#readBody(x))) return;
    // A small body that came with the head (sign, decrypt) goes upstream whole, in one write with its head.
    if (x.body === undefined && hasBody(x.req)) x.body = await arrivedBody(x.req, ARRIVED_BODY_MAX_BYTES);
    if (d.action === 'forward-primary') {
      let peer: Upstream;
      try {
        peer = this.#peers!.for(d.url);
      } catch {
        const error = new NetHsmUnreachableError(`the primary site's gateway URL for namespace ${d.namespace} is not usable`);
        this.#local(x, x.req, x.res, { status: 502, error }, 'error');
        return;
      }
      x.sentTo = d.role.primarySite;
      await this.#forward(x, peer, 'forwarded_primary', undefined, this.#options.site);
      return;
    }
    if (!d.hold || admitted) {
      await this.#forward(x, this.#nethsm, 'forwarded', d.observe);
      return;
    }
    await this.#admitAndForward(x, d.observe);
  }

  /**
   * Writes, their body already read: take the change capture's key locks (`observe`: the namespace primary here whose
   * capture sees the write), wait at the gate, decide again (roles may have changed), forward. Lock order
   * (docs/concurrency.md): the key locks come before the barrier, so writes queued on one hot key wait here, outside
   * it, and an exclusive hold waits only for the one write per key in flight. Both waits together are bounded by the
   * gate's `maxWaitMs` (503 NHR_ERR_GATEWAY_HOLD_TIMEOUT) and end when the client goes; the keys are let go on every
   * path on which the capture's `begin` did not take them over.
   */
  async #admitAndForward(x: Exchange, observe: string | undefined): Promise<void> {
    const waitStart = (x.waitStart ??= performance.now());
    let release: (() => void) | undefined;
    let keys: KeyHold | undefined;
    x.gateWait = new AbortController();
    if (x.gone) x.gateWait.abort(new Error('client closed the connection'));
    try {
      keys = await this.#lockKeys(x, observe, x.gateWait.signal, waitStart);
      const ticket = writeTicket();
      const left = Math.max(1, Math.round(this.gate.maxWaitMs - (performance.now() - waitStart)));
      // Confined to one namespace: a restore's verification then leaves only that one out (write-scope.ts).
      const scope = writeScope(x.classification, x.caller);
      const purpose = `gateway ${x.classification.operation}`;
      release = await this.gate.enter({ signal: x.gateWait.signal, ticket, wait: left, gateway: true, purpose, ...(scope !== undefined ? { scope } : {}) });
      x.ticket = ticket;
    } catch (err) {
      keys?.release();
      x.gateWait = undefined;
      x.heldMs = Math.round(performance.now() - waitStart);
      if (x.gone) {
        this.#report(x, 'error');
      } else if (err instanceof GatewayHoldTimeoutError) {
        this.#local(x, x.req, x.res, { status: 503, error: err, retryAfterSeconds: this.gate.retryAfterSeconds }, 'held_timeout');
      } else {
        const error = new GatewayCaptureFailedError(`the change could not be recorded, so it was not made: ${describe(err)}`, {
          ...(observe !== undefined ? { namespace: observe } : {}),
          operation: x.classification.operation,
          cause: err,
        });
        this.#local(x, x.req, x.res, { status: 503, error, retryAfterSeconds: this.gate.retryAfterSeconds }, 'refused_capture');
      }
      return;
    }
    x.heldMs = Math.round(performance.now() - waitStart);
    x.holding = true;
    let wait: { run: ReplayInProgress; namespace: string } | undefined;
    try {
      let again = this.#decide(x);
      if (again.action === 'refuse' && again.outcome === 'refused_replay') {
        // Admitted as the hold that restored ended: its re-apply now runs. A write it cannot meet goes on; any other
        // leaves the barrier (a holder waiting for a shared replay could hold up an exclusive hold queued behind it)
        // and waits for the re-apply's end outside it, then is decided again from the start.
        const run = again.error.namespace !== undefined ? this.#options.replays?.running(again.error.namespace) : undefined;
        const free = run !== undefined ? this.#decide(x, true) : undefined;
        const start = free?.action === 'forward' && free.observe === again.error.namespace ? this.#mutationStart(x, free.observe) : undefined;
        if (run !== undefined && start !== undefined && run.admits(start)) again = free!;
        else if (run !== undefined) wait = { run, namespace: again.error.namespace! };
      }
      if (wait !== undefined || again.action !== 'forward') {
        // Refused here, sent to the primary's gateway, or waiting for a re-apply: this site's NetHSM is not asked.
        x.ticket!.replay = NONE;
        if (wait === undefined) await this.#execute(x, again, true);
      } else await this.#forward(x, this.#nethsm, 'forwarded', again.observe, undefined, keys);
    } finally {
      keys?.release();
      x.gateWait = undefined;
      x.holding = false;
      release();
    }
    if (wait === undefined || !(await this.#waitForReplay(x, wait.run, wait.namespace))) return;
    const d = await this.#decideAroundReplay(x);
    if (d !== undefined) await this.#execute(x, d, false);
  }

  /**
   * The change capture's key locks for a write it will see, taken before the gate (undefined: none to take). Waits at
   * most what is left of the gate's `maxWaitMs` since the write began to wait (`waitStart`: a wait for a running
   * re-apply counts), then rejects with GatewayHoldTimeoutError, the gate's own answer; stops when `signal` aborts (the
   * client went away).
   */
  async #lockKeys(x: Exchange, observe: string | undefined, signal: AbortSignal, waitStart: number): Promise<KeyHold | undefined> {
    const observer = this.#options.observer;
    const start = observer?.lockKeys !== undefined ? this.#mutationStart(x, observe) : undefined;
    if (start === undefined) return undefined;
    const bound = this.gate.maxWaitMs;
    const timeout = new AbortController();
    const timer = setTimeout(
      () => {
        const waited = Math.round(performance.now() - waitStart);
        const message = `another write to the same key is still in flight at this site; waited ${waited} ms (limit ${bound} ms)`;
        const hint = 'Writes of one key go to the NetHSM one at a time; retry after the Retry-After delay, or spread the writes over more keys.';
        timeout.abort(new GatewayHoldTimeoutError(message, { hint }));
      },
      Math.max(1, bound - (performance.now() - waitStart)),
    );
    try {
      return await observer!.lockKeys!(start, AbortSignal.any([signal, timeout.signal]));
    } finally {
      clearTimeout(timer);
    }
  }

  /** What the change capture sees of a write (undefined when it sees none: no namespace to observe, no user, no observer). */
  #mutationStart(x: Exchange, observe: string | undefined): MutationStart | undefined {
    if (observe === undefined || x.caller.kind !== 'user' || this.#options.observer === undefined) return undefined;
    if (x.observed?.namespace === observe) return x.observed;
    const body: MutationBody | undefined =
      x.body !== undefined && x.body.length > 0 && isKeyBodyOperation(x.classification.operation) ? mutationBody(x.body, x.req.headers['content-type']) : undefined;
    return (x.observed = {
      namespace: observe,
      method: x.req.method ?? 'GET',
      path: '/' + x.segments.join('/'),
      operation: x.classification.operation,
      user: x.caller.user,
      ...(x.classification.keyId !== undefined ? { keyId: x.classification.keyId } : {}),
      ...(body !== undefined ? { body } : {}),
    });
  }

  /**
   * Sends the request to `up` (its body as read, or streamed) and streams the answer back. When `observe` names a
   * namespace and an observer is configured, the observer's begin/end bracket the NetHSM's answer. Only admitted writes
   * (holders of the barrier) are observed: `begin` is told so and never waits for a key lock; `keys` are the locks taken
   * before the gate, which it takes over.
   */
  async #forward(x: Exchange, up: Upstream, outcome: GatewayOutcome, observe: string | undefined, via?: string, keys?: KeyHold): Promise<void> {
    const observer = observe !== undefined && x.caller.kind === 'user' ? this.#options.observer : undefined;
    let intent: string | undefined;
    let sub: Substitution | undefined;
    let start = this.#mutationStart(x, observe);
    if (observer !== undefined && start !== undefined) {
      if (start.body !== undefined && observer.substitute) {
        try {
          sub = await observer.substitute(start);
        } catch (err) {
          const status = (err as { status?: unknown }).status;
          const error = err instanceof NhrError ? err : new InternalError('internal gateway error');
          this.#noted(x, up, NONE);
          this.#local(x, x.req, x.res, { status: typeof status === 'number' && status >= 400 && status < 500 ? status : 500, error }, 'rejected_input');
          return;
        }
        if (sub) start = substituted(start, sub);
      }
      try {
        intent = await observer.begin(start, { ...(keys !== undefined ? { held: keys } : {}), inBarrier: true });
      } catch (err) {
        const error = new GatewayCaptureFailedError(`the change could not be recorded, so it was not made: ${describe(err)}`, {
          namespace: observe!,
          operation: x.classification.operation,
          cause: err,
        });
        sub?.body.fill(0);
        this.#noted(x, up, NONE);
        this.#local(x, x.req, x.res, { status: 503, error, retryAfterSeconds: this.gate.retryAfterSeconds }, 'refused_capture');
        return;
      }
    }
    let upstreamBody: Buffer | IncomingMessage | undefined;
    let headers: string[];
    if (sub !== undefined) {
      headers = requestHeadersForUpstream(x.req.headers, { via, contentType: sub.contentType, contentLength: sub.body.length });
      upstreamBody = sub.body;
    } else if (x.body !== undefined) {
      // Read whole (a chunked upload too): sent with its length.
      headers = requestHeadersForUpstream(x.req.headers, hasBody(x.req) ? { via, contentLength: x.body.length } : { via });
      if (x.body.length > 0) upstreamBody = x.body;
    } else {
      headers = requestHeadersForUpstream(x.req.headers, { via });
      if (hasBody(x.req)) upstreamBody = x.req;
    }
    let head: RelayHead;
    if (x.gone) {
      // Gone before anything was sent: nothing reached the NetHSM, so nothing is sent (held or not).
      sub?.body.fill(0);
      if (intent !== undefined) await this.#end(observer!, intent, { status: 0 });
      this.#noted(x, up, NONE);
      this.#report(x, 'error');
      return;
    }
    try {
      const method = sub?.method ?? x.req.method ?? 'GET';
      const path = sub ? `/api/v1${sub.path}` : x.raw;
      x.relay = up.relay({ method, path, headers, body: upstreamBody });
      head = await x.relay.head;
    } catch (err) {
      const ended = intent !== undefined ? await this.#end(observer!, intent, { status: 0 }) : undefined;
      this.#noted(x, up, replayOf(0, ended));
      if (await this.#retryAtPeer(x, up, err)) return;
      this.#upstreamFailed(x, up, err);
      return;
    } finally {
      sub?.body.fill(0);
    }
    let ended: MutationEnd | undefined;
    if (intent !== undefined) {
      const location = head.headers['location'];
      ended = await this.#end(observer!, intent, { status: head.statusCode, ...(typeof location === 'string' ? { location } : {}) });
    }
    this.#noted(x, up, replayOf(head.statusCode, ended));
    if (up === this.#nethsm && head.statusCode === 412 && x.classification.kind !== 'device-read' && x.classification.kind !== 'device-write') {
      this.#notify(this.#options.onNethsmNotOperational);
    }
    if (sub !== undefined && head.statusCode >= 200 && head.statusCode < 300) {
      // The NetHSM accepted the substitute (an import): the client gets the answer to the call it made (a generate).
      await x.relay.discard().catch(() => undefined);
      const a = sub.answer;
      x.res.writeHead(a.status, { ...a.headers, 'content-length': String(a.body.length), [SERVED_BY_HEADER]: this.#options.site }).end(a.body);
      this.#report(x, outcome, a.status);
      return;
    }
    if (x.gone) {
      // A held write's client left while it ran to the NetHSM's answer (`holding`): nobody to tell; the answer is
      // dropped, and the log says what the NetHSM did, since the client cannot know.
      await x.relay.discard().catch(() => undefined);
      this.#log.info(this.#fields(x, { status: head.statusCode }), 'gateway: the client left before the answer to its write; the NetHSM answered meanwhile');
      this.#report(x, 'error');
      return;
    }
    try {
      // The NetHSM answered before the client finished its upload (a refusal): end the connection rather than read the rest.
      // One served-by header: the upstream's own (a peer gateway's) is read, not passed on beside ours.
      const theirs = head.headers[SERVED_BY_HEADER];
      delete head.headers[SERVED_BY_HEADER];
      const headers = responseHeadersForClient(head.headers, upstreamBody === x.req && !x.req.readableEnded);
      headers.push(SERVED_BY_HEADER, this.#servedBy(x, up, theirs));
      x.res.writeHead(head.statusCode, headers);
      await x.relay.pipeTo(x.res);
      this.#report(x, outcome, head.statusCode);
      if (this.#log.isLevelEnabled('debug')) this.#log.debug(this.#fields(x, { status: head.statusCode, outcome }), 'gateway: forwarded');
    } catch (err) {
      // The answer was cut (client gone, or the upstream failed mid-body): the client sees a truncated response.
      x.relay.abort(err instanceof Error ? err : new Error(String(err)));
      x.res.destroy();
      this.#report(x, 'error');
      this.#log.warn(this.#fields(x, { status: head.statusCode, err: describe(err) }), 'gateway: response cut');
    }
  }

  /**
   * Where the answer was made: this site for its NetHSM; the serving gateway's own header otherwise (it names the site
   * whose NetHSM answered), when it is a plain site name, else the site the call was sent to.
   */
  #servedBy(x: Exchange, up: Upstream, theirs: string | string[] | undefined): string {
    if (up === this.#nethsm) return this.#options.site;
    if (typeof theirs === 'string' && SITE_NAME.test(theirs)) return theirs;
    return x.servedBy ?? x.sentTo ?? 'unknown';
  }

  async #end(observer: MutationObserver, intent: string, outcome: { status: number; location?: string }): Promise<MutationEnd | undefined> {
    try {
      return await observer.end(intent, outcome);
    } catch (err) {
      this.#log.error({ intent, status: outcome.status, err: describe(err) }, 'gateway: change capture could not record the outcome; the intent stays open');
      return undefined;
    }
  }

  /** Notes on an admitted write's ticket what it did to this site's NetHSM (calls to a peer gateway leave it alone). */
  #noted(x: Exchange, up: Upstream, replay: WriteReplay): void {
    if (x.ticket && up === this.#nethsm) x.ticket.replay = replay;
  }

  #upstreamFailed(x: Exchange, up: Upstream, err: unknown): void {
    if (x.gone) {
      this.#report(x, 'error');
      return;
    }
    const detail = mapTransportError(err, x.classification.operation, up.timeoutMs);
    this.#log.warn(this.#fields(x, { upstream: up.origin, err: detail.toJSON() }), 'gateway: upstream failed');
    // The client learns what failed, not the upstream's address or the transport's wording (those are in the log).
    if (up === this.#nethsm && detail instanceof NetHsmUnreachableError) this.#nethsmUnreachable(detail);
    if (x.servedBy !== undefined) this.#options.remoteServing?.forget(x.servedBy);
    const what = up === this.#nethsm ? 'the NetHSM' : x.servedBy !== undefined ? `the gateway of site ${x.servedBy}` : "the primary site's gateway";
    const timedOut = detail instanceof NetHsmTimeoutError;
    const untrusted = detail instanceof TlsPinMismatchError || detail instanceof NetHsmTlsUntrustedError;
    const message = timedOut
      ? `${what} did not answer the gateway within ${up.timeoutMs} ms`
      : untrusted
        ? `the gateway does not trust the TLS certificate of ${what}`
        : `the gateway could not reach ${what}`;
    const Kind = (timedOut || untrusted ? detail.constructor : NetHsmUnreachableError) as typeof NetHsmUnreachableError;
    const error = new Kind(message, { operation: x.classification.operation });
    this.#local(x, x.req, x.res, { status: timedOut ? 504 : 502, error }, 'error');
  }

  #local(
    x: Exchange | undefined,
    req: IncomingMessage,
    res: ServerResponse,
    answer: LocalAnswer,
    outcome: GatewayOutcome,
    cls?: GatewayRequestEvent['class'],
  ): void {
    answerLocally(res, answer, !req.readableEnded && hasBody(req));
    const about = { status: answer.status, outcome, code: answer.error.code, message: answer.error.message };
    // A target that could not be parsed is logged (cut short) so an operator can see what was sent; targets carry no secrets.
    const fields = x ? this.#fields(x, about) : { method: req.method, target: req.url?.slice(0, 200), ...about };
    this.#log.info(fields, 'gateway: answered locally');
    if (x) this.#report(x, outcome, answer.status);
    else this.#emit({ namespace: undefined, class: cls ?? 'other', outcome, status: answer.status });
  }

  #report(x: Exchange, outcome: GatewayOutcome, status?: number): void {
    if (!this.#options.onRequest) return;
    const k = x.classification.kind;
    this.#emit({
      namespace: x.caller.kind === 'user' ? (x.caller.namespace ?? null) : undefined,
      class: k === 'read' || k === 'crypto' || k === 'mutation' ? k : 'other',
      // A request cut by Node's request timeout fails as a client gone away would: it was the client's slowness.
      outcome: outcome === 'error' && x.cutSlow === true ? 'cut_slow' : outcome,
      ...(status !== undefined ? { status } : {}),
      ...(x.heldMs !== undefined ? { heldMs: x.heldMs } : {}),
      ...(x.servedBy !== undefined ? { peer: x.servedBy } : {}),
    });
  }

  #nethsmUnreachable(err: Error): void {
    this.#notify(() => this.#options.onNethsmUnreachable?.(err));
  }

  /** Calls a daemon hook; a throw is logged, never the request's problem. */
  #notify(hook: (() => void) | undefined): void {
    try {
      hook?.();
    } catch (e) {
      this.#log.warn({ err: describe(e) }, 'gateway: a NetHSM health callback threw');
    }
  }

  #emit(event: GatewayRequestEvent): void {
    if (!this.#options.onRequest) return;
    try {
      this.#options.onRequest(event);
    } catch (err) {
      this.#log.warn({ err: describe(err) }, 'gateway: onRequest callback threw');
    }
  }

  /** Log fields for a request: never headers, bodies or passwords; the user id is not a secret. */
  #fields(x: Exchange, extra: Record<string, unknown>): Record<string, unknown> {
    return {
      method: x.req.method,
      operation: x.classification.operation,
      ...(x.caller.kind === 'user' ? { user: x.caller.user } : { caller: x.caller.kind }),
      ...(x.heldMs !== undefined ? { heldMs: x.heldMs } : {}),
      ...extra,
    };
  }
}

/** What the observer sees of a substituted call: the substitute's method, path, key and body. */
function substituted(start: MutationStart, sub: Substitution): MutationStart {
  let json: unknown;
  try {
    json = JSON.parse(sub.body.toString('utf8'));
  } catch {
    json = undefined;
  }
  let path = sub.path;
  try {
    path = decodeURIComponent(sub.path);
  } catch {
    // Keep the encoded form; ids are plain ASCII anyway.
  }
  return {
    ...start,
    method: sub.method,
    path,
    operation: sub.operation,
    ...(sub.keyId !== undefined ? { keyId: sub.keyId } : {}),
    body: { contentType: sub.contentType, bytes: sub.body, ...(json !== undefined ? { json } : {}) },
  };
}

/** A raw answer for a connection Node has no response object for (as Node's own, plus a NetHSM-style message). */
function rawAnswer(status: number, error: NhrError | undefined): string {
  const body = error === undefined ? '' : JSON.stringify({ message: `${error.message} [${error.code}]` });
  const type = error === undefined ? '' : 'Content-Type: application/json\r\n';
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nConnection: close\r\n${type}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/** A site name as the config allows it (a peer's served-by header is echoed only when it is one). */
const SITE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

function limitsOf(options: GatewayOptions): GatewayLimits {
  const out: GatewayLimits = { ...GATEWAY_LIMIT_DEFAULTS };
  for (const name of Object.keys(out) as (keyof GatewayLimits)[]) {
    const v = options[name] ?? out[name];
    if (!Number.isSafeInteger(v) || v <= 0) throw new RangeError(`gateway option ${name} must be a positive integer, got ${v}`);
    out[name] = v;
  }
  // Node requires the head's bound to be within the whole request's.
  out.headersTimeoutMs = Math.min(out.headersTimeoutMs, out.requestTimeoutMs);
  return out;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
