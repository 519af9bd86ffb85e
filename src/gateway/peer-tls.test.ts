/**
 * Mutual TLS between gateways: with the group CA configured (`peerCaPem`), a gateway takes the forwarding marker only
 * from a client presenting a certificate of that CA (another site's gateway); applications, which present none, are
 * served as before. Every forwarded answer names the site whose NetHSM made it.
 */
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createCa, issueCert, type CertificateBundle } from '../tls/index.js';
import { GatewayServer } from './server.js';
import { basicHeader } from './test-support.js';

describe('gateway: the forwarding marker only over mutual TLS with the group CA', () => {
  let sim: ProvisionedSimulator;
  let gw: GatewayServer;
  let ca: CertificateBundle;
  let peerA: CertificateBundle;
  let rogue: CertificateBundle;
  const agents: Agent[] = [];

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha'] });
    ca = await createCa({ commonName: 'group CA' });
    const server = await issueCert(ca, { commonName: 'b-gateway', usages: ['serverAuth'], ipAddresses: ['127.0.0.1'] });
    peerA = await issueCert(ca, { commonName: 'a', usages: ['serverAuth', 'clientAuth'] });
    rogue = await issueCert(await createCa({ commonName: 'other CA' }), { commonName: 'a', usages: ['clientAuth'] });
    gw = new GatewayServer({
      site: 'b',
      tls: { certPem: server.certPem, keyPem: server.keyPem },
      nethsm: { url: sim.url, tls: { fingerprint256: sim.fingerprint256 } },
      roles: { roleOf: (ns) => (ns === 'alpha' ? { role: 'replica', epoch: 2, primarySite: 'a' } : undefined) },
      peerCaPem: ca.certPem,
    });
    await gw.start();
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await gw?.close();
    await sim?.close();
  });

  async function listKeys(client: CertificateBundle | undefined, via: boolean) {
    const agent = new Agent({ connect: { ca: ca.certPem, ...(client ? { cert: client.certPem, key: client.keyPem } : {}) } });
    agents.push(agent);
    const headers: Record<string, string> = { authorization: basicHeader(sim.nsUsers.alpha!.operator) };
    if (via) headers['x-nethsm-replicator-via'] = 'a';
    const res = await request(`${gw.url}/api/v1/keys`, { headers, dispatcher: agent });
    return { status: res.statusCode, servedBy: res.headers['x-nethsm-replicator-served-by'], body: await res.body.text() };
  }

  it('serves an application that presents no certificate, naming the site that served it', async () => {
    expect(await listKeys(undefined, false)).toEqual({ status: 200, servedBy: 'b', body: '[]' });
  });

  it("serves a call another site's gateway forwarded with its group certificate", async () => {
    expect(await listKeys(peerA, true)).toMatchObject({ status: 200, servedBy: 'b' });
  });

  it('refuses the marker without a certificate, or with one of another CA', async () => {
    for (const client of [undefined, rogue]) {
      const r = await listKeys(client, true);
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body).message).toBe(
        "x-nethsm-replicator-via is accepted only from another site's gateway, presenting a certificate of the group CA [NHR_ERR_GATEWAY_REQUEST_INVALID]",
      );
    }
  });

  it('refuses remote serving without trust for the peer gateways', () => {
    expect(
      () =>
        new GatewayServer({
          site: 'b',
          tls: { certPem: ca.certPem, keyPem: ca.keyPem },
          nethsm: { url: sim.url, tls: { fingerprint256: sim.fingerprint256 } },
          roles: { roleOf: () => undefined },
          remoteServing: {} as never,
        }),
    ).toThrow('gateway option remoteServing needs primaryGateways (trust for the peer gateways)');
  });
});
