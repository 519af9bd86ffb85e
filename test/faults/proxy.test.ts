/**
 * The partition proxy on its own: bytes pass; a blocked direction holds them (nothing refused, nothing lost) until the
 * heal; a connection made during a block hangs and completes after it; a target that is down resets the client.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../../src/lab/lab.js';
import { LinkProxy } from './proxy.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** An echo server upper-casing what it gets (or answering `answer(what it got)`); resolves with its port. */
async function echoServer(answer = (got: string) => got.toUpperCase()): Promise<number> {
  const server = net.createServer((s) => s.on('data', (d: Buffer) => s.write(answer(d.toString()))));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as net.AddressInfo).port;
}

async function proxyTo(target: number): Promise<LinkProxy> {
  const p = new LinkProxy('test', target);
  await p.start();
  cleanups.push(() => p.close());
  return p;
}

function connect(port: number): net.Socket {
  const s = net.connect(port, '127.0.0.1');
  s.setEncoding('utf8');
  cleanups.push(() => void s.destroy());
  return s;
}

/** Waits (bounded: a limit, not a timing assertion) until `s` has received exactly `want`. */
function receives(s: net.Socket, want: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const done = (): void => {
      clearTimeout(timer);
      s.off('data', onData);
      resolve(got);
    };
    const onData = (d: string): void => {
      got += d;
      if (got.length >= want.length) done();
    };
    const timer = setTimeout(done, 10_000);
    s.on('data', onData);
  });
}

/** Everything `s` receives within `ms` (to show that nothing passes a block). */
function receivedWithin(s: net.Socket, ms: number): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const onData = (d: string): void => void (got += d);
    s.on('data', onData);
    setTimeout(() => {
      s.off('data', onData);
      resolve(got);
    }, ms);
  });
}

describe('the partition proxy', () => {
  it('forwards both ways, and holds a blocked direction until the heal without losing a byte', async () => {
    const p = await proxyTo(await echoServer());
    const s = connect(p.port);
    s.write('a');
    expect(await receives(s, 'A')).toBe('A');
    p.block({ up: true });
    s.write('bc');
    expect(await receivedWithin(s, 300)).toBe('');
    p.heal();
    expect(await receives(s, 'BC')).toBe('BC');
    p.block({ down: true });
    s.write('d');
    expect(await receivedWithin(s, 300)).toBe('');
    p.heal();
    expect(await receives(s, 'D')).toBe('D');
  });

  it('accepts a connection during a block but lets nothing through until the heal', async () => {
    const p = await proxyTo(await echoServer());
    p.block({ up: true, down: true });
    const s = connect(p.port);
    await new Promise((r) => s.once('connect', r));
    s.write('x');
    expect(await receivedWithin(s, 300)).toBe('');
    expect(s.destroyed).toBe(false);
    p.heal();
    expect(await receives(s, 'X')).toBe('X');
  });

  it('listens where the system put it, and sends new connections where its target moved (a restarted process)', async () => {
    const p = await proxyTo(await echoServer());
    expect(p.port).toBeGreaterThan(0);
    const before = connect(p.port);
    before.write('a');
    expect(await receives(before, 'A')).toBe('A');
    p.targetPort = await echoServer((got) => `moved ${got}`);
    const after = connect(p.port);
    after.write('b');
    expect(await receives(after, 'moved b')).toBe('moved b');
    // The open connection keeps its target.
    before.write('c');
    expect(await receives(before, 'C')).toBe('C');
  });

  it('resets the client when the target refuses (its process is down)', async () => {
    const p = await proxyTo(await freePort());
    const s = connect(p.port);
    const closed = await new Promise<string>((resolve) => {
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      s.once('close', () => resolve('closed'));
    });
    expect(['ECONNRESET', 'closed']).toContain(closed);
  });
});
