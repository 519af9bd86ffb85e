/**
 * Streaming through the gateway, against a byte-counting HTTPS upstream standing in for the NetHSM's transport (the
 * simulator would buffer bodies itself, hiding what the gateway does). Each test proves streaming by a handshake: the
 * sender does not send the rest until the receiver has seen the first part, so a gateway that buffered would deadlock.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSelfSignedCertificate, type CertificateBundle } from '../tls/index.js';
import { GatewayServer } from './server.js';
import { basicHeader } from './test-support.js';

const MiB = 1024 * 1024;
const CHUNK = Buffer.alloc(MiB, 0x61);

// A full GC before each memory sample, so the samples count what is retained, not garbage not yet collected.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const retained = (): number => {
  // Twice: external buffer memory is released by the finalisers the first collection queues.
  gc();
  gc();
  const m = process.memoryUsage();
  return m.arrayBuffers + m.heapUsed;
};

function signal(): { promise: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const promise = new Promise<void>((r) => (fire = r));
  return { promise, fire };
}

/** Rejects after `ms` with `what`: a deadlock guard, not a performance bound. */
function guard<T>(p: Promise<T>, what: string, ms = 20_000): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms))),
  ]);
}

describe('gateway streaming', () => {
  let upstreamCert: CertificateBundle;
  let gwCert: CertificateBundle;
  let upstream: https.Server;
  let gw: GatewayServer;
  let client: Agent;
  const seen: { method: string; url: string; bytes: number; authorization?: string }[] = [];
  let onUpload: (bytes: number) => void = () => {};
  let downloadGate: Promise<void> = Promise.resolve();
  let downloadSize = 0;

  beforeAll(async () => {
    [upstreamCert, gwCert] = await Promise.all([createSelfSignedCertificate(), createSelfSignedCertificate()]);
    upstream = https.createServer({ cert: upstreamCert.certPem, key: upstreamCert.keyPem }, (req, res) => {
      const entry = { method: req.method ?? '', url: req.url ?? '', bytes: 0, authorization: req.headers.authorization };
      seen.push(entry);
      req.on('data', (c: Buffer) => {
        entry.bytes += c.length;
        onUpload(entry.bytes);
      });
      req.on('end', async () => {
        if (req.url === '/api/v1/system/backup') {
          res.writeHead(200, { 'content-type': 'application/octet-stream' });
          res.write(CHUNK);
          await downloadGate;
          for (let sent = MiB; sent < downloadSize; sent += MiB) {
            if (!res.write(CHUNK)) await new Promise((r) => res.once('drain', r));
          }
          res.end();
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ bytes: entry.bytes }));
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const port = (upstream.address() as AddressInfo).port;
    gw = new GatewayServer({
      site: 'a',
      tls: { certPem: gwCert.certPem, keyPem: gwCert.keyPem },
      nethsm: { url: `https://127.0.0.1:${port}`, tls: { fingerprint256: upstreamCert.fingerprint256 } },
      roles: { roleOf: () => undefined },
    });
    await gw.start();
    client = new Agent({ connect: { ca: gwCert.certPem } });
  });

  afterAll(async () => {
    await client?.close();
    await gw?.close();
    upstream?.closeAllConnections();
    await new Promise((r) => upstream?.close(r));
  });

  it('streams a large request body to the NetHSM as it arrives, with memory well below its size', async () => {
    const total = 64 * MiB;
    const firstSeen = signal();
    let peak = 0;
    let nextSample = 8 * MiB;
    const base = retained();
    onUpload = (bytes) => {
      if (bytes >= MiB) firstSeen.fire();
      if (bytes >= nextSample) {
        nextSample += 8 * MiB;
        peak = Math.max(peak, retained() - base);
      }
    };
    async function* body(): AsyncGenerator<Buffer> {
      yield CHUNK;
      await firstSeen.promise; // only once the NetHSM side has the first MiB
      for (let sent = MiB; sent < total; sent += MiB) yield CHUNK;
    }
    const res = await guard(
      request(`${gw.url}/api/v1/keys/k1/sign`, {
        method: 'POST',
        headers: { authorization: basicHeader({ username: 'alpha~operator', password: 'opPassphrase1' }), 'content-type': 'application/json' },
        body: Readable.from(body()),
        dispatcher: client,
      }),
      'the gateway did not forward the first MiB before the whole body arrived (buffered?)',
    );
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(await res.body.text())).toEqual({ bytes: total });
    // Loose: a buffering gateway would retain what it has read so far (up to 64 MiB); a streaming one a few MiB.
    expect(peak).toBeLessThan(16 * MiB);
    expect(seen.at(-1)?.authorization).toBe(basicHeader({ username: 'alpha~operator', password: 'opPassphrase1' }));
  });

  it('streams a large response (a backup) to the client as the NetHSM sends it', async () => {
    downloadSize = 32 * MiB;
    const clientHasFirst = signal();
    downloadGate = clientHasFirst.promise;
    const res = await request(`${gw.url}/api/v1/system/backup`, {
      method: 'POST',
      headers: { authorization: basicHeader({ username: 'backup', password: 'backupUserPassphrase' }) },
      dispatcher: client,
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/octet-stream');
    let received = 0;
    await guard(
      (async () => {
        for await (const chunk of res.body) {
          received += (chunk as Buffer).length;
          if (received >= MiB) clientHasFirst.fire();
        }
      })(),
      'the gateway did not pass on the first MiB before the whole response arrived (buffered?)',
    );
    expect(received).toBe(downloadSize);
  });

  it('refuses a 20 MB restore upload without forwarding any of it', async () => {
    const before = seen.length;
    async function* body(): AsyncGenerator<Buffer> {
      for (let i = 0; i < 20; i++) yield CHUNK;
    }
    const res = await request(`${gw.url}/api/v1/system/restore`, {
      method: 'POST',
      headers: { 'content-type': 'multipart/form-data; boundary=b', 'content-length': String(20 * MiB) },
      body: Readable.from(body()),
      dispatcher: client,
    }).catch((e: unknown) => e);
    // The gateway answers at once and closes rather than read the upload; either way nothing went upstream.
    if (!(res instanceof Error)) {
      expect((res as Awaited<ReturnType<typeof request>>).statusCode).toBe(403);
      await (res as Awaited<ReturnType<typeof request>>).body.text();
    }
    expect(seen.length).toBe(before);
  });
});
