import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createSelfSignedCertificate } from '../tls/index.js';
import type { NamespaceRole } from './policy.js';
import { GatewayServer } from './server.js';
import { httpsCaller } from './test-support.js';

describe('gateway forwarding replica writes to the primary site', () => {
  let simA: ProvisionedSimulator;
  let simB: ProvisionedSimulator;
  let gwA: GatewayServer;
  let gwB: GatewayServer;
  let gwNoTrust: GatewayServer;
  const rolesA = new Map<string, NamespaceRole>();
  const rolesB = new Map<string, NamespaceRole>();
  let directA: ReturnType<typeof httpsCaller>;
  let directB: ReturnType<typeof httpsCaller>;
  let viaA: ReturnType<typeof httpsCaller>;
  let viaNoTrust: ReturnType<typeof httpsCaller>;

  beforeAll(async () => {
    [simA, simB] = await Promise.all([startProvisionedSimulator({ namespaces: ['delta'] }), startProvisionedSimulator({ namespaces: ['delta'] })]);
    const [certA, certB] = await Promise.all([createSelfSignedCertificate(), createSelfSignedCertificate()]);
    gwB = new GatewayServer({
      site: 'b',
      tls: { certPem: certB.certPem, keyPem: certB.keyPem },
      nethsm: { url: simB.url, tls: { fingerprint256: simB.fingerprint256 } },
      roles: { roleOf: (ns) => rolesB.get(ns) },
      primaryGateways: { tls: { caPem: certA.certPem } },
    });
    await gwB.start();
    const a = {
      site: 'a',
      tls: { certPem: certA.certPem, keyPem: certA.keyPem },
      nethsm: { url: simA.url, tls: { fingerprint256: simA.fingerprint256 } },
      roles: { roleOf: (ns: string) => rolesA.get(ns) },
    };
    gwA = new GatewayServer({ ...a, primaryGateways: { tls: { caPem: certB.certPem } } });
    gwNoTrust = new GatewayServer(a);
    await Promise.all([gwA.start(), gwNoTrust.start()]);
    rolesB.set('delta', { role: 'primary', epoch: 2, primarySite: 'b' });
    rolesA.set('delta', { role: 'replica', epoch: 2, primarySite: 'b', primaryGatewayUrl: gwB.url + '/api/v1' });
    directA = httpsCaller(simA.url, simA.certPem);
    directB = httpsCaller(simB.url, simB.certPem);
    viaA = httpsCaller(gwA.url, certA.certPem);
    viaNoTrust = httpsCaller(gwNoTrust.url, certA.certPem);
  });

  afterAll(async () => {
    await Promise.all([directA?.close(), directB?.close(), viaA?.close(), viaNoTrust?.close()]);
    await Promise.all([gwA?.close(), gwB?.close(), gwNoTrust?.close()]);
    await Promise.all([simA?.close(), simB?.close()]);
  });

  it("sends the write to the primary's gateway with auth untouched and serves reads locally", async () => {
    const admin = simA.nsUsers.delta!.admin; // the fixture gives both sites the same namespace credentials
    const r = await viaA.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'fwd1' } });
    expect(r.status).toBe(201);
    expect(r.headers['location']).toBe('/api/v1/keys/fwd1');
    expect((await directB.call('GET', '/keys/fwd1', { auth: admin })).status).toBe(200);
    expect((await directA.call('GET', '/keys/fwd1', { auth: admin })).status).toBe(404);
    // Reads at A are A's own.
    expect(JSON.parse((await viaA.call('GET', '/keys', { auth: admin })).body)).toEqual([]);
    // The primary's error answers come back as they are.
    const dup = await viaA.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'fwd1' } });
    expect(dup.status).toBe(400);
    expect(JSON.parse(dup.body).message).toContain('already exists');
  });

  it('refuses instead of forwarding a second time when both sites name each other (loop guard)', async () => {
    rolesB.set('delta', { role: 'replica', epoch: 3, primarySite: 'a', primaryGatewayUrl: gwA.url });
    try {
      const r = await viaA.call('DELETE', '/keys/fwd1', { auth: simA.nsUsers.delta!.admin });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body).message).toContain('already came through the gateway of site a');
      expect((await directB.call('GET', '/keys/fwd1', { auth: simB.nsUsers.delta!.admin })).status).toBe(200);
    } finally {
      rolesB.set('delta', { role: 'primary', epoch: 2, primarySite: 'b' });
    }
  });

  it('refuses the write when no trust for other gateways is configured', async () => {
    const r = await viaNoTrust.call('DELETE', '/keys/fwd1', { auth: simA.nsUsers.delta!.admin });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body).message).toBe(
      'namespace delta is a read-only replica at site a (epoch 2); its primary is site b [NHR_ERR_GATEWAY_READ_ONLY]',
    );
    expect((await directB.call('GET', '/keys/fwd1', { auth: simB.nsUsers.delta!.admin })).status).toBe(200);
  });
});
