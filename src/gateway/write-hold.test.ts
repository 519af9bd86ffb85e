import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createSelfSignedCertificate } from '../tls/index.js';
import type { MutationObserver } from './observer.js';
import { GatewayServer, type GatewayRequestEvent } from './server.js';
import { httpsCaller, until, type Cred } from './test-support.js';
import { DeviceBarrier } from '../concurrency/barrier.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('gateway write hold during a merge-restore', () => {
  let sim: ProvisionedSimulator;
  let gw: GatewayServer;
  let gwShort: GatewayServer;
  let direct: ReturnType<typeof httpsCaller>;
  let viaGw: ReturnType<typeof httpsCaller>;
  let viaShort: ReturnType<typeof httpsCaller>;
  let admin: Cred, op: Cred;
  const events: GatewayRequestEvent[] = [];
  let beginGate: Promise<void> | undefined;
  let begun = 0;
  const observer: MutationObserver = {
    async begin() {
      begun++;
      await beginGate;
      return 'intent';
    },
    async end() {
      return undefined;
    },
  };

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha'] });
    const cert = await createSelfSignedCertificate();
    const common = {
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { caPem: sim.certPem } },
      roles: { roleOf: (ns: string) => (ns === 'alpha' ? ({ role: 'primary', epoch: 1, primarySite: 'a' } as const) : undefined) },
      onRequest: (e: GatewayRequestEvent) => events.push(e),
    };
    gw = new GatewayServer({ ...common, observer });
    gwShort = new GatewayServer({ ...common, gate: new DeviceBarrier({ maxWaitMs: 50, retryAfterSeconds: 3 }) });
    await Promise.all([gw.start(), gwShort.start()]);
    direct = httpsCaller(sim.url, sim.certPem);
    viaGw = httpsCaller(gw.url, cert.certPem);
    viaShort = httpsCaller(gwShort.url, cert.certPem);
    ({ admin, operator: op } = sim.nsUsers.alpha!);
    const r = await direct.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'signer' } });
    expect(r.status).toBe(201);
  });

  afterAll(async () => {
    await Promise.all([direct?.close(), viaGw?.close(), viaShort?.close()]);
    await Promise.all([gw?.close(), gwShort?.close()]);
    await sim?.close();
  });

  it('makes writes wait while held and lets them through after; reads and crypto pass meanwhile', async () => {
    const restore = deferred();
    const held = gw.gate.exclusive([], () => restore.promise);
    const write = viaGw.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'heldkey' } });
    const rootWrite = viaGw.call('PUT', '/config/time', { auth: sim.users.admin, json: { time: new Date().toISOString().replace(/\.\d+Z$/, 'Z') } });
    await until(() => gw.gate.waiting === 2, 'both writes waiting at the gate');
    expect((await direct.call('GET', '/keys/heldkey', { auth: admin })).status).toBe(404);
    expect((await viaGw.call('GET', '/keys', { auth: op })).status).toBe(200);
    const sign = await viaGw.call('POST', '/keys/signer/sign', { auth: op, json: { mode: 'EdDSA', message: Buffer.from('m').toString('base64') } });
    expect(sign.status).toBe(200);
    expect(gw.gate.waiting).toBe(2);
    restore.resolve();
    await held;
    expect((await write).status).toBe(201);
    expect((await rootWrite).status).toBe(204);
    expect((await direct.call('GET', '/keys/heldkey', { auth: admin })).status).toBe(200);
    const heldEvent = events.find((e) => e.class === 'mutation' && e.outcome === 'forwarded' && e.heldMs !== undefined);
    expect(heldEvent?.namespace).toBe('alpha');
  });

  it('starts a hold only after a write already in flight has been answered', async () => {
    const block = deferred();
    beginGate = block.promise;
    begun = 0;
    const write = viaGw.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'inflight' } });
    await until(() => begun === 1, 'the write reached the change capture');
    expect(gw.gate.inFlight).toBe(1);
    let seenByRestore: number | undefined;
    const held = gw.gate.exclusive([], async () => {
      seenByRestore = (await direct.call('GET', '/keys/inflight', { auth: admin })).status;
    });
    await new Promise((r) => setImmediate(r));
    expect(seenByRestore).toBeUndefined();
    block.resolve();
    beginGate = undefined;
    await held;
    expect(seenByRestore).toBe(200);
    expect((await write).status).toBe(201);
    expect(gw.gate.inFlight).toBe(0);
  });

  it('answers 503 with Retry-After past the bound, and forwards nothing', async () => {
    const restore = deferred();
    const held = gwShort.gate.exclusive([], () => restore.promise);
    try {
      const r = await viaShort.call('DELETE', '/keys/signer', { auth: admin });
      expect(r.status).toBe(503);
      expect(r.headers['retry-after']).toBe('3');
      expect(r.headers['content-type']).toBe('application/json');
      expect(JSON.parse(r.body).message).toMatch(/merge-restore .* \[NHR_ERR_GATEWAY_HOLD_TIMEOUT\]$/);
      expect(events.at(-1)).toMatchObject({ namespace: 'alpha', class: 'mutation', outcome: 'held_timeout', status: 503 });
    } finally {
      restore.resolve();
      await held;
    }
    expect((await direct.call('GET', '/keys/signer', { auth: admin })).status).toBe(200);
  });
});
