/**
 * A peer API stand-in for site `name` that relays every call to the real peer API, except a snapshot download while
 * `stall` is set: that one gets its headers (200, the epoch) and then nothing, ever, as from a primary whose device
 * backup stalls mid-way. It presents the site's own peer certificate (the group CA's, CN = the site), so the client
 * cannot tell it from the real one; a replica's config points its peer URL here. `close()` cuts every connection.
 */
import { readFile } from 'node:fs/promises';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import path from 'node:path';
import { SNAPSHOT_EPOCH_HEADER } from '../../src/peer/messages.js';

export class StallingPeer {
  /** Set: snapshot downloads stall after their headers. */
  stall = false;
  /** The epoch sent in a stalled snapshot's header. */
  epoch = 1;
  /** Snapshot downloads stalled so far (each resolves `stalled`). */
  stalledCount = 0;
  stalled: Promise<void>;
  #onStalled!: () => void;
  #server: https.Server | undefined;
  readonly #sockets = new Set<Socket>();
  #port = 0;

  /**
   * `labDir`/`site`/peer.crt and peer.key: the site it stands in for; `via`: the site whose certificate it presents to
   * the real peer API at `targetPort` (the replica it relays for).
   */
  constructor(
    private readonly labDir: string,
    private readonly site: string,
    private readonly via: string,
    private readonly targetPort: number,
  ) {
    this.stalled = new Promise((r) => (this.#onStalled = r));
  }

  get url(): string {
    return `https://127.0.0.1:${this.#port}`;
  }

  async start(): Promise<void> {
    const file = (...p: string[]) => readFile(path.join(this.labDir, ...p), 'utf8');
    const [cert, key, ca, viaCert, viaKey] = await Promise.all([
      file(this.site, 'peer.crt'),
      file(this.site, 'peer.key'),
      file('ca.pem'),
      file(this.via, 'peer.crt'),
      file(this.via, 'peer.key'),
    ]);
    const agent = new https.Agent({ cert: viaCert, key: viaKey, ca, checkServerIdentity: () => undefined });
    const server = https.createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true }, (req, res) => this.#handle(req, res, agent));
    server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    this.#server = server;
    this.#port = (server.address() as { port: number }).port;
  }

  #handle(req: IncomingMessage, res: ServerResponse, agent: https.Agent): void {
    if (this.stall && req.method === 'GET' && (req.url ?? '').split('?')[0]!.endsWith('/snapshot')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', [SNAPSHOT_EPOCH_HEADER]: String(this.epoch) });
      res.flushHeaders();
      this.stalledCount++;
      this.#onStalled();
      return;
    }
    const up = https.request(
      { host: '127.0.0.1', port: this.targetPort, method: req.method, path: req.url, headers: req.headers, agent },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }
}
