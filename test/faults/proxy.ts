/**
 * A userland TCP proxy for one directed link (e.g. site a's daemon → site b's peer API), the fault suite's partition
 * mechanism: it needs no root and no iptables. Sites' configs point at the proxy's port instead of the real one.
 *
 * A blocked direction models packets being DROPPED, not refused: the proxy stops reading that direction (the bytes wait
 * in kernel buffers, the sender's writes stall under TCP backpressure) and forwards them when the link heals, as TCP
 * retransmission would deliver them; a connection made while the link is blocked is accepted and then hangs until the
 * link heals (a SYN retried until it gets through). Endpoints see hangs and time out by their own timers, exactly as
 * behind a firewall that drops. `up` is client → server, `down` server → client; a new connection needs both ways
 * open (the handshake goes both ways). A close seen on one side while its direction is blocked is delivered on heal.
 * When the target refuses the connection (process down), the client's connection is reset, as a host answers a SYN
 * to a closed port.
 */
import net from 'node:net';

export type Direction = 'up' | 'down';

export interface LinkState {
  up: boolean;
  down: boolean;
}

export class LinkProxy {
  readonly #blocked: LinkState = { up: false, down: false };
  readonly #conns = new Set<ProxiedConnection>();
  #server: net.Server | undefined;
  /** Connections accepted since start (for the report). */
  accepted = 0;

  #port = 0;

  constructor(
    /** For messages: `peer a→b`, `gateway a`, `device a`. */
    readonly name: string,
    /**
     * Where new connections go. Settable: a target process that restarts listens on a port the system picks (port 0)
     * and the harness points the proxy there (Site.startSim, Site.startDaemon); open connections keep theirs. 0 until
     * the target first started: connections are then reset, as by a host with nothing listening.
     */
    public targetPort = 0,
  ) {}

  /** The port the proxy listens on (from `start()`, which binds one the system picks: nobody can take it first). */
  get port(): number {
    if (this.#port === 0) throw new Error(`proxy ${this.name} is not listening yet`);
    return this.#port;
  }

  /** Which directions are blocked now. */
  get blocked(): Readonly<LinkState> {
    return { ...this.#blocked };
  }

  /** Listens on 127.0.0.1, on a port the system picks (`port`). */
  async start(): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
      this.accepted++;
      const conn = new ProxiedConnection(client, () => this.targetPort, () => this.#blocked, () => this.#conns.delete(conn));
      this.#conns.add(conn);
      conn.update();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#port = (server.address() as net.AddressInfo).port;
    server.on('error', () => undefined);
    this.#server = server;
  }

  /** Blocks (drops) the given directions; the others keep their state. */
  block(dirs: Partial<LinkState>): void {
    if (dirs.up) this.#blocked.up = true;
    if (dirs.down) this.#blocked.down = true;
    for (const c of this.#conns) c.update();
  }

  /** Opens both directions: held bytes, closes and connections go through. */
  heal(): void {
    this.#blocked.up = false;
    this.#blocked.down = false;
    for (const c of this.#conns) c.update();
  }

  /** Stops listening and destroys every connection. Idempotent. */
  async close(): Promise<void> {
    for (const c of this.#conns) c.destroy();
    this.#conns.clear();
    const s = this.#server;
    this.#server = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

/** One client connection and, once both directions have been open, its upstream connection. */
class ProxiedConnection {
  #server: net.Socket | undefined;
  #connected = false;
  #done = false;
  /** A side's write buffer is full: stop reading the other side until it drains. */
  readonly #backpressure: LinkState = { up: false, down: false };
  /** A side went away while the direction from it was blocked: tell the other side on heal. */
  readonly #gone: LinkState = { up: false, down: false };

  constructor(
    private readonly client: net.Socket,
    /** Read when it connects (after a block, maybe later than the accept): the target may have moved meanwhile. */
    private readonly targetPort: () => number,
    private readonly blocked: () => LinkState,
    private readonly onDone: () => void,
  ) {
    // Explicitly paused first: a 'data' listener would otherwise start the flow before the link allows it.
    client.pause();
    client.on('error', () => undefined);
    client.on('data', (d: Buffer) => this.forward('up', d));
    client.on('end', () => this.#server?.end());
    client.on('close', () => this.sideClosed('up'));
  }

  /** Re-evaluates what may flow after a block, heal, connect or drain. */
  update(): void {
    if (this.#done) return;
    const b = this.blocked();
    if (!this.#server && !b.up && !b.down) this.connect();
    if (!this.#connected) return;
    if (this.#gone.up && !b.up) return this.destroy();
    if (this.#gone.down && !b.down) return this.destroy();
    flow(this.client, !b.up && !this.#backpressure.up);
    flow(this.#server!, !b.down && !this.#backpressure.down);
  }

  destroy(): void {
    if (this.#done) return;
    this.#done = true;
    this.client.destroy();
    this.#server?.destroy();
    this.onDone();
  }

  private connect(): void {
    const server = net.connect({ port: this.targetPort(), host: '127.0.0.1', allowHalfOpen: true });
    this.#server = server;
    server.pause();
    server.on('error', () => undefined);
    server.once('connect', () => {
      this.#connected = true;
      this.update();
    });
    server.on('data', (d: Buffer) => this.forward('down', d));
    server.on('end', () => this.client.end());
    server.on('close', () => (this.#connected ? this.sideClosed('down') : this.refused()));
  }

  /** The target did not accept: reset the client, as a closed port answers a SYN. */
  private refused(): void {
    if (this.#done) return;
    this.#done = true;
    this.client.resetAndDestroy();
    this.onDone();
  }

  private forward(dir: Direction, data: Buffer): void {
    const to = dir === 'up' ? this.#server : this.client;
    if (!to || to.destroyed) return;
    if (!to.write(data)) {
      this.#backpressure[dir] = true;
      to.once('drain', () => {
        this.#backpressure[dir] = false;
        this.update();
      });
      this.update();
    }
  }

  /** `dir` names the direction whose source closed (`up`: the client). */
  private sideClosed(dir: Direction): void {
    if (this.#done) return;
    if (!this.#connected) return this.destroy();
    if (this.blocked()[dir]) {
      this.#gone[dir] = true;
      return;
    }
    this.destroy();
  }
}

function flow(s: net.Socket, on: boolean): void {
  if (on && s.isPaused()) s.resume();
  else if (!on && !s.isPaused()) s.pause();
}
