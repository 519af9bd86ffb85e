import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createSelfSignedCertificate, type CertificateBundle } from '../tls/index.js';
import { GatewayServer, type GatewayRequestEvent } from './server.js';
import { basicHeader, capturingLogger, httpsCaller, rawTlsRequest, type Cred } from './test-support.js';

describe('gateway with bad input', () => {
  let sim: ProvisionedSimulator;
  let cert: CertificateBundle;
  let gw: GatewayServer;
  let direct: ReturnType<typeof httpsCaller>;
  let viaGw: ReturnType<typeof httpsCaller>;
  const events: GatewayRequestEvent[] = [];
  const log = capturingLogger();
  let alphaAdmin: Cred, betaAdmin: Cred;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha', 'beta'] });
    cert = await createSelfSignedCertificate();
    gw = new GatewayServer({
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { fingerprint256: sim.fingerprint256 } },
      roles: {
        roleOf: (ns) =>
          ns === 'beta' ? { role: 'replica', epoch: 4, primarySite: 'b' } : ns === 'alpha' ? { role: 'primary', epoch: 1, primarySite: 'a' } : undefined,
      },
      onRequest: (e) => events.push(e),
      logger: log.logger,
    });
    await gw.start();
    direct = httpsCaller(sim.url, sim.certPem);
    viaGw = httpsCaller(gw.url, cert.certPem);
    ({ admin: alphaAdmin } = sim.nsUsers.alpha!);
    ({ admin: betaAdmin } = sim.nsUsers.beta!);
  });

  afterAll(async () => {
    await Promise.all([direct?.close(), viaGw?.close()]);
    await gw?.close();
    await sim?.close();
  });

  const raw = (head: string) => rawTlsRequest(gw.port, cert.certPem, head);
  const stillServing = async () => expect((await viaGw.call('GET', '/health/state')).status).toBe(200);
  const namespacesIntact = async () =>
    expect(JSON.parse((await direct.call('GET', '/namespaces', { auth: sim.users.admin })).body)).toEqual([{ id: 'alpha' }, { id: 'beta' }]);

  it.each([
    ['POST /api/v1/../system/restore', 'dot segment'],
    ['DELETE /api/v1/keys/../namespaces/beta', 'dot segment'],
    ['DELETE /api/v1/keys/%2e%2e/namespaces/beta', 'dot segment'],
    ['DELETE /api/v1/namespaces/beta%2F..', 'slash'],
    ['DELETE /api/v1//namespaces/beta', 'empty path segment'],
    ['DELETE https://127.0.0.1/api/v1/namespaces/beta', 'must be a path'],
  ])('answers %s itself without forwarding (%s)', async (line, why) => {
    const answer = await raw(`${line} HTTP/1.1\r\nHost: x\r\nAuthorization: ${basicHeader(sim.users.admin)}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain(why);
    expect(answer).toContain('NHR_ERR_GATEWAY_REQUEST_INVALID');
    expect(events.at(-1)).toMatchObject({ outcome: 'rejected_input', status: 400 });
    await namespacesIntact();
  });

  it('answers targets outside /api/v1 with 404', async () => {
    const answer = await raw(`GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 404 /);
  });

  it('refuses writes with malformed or duplicated Basic credentials with an empty 401', async () => {
    for (const authorization of [
      'Basic ' + Buffer.from(`${betaAdmin.username}:xy`).toString('base64').replace(/=+$/, ''), // unpadded
      'Basic ' + Buffer.from('beta~admin').toString('base64'), // no colon
      'Bearer token',
    ]) {
      const r = await viaGw.call('POST', '/keys/generate', {
        headers: { authorization },
        json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'sneaky' },
      });
      expect(r.status, authorization).toBe(401);
      expect(r.body).toBe('');
      expect(r.headers['www-authenticate']).toMatch(/^Basic/);
    }
    const dup = await raw(
      `DELETE /api/v1/keys/k1 HTTP/1.1\r\nHost: x\r\nAuthorization: ${basicHeader(alphaAdmin)}\r\nAuthorization: ${basicHeader(betaAdmin)}\r\nConnection: close\r\n\r\n`,
    );
    expect(dup).toMatch(/^HTTP\/1\.1 401 /);
    expect((await direct.call('GET', '/keys/sneaky', { auth: betaAdmin })).status).toBe(404);
    expect((await direct.call('GET', '/keys/sneaky', { auth: alphaAdmin })).status).toBe(404);
  });

  it('forwards reads with malformed credentials and lets the NetHSM answer', async () => {
    const r = await viaGw.call('GET', '/keys', { headers: { authorization: 'Basic !!!' } });
    const d = await direct.call('GET', '/keys', { headers: { authorization: 'Basic !!!' } });
    expect(r.status).toBe(d.status);
  });

  it('refuses unknown methods on a replica namespace and forwards them for a primary one', async () => {
    const replica = await raw(`PATCH /api/v1/keys/k1 HTTP/1.1\r\nHost: x\r\nAuthorization: ${basicHeader(betaAdmin)}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    expect(replica).toMatch(/^HTTP\/1\.1 403 /);
    const primary = await raw(`PATCH /api/v1/keys/k1 HTTP/1.1\r\nHost: x\r\nAuthorization: ${basicHeader(alphaAdmin)}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    expect(primary).toMatch(/^HTTP\/1\.1 (405|501) /);
  });

  it('answers oversized headers with 431 and keeps serving', async () => {
    const answer = await raw(`GET /api/v1/info HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(32 * 1024)}\r\nConnection: close\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 431 /);
    await stillServing();
  });

  it('answers a garbage request line with 400 and keeps serving', async () => {
    const answer = await raw(`\x00\x01 nonsense\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    await stillServing();
  });

  it('answers 502 with a NetHSM-style message when the NetHSM cannot be reached', async () => {
    const down = new GatewayServer({
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: 'https://127.0.0.1:1', tls: { insecure: true } },
      roles: { roleOf: () => undefined },
    });
    await down.start();
    const c = httpsCaller(down.url, cert.certPem);
    try {
      const r = await c.call('GET', '/info');
      expect(r.status).toBe(502);
      expect(JSON.parse(r.body)).toEqual({ message: 'the gateway could not reach the NetHSM [NHR_ERR_NETHSM_UNREACHABLE]' });
    } finally {
      await c.close();
      await down.close();
    }
  });

  it('refuses a NetHSM whose certificate does not match the pinned fingerprint', async () => {
    const pinned = new GatewayServer({
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { fingerprint256: cert.fingerprint256 } },
      roles: { roleOf: () => undefined },
      logger: log.logger,
    });
    await pinned.start();
    const c = httpsCaller(pinned.url, cert.certPem);
    try {
      const r = await c.call('GET', '/keys', { auth: alphaAdmin });
      expect(r.status).toBe(502);
      expect(JSON.parse(r.body)).toEqual({
        message: 'the gateway does not trust the TLS certificate of the NetHSM [NHR_ERR_NETHSM_TLS_PIN_MISMATCH]',
      });
      // The details are for the operator's log, not for the client.
      expect(log.lines.join('')).toContain(cert.fingerprint256);
    } finally {
      await c.close();
      await pinned.close();
    }
  });

  it('logs none of the credentials it was sent', () => {
    const text = log.lines.join('');
    expect(text).not.toContain(betaAdmin.password);
    expect(text).not.toContain(alphaAdmin.password);
    expect(text).not.toContain(Buffer.from(`${betaAdmin.username}:${betaAdmin.password}`).toString('base64').slice(0, 20));
  });
});
