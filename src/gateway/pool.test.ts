/**
 * The gateway's pool of connections to the NetHSM (`nethsm.connections`, `gateway.nethsmConnections`): it bounds the
 * requests in flight at the device; more wait in the gateway, and one whose client goes away while it waits is never
 * sent. The simulator's sign latency makes "in flight at the device" visible without timing the gateway itself.
 */
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createSelfSignedCertificate, type CertificateBundle } from '../tls/index.js';
import { GatewayServer, type GatewayRequestEvent } from './server.js';
import { basicHeader, httpsCaller, until, type Cred } from './test-support.js';

const SIGN_MS = 400;
const signJson = JSON.stringify({ mode: 'EdDSA', message: Buffer.from('m').toString('base64') });

describe("gateway: its pool of connections to the NetHSM", () => {
  let sim: ProvisionedSimulator;
  let cert: CertificateBundle;
  let gw: GatewayServer;
  let direct: ReturnType<typeof httpsCaller>;
  let viaGw: ReturnType<typeof httpsCaller>;
  let admin: Cred, op: Cred;
  const events: GatewayRequestEvent[] = [];

  const operations = async (): Promise<number> => {
    const r = await direct.call('GET', '/keys/signer', { auth: admin });
    return (JSON.parse(r.body) as { operations: number }).operations;
  };

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha'], latency: { sign: SIGN_MS } });
    cert = await createSelfSignedCertificate();
    gw = new GatewayServer({
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { caPem: sim.certPem }, connections: 1 },
      roles: { roleOf: () => undefined },
      onRequest: (e) => events.push(e),
    });
    await gw.start();
    direct = httpsCaller(sim.url, sim.certPem);
    viaGw = httpsCaller(gw.url, cert.certPem);
    ({ admin, operator: op } = sim.nsUsers.alpha!);
    const r = await direct.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'signer' } });
    expect(r.status).toBe(201);
  });

  afterAll(async () => {
    await Promise.all([direct?.close(), viaGw?.close()]);
    await gw?.close();
    await sim?.close();
  });

  it('keeps at most `connections` requests in flight at the NetHSM: with one, two signs run one after the other', async () => {
    const sign = (): Promise<number> =>
      viaGw.call('POST', '/keys/signer/sign', { auth: op, body: signJson, headers: { 'content-type': 'application/json' } }).then((r) => {
        expect(r.status).toBe(200);
        return performance.now();
      });
    const [first, second] = await Promise.all([sign(), sign()]);
    // Each takes at least SIGN_MS at the device; one connection means the second starts only when the first is done.
    // (Two connections would finish both within a few ms of each other.)
    expect(Math.abs(second - first)).toBeGreaterThanOrEqual(SIGN_MS * 0.9);
  });

  it('never sends a request whose client went away while it waited for a connection', async () => {
    const before = await operations();
    const seen = events.length;
    const inFlight = viaGw.call('POST', '/keys/signer/sign', { auth: op, body: signJson, headers: { 'content-type': 'application/json' } });
    // A second sign on a connection of its own, queued behind the first (the pool has one connection), then dropped.
    const socket = tls.connect({ host: '127.0.0.1', port: gw.port, ca: cert.certPem, servername: 'localhost' });
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    socket.write(
      [
        'POST /api/v1/keys/signer/sign HTTP/1.1',
        'Host: localhost',
        `Authorization: ${basicHeader(op)}`,
        'Content-Type: application/json',
        `Content-Length: ${Buffer.byteLength(signJson)}`,
        '',
        signJson,
      ].join('\r\n'),
    );
    await new Promise((r) => setTimeout(r, SIGN_MS / 4));
    socket.destroy();
    expect((await inFlight).status).toBe(200);
    // The dropped request is reported (as an error, no status) once the gateway has given up on it.
    await until(() => events.length >= seen + 2, 'both requests reported');
    // Had it been sent after the first, the device would have counted it within another SIGN_MS.
    await new Promise((r) => setTimeout(r, SIGN_MS * 2));
    expect(await operations()).toBe(before + 1);
    expect(events.slice(seen).map((e) => e.outcome).sort()).toEqual(['error', 'forwarded']);
  });
});
