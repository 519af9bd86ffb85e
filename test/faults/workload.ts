/**
 * The applications of a fault run: workers writing through the sites' gateways as each namespace's Administrator
 * (`<ns>~admin`, NetHsmClient, as nitropy or the PKCS#11 module would): key imports, generations (device or replicated,
 * as the namespace is configured), deletes, restriction tags and certificates. Each request goes to the site the
 * workers believe is primary (from the status sampler), now and then to another site, and is recorded with its outcome
 * (ack / refused / unknown). Every key id is used for exactly one create, so the checker can trace each key.
 *
 * Bounded: each request has a client timeout, each worker a maximum number of requests, and the run a deadline.
 */
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import https from 'node:https';
import { NetHsmHttpError, NetHsmTimeoutError, NetHsmUnreachableError, NhrError } from '../../src/errors.js';
import { LAB_PASSPHRASES } from '../../src/lab/lab.js';
import { NetHsmClient, type PrivateKey } from '../../src/nethsm/client.js';
import type { Cluster } from './cluster.js';
import type { HistoryWriter, OpKind, OpRecord, Outcome } from './history.js';
import type { Prng } from './prng.js';
import type { StatusSampler } from './sampler.js';

export interface WorkloadOptions {
  workersPerSite: number;
  /** Client timeout per request. */
  requestTimeoutMs: number;
  /** Upper bound of requests per worker. */
  maxOpsPerWorker: number;
  /** Pause between a worker's requests (uniform in [0, thinkMs]). */
  thinkMs: number;
}

const WEIGHTS: Record<OpKind, number> = { import: 30, generate: 20, delete: 10, tag: 20, cert: 10 };
/** Share of requests sent to a site the workers do not believe is primary (they should be refused there). */
const STRAY = 0.15;

interface KeyState {
  cert: boolean;
  deleting: boolean;
  tags: number;
}

/** Maps a status to an outcome: 2xx acknowledged; 500/502/504 unknown (the request may have reached the NetHSM); else refused. */
export function outcomeOfStatus(status: number): Outcome {
  if (status >= 200 && status < 300) return 'ack';
  if (status === 500 || status === 502 || status === 504) return 'unknown';
  return 'refused';
}

/** What an error thrown by NetHsmClient means to the application. */
export function outcomeOfError(err: unknown): { outcome: Outcome; status?: number; error: string } {
  if (err instanceof NetHsmHttpError) return { outcome: outcomeOfStatus(err.status), status: err.status, error: err.message.slice(0, 200) };
  if (err instanceof NetHsmTimeoutError || err instanceof NetHsmUnreachableError) return { outcome: 'unknown', error: err.code };
  if (err instanceof NhrError) return { outcome: 'unknown', error: `${err.code}: ${err.message}`.slice(0, 200) };
  return { outcome: 'unknown', error: String(err).slice(0, 200) };
}

/** An EC P-256 key pair: the NetHSM JSON import body and the SHA-256 of the public key's SPKI DER. */
export function newImportKey(): { body: PrivateKey; pub: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const d = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
  const body = { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: d.toString('base64') } } as PrivateKey;
  d.fill(0);
  return { body, pub: spkiDigest(publicKey) };
}

export function spkiDigest(key: KeyObject): string {
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex');
}

export class Workload {
  /** Keys acknowledged as created, per namespace: the targets of deletes, tags and certificates. */
  readonly #keys = new Map<string, Map<string, KeyState>>();
  readonly #clients = new Map<string, NetHsmClient>();
  #stop = false;
  #slow = 0;

  constructor(
    private readonly cluster: Cluster,
    private readonly history: HistoryWriter,
    private readonly sampler: StatusSampler,
    private readonly options: WorkloadOptions,
  ) {
    for (const n of cluster.namespaces) this.#keys.set(n.name, new Map());
  }

  /** Runs every worker until `stop()` (or each worker's request bound); resolves when all have finished. */
  async run(prng: Prng): Promise<void> {
    const workers: Promise<void>[] = [];
    const count = this.options.workersPerSite * this.cluster.sites.length;
    for (let w = 0; w < count; w++) workers.push(this.worker(`w${w}`, prng.fork(`worker ${w}`)));
    await Promise.all(workers);
  }

  stop(): void {
    this.#stop = true;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#clients.values()].map((c) => c.close().catch(() => undefined)));
    this.#clients.clear();
  }

  private async worker(name: string, prng: Prng): Promise<void> {
    for (let i = 0; i < this.options.maxOpsPerWorker && !this.#stop; i++) {
      const ns = prng.pick(this.cluster.namespaces).name;
      const believed = this.sampler.believedPrimary(ns);
      const site = prng.chance(STRAY) ? prng.pick(this.cluster.sites).name : believed;
      const kind = prng.weighted(WEIGHTS);
      await this.op(name, `${name}k${i}`, site, ns, kind, prng);
      await new Promise((r) => setTimeout(r, prng.int(0, this.options.thinkMs)));
    }
  }

  private client(site: string, ns: string): NetHsmClient {
    const key = `${site}/${ns}`;
    let c = this.#clients.get(key);
    if (!c) {
      c = new NetHsmClient({
        url: this.cluster.site(site).gatewayUrl,
        tls: { caPem: this.cluster.caPem },
        auth: { username: `${ns}~admin`, password: LAB_PASSPHRASES.nsAdmin },
        timeoutMs: this.options.requestTimeoutMs,
        connections: 4,
      });
      this.#clients.set(key, c);
    }
    return c;
  }

  /** One request of `kind`; creates use `newId`, the others pick an acknowledged key of the namespace. */
  private async op(worker: string, newId: string, site: string, ns: string, kind: OpKind, prng: Prng): Promise<void> {
    const pool = this.#keys.get(ns)!;
    const live = [...pool.entries()].filter(([, k]) => !k.deleting);
    if (kind !== 'import' && kind !== 'generate' && live.length === 0) kind = 'import';
    const c = this.client(site, ns);
    const rec: OpRecord = { type: 'op', id: this.history.nextOpId(), worker, site, ns, kind, key: newId, start: Date.now(), end: 0, outcome: 'ack' };
    try {
      if (kind === 'import') {
        const { body, pub } = newImportKey();
        rec.pub = pub;
        await c.importKey(body, newId);
      } else if (kind === 'generate') {
        await c.generateKey({ id: newId, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
      } else {
        const candidates = kind === 'cert' ? live.filter(([, k]) => !k.cert) : live;
        const [key, state] = prng.pick(candidates.length > 0 ? candidates : live);
        rec.key = key;
        if (kind === 'delete') {
          state.deleting = true;
          await c.deleteKey(key);
        } else if (kind === 'tag') {
          rec.tag = `t${state.tags++}`;
          await c.addKeyTag(key, rec.tag);
        } else {
          // One attempt per key: a second PUT would meet 409 and blur what the first one did.
          if (state.cert) {
            rec.kind = 'tag';
            rec.tag = `t${state.tags++}`;
            await c.addKeyTag(key, rec.tag);
          } else {
            state.cert = true;
            const cert = randomBytes(64);
            rec.cert = createHash('sha256').update(cert).digest('hex');
            await c.putCert(key, cert);
          }
        }
      }
      rec.end = Date.now();
      if (kind === 'import' || kind === 'generate') pool.set(newId, { cert: false, deleting: false, tags: 0 });
      if (kind === 'generate') rec.pub = await this.readPub(c, newId);
    } catch (err) {
      rec.end = Date.now();
      Object.assign(rec, outcomeOfError(err));
    }
    this.history.append(rec);
  }

  /** The public key of a key just generated, read back through the same gateway; undefined when that read fails. */
  private async readPub(c: NetHsmClient, id: string): Promise<string | undefined> {
    try {
      return spkiDigest(createPublicKey(await c.publicKeyPem(id)));
    } catch {
      return undefined;
    }
  }

  /**
   * A slow client (nemesis): imports one key through `site`'s gateway with its JSON body trickled over `durationMs`.
   * Recorded like any other request (worker `slow`).
   */
  async slowImport(site: string, ns: string, durationMs: number): Promise<OpRecord> {
    const id = `slow${this.#slow++}`;
    const { body, pub } = newImportKey();
    const bytes = Buffer.from(JSON.stringify(body));
    const rec: OpRecord = { type: 'op', id: this.history.nextOpId(), worker: 'slow', site, ns, kind: 'import', key: id, start: Date.now(), end: 0, outcome: 'ack', pub, slow: true };
    const { status, error } = await trickle(this.cluster.site(site).gatewayUrl, this.cluster.caPem, `/api/v1/keys/${id}`, ns, bytes, durationMs, durationMs + this.options.requestTimeoutMs);
    bytes.fill(0);
    rec.end = Date.now();
    if (status !== undefined) {
      rec.status = status;
      rec.outcome = outcomeOfStatus(status);
      if (rec.outcome === 'ack') this.#keys.get(ns)!.set(id, { cert: false, deleting: false, tags: 0 });
    } else rec.outcome = 'unknown';
    if (error) rec.error = error;
    this.history.append(rec);
    return rec;
  }
}

/** PUT with a body sent in ten pieces over `durationMs`; resolves with the status, or an error after `timeoutMs`. */
function trickle(base: string, caPem: string, path: string, ns: string, body: Buffer, durationMs: number, timeoutMs: number): Promise<{ status?: number; error?: string }> {
  return new Promise((resolve) => {
    const url = new URL(path, base);
    const auth = Buffer.from(`${ns}~admin:${LAB_PASSPHRASES.nsAdmin}`).toString('base64');
    let settled = false;
    const done = (r: { status?: number; error?: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const req = https.request(url, {
      method: 'PUT',
      ca: caPem,
      agent: false,
      headers: { authorization: `Basic ${auth}`, 'content-type': 'application/json', 'content-length': body.length },
    });
    const timer = setTimeout(() => {
      req.destroy();
      done({ error: `no answer within ${timeoutMs} ms` });
    }, timeoutMs);
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => done({ status: res.statusCode ?? 0 }));
      res.on('error', () => done({ status: res.statusCode ?? 0 }));
    });
    req.on('error', (err) => done({ error: err.message.slice(0, 200) }));
    const pieces = 10;
    const size = Math.ceil(body.length / pieces);
    let i = 0;
    const sendNext = (): void => {
      if (settled || req.destroyed) return;
      const chunk = Buffer.from(body.subarray(i * size, (i + 1) * size));
      i++;
      if (i >= pieces || i * size >= body.length) {
        req.end(chunk);
        return;
      }
      req.write(chunk);
      setTimeout(sendNext, durationMs / pieces);
    };
    sendNext();
  });
}
