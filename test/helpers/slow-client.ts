/**
 * Test helpers for clients that are slow on purpose: a TCP connection that never finishes its TLS handshake, an
 * HTTPS upload that trickles its body, a request whose client leaves before the answer. The first two resolve when the
 * server closes the connection; none has a time bound of its own (wrap them in a guard), and each can be stopped by
 * the test.
 */
import net from 'node:net';
import tls from 'node:tls';

/** The first bytes of a TLS record carrying a ClientHello of 512 bytes: the server waits for the rest. */
const CLIENT_HELLO_HEAD = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);

export interface StalledHandshake {
  /** Resolves when the server has closed the connection. */
  closed: Promise<void>;
  /** Closes the connection from the client side (cleanup). */
  stop(): void;
}

/**
 * Connects over plain TCP and then `silent`: sends nothing, or `trickle`: starts a ClientHello and sends one more byte
 * every `everyMs` (so an idle timer alone would never fire), never completing it.
 */
export function stalledHandshake(port: number, mode: 'silent' | 'trickle', everyMs = 50): StalledHandshake {
  let timer: NodeJS.Timeout | undefined;
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {}); // a reset by the server is what the test waits for
  socket.resume(); // read to the end, so the server's close is seen
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.once('connect', () => {
    if (mode === 'silent') return;
    socket.write(CLIENT_HELLO_HEAD);
    timer = setInterval(() => {
      if (!socket.destroyed) socket.write(Buffer.from([0x00]));
    }, everyMs);
  });
  void closed.then(() => clearInterval(timer));
  return { closed, stop: () => socket.destroy() };
}

export interface SlowUpload {
  /** Resolves once the server answered `100 Continue`: it has read the request head and handed it to its handler. */
  continued: Promise<void>;
  /** Resolves with everything the server sent (head and body of its answer, if any) once it closed the connection. */
  closed: Promise<string>;
  /** Body bytes sent so far. */
  readonly sent: number;
  /** Whether the connection is still open. */
  readonly open: boolean;
  stop(): void;
}

/**
 * Sends `head` (a request head, without the blank line) with `Transfer-Encoding: chunked` and `Expect: 100-continue`,
 * then, once the server answered `100 Continue`, one body byte every `everyMs` from `body` (then spaces), forever.
 */
export function slowUpload(port: number, caPem: string, head: string, body: string, everyMs = 50): SlowUpload {
  let timer: NodeJS.Timeout | undefined;
  let sent = 0;
  let open = true;
  const chunks: Buffer[] = [];
  let onContinue!: () => void;
  const continued = new Promise<void>((resolve) => (onContinue = resolve));
  const socket = tls.connect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost' }, () => {
    socket.write(`${head}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n`);
  });
  socket.on('error', () => {});
  socket.on('data', (c: Buffer) => {
    chunks.push(c);
    if (timer === undefined && Buffer.concat(chunks).toString('latin1').startsWith('HTTP/1.1 100 ')) {
      onContinue();
      timer = setInterval(() => {
        if (socket.destroyed) return;
        const ch = sent < body.length ? body[sent]! : ' ';
        socket.write(`1\r\n${ch}\r\n`);
        sent++;
      }, everyMs);
    }
  });
  const closed = new Promise<string>((resolve) =>
    socket.once('close', () => {
      open = false;
      clearInterval(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    }),
  );
  return {
    continued,
    closed,
    get sent() {
      return sent;
    },
    get open() {
      return open;
    },
    stop: () => socket.destroy(),
  };
}

/** Rejects after `ms` with `what`: a deadlock guard for the promises above, not a performance bound. */
export function guard<T>(p: Promise<T>, what: string, ms = 20_000): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms))),
  ]);
}

export interface LeavingRequest {
  /** Resolves with the connection's local port once the request went out (find it among the server's sockets). */
  sent: Promise<number>;
  /** Cuts the connection: the client leaves without waiting for the answer. */
  leave(): void;
}

/**
 * Sends an HTTPS GET of `path` over mutual TLS and never reads the answer; `leave()` cuts the connection (a peer that
 * gave up while the server was still preparing its answer).
 */
export function leavingGet(port: number, creds: { caPem: string; certPem: string; keyPem: string }, path: string): LeavingRequest {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: creds.caPem, cert: creds.certPem, key: creds.keyPem, checkServerIdentity: () => undefined });
  socket.on('error', () => {}); // the test cuts it
  const sent = new Promise<number>((resolve) =>
    socket.once('secureConnect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: peer\r\n\r\n`);
      resolve(socket.localPort!);
    }),
  );
  return { sent, leave: () => socket.destroy() };
}
