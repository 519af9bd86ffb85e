/**
 * The gateway while its NetHSM is down (remote serving, docs/gateway.md "Serving from a peer"), gateway by gateway:
 * which calls go to the peer's gateway (over mutual TLS, credentials untouched) and which get 503 with the cause.
 * The peer's serving view is given directly here; the daemon's (over the peer API) is covered by
 * test/integration/remote-serving.test.ts.
 */
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServingView } from '../peer/messages.js';
import { simCaller, startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createCa, issueCert, type CertificateBundle } from '../tls/index.js';
import type { NamespaceRole } from './policy.js';
import { RemoteServing } from './remote-serving.js';
import { GatewayServer, type GatewayRequestEvent } from './server.js';
import { basicHeader, type Cred } from './test-support.js';

describe('gateway: serving while this site’s NetHSM is down', () => {
  let simB: ProvisionedSimulator;
  let gwA: GatewayServer;
  let gwB: GatewayServer;
  let ca: CertificateBundle;
  let peerA: CertificateBundle;
  let agent: Agent;
  let viewOfB: ServingView;
  const events: GatewayRequestEvent[] = [];
  const rolesA = new Map<string, NamespaceRole>([['alpha', { role: 'primary', epoch: 2, primarySite: 'a' }]]);

  beforeAll(async () => {
    simB = await startProvisionedSimulator({ namespaces: ['alpha', 'beta'] });
    ca = await createCa({ commonName: 'group CA' });
    const [certA, certB] = await Promise.all(['a', 'b'].map((s) => issueCert(ca, { commonName: `${s}-gateway`, usages: ['serverAuth'], ipAddresses: ['127.0.0.1'] })));
    peerA = await issueCert(ca, { commonName: 'a', usages: ['serverAuth', 'clientAuth'] });
    gwB = new GatewayServer({
      site: 'b',
      tls: { certPem: certB!.certPem, keyPem: certB!.keyPem },
      nethsm: { url: simB.url, tls: { fingerprint256: simB.fingerprint256 } },
      roles: { roleOf: (ns) => (ns === 'alpha' ? { role: 'replica', epoch: 2, primarySite: 'a' } : undefined) },
      peerCaPem: ca.certPem,
    });
    await gwB.start();
    viewOfB = { site: 'b', nethsm: 'ok', gateway: true, namespaces: [{ namespace: 'alpha', role: 'replica', epoch: 2, primarySite: 'a', lagSeconds: 1 }] };
    const remoteServing = new RemoteServing({
      peers: [{ name: 'b', gatewayUrl: gwB.url }],
      fetchView: async () => viewOfB,
      maxLagMs: 30_000,
      recoverAfter: 1,
      viewTtlMs: 1,
      routing: 'local-first',
    });
    remoteServing.observeLocal(true, 'unreachable: connect ECONNREFUSED');
    gwA = new GatewayServer({
      site: 'a',
      tls: { certPem: certA!.certPem, keyPem: certA!.keyPem },
      // Nothing listens there: this site's NetHSM is down.
      nethsm: { url: 'https://127.0.0.1:9', tls: { fingerprint256: simB.fingerprint256 } },
      roles: { roleOf: (ns) => rolesA.get(ns) },
      primaryGateways: { tls: { caPem: ca.certPem }, clientIdentity: { certPem: peerA.certPem, keyPem: peerA.keyPem } },
      peerCaPem: ca.certPem,
      remoteServing,
      onRequest: (e) => events.push(e),
    });
    await gwA.start();
    agent = new Agent({ connect: { ca: ca.certPem } });
  });

  afterAll(async () => {
    await agent?.close();
    await Promise.all([gwA?.close(), gwB?.close()]);
    await simB?.close();
  });

  async function call(method: string, path: string, auth: Cred, opts: { json?: unknown; headers?: Record<string, string>; dispatcher?: Agent } = {}) {
    const headers: Record<string, string> = { authorization: basicHeader(auth), ...opts.headers };
    if (opts.json !== undefined) headers['content-type'] = 'application/json';
    const res = await request(`${gwA.url}/api/v1${path}`, {
      method: method as 'GET',
      headers,
      body: opts.json === undefined ? undefined : JSON.stringify(opts.json),
      dispatcher: opts.dispatcher ?? agent,
    });
    const body = await res.body.text();
    return { status: res.statusCode, headers: res.headers, body, message: res.statusCode >= 400 && body ? (JSON.parse(body) as { message: string }).message : undefined };
  }

  it("serves reads and crypto of a replicated namespace from the peer's gateway, credentials untouched", async () => {
    const admin = simB.nsUsers.alpha!.admin;
    const direct = simCaller(simB);
    await direct.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'k1' }, expect: 201 });
    await direct.close();
    const op = simB.nsUsers.alpha!.operator;
    const list = await call('GET', '/keys', op);
    expect(list).toMatchObject({ status: 200, body: '[{"id":"k1"}]' });
    expect(list.headers['x-nethsm-replicator-served-by']).toBe('b');
    const sign = await call('POST', '/keys/k1/sign', op, { json: { mode: 'EdDSA', message: Buffer.from('hi').toString('base64') } });
    expect(sign.status).toBe(200);
    expect(sign.headers['x-nethsm-replicator-served-by']).toBe('b');
    // Wrong credentials are the peer NetHSM's to refuse, as they would be here.
    // (alpha~admin: the NetHSM then rate-limits that user's logins for a second, and later tests sign as the operator.)
    expect((await call('GET', '/keys', { ...simB.nsUsers.alpha!.admin, password: 'wrong' })).status).toBe(401);
    expect(events.filter((e) => e.outcome === 'served_remote').every((e) => e.peer === 'b' && e.namespace === 'alpha')).toBe(true);
  });

  it('refuses writes for a namespace primary here with 503, Retry-After and the cause, sending nothing to the replica', async () => {
    const r = await call('POST', '/keys/generate', simB.nsUsers.alpha!.admin, { json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'k2' } });
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('5');
    expect(r.message).toBe(
      'namespace alpha is primary at site a and the NetHSM of site a is down (unreachable: connect ECONNREFUSED); writes wait for it and are never sent to a replica [NHR_ERR_GATEWAY_LOCAL_DOWN]',
    );
    expect(events.at(-1)).toMatchObject({ outcome: 'refused_local_down', class: 'mutation', status: 503 });
  });

  it('refuses root-namespace and unreplicated calls: only this NetHSM holds them', async () => {
    const root = await call('GET', '/keys', simB.users.admin);
    expect(root.status).toBe(503);
    expect(root.message).toMatch(/down \(unreachable: connect ECONNREFUSED\); root-namespace calls are served by this site's NetHSM only \[NHR_ERR_GATEWAY_LOCAL_DOWN\]$/);
    const beta = await call('GET', '/keys', simB.nsUsers.beta!.operator);
    expect(beta.status).toBe(503);
    expect(beta.message).toMatch(/calls for namespace beta, which is not replicated, are served by this site's NetHSM only/);
  });

  it("never forwards a call another gateway forwarded here (loop guard)", async () => {
    const asPeer = new Agent({ connect: { ca: ca.certPem, cert: peerA.certPem, key: peerA.keyPem } });
    try {
      const r = await call('GET', '/keys', simB.nsUsers.alpha!.operator, { headers: { 'x-nethsm-replicator-via': 'c' }, dispatcher: asPeer });
      expect(r.status).toBe(503);
      expect(r.message).toMatch(/the call came through the gateway of site c and is not forwarded again \[NHR_ERR_GATEWAY_LOCAL_DOWN\]$/);
    } finally {
      await asPeer.close();
    }
  });

  it('serves the very call that found the NetHSM unreachable from the peer, instead of failing it', async () => {
    const rs = new RemoteServing({ peers: [{ name: 'b', gatewayUrl: gwB.url }], fetchView: async () => viewOfB, maxLagMs: 30_000, recoverAfter: 1, viewTtlMs: 1, routing: 'local-first' });
    const told: string[] = [];
    const certC = await issueCert(ca, { commonName: 'c-gateway', usages: ['serverAuth'], ipAddresses: ['127.0.0.1'] });
    const gwC = new GatewayServer({
      site: 'a',
      tls: { certPem: certC.certPem, keyPem: certC.keyPem },
      nethsm: { url: 'https://127.0.0.1:9', tls: { fingerprint256: simB.fingerprint256 } },
      roles: { roleOf: (ns) => rolesA.get(ns) },
      primaryGateways: { tls: { caPem: ca.certPem }, clientIdentity: { certPem: peerA.certPem, keyPem: peerA.keyPem } },
      remoteServing: rs,
      // As the daemon does: the member monitor marks the NetHSM down, which puts serving remote.
      onNethsmUnreachable: (err) => {
        told.push(err.constructor.name);
        rs.observeLocal(true, `unreachable: ${err.message}`);
      },
    });
    await gwC.start();
    const viaC = new Agent({ connect: { ca: ca.certPem } });
    try {
      expect(rs.remote).toBe(false);
      const op = simB.nsUsers.alpha!.operator;
      const res = await request(`${gwC.url}/api/v1/keys/k1/sign`, {
        method: 'POST',
        headers: { authorization: basicHeader(op), 'content-type': 'application/json' },
        body: JSON.stringify({ mode: 'EdDSA', message: Buffer.from('first').toString('base64') }),
        dispatcher: viaC,
      });
      expect(res.statusCode, await res.body.text()).toBe(200);
      expect(res.headers['x-nethsm-replicator-served-by']).toBe('b');
      expect(told).toEqual(['NetHsmUnreachableError']);
      expect(rs.remote).toBe(true);
    } finally {
      await viaC.close();
      await gwC.close();
    }
  });

  it('refuses rather than serving from a replica past maxLag, or from one whose NetHSM is down too', async () => {
    const fresh = viewOfB;
    try {
      viewOfB = { ...fresh, namespaces: [{ ...fresh.namespaces[0]!, lagSeconds: 45 }] };
      await new Promise((r) => setTimeout(r, 5));
      const r = await call('GET', '/keys', simB.nsUsers.alpha!.operator);
      expect(r.status).toBe(503);
      expect(r.headers['retry-after']).toBe('5');
      expect(r.message).toBe(
        'the NetHSM of site a is down (unreachable: connect ECONNREFUSED) and no peer can serve namespace alpha: replica b lags 45 s > maxLag 30 s [NHR_ERR_GATEWAY_NO_PEER]',
      );
      expect(events.at(-1)).toMatchObject({ outcome: 'refused_no_peer', class: 'read' });
      viewOfB = { ...fresh, nethsm: 'down' };
      await new Promise((r) => setTimeout(r, 5));
      expect((await call('GET', '/keys', simB.nsUsers.alpha!.operator)).message).toMatch(/site b's NetHSM is down too/);
    } finally {
      viewOfB = fresh;
    }
  });
});
