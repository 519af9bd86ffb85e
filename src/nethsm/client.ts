/**
 * Typed client for the NetHSM REST API subset in `openapi/nethsm-subset.yaml` (types from `./api-types.ts`).
 *
 * Contracts, for every method:
 * - success statuses are the firmware's (FACTS §2.1); any other answer throws NetHsmHttpError (status, NetHSM message,
 *   operation), whose `retryable` is true for 408/412/429/5xx;
 * - transport failures throw NetHsmUnreachableError / NetHsmTimeoutError; TLS trust failures TlsPinMismatchError /
 *   NetHsmTlsUntrustedError (nothing, credentials included, is sent on a connection that failed them);
 * - JSON that does not parse or lacks the fields used throws NetHsmResponseInvalidError;
 * - the Authorization header, passphrases and key material never appear in logs or errors.
 */
import { createWriteStream } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InputInvalidError, NetHsmHttpError, NetHsmResponseInvalidError, OutputExistsError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { components } from './api-types.js';
import { KeyListFormatError, KeyListParser } from './key-list-parser.js';
import type { PackedIds } from './packed-ids.js';
import { contentTypeFor, newBoundary, restoreBody, twoPartBuffer } from './multipart.js';
import { Transport, type CredentialLabel, type CredentialObserver, type RequestAuth, type RequestSpec } from './transport.js';
import type { TlsTrust } from './tls-trust.js';
import type { ByteTap } from '../util/byte-tap.js';

export type { TlsTrust } from './tls-trust.js';
export type { CredentialLabel, CredentialObserver } from './transport.js';

type S = components['schemas'];
export type InfoData = S['InfoData'];
export type SystemState = S['SystemState'];
export type ProvisionRequest = S['ProvisionRequestData'];
export type KeyGenerateRequest = S['KeyGenerateRequestData'];
export type PrivateKey = S['PrivateKey'];
export type PrivateKeyPemArguments = S['PrivateKeyPemArguments'];
export type PublicKey = S['PublicKey'];
export type KeyType = S['KeyType'];
export type KeyMechanism = S['KeyMechanism'];
export type SignMode = S['SignMode'];
export type DecryptMode = S['DecryptMode'];
export type EncryptMode = S['EncryptMode'];
export type DistinguishedName = S['DistinguishedName'];
export type UserPostData = S['UserPostData'];
export type UserData = S['UserData'];
export type UserRole = S['UserRole'];
export type SystemInfo = S['SystemInfo'];
export type TlsKeyGenerateRequest = S['TlsKeyGenerateRequestData'];
export type RestoreArguments = S['RestoreArguments'];

export interface NetHsmClientOptions {
  /** `https://host:port`; the client appends `/api/v1`. */
  url: string;
  tls: TlsTrust;
  auth?: { username: string; password: string };
  /** Headers and idle-body timeout, and connect timeout (default 30 s). */
  timeoutMs?: number;
  /** Keep-alive connections in the pool (default 8). */
  connections?: number;
  logger?: Logger;
  /** Told when a credential labelled with `withAuth(…, label)` is refused (401) or accepted (2xx). */
  onCredential?: CredentialObserver;
}

export interface ListKeysOptions {
  /** Any value, even '', keeps only keys the caller may use (honoured by the firmware for Operators only). */
  filter?: string;
  label?: string;
  /** Lists `GET /keys/{prefix}*` (the firmware ignores `filter` there). */
  prefix?: string;
}

const kDerive = Symbol('derive');
interface DeriveInit {
  [kDerive]: Transport;
  auth: { username: string; password: string };
  credential?: CredentialLabel;
}

const enc = encodeURIComponent;

export class NetHsmClient {
  readonly #transport: Transport;
  readonly #auth: RequestAuth | undefined;
  /** The client that created the pool closes it; derived clients do not. */
  readonly #owner: boolean;
  readonly username: string | undefined;

  /** Throws InputInvalidError for a bad URL, TLS trust or timeout. Logs a warning when `tls.insecure` is set. */
  constructor(options: NetHsmClientOptions);
  constructor(options: NetHsmClientOptions | DeriveInit) {
    if (kDerive in options) {
      this.#transport = options[kDerive];
      this.#owner = false;
    } else {
      this.#transport = new Transport({ ...options, logger: options.logger ?? silentLogger });
      this.#owner = true;
    }
    const credential = kDerive in options ? options.credential : undefined;
    this.#auth = options.auth
      ? { header: basic(options.auth.username, options.auth.password), user: options.auth.username, ...(credential ? { credential } : {}) }
      : undefined;
    this.username = options.auth?.username;
  }

  /** Connections of the pool this client uses (shared with the clients derived from it). */
  get connections(): number {
    return this.#transport.connections;
  }

  /**
   * A client with other credentials on the same pool. Its `close()` is a no-op; closing this client closes both.
   * `credential` names the config setting the credential comes from: a 401 then is a NetHsmCredentialRefusedError
   * naming it, and the pool's `onCredential` observer hears of refusals and successes.
   */
  withAuth(username: string, password: string, credential?: CredentialLabel): NetHsmClient {
    return new NetHsmClient({ [kDerive]: this.#transport, auth: { username, password }, ...(credential ? { credential } : {}) } as unknown as NetHsmClientOptions);
  }

  /**
   * Trusts the NetHSM's certificate another way from now on, for this client and every client sharing its pool
   * (config reload). Throws InputInvalidError for a bad trust, changing nothing. Returns whether anything changed.
   */
  setTrust(tls: TlsTrust): boolean {
    return this.#transport.setTrust(tls);
  }

  /** Closes the pool when this client created it (waits for running requests). Idempotent. */
  async close(): Promise<void> {
    if (this.#owner) await this.#transport.close();
  }

  // ---- requests --------------------------------------------------------------------------------

  async #send(spec: RequestSpec) {
    return this.#transport.request(spec, this.#auth);
  }

  async #none(spec: RequestSpec): Promise<number> {
    const res = await this.#send(spec);
    await res.body.dump();
    return res.statusCode;
  }

  async #json(spec: RequestSpec): Promise<unknown> {
    const res = await this.#send(spec);
    return this.#transport.json(res, `${spec.method} ${spec.path}`);
  }

  async #text(spec: RequestSpec): Promise<string> {
    const res = await this.#send(spec);
    return this.#transport.text(res, `${spec.method} ${spec.path}`);
  }

  async #createdId(spec: RequestSpec): Promise<string> {
    return field(await this.#json(spec), 'id', `${spec.method} ${spec.path}`);
  }

  // ---- state and health ------------------------------------------------------------------------

  async info(): Promise<InfoData> {
    const op = { method: 'GET', path: '/info', expect: [200], public: true } as const;
    const body = await this.#json(op);
    field(body, 'vendor', 'GET /info');
    field(body, 'product', 'GET /info');
    return body as InfoData;
  }

  async healthState(): Promise<SystemState> {
    return field(await this.#json({ method: 'GET', path: '/health/state', expect: [200], public: true }), 'state', 'GET /health/state') as SystemState;
  }

  /** True when Operational (200), false when not (412). */
  async healthReady(): Promise<boolean> {
    return (await this.#none({ method: 'GET', path: '/health/ready', expect: [200, 412], public: true })) === 200;
  }

  /** True when Locked or Unprovisioned (200), false otherwise (412). */
  async healthAlive(): Promise<boolean> {
    return (await this.#none({ method: 'GET', path: '/health/alive', expect: [200, 412], public: true })) === 200;
  }

  async provision(body: ProvisionRequest): Promise<void> {
    await this.#none({ method: 'POST', path: '/provision', json: body, expect: [204], public: true, secrets: [body.unlockPassphrase, body.adminPassphrase] });
  }

  async unlock(passphrase: string): Promise<void> {
    await this.#none({ method: 'POST', path: '/unlock', json: { passphrase }, expect: [204], public: true, secrets: [passphrase] });
  }

  async lock(): Promise<void> {
    await this.#none({ method: 'POST', path: '/lock', expect: [204] });
  }

  /** Flat metric name → value (strings, as the firmware sends them). */
  async metrics(): Promise<Record<string, string>> {
    return objectOf(await this.#json({ method: 'GET', path: '/metrics', expect: [200] }), 'GET /metrics') as Record<string, string>;
  }

  async random(length: number): Promise<Buffer> {
    const body = await this.#json({ method: 'POST', path: '/random', json: { length }, expect: [200] });
    return Buffer.from(field(body, 'random', 'POST /random'), 'base64');
  }

  // ---- keys ------------------------------------------------------------------------------------

  /** Key ids of the caller's namespace, sorted as the NetHSM sorts them. */
  async listKeys(opts: ListKeysOptions = {}): Promise<string[]> {
    const spec: RequestSpec =
      opts.prefix !== undefined
        ? { method: 'GET', path: `/keys/${enc(opts.prefix)}*`, query: { label: opts.label }, expect: [200] }
        : { method: 'GET', path: '/keys', query: { filter: opts.filter, label: opts.label }, expect: [200] };
    return listOf(await this.#json(spec), 'id', `GET ${spec.path}`);
  }

  /**
   * `GET /keys`, parsed as it arrives, ids only, packed (KeyListParser, PackedIds): for namespaces of millions of keys,
   * where listKeys would hold the whole answer and an object per key, and stops at the 64 MiB body limit. Throws
   * NetHsmResponseInvalidError for a malformed answer (also an id that is not a NetHSM id), and what the transport throws.
   */
  async listKeyIds(): Promise<PackedIds> {
    const operation = 'GET /keys';
    const res = await this.#send({ method: 'GET', path: '/keys', expect: [200] });
    const parser = new KeyListParser();
    try {
      for await (const chunk of res.body) parser.push(chunk as Buffer);
      return parser.end();
    } catch (err) {
      res.body.destroy();
      if (err instanceof KeyListFormatError) throw new NetHsmResponseInvalidError(err.message, { operation });
      throw this.#transport.mapError(err, operation);
    }
  }

  async getKey(id: string): Promise<PublicKey> {
    const path = `/keys/${enc(id)}`;
    const body = objectOf(await this.#json({ method: 'GET', path, expect: [200] }), `GET ${path}`);
    if (typeof body.type !== 'string' || !Array.isArray(body.mechanisms)) {
      throw new NetHsmResponseInvalidError('key answer lacks type or mechanisms', { operation: `GET ${path}` });
    }
    return body as unknown as PublicKey;
  }

  /** Returns the new key's id (the given one, or the generated one). */
  async generateKey(body: KeyGenerateRequest): Promise<string> {
    return this.#createdId({ method: 'POST', path: '/keys/generate', json: body, expect: [201] });
  }

  /** Imports a private key (JSON form) under `id`, or a generated id; returns the id. The request buffer is zeroed after use. */
  async importKey(body: PrivateKey, id?: string): Promise<string> {
    const buf = Buffer.from(JSON.stringify(body));
    const secrets = Object.values(body.private ?? {}).filter((v): v is string => typeof v === 'string');
    try {
      const spec = { body: buf, contentType: 'application/json', secrets };
      if (id === undefined) return await this.#createdId({ ...spec, method: 'POST', path: '/keys', expect: [201] });
      await this.#none({ ...spec, method: 'PUT', path: `/keys/${enc(id)}`, expect: [204] });
      return id;
    } finally {
      buf.fill(0);
    }
  }

  /** Imports a PEM private key (multipart: JSON arguments, then the PEM). The request buffer is zeroed after use. */
  async importKeyPem(args: PrivateKeyPemArguments, pem: string, id?: string): Promise<string> {
    const boundary = newBoundary();
    const pemBuf = Buffer.from(pem);
    const buf = twoPartBuffer(
      boundary,
      { name: 'arguments', contentType: 'application/json' },
      Buffer.from(JSON.stringify(args)),
      { name: 'key_file', filename: 'key.pem', contentType: 'application/x-pem-file' },
      pemBuf,
    );
    pemBuf.fill(0);
    try {
      const spec = { body: buf, contentType: contentTypeFor(boundary), secrets: [pem] };
      if (id === undefined) return await this.#createdId({ ...spec, method: 'POST', path: '/keys', expect: [201] });
      await this.#none({ ...spec, method: 'PUT', path: `/keys/${enc(id)}`, expect: [204] });
      return id;
    } finally {
      buf.fill(0);
    }
  }

  async deleteKey(id: string): Promise<void> {
    await this.#none({ method: 'DELETE', path: `/keys/${enc(id)}`, expect: [204] });
  }

  async publicKeyPem(id: string): Promise<string> {
    return this.#text({ method: 'GET', path: `/keys/${enc(id)}/public.pem`, accept: 'application/x-pem-file', expect: [200] });
  }

  async csr(id: string, dn: DistinguishedName): Promise<string> {
    return this.#text({ method: 'POST', path: `/keys/${enc(id)}/csr.pem`, json: dn, accept: 'application/x-pem-file', expect: [200] });
  }

  /** The stored certificate bytes and their content type, or null when the key has none. Throws 404 when the key is missing. */
  async getCert(id: string): Promise<{ contentType: string; data: Buffer } | null> {
    const cert = await this.readCert(id);
    // The firmware answers 404 both for "no certificate" and "no key": tell them apart.
    if (cert === null) await this.getKey(id);
    return cert;
  }

  /**
   * One request: the key's certificate, or null on 404, which means "no certificate" OR "no such key" (the firmware
   * does not tell them apart). For callers that read the key itself anyway (inventories): one request fewer per key.
   */
  async readCert(id: string): Promise<{ contentType: string; data: Buffer } | null> {
    const path = `/keys/${enc(id)}/cert`;
    const res = await this.#send({ method: 'GET', path, accept: '*/*', expect: [200, 404] });
    if (res.statusCode === 404) {
      await res.body.dump();
      return null;
    }
    const data = await this.#transport.bytes(res, `GET ${path}`);
    return { contentType: String(res.headers['content-type'] ?? 'application/octet-stream'), data };
  }

  async putCert(id: string, data: Buffer): Promise<void> {
    await this.#none({ method: 'PUT', path: `/keys/${enc(id)}/cert`, body: data, contentType: 'application/octet-stream', expect: [201] });
  }

  async deleteCert(id: string): Promise<void> {
    await this.#none({ method: 'DELETE', path: `/keys/${enc(id)}/cert`, expect: [204] });
  }

  /** Adds a restriction tag; already present (304) is success. */
  async addKeyTag(id: string, tag: string): Promise<void> {
    await this.#none({ method: 'PUT', path: `/keys/${enc(id)}/restrictions/tags/${enc(tag)}`, expect: [204, 304] });
  }

  async removeKeyTag(id: string, tag: string): Promise<void> {
    await this.#none({ method: 'DELETE', path: `/keys/${enc(id)}/restrictions/tags/${enc(tag)}`, expect: [204] });
  }

  /** Sets the label; the same label again (304) is success. */
  async setKeyLabel(id: string, label: string): Promise<void> {
    await this.#none({ method: 'PUT', path: `/keys/${enc(id)}/label`, json: { label }, expect: [204, 304] });
  }

  async removeKeyLabel(id: string): Promise<void> {
    await this.#none({ method: 'DELETE', path: `/keys/${enc(id)}/label`, expect: [204] });
  }

  /** Renames a key within its namespace; returns the new id. */
  async moveKey(id: string, newId: string): Promise<string> {
    return this.#createdId({ method: 'POST', path: `/keys/${enc(id)}/move`, json: { newId }, expect: [200] });
  }

  async sign(id: string, mode: SignMode, message: Buffer): Promise<Buffer> {
    const path = `/keys/${enc(id)}/sign`;
    const body = await this.#json({ method: 'POST', path, json: { mode, message: message.toString('base64') }, expect: [200] });
    return Buffer.from(field(body, 'signature', `POST ${path}`), 'base64');
  }

  async decrypt(id: string, mode: DecryptMode, encrypted: Buffer, iv?: Buffer): Promise<Buffer> {
    const path = `/keys/${enc(id)}/decrypt`;
    const json = { mode, encrypted: encrypted.toString('base64'), ...(iv ? { iv: iv.toString('base64') } : {}) };
    const body = await this.#json({ method: 'POST', path, json, expect: [200] });
    return Buffer.from(field(body, 'decrypted', `POST ${path}`), 'base64');
  }

  async encrypt(id: string, mode: EncryptMode, message: Buffer, iv?: Buffer): Promise<{ encrypted: Buffer; iv: Buffer }> {
    const path = `/keys/${enc(id)}/encrypt`;
    const json = { mode, message: message.toString('base64'), ...(iv ? { iv: iv.toString('base64') } : {}) };
    const body = await this.#json({ method: 'POST', path, json, expect: [200], secrets: [json.message] });
    const op = `POST ${path}`;
    return { encrypted: Buffer.from(field(body, 'encrypted', op), 'base64'), iv: Buffer.from(field(body, 'iv', op), 'base64') };
  }

  // ---- users -----------------------------------------------------------------------------------

  async listUsers(): Promise<string[]> {
    return listOf(await this.#json({ method: 'GET', path: '/users', expect: [200] }), 'user', 'GET /users');
  }

  async getUser(id: string): Promise<UserData> {
    const path = `/users/${enc(id)}`;
    const body = await this.#json({ method: 'GET', path, expect: [200] });
    field(body, 'role', `GET ${path}`);
    return body as UserData;
  }

  /**
   * Creates a user: no id → `POST /users` (generated id in the caller's namespace); `ns~` → `POST /users/ns~`
   * (generated id in ns); otherwise `PUT /users/{id}`. Returns the user id.
   */
  async createUser(body: UserPostData, id?: string): Promise<string> {
    const secrets = [body.passphrase];
    if (id === undefined) return this.#createdId({ method: 'POST', path: '/users', json: body, expect: [201], secrets });
    if (id.endsWith('~')) return this.#createdId({ method: 'POST', path: `/users/${enc(id)}`, json: body, expect: [201], secrets });
    await this.#none({ method: 'PUT', path: `/users/${enc(id)}`, json: body, expect: [201], secrets });
    return id;
  }

  async deleteUser(id: string): Promise<void> {
    await this.#none({ method: 'DELETE', path: `/users/${enc(id)}`, expect: [204] });
  }

  async getUserTags(id: string): Promise<string[]> {
    const path = `/users/${enc(id)}/tags`;
    const body = await this.#json({ method: 'GET', path, expect: [200] });
    if (!Array.isArray(body) || !body.every((t) => typeof t === 'string')) {
      throw new NetHsmResponseInvalidError('expected a list of tags', { operation: `GET ${path}` });
    }
    return body as string[];
  }

  /** Adds a tag to an Operator; already present (304) is success. */
  async addUserTag(id: string, tag: string): Promise<void> {
    await this.#none({ method: 'PUT', path: `/users/${enc(id)}/tags/${enc(tag)}`, expect: [204, 304] });
  }

  async removeUserTag(id: string, tag: string): Promise<void> {
    await this.#none({ method: 'DELETE', path: `/users/${enc(id)}/tags/${enc(tag)}`, expect: [204] });
  }

  async setUserPassphrase(id: string, passphrase: string): Promise<void> {
    await this.#none({ method: 'POST', path: `/users/${enc(id)}/passphrase`, json: { passphrase }, expect: [204], secrets: [passphrase] });
  }

  // ---- namespaces ------------------------------------------------------------------------------

  async listNamespaces(): Promise<string[]> {
    return listOf(await this.#json({ method: 'GET', path: '/namespaces', expect: [200] }), 'id', 'GET /namespaces');
  }

  async createNamespace(id: string): Promise<void> {
    await this.#none({ method: 'PUT', path: `/namespaces/${enc(id)}`, expect: [204] });
  }

  async deleteNamespace(id: string): Promise<void> {
    await this.#none({ method: 'DELETE', path: `/namespaces/${enc(id)}`, expect: [204] });
  }

  // ---- config and system -----------------------------------------------------------------------

  /** `currentPassphrase` is '' while none is set. */
  async setBackupPassphrase(newPassphrase: string, currentPassphrase: string): Promise<void> {
    await this.#none({
      method: 'PUT',
      path: '/config/backup-passphrase',
      json: { newPassphrase, currentPassphrase },
      expect: [204],
      secrets: [newPassphrase, currentPassphrase],
    });
  }

  async getUnattendedBoot(): Promise<boolean> {
    const status = field(await this.#json({ method: 'GET', path: '/config/unattended-boot', expect: [200] }), 'status', 'GET /config/unattended-boot');
    return status === 'on';
  }

  async setUnattendedBoot(on: boolean): Promise<void> {
    await this.#none({ method: 'PUT', path: '/config/unattended-boot', json: { status: on ? 'on' : 'off' }, expect: [204] });
  }

  /**
   * `POST /config/tls/generate`: the NetHSM makes a new TLS key and self-signed certificate and serves them to new
   * connections at once, so a client pinning the old certificate (this one included) gets TlsPinMismatchError on its
   * next new connection until it re-pins. RSA needs `length` (1024..8192).
   */
  async generateTls(body: TlsKeyGenerateRequest): Promise<void> {
    await this.#none({ method: 'POST', path: '/config/tls/generate', json: body, expect: [204] });
  }

  /** The certificate the TLS listener serves, PEM (root Administrator). */
  tlsCertificatePem(): Promise<string> {
    return this.#text({ method: 'GET', path: '/config/tls/cert.pem', accept: 'application/x-pem-file', expect: [200] });
  }

  async systemInfo(): Promise<SystemInfo> {
    const body = await this.#json({ method: 'GET', path: '/system/info', expect: [200] });
    field(body, 'deviceId', 'GET /system/info');
    return body as SystemInfo;
  }

  /**
   * Starts a backup and returns its body as a byte stream (back-pressured; never buffered whole). Transport failures
   * while reading surface as NetHsmTimeoutError / NetHsmUnreachableError on the stream. Destroy the stream to abort.
   * `signal` (the daemon stopping): aborting it cuts the backup at once, waiting for the headers or the body alike;
   * the call or the stream then fails with `signal.reason`, never with a device error.
   */
  async backup(signal?: AbortSignal): Promise<Readable> {
    const operation = 'POST /system/backup';
    const res = await this.#send({ method: 'POST', path: '/system/backup', accept: 'application/octet-stream', expect: [200], ...(signal ? { signal } : {}) });
    const transport = this.#transport;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      try {
        for await (const chunk of res.body) yield chunk as Buffer;
      } catch (err) {
        throw signal?.aborted ? signal.reason : transport.mapError(err, operation);
      } finally {
        if (!res.body.destroyed) res.body.destroy();
      }
    }
    return Readable.from(chunks(), { objectMode: false, highWaterMark: 64 * 1024 });
  }

  /**
   * Writes a backup to a new file (mode 0600; an existing file is not overwritten: OutputExistsError), fsyncs it and
   * returns the bytes written. On any failure the partial file is removed. With `tap` (util/byte-tap.ts), the bytes
   * also pass through its stage as they arrive, so its reader works while the device sends; the call then also
   * waits for the reader, and a failing reader fails the backup (its error is thrown). `signal` (the daemon stopping):
   * aborting it before the device is done sending cuts the backup; the call then rejects with `signal.reason` (so does
   * the tap's reader), no file is left and its descriptor is closed. Already aborted: rejects at once, creating nothing.
   */
  async backupToFile(path: string, tap?: ByteTap<unknown>, signal?: AbortSignal): Promise<number> {
    let fh;
    try {
      signal?.throwIfAborted();
      fh = await open(path, 'wx', 0o600);
    } catch (err) {
      const e = (err as NodeJS.ErrnoException).code === 'EEXIST' ? new OutputExistsError(`${path} already exists`, { path }) : err;
      tap?.fail(e);
      throw e;
    }
    let bytes = 0;
    // The write stream owns the handle from here: `flush` fsyncs before it closes it, on success or failure.
    const sink = createWriteStream('', { fd: fh, flush: true });
    let cut: (() => void) | undefined;
    try {
      const stream = await this.backup(signal);
      // Destroyed here too, not only by the transport: a body already received whole but held back by a slow tap
      // would otherwise never end.
      cut = () => stream.destroy(signal?.reason as Error);
      signal?.addEventListener('abort', cut, { once: true });
      stream.on('data', (c: Buffer) => (bytes += c.length));
      if (tap) {
        await pipeline(stream, tap.stage, sink);
        await tap.result;
      } else await pipeline(stream, sink);
      return bytes;
    } catch (caught) {
      // Cut by the signal: its reason, whatever the pipe made of the cut (a premature close, a stage's error).
      const err: unknown = signal?.aborted ? signal.reason : caught;
      sink.destroy();
      // A tap whose stream never started (the device refused the backup) must not leave its reader waiting.
      tap?.fail(err);
      await new Promise<void>((resolve) => (sink.closed ? resolve() : sink.once('close', () => resolve())));
      await unlink(path).catch(() => undefined);
      throw err;
    } finally {
      if (cut) signal?.removeEventListener('abort', cut);
    }
  }

  /**
   * Restores a backup, streamed from a file path or an async iterable of bytes (multipart: JSON arguments, then the file).
   * Unprovisioned devices need no credentials; Operational ones a root Administrator.
   */
  async restore(source: string | AsyncIterable<Uint8Array>, args: RestoreArguments = {}): Promise<void> {
    const boundary = newBoundary();
    const argsJson = Buffer.from(JSON.stringify(args));
    let streamed;
    try {
      streamed = await restoreBody(boundary, argsJson, source);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      throw new InputInvalidError(`restore source ${String(source)} cannot be read (${code})`, { path: String(source), cause: err });
    }
    const { body, length } = streamed;
    const secrets = args.backupPassphrase ? [args.backupPassphrase] : [];
    await this.#none({ method: 'POST', path: '/system/restore', body, contentType: contentTypeFor(boundary), contentLength: length, expect: [204], secrets });
  }
}

// ---- helpers -------------------------------------------------------------------------------------

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

function objectOf(body: unknown, operation: string): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new NetHsmResponseInvalidError('expected a JSON object', { operation });
  }
  return body as Record<string, unknown>;
}

function field(body: unknown, name: string, operation: string): string {
  const v = objectOf(body, operation)[name];
  if (typeof v !== 'string') throw new NetHsmResponseInvalidError(`expected a string field "${name}"`, { operation });
  return v;
}

function listOf(body: unknown, name: string, operation: string): string[] {
  if (!Array.isArray(body)) throw new NetHsmResponseInvalidError('expected a JSON list', { operation });
  return body.map((item) => field(item, name, operation));
}

/** True when `err` is a NetHSM answer with this status (handy for callers probing existence). */
export function isHttpStatus(err: unknown, status: number): boolean {
  return err instanceof NetHsmHttpError && err.status === status;
}
