/**
 * A NetHSM that does not answer within `nethsm.timeoutMs`: the client gets a 504 naming the timeout, not a connection
 * closed under it. The client's socket is idle while the gateway waits for the NetHSM, so its idle timeout must not
 * end before the upstream one does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createSelfSignedCertificate } from '../tls/index.js';
import { GatewayServer, type GatewayRequestEvent } from './server.js';
import { httpsCaller } from './test-support.js';

const TIMEOUT_MS = 400;

describe('gateway: the NetHSM answers too late', () => {
  let sim: ProvisionedSimulator;
  let gw: GatewayServer;
  let viaGw: ReturnType<typeof httpsCaller>;
  const events: GatewayRequestEvent[] = [];

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha'], latency: { sign: 2_000 } });
    const cert = await createSelfSignedCertificate();
    gw = new GatewayServer({
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { caPem: sim.certPem }, timeoutMs: TIMEOUT_MS },
      roles: { roleOf: (ns: string) => (ns === 'alpha' ? ({ role: 'primary', epoch: 1, primarySite: 'a' } as const) : undefined) },
      onRequest: (e) => events.push(e),
    });
    await gw.start();
    viaGw = httpsCaller(gw.url, cert.certPem);
    const direct = httpsCaller(sim.url, sim.certPem);
    try {
      const r = await direct.call('POST', '/keys/generate', { auth: sim.nsUsers.alpha!.admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'signer' } });
      expect(r.status).toBe(201);
    } finally {
      await direct.close();
    }
  });

  afterAll(async () => {
    await viaGw?.close();
    await gw?.close();
    await sim?.close();
  });

  it('answers 504 with the timeout code and the limit, on every try', async () => {
    // Before the fix the client's socket idle timeout equalled nethsm.timeoutMs and started first: "other side closed".
    for (let i = 0; i < 3; i++) {
      const r = await viaGw.call('POST', '/keys/signer/sign', {
        auth: sim.nsUsers.alpha!.operator,
        json: { mode: 'EdDSA', message: Buffer.from('hello').toString('base64') },
      });
      expect(r.status).toBe(504);
      expect(r.body).toContain('NHR_ERR_NETHSM_TIMEOUT');
      expect(r.body).toContain(`${TIMEOUT_MS} ms`);
    }
    expect(events.filter((e) => e.status === 504)).toHaveLength(3);
  });
});
