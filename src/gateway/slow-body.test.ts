/**
 * Slow and oversized clients (data-safety issue, case 6): a write is counted in flight at the write gate only once its
 * body is in hand, so a client trickling an upload cannot keep a merge-restore from starting or make other writes wait.
 * Slow or stalled senders, oversized bodies, unfinished request heads and unfinished TLS handshakes are cut.
 */
import { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guard, slowUpload, stalledHandshake } from '../../test/helpers/slow-client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createSelfSignedCertificate, type CertificateBundle } from '../tls/index.js';
import type { MutationObserver, MutationStart } from './observer.js';
import { GatewayServer, type GatewayRequestEvent } from './server.js';
import { basicHeader, httpsCaller, rawTlsRequest, until, type Cred } from './test-support.js';
import { DeviceBarrier } from '../concurrency/barrier.js';

const SEED = Buffer.alloc(32, 7).toString('base64');
const importJson = (): string => JSON.stringify({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: SEED } });

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('gateway: slow and oversized request bodies', () => {
  let sim: ProvisionedSimulator;
  let cert: CertificateBundle;
  let gw: GatewayServer;
  let gwDefaults: GatewayServer;
  let direct: ReturnType<typeof httpsCaller>;
  let viaGw: ReturnType<typeof httpsCaller>;
  let viaDefaults: ReturnType<typeof httpsCaller>;
  let admin: Cred, op: Cred, betaAdmin: Cred;
  const events: GatewayRequestEvent[] = [];
  const begun: MutationStart[] = [];
  const originals = new Map<string, Buffer>();
  const observer: MutationObserver = {
    async begin(m) {
      if (m.body && m.keyId !== undefined) originals.set(m.keyId, m.body.bytes);
      begun.push({ ...m, ...(m.body ? { body: { ...m.body, bytes: Buffer.from(m.body.bytes) } } : {}) });
      return String(begun.length);
    },
    async end() {
      return undefined;
    },
  };
  const head = (method: string, path: string, auth?: Cred): string =>
    [`${method} /api/v1${path} HTTP/1.1`, 'Host: localhost', 'Content-Type: application/json', ...(auth ? [`Authorization: ${basicHeader(auth)}`] : [])].join('\r\n');

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha', 'beta'] });
    cert = await createSelfSignedCertificate();
    const common = {
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { caPem: sim.certPem } },
      roles: {
        roleOf: (ns: string) =>
          ns === 'alpha'
            ? ({ role: 'primary', epoch: 1, primarySite: 'a' } as const)
            : ns === 'beta'
              ? ({ role: 'replica', epoch: 1, primarySite: 'b' } as const)
              : undefined,
      },
    };
    gw = new GatewayServer({
      ...common,
      observer,
      onRequest: (e) => events.push(e),
      // A restore would give up on a stuck write after 3 s; a write waits at most 1 s for a restore.
      gate: new DeviceBarrier({ drainTimeoutMs: 3000, maxWaitMs: 1000 }),
      maxWriteBodyBytes: 4096,
      writeBodyTimeoutMs: 1500,
      headersTimeoutMs: 1000,
      requestTimeoutMs: 3000,
      handshakeTimeoutMs: 300,
    });
    gwDefaults = new GatewayServer(common);
    await Promise.all([gw.start(), gwDefaults.start()]);
    direct = httpsCaller(sim.url, sim.certPem);
    viaGw = httpsCaller(gw.url, cert.certPem);
    viaDefaults = httpsCaller(gwDefaults.url, cert.certPem);
    ({ admin, operator: op } = sim.nsUsers.alpha!);
    betaAdmin = sim.nsUsers.beta!.admin;
    const r = await direct.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'signer' } });
    expect(r.status).toBe(201);
  });

  afterAll(async () => {
    await Promise.all([direct?.close(), viaGw?.close(), viaDefaults?.close()]);
    await Promise.all([gw?.close(), gwDefaults?.close()]);
    await sim?.close();
  });

  it('does not count a trickled upload as in flight: a restore holds at once, and the slow sender is cut unforwarded', async () => {
    const upload = slowUpload(gw.port, cert.certPem, head('PUT', '/keys/slowkey', admin), importJson());
    try {
      await guard(upload.continued, 'the gateway never read the request head');
      let ranWhileSending: boolean | undefined;
      // On code that counts the upload in flight, this waits for it and fails with NHR_ERR_GATEWAY_DRAIN_TIMEOUT.
      await gw.gate.exclusive([], async () => {
        ranWhileSending = upload.open;
        expect(gw.gate.inFlight).toBe(0);
      });
      expect(ranWhileSending).toBe(true);
      expect(upload.sent).toBeLessThan(importJson().length);
      const answer = await guard(upload.closed, 'the slow sender was never cut');
      expect(answer).toMatch(/HTTP\/1\.1 408 [^]*\[NHR_ERR_GATEWAY_BODY_TIMEOUT\]/);
    } finally {
      upload.stop();
    }
    expect((await direct.call('GET', '/keys/slowkey', { auth: admin })).status).toBe(404);
    expect(begun.some((b) => b.keyId === 'slowkey')).toBe(false);
    expect(events.filter((e) => e.outcome === 'cut_slow').at(-1)).toMatchObject({ namespace: 'alpha', class: 'mutation', status: 408 });
    expect(gw.gate.inFlight).toBe(0);
  });

  it('lets other writes through while a slow upload trickles and a restore holds', async () => {
    const upload = slowUpload(gw.port, cert.certPem, head('PUT', '/keys/slowkey2', admin), importJson());
    try {
      await guard(upload.continued, 'the gateway never read the request head');
      const restore = deferred();
      const held = gw.gate.exclusive([], () => restore.promise);
      const write = viaGw.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'other' } });
      // On code that counts the upload in flight, the hold is still draining: the restore never starts.
      await guard(
        (async () => {
          while (gw.gate.waiting === 0) await new Promise((r) => setTimeout(r, 2));
        })(),
        'the other write never reached the gate',
      );
      restore.resolve();
      await held;
      expect((await write).status).toBe(201);
      expect(upload.open).toBe(true);
    } finally {
      upload.stop();
    }
    expect((await direct.call('GET', '/keys/other', { auth: admin })).status).toBe(200);
  });

  it('buffers a chunked import whole, forwards it with its length, and shows its body to the change capture', async () => {
    const res = await request(`${gw.url}/api/v1/keys/chunked1`, {
      method: 'PUT',
      headers: { authorization: basicHeader(admin), 'content-type': 'application/json' },
      body: Readable.from([Buffer.from(importJson().slice(0, 20)), Buffer.from(importJson().slice(20))]),
      dispatcher: new Agent({ connect: { ca: cert.certPem } }),
    });
    expect(res.statusCode).toBe(204);
    await res.body.dump();
    const seen = begun.find((b) => b.keyId === 'chunked1');
    expect(seen?.body?.bytes.toString()).toBe(importJson());
    // The buffer held key material: zeroed once the exchange is over.
    await until(() => originals.get('chunked1')?.every((b) => b === 0) === true, 'the import body was zeroed');
    expect((await direct.call('GET', '/keys/chunked1', { auth: admin })).status).toBe(200);
  });

  it('answers an oversized write body with 413 before the gate, forwarding nothing', async () => {
    const big = JSON.stringify({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: SEED }, label: 'x'.repeat(8000) });
    const declared = await viaGw.call('PUT', '/keys/big1', { auth: admin, headers: { 'content-type': 'application/json' }, body: big });
    expect(declared.status).toBe(413);
    expect(declared.headers['content-type']).toBe('application/json');
    expect(JSON.parse(declared.body).message).toMatch(/over 4096 bytes\b.*\[NHR_ERR_GATEWAY_BODY_TOO_LARGE\]$/);
    expect(events.at(-1)).toMatchObject({ namespace: 'alpha', class: 'mutation', outcome: 'rejected_too_large', status: 413 });

    const chunked = await request(`${gw.url}/api/v1/keys/big2`, {
      method: 'PUT',
      headers: { authorization: basicHeader(admin), 'content-type': 'application/json' },
      body: Readable.from([Buffer.from(big.slice(0, 3000)), Buffer.from(big.slice(3000))]),
      dispatcher: new Agent({ connect: { ca: cert.certPem } }),
    });
    expect(chunked.statusCode).toBe(413);
    expect(await chunked.body.text()).toMatch(/NHR_ERR_GATEWAY_BODY_TOO_LARGE/);
    for (const id of ['big1', 'big2']) expect((await direct.call('GET', `/keys/${id}`, { auth: admin })).status).toBe(404);
    expect(begun.some((b) => b.keyId === 'big1' || b.keyId === 'big2')).toBe(false);
    expect(gw.gate.inFlight).toBe(0);
  });

  it('takes the NetHSM body limit (1 MiB) as its default', async () => {
    const over = await viaDefaults.call('PUT', '/keys/big3', { auth: admin, headers: { 'content-type': 'application/json' }, body: Buffer.alloc(1024 * 1024 + 1, 0x20) });
    expect(over.status).toBe(413);
    expect(over.body).toMatch(/NHR_ERR_GATEWAY_BODY_TOO_LARGE/);
    // At the limit the NetHSM judges the body (whitespace is not a key).
    const at = await viaDefaults.call('PUT', '/keys/big3', { auth: admin, headers: { 'content-type': 'application/json' }, body: Buffer.alloc(1024 * 1024, 0x20) });
    expect(at.status).toBe(400);
  });

  it('cuts a body trickled without credentials, whatever the call', async () => {
    const upload = slowUpload(gw.port, cert.certPem, head('POST', '/keys/signer/sign'), '{"mode":"EdDSA","message":"bQ=="}');
    try {
      const answer = await guard(upload.closed, 'a body without credentials held its connection open');
      expect(answer).toMatch(/HTTP\/1\.1 408 /);
    } finally {
      upload.stop();
    }
    expect(events.at(-1)).toMatchObject({ namespace: undefined, class: 'crypto', outcome: 'cut_slow' });
  });

  it('closes the connection when the NetHSM answered before the body was sent (a wrong password)', async () => {
    // A user of its own: the NetHSM then rate-limits that name (429) for a second, not the operator's.
    const upload = slowUpload(gw.port, cert.certPem, head('POST', '/keys/signer/sign', { username: 'alpha~ghost', password: 'wrongPassphrase' }), '{}');
    try {
      const answer = await guard(upload.closed, 'the connection stayed open after the answer');
      // The NetHSM's answer, marked as the connection's last (without waiting for a body nobody will read).
      expect(answer).toMatch(/HTTP\/1\.1 401 [^]*\r\nconnection: close\r\n/i);
    } finally {
      upload.stop();
    }
  });

  it('closes the connection of a refused write without reading its body', async () => {
    const upload = slowUpload(gw.port, cert.certPem, head('PUT', '/keys/r1', betaAdmin), importJson());
    try {
      const answer = await guard(upload.closed, 'the refused write held its connection open');
      expect(answer).toMatch(/HTTP\/1\.1 403 [^]*NHR_ERR_GATEWAY_READ_ONLY/);
    } finally {
      upload.stop();
    }
  });

  it('cuts a streamed crypto call whose body does not arrive within the request timeout', async () => {
    const upload = slowUpload(gw.port, cert.certPem, head('POST', '/keys/signer/sign', op), '{"mode":"EdDSA","message":"bQ==');
    try {
      await guard(upload.continued, 'the gateway never read the request head');
      const answer = await guard(upload.closed, 'the slow crypto call was never cut');
      // Cut after `100 Continue`: no answer of its own can follow (Node writes 408 only on a fresh connection).
      expect(answer).not.toMatch(/HTTP\/1\.1 200 /);
    } finally {
      upload.stop();
    }
    expect(events.at(-1)).toMatchObject({ namespace: 'alpha', class: 'crypto', outcome: 'cut_slow' });
  });

  it('cuts a request head that never ends', async () => {
    const before = events.length;
    const answer = await guard(rawTlsRequest(gw.port, cert.certPem, 'GET /api/v1/keys HTTP/1.1\r\nHost: localhost\r\n', 30_000), 'the head was never cut');
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(events.slice(before)).toEqual([{ namespace: undefined, class: 'other', outcome: 'cut_slow', status: 408 }]);
  });

  it('cuts TCP connections that never finish the TLS handshake', async () => {
    for (const mode of ['silent', 'trickle'] as const) {
      const before = events.length;
      const h = stalledHandshake(gw.port, mode);
      try {
        await guard(h.closed, `a ${mode} handshake was never cut`);
      } finally {
        h.stop();
      }
      expect(events.slice(before)).toEqual([{ namespace: undefined, class: 'other', outcome: 'cut_slow' }]);
    }
  });

  it('refuses a limit that is not a positive integer', () => {
    const base = { site: 'a', tls: { certPem: cert.certPem, keyPem: cert.keyPem }, nethsm: { url: sim.url, tls: { caPem: sim.certPem } }, roles: { roleOf: () => undefined } };
    for (const bad of [{ maxWriteBodyBytes: 0 }, { writeBodyTimeoutMs: -1 }, { requestTimeoutMs: 1.5 }, { handshakeTimeoutMs: Number.NaN }]) {
      expect(() => new GatewayServer({ ...base, ...bad })).toThrow(RangeError);
    }
  });

  it('still serves a sign call through the gateway', async () => {
    const r = await viaGw.call('POST', '/keys/signer/sign', { auth: op, json: { mode: 'EdDSA', message: Buffer.from('m').toString('base64') } });
    expect(r.status).toBe(200);
  });
});
