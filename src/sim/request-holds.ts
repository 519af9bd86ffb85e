/**
 * A test hook of the in-process simulator (`sim.hold(pattern)`, docs/simulator.md): requests matching a method and path
 * pattern wait, unanswered, until the test releases them, so a test can stall a device operation and look at the caller
 * while it is in flight (what else it started, what it recorded) instead of guessing with sleeps. Off by default (no
 * hold: every request goes straight to the router), and only the process that started the simulator can open one: no
 * route, option or CLI flag reaches it.
 *
 * A held request has not reached the device yet: the decision order (state, auth, …) and the handler run when it is
 * released, against the device as it is then. A held request whose connection closes (the client gave up, a reboot
 * dropped it) stops being held and is never served.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** Which requests a hold catches: `path` is tested against the URL path (no query), e.g. `/api/v1/keys/k1`. */
export interface HoldPattern {
  /** Any method when absent; compared case-insensitively. */
  method?: string;
  path: RegExp;
}

/** A request a hold keeps waiting. */
export interface HeldRequest {
  method: string;
  /** The URL path, without the query. */
  path: string;
}

/** An open hold: see {@link RequestHolds.open}. */
export interface RequestHold {
  /** Requests held now. */
  held(): number;
  /** The requests held now, longest held first. */
  requests(): HeldRequest[];
  /** Requests this hold has caught since it was opened (released, dropped and still held ones). */
  caught(): number;
  /**
   * Resolves once `n` requests are held at the same time. Rejects after `timeoutMs` (default 10 s: a failure bound,
   * never a way to wait) naming what is held, or when the hold or the simulator closes first.
   */
  waitFor(n: number, timeoutMs?: number): Promise<void>;
  /** Lets the `n` longest held requests (all when absent) go on to be served, in the order they came. */
  release(n?: number): void;
  /** Releases every held request and catches no more. Idempotent. */
  close(): void;
}

interface Parked extends HeldRequest {
  serve: () => void;
  /** Stops watching the connection (the request is being served or dropped). */
  forget: () => void;
}

interface Waiter {
  n: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

class Hold implements RequestHold {
  readonly #queue: Parked[] = [];
  readonly #waiters: Waiter[] = [];
  #caught = 0;
  #closed = false;

  constructor(
    readonly pattern: HoldPattern,
    private readonly detach: (hold: Hold) => void,
  ) {}

  matches(method: string, path: string): boolean {
    const m = this.pattern.method;
    this.pattern.path.lastIndex = 0;
    return (m === undefined || m.toUpperCase() === method) && this.pattern.path.test(path);
  }

  /** Keeps the request until released; drops it if its connection closes first. */
  park(res: ServerResponse, method: string, path: string, serve: () => void): void {
    const onClose = () => {
      const i = this.#queue.indexOf(parked);
      if (i >= 0) this.#queue.splice(i, 1);
    };
    const parked: Parked = { method, path, serve, forget: () => res.off('close', onClose) };
    res.on('close', onClose);
    this.#caught++;
    this.#queue.push(parked);
    for (const w of this.#waiters.filter((x) => this.#queue.length >= x.n)) this.#settle(w).resolve();
  }

  held(): number {
    return this.#queue.length;
  }

  requests(): HeldRequest[] {
    return this.#queue.map(({ method, path }) => ({ method, path }));
  }

  caught(): number {
    return this.#caught;
  }

  waitFor(n: number, timeoutMs = 10_000): Promise<void> {
    if (this.#queue.length >= n) return Promise.resolve();
    if (this.#closed) return Promise.reject(new Error('the hold is closed'));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const what = this.#queue.map((r) => `${r.method} ${r.path}`).join(', ') || 'nothing';
        this.#settle(waiter).reject(new Error(`${n} requests were not held at once within ${timeoutMs} ms; held: ${what}`));
      }, timeoutMs);
      const waiter: Waiter = {
        n,
        resolve: () => (clearTimeout(timer), resolve()),
        reject: (err) => (clearTimeout(timer), reject(err)),
      };
      this.#waiters.push(waiter);
    });
  }

  release(n = Number.POSITIVE_INFINITY): void {
    for (const r of this.#queue.splice(0, Math.min(n, this.#queue.length))) {
      r.forget();
      r.serve();
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.detach(this);
    this.release();
    for (const w of [...this.#waiters]) this.#settle(w).reject(new Error('the hold was closed'));
  }

  /** The simulator closes: its connections are dropped, so nothing held is served; waiters are told. */
  abandon(): void {
    this.#closed = true;
    for (const r of this.#queue.splice(0)) r.forget();
    for (const w of [...this.#waiters]) this.#settle(w).reject(new Error('the simulator closed'));
  }

  #settle(w: Waiter): Waiter {
    const i = this.#waiters.indexOf(w);
    if (i >= 0) this.#waiters.splice(i, 1);
    return w;
  }
}

/** The simulator's open holds, in front of its router. */
export class RequestHolds {
  readonly #holds: Hold[] = [];

  /**
   * Opens a hold: from now on requests matching `pattern` (and no hold opened earlier) wait until released. Throws
   * TypeError for a pattern without a RegExp path.
   */
  open(pattern: HoldPattern): RequestHold {
    if (!(pattern.path instanceof RegExp)) throw new TypeError('hold pattern: path must be a RegExp');
    const hold = new Hold({ ...pattern }, (h) => {
      const i = this.#holds.indexOf(h);
      if (i >= 0) this.#holds.splice(i, 1);
    });
    this.#holds.push(hold);
    return hold;
  }

  /** Serves the request now, or parks it in the first open hold that matches it. */
  admit(req: IncomingMessage, res: ServerResponse, serve: () => void): void {
    if (this.#holds.length === 0) return serve();
    const method = (req.method ?? 'GET').toUpperCase();
    const path = (req.url ?? '/').split('?')[0]!;
    const hold = this.#holds.find((h) => h.matches(method, path));
    if (hold === undefined) return serve();
    hold.park(res, method, path, serve);
  }

  /** The simulator closes: every hold stops; what it holds is never served. */
  abandonAll(): void {
    for (const h of this.#holds.splice(0)) h.abandon();
  }
}
