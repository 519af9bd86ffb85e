/**
 * The peer API client: one per configured peer, over an undici Agent presenting this site's certificate and
 * accepting only a server certificate issued by the group CA whose CN is the peer's site name (plus its pinned
 * fingerprint, if configured). Hostnames are not matched: in a private group CA the CN is the identity, and sites
 * are often addressed by IP. Every answer is validated.
 */
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Transform } from 'node:stream';
import type { PeerCertificate } from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { withDeadline } from '../util/deadline.js';
import { tapBytes } from '../util/byte-tap.js';
import { coalesceChunks, DOWNLOAD_CHUNK_BYTES } from '../util/chunk-coalescer.js';
import { PeerIdentityError, PeerMessageInvalidError, PeerRefusedError, PeerUnreachableError, StateDirUnusableError } from '../errors.js';
import { MAX_INVENTORY_LINE_BYTES, type IdRange } from '../namespaces/inventory-ranges.js';
import { ndjsonLines } from '../stream/lines.js';
import { MAX_LINE_BYTES, NO_LOG_PARAM, formatPosition } from '../stream/protocol.js';
import { transportKeyInfoSchema, type TransportKeyInfo } from '../stream/transport-key.js';
import { fingerprintsEqual } from '../tls/fingerprint.js';
import {
  PEER_API_PREFIX,
  SNAPSHOT_EPOCH_HEADER,
  epochAnswerSchema,
  certificateAnswerSchema,
  handoffAnswerSchema,
  syncAnswerSchema,
  peerStatusSchema,
  servingViewSchema,
  peerNethsmSchema,
  type PeerNethsm,
  type ServingView,
  type EpochAnnouncement,
  type EpochAnswer,
  type PeerStatus,
} from './messages.js';
import type { PeerIdentity } from './identity.js';
import { PASSPHRASE_CHECK_ENDPOINT, passphraseProofSchema, type PassphraseProof } from './passphrase-check.js';

export interface PeerClientOptions {
  url: string;
  identity: PeerIdentity;
  tls: { certPem: string; keyPem: string; caPem: string };
  timeoutMs?: number;
}

const IDENTITY_MISMATCH = Symbol('peer-identity-mismatch');
/**
 * The primary answers a device backup once it has taken it: minutes on a large device. A snapshot is answered once its
 * first bytes exist (the device backup admitted and started), which may wait as long for the site's barrier.
 */
const SNAPSHOT_HEADERS_MS = 30 * 60_000;
/**
 * A device backup is then streamed from a finished file, so a pause between chunks means a stalled transfer: a sync
 * is not kept busy by it for longer than this.
 */
const FILE_BODY_IDLE_MS = 5 * 60_000;
/**
 * A snapshot streams while the primary's device backup runs: its extract writes only the namespace's entries, so on a
 * large device the body may pause for as long as the rest of that backup takes (what the headers could wait before).
 */
const SNAPSHOT_BODY_IDLE_MS = SNAPSHOT_HEADERS_MS;
/** A primary sends an inventory range line per range read (~1024 keys, rate-limited): longer silence is a stall. */
const INVENTORY_IDLE_MS = 5 * 60_000;

export class PeerClient {
  readonly name: string;
  private agent: Agent;
  private identity: PeerIdentity;
  private readonly base: string;
  private readonly timeoutMs: number;
  private readonly tls: PeerClientOptions['tls'];

  constructor(options: PeerClientOptions) {
    this.name = options.identity.name;
    this.base = options.url.replace(/\/+$/, '') + PEER_API_PREFIX;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.tls = options.tls;
    this.identity = { ...options.identity };
    this.agent = this.newAgent(this.identity);
  }

  /** The pinned fingerprint the peer's certificate must have, if any. */
  get fingerprint256(): string | undefined {
    return this.identity.fingerprint256;
  }

  /**
   * Pins another certificate (or none) from now on (config reload). Connections verified under the old pin are cut, so
   * no request runs on them any more; a transfer in flight fails and is retried by its owner. Returns whether it changed.
   */
  setPin(fingerprint256: string | undefined): boolean {
    if (fingerprint256 === this.identity.fingerprint256) return false;
    const { fingerprint256: _old, ...rest } = this.identity;
    this.identity = fingerprint256 === undefined ? rest : { ...rest, fingerprint256 };
    const old = this.agent;
    this.agent = this.newAgent(this.identity);
    void old.destroy().catch(() => undefined);
    return true;
  }

  private newAgent(expected: PeerIdentity): Agent {
    return new Agent({
      keepAliveTimeout: 30_000,
      connect: {
        ca: this.tls.caPem,
        cert: this.tls.certPem,
        key: this.tls.keyPem,
        minVersion: 'TLSv1.3',
        checkServerIdentity: (_host: string, cert: PeerCertificate) => {
          const cn = Array.isArray(cert.subject?.CN) ? undefined : cert.subject?.CN;
          if (cn !== expected.name) return Object.assign(new Error(`certificate CN ${JSON.stringify(cn)} is not ${expected.name}`), { [IDENTITY_MISMATCH]: true });
          if (expected.fingerprint256 && !fingerprintsEqual(expected.fingerprint256, cert.fingerprint256)) {
            return Object.assign(new Error('certificate is not the pinned one'), { [IDENTITY_MISMATCH]: true });
          }
          return undefined;
        },
      },
    });
  }

  /** The peer's view of every namespace. */
  /**
   * The peer's status. `timeoutMs` bounds the whole call, the connection included (a caller that cannot wait for a
   * black-holed peer's connect timeout): past it PeerUnreachableError. Without it, the client's own timeouts apply.
   */
  async status(timeoutMs?: number): Promise<PeerStatus> {
    if (timeoutMs === undefined) return this.json('GET', '/status', undefined, peerStatusSchema);
    // undici does not give up a TLS connect before its connect timeout, so the bound is kept here; the call itself
    // ends by its own timeouts, unheard.
    return withDeadline(
      this.json('GET', '/status', undefined, peerStatusSchema, timeoutMs),
      timeoutMs,
      () => new PeerUnreachableError(`peer ${this.name} did not answer its status within ${timeoutMs} ms`, { site: this.name }),
    );
  }

  /** What the peer can serve to this site's gateway (GET /peer/v1/serving); PeerMessageInvalidError for a malformed answer. */
  async serving(timeoutMs?: number): Promise<ServingView> {
    return this.json('GET', '/serving', undefined, servingViewSchema, timeoutMs);
  }

  /** How the peer last found its own NetHSM (GET /peer/v1/nethsm); PeerRefusedError 404 from a peer without the route. */
  async nethsm(timeoutMs?: number): Promise<PeerNethsm> {
    return this.json('GET', '/nethsm', undefined, peerNethsmSchema, timeoutMs);
  }

  async announceEpoch(namespace: string, announcement: EpochAnnouncement): Promise<EpochAnswer> {
    return this.json('POST', `/namespaces/${encodeURIComponent(namespace)}/epoch`, announcement, epochAnswerSchema);
  }

  async handoff(namespace: string, fromEpoch: number): Promise<{ epoch: number }> {
    return this.json('POST', `/namespaces/${encodeURIComponent(namespace)}/handoff`, { fromEpoch }, handoffAnswerSchema, 30 * 60_000);
  }

  /** The primary's inventory of the namespace (validated by the caller with `parseNamespaceInventory`). */
  async inventory(namespace: string): Promise<unknown> {
    return this.json('GET', `/namespaces/${encodeURIComponent(namespace)}/inventory`, undefined, z.unknown(), 10 * 60_000);
  }

  /** One key's certificate at the primary, or null. */
  async certificate(namespace: string, keyId: string): Promise<{ contentType: string; data: Buffer } | null> {
    const a = await this.json('GET', `/namespaces/${encodeURIComponent(namespace)}/keys/${encodeURIComponent(keyId)}/cert`, undefined, certificateAnswerSchema);
    return a.contentType === null ? null : { contentType: a.contentType, data: Buffer.from(a.data, 'base64') };
  }

  /**
   * Asks the peer to seal `challenge` under its replication passphrase (src/peer/passphrase-check.ts); open the answer
   * with `openPassphraseProof`. PeerRefusedError 404 from a peer without the check, 429 when asked too often.
   */
  async replicationPassphraseProof(challenge: Buffer): Promise<PassphraseProof> {
    return this.json('POST', PASSPHRASE_CHECK_ENDPOINT, { challenge: challenge.toString('base64') }, passphraseProofSchema, 120_000);
  }

  /** Asks the peer (a replica) to pull the namespace now. */
  async requestSync(namespace: string): Promise<{ started: boolean }> {
    return this.json('POST', `/namespaces/${encodeURIComponent(namespace)}/sync`, {}, syncAnswerSchema);
  }

  /**
   * Downloads the namespace's snapshot to `destPath` (mode 0600; removed on failure). Returns the epoch the primary
   * reported it at. The file itself is verified by the caller (manifest, codec integrity checks).
   *
   * `signal` (the daemon stopping): aborting it cuts the download at once, waiting for the headers or the body alike,
   * removes the partial file and rejects with `signal.reason` (as fetch() does), never with a peer error: a cut the
   * caller asked for says nothing about the primary.
   */
  async fetchSnapshot<T>(
    namespace: string,
    destPath: string,
    opts: { check: (bytes: AsyncIterable<Buffer>) => Promise<T>; signal?: AbortSignal },
  ): Promise<{ epoch: number; bytes: number; checked: T }>;
  async fetchSnapshot(namespace: string, destPath: string, opts?: { signal?: AbortSignal }): Promise<{ epoch: number; bytes: number }>;
  async fetchSnapshot<T>(
    namespace: string,
    destPath: string,
    opts: { check?: (bytes: AsyncIterable<Buffer>) => Promise<T>; signal?: AbortSignal } = {},
  ): Promise<{ epoch: number; bytes: number; checked?: T }> {
    const { signal } = opts;
    signal?.throwIfAborted();
    try {
      return await this.downloadSnapshot(namespace, destPath, opts.check, signal);
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw err;
    }
  }

  private async downloadSnapshot<T>(
    namespace: string,
    destPath: string,
    check: ((bytes: AsyncIterable<Buffer>) => Promise<T>) | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ epoch: number; bytes: number; checked?: T }> {
    const res = await this.send('GET', `/namespaces/${encodeURIComponent(namespace)}/snapshot`, undefined, SNAPSHOT_HEADERS_MS, SNAPSHOT_BODY_IDLE_MS, signal);
    if (res.statusCode !== 200) throw await refused(res, this.name, namespace);
    const epoch = Number(res.headers[SNAPSHOT_EPOCH_HEADER]);
    if (!Number.isSafeInteger(epoch) || epoch < 0) {
      res.body.destroy();
      throw new PeerMessageInvalidError(`snapshot from ${this.name} has no valid ${SNAPSHOT_EPOCH_HEADER} header`, { site: this.name, namespace });
    }
    if (!check) return { epoch, bytes: await this.saveBody(res, destPath, 'snapshot', { namespace }) };
    // The check reads the bytes as they arrive (a tap: it paces the download). When it fails on bytes it was given (a
    // corrupt or truncated snapshot), its error is the cause, not the transfer it cut; when the transfer broke first,
    // the check fails with it and the download error says what happened.
    let transferBroke = false;
    const tap = tapBytes((bytes) =>
      check(
        (async function* () {
          try {
            yield* bytes;
          } catch (err) {
            transferBroke = true;
            throw err;
          }
        })(),
      ),
    );
    try {
      const bytes = await this.saveBody(res, destPath, 'snapshot', { namespace }, tap.stage);
      return { epoch, bytes, checked: await tap.result };
    } catch (err) {
      const own = await tap.result.then(
        () => undefined,
        (e: unknown) => (transferBroke ? undefined : { e }),
      );
      await unlink(destPath).catch(() => undefined);
      throw own ? own.e : err;
    }
  }

  /**
   * Downloads the peer's whole-device backup (for `init-replica --from-peer`) to `destPath` (mode 0600, must not exist;
   * removed on failure). The file is encrypted under the group's device backup passphrase; the caller verifies it.
   */
  async fetchDeviceBackup(destPath: string): Promise<{ bytes: number }> {
    const res = await this.send('GET', '/device-backup', undefined, SNAPSHOT_HEADERS_MS, FILE_BODY_IDLE_MS);
    if (res.statusCode !== 200) throw await refused(res, this.name);
    return { bytes: await this.saveBody(res, destPath, 'device backup') };
  }

  /**
   * Writes a response body to a new 0600 file; removes it and throws PeerUnreachableError when the transfer breaks, or
   * StateDirUnusableError when the file fails first (this host: no space, no folder; nothing said about the peer).
   */
  private async saveBody(res: Dispatcher.ResponseData, destPath: string, what: string, ctx: { namespace?: string } = {}, tap?: Transform): Promise<number> {
    let bytes = 0;
    res.body.on('data', (c: Buffer) => (bytes += c.length));
    // The file's own failure, told from one pipeline() passes on to it from upstream (a cut transfer, a failed check):
    // this listener runs before pipeline's, so nothing upstream is broken yet when the file failed first.
    let local: Error | undefined;
    try {
      const file = createWriteStream(destPath, { mode: 0o600, flags: 'wx' });
      // The body's 16 KiB TLS records joined before the check and the file: each chunk costs both on the event loop.
      const joined = coalesceChunks(DOWNLOAD_CHUNK_BYTES);
      file.once('error', (e) => {
        if (![res.body, joined, tap].some((s) => s !== undefined && (s.errored !== null || s.readableAborted))) local = e;
      });
      await (tap ? pipeline(res.body, joined, tap, file) : pipeline(res.body, joined, file));
    } catch (cause) {
      await unlink(destPath).catch(() => undefined);
      if (local) {
        throw new StateDirUnusableError(`${what} from ${this.name} could not be written to ${destPath} (${local.message}); the partial file was removed`, {
          cause: local,
          path: destPath,
          ...ctx,
          hint: "Free space on that folder's file system, or check that this user may write there; then retry (a sync is retried on its schedule).",
        });
      }
      // A primary whose snapshot fails mid-way cuts the transfer (never ends it cleanly): this is how that shows here.
      const why = (cause as Error | undefined)?.message ?? String(cause);
      throw new PeerUnreachableError(`${what} download from ${this.name} broke off after ${bytes} bytes (${why}); the partial file was removed`, {
        cause,
        site: this.name,
        ...ctx,
      });
    }
    return bytes;
  }


  /** The peer's transport key (public half), validated: RSA ≥ 2048, fingerprint its own, published for this peer's site. */
  async transportKey(timeoutMs?: number): Promise<TransportKeyInfo> {
    const info = await this.json('GET', '/transport-key', undefined, transportKeyInfoSchema, timeoutMs);
    if (info.site !== this.name) throw new PeerMessageInvalidError(`${this.name} published a transport key for site ${info.site}`, { site: this.name });
    return info;
  }

  /**
   * Opens the namespace's change stream after `after` (undefined: no position yet) in change log `opts.log` (the
   * position's log id; undefined when it has none, sent as `none`, so the primary knows this replica reads log ids).
   * Yields raw lines (each at most MAX_LINE_BYTES; the caller validates them with parseLine). Ends when the peer
   * closes it; throws
   * PeerUnreachableError when the connection breaks or nothing arrives for `idleTimeoutMs`, PeerRefusedError when the
   * peer refuses (not primary, bad position), PeerMessageInvalidError for an oversized or non-UTF-8 line.
   */
  async changes(
    namespace: string,
    after: { epoch: number; seq: number } | undefined,
    opts: { signal?: AbortSignal; idleTimeoutMs: number; log?: string | undefined },
  ): Promise<AsyncIterable<string>> {
    const q = `?${after ? `after=${formatPosition(after)}&` : ''}log=${encodeURIComponent(opts.log ?? NO_LOG_PARAM)}`;
    return this.ndjson('GET', `/namespaces/${encodeURIComponent(namespace)}/changes${q}`, undefined, namespace, {
      ...(opts.signal ? { signal: opts.signal } : {}),
      idleTimeoutMs: opts.idleTimeoutMs,
      maxLineBytes: MAX_LINE_BYTES,
      what: `change stream of ${namespace}`,
    });
  }

  /**
   * Opens the primary's range digests of the namespace (src/namespaces/inventory-ranges.ts): raw NDJSON lines, each
   * at most MAX_INVENTORY_LINE_BYTES, validated by the caller with readRangeDigests. The primary reads its device as
   * it sends, so the answer may take long; a pause of `idleTimeoutMs` between lines counts as a broken transfer.
   * Throws PeerRefusedError (404 from a peer without the route: use the old `inventory`), PeerUnreachableError.
   */
  async inventoryRanges(namespace: string, rangeSize: number, opts: { signal?: AbortSignal; idleTimeoutMs?: number } = {}): Promise<AsyncIterable<string>> {
    return this.ndjson('GET', `/namespaces/${encodeURIComponent(namespace)}/inventory/ranges?size=${rangeSize}`, undefined, namespace, opts);
  }

  /** Opens the primary's items inside `ranges` (at most MAX_ITEM_RANGES), validated by the caller with readItemLines. */
  async inventoryItems(namespace: string, ranges: readonly IdRange[], opts: { signal?: AbortSignal; idleTimeoutMs?: number } = {}): Promise<AsyncIterable<string>> {
    return this.ndjson('POST', `/namespaces/${encodeURIComponent(namespace)}/inventory/items`, { ranges }, namespace, opts);
  }

  private async ndjson(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    namespace: string,
    /** `maxLineBytes` default MAX_INVENTORY_LINE_BYTES; `what` names the transfer in errors (default `<method> <path>`). */
    opts: { signal?: AbortSignal; idleTimeoutMs?: number; maxLineBytes?: number; what?: string },
  ): Promise<AsyncIterable<string>> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.base + path, {
        method,
        dispatcher: this.agent,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: this.timeoutMs,
        bodyTimeout: opts.idleTimeoutMs ?? INVENTORY_IDLE_MS,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (cause) {
      throw connectError(cause, this.name);
    }
    if (res.statusCode !== 200) throw await refused(res, this.name, namespace);
    const site = this.name;
    const what = opts.what ?? `${method} ${path}`;
    return (async function* () {
      try {
        yield* ndjsonLines(res.body, opts.maxLineBytes ?? MAX_INVENTORY_LINE_BYTES, site);
      } catch (cause) {
        if (cause instanceof PeerMessageInvalidError) throw cause;
        throw new PeerUnreachableError(`${what} from ${site} broke off: ${(cause as Error).message}`, { cause, site, namespace });
      } finally {
        res.body.destroy();
      }
    })();
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => undefined);
  }

  private async json<S extends z.ZodType>(method: 'GET' | 'POST', path: string, body: unknown, schema: S, timeoutMs?: number): Promise<z.infer<S>> {
    const res = await this.send(method, path, body, timeoutMs);
    if (res.statusCode !== 200) throw await refused(res, this.name);
    let parsed: unknown;
    try {
      parsed = await res.body.json();
    } catch (cause) {
      throw new PeerMessageInvalidError(`${this.name} answered ${method} ${path} with invalid JSON`, { cause, site: this.name });
    }
    const r = schema.safeParse(parsed);
    if (!r.success) {
      const issue = r.error.issues[0];
      throw new PeerMessageInvalidError(`${this.name} answered ${method} ${path}: ${issue?.path.join('.') || 'body'} ${issue?.message}`, { site: this.name });
    }
    return r.data;
  }

  private async send(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    timeoutMs = this.timeoutMs,
    bodyIdleMs = timeoutMs,
    signal?: AbortSignal,
  ): Promise<Dispatcher.ResponseData> {
    try {
      return await request(this.base + path, {
        method,
        dispatcher: this.agent,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: timeoutMs,
        bodyTimeout: bodyIdleMs,
        ...(signal ? { signal } : {}),
      });
    } catch (cause) {
      throw connectError(cause, this.name);
    }
  }
}

function connectError(cause: unknown, site: string): Error {
  const e = cause as { code?: string; [IDENTITY_MISMATCH]?: boolean; message?: string; cause?: unknown };
  const inner = (e.cause ?? {}) as typeof e;
  if (e[IDENTITY_MISMATCH] || inner[IDENTITY_MISMATCH]) {
    return new PeerIdentityError(`peer ${site} presented the wrong certificate: ${e.message ?? inner.message}`, { cause, site });
  }
  const code = e.code ?? inner.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
    return new PeerIdentityError(`peer ${site} certificate is not issued by the group CA (${code})`, { cause, site });
  }
  return new PeerUnreachableError(`peer ${site} is unreachable: ${e.message ?? code}`, { cause, site });
}

async function refused(res: Dispatcher.ResponseData, site: string, namespace?: string): Promise<PeerRefusedError> {
  let remote: { code?: string; message?: string; epoch?: number } = {};
  try {
    const body = (await res.body.json()) as { error?: typeof remote };
    if (body && typeof body.error === 'object' && body.error) remote = body.error;
  } catch {
    // An unparsable refusal still refuses; the status says enough.
  }
  const opts: { site: string; namespace?: string; epoch?: number } = { site };
  if (namespace !== undefined) opts.namespace = namespace;
  if (typeof remote.epoch === 'number') opts.epoch = remote.epoch;
  return new PeerRefusedError(res.statusCode, { code: String(remote.code ?? ''), message: String(remote.message ?? '') }, opts);
}
