/**
 * A write whose client goes away while the NetHSM is applying it keeps its hold on the device barrier until the NetHSM
 * has answered: an exclusive holder (a merge-restore's backup and restore) must never run under a write that can
 * still land. Before, the gateway aborted the upstream call and released the hold at once, and the NetHSM applied
 * the write a moment later, inside the exclusive hold.
 */
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createSelfSignedCertificate, type CertificateBundle } from '../tls/index.js';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { GatewayServer, type GatewayRequestEvent } from './server.js';
import { basicHeader, httpsCaller } from './test-support.js';

const IMPORT_MS = 1_500;
const SEED = Buffer.alloc(32, 9).toString('base64');
const importJson = JSON.stringify({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: SEED } });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('gateway: a held write whose client goes away', () => {
  let sim: ProvisionedSimulator;
  let cert: CertificateBundle;
  let gw: GatewayServer;
  let direct: ReturnType<typeof httpsCaller>;
  const events: GatewayRequestEvent[] = [];

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha'], latency: { import: IMPORT_MS } });
    cert = await createSelfSignedCertificate();
    gw = new GatewayServer({
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { caPem: sim.certPem } },
      roles: { roleOf: (ns: string) => (ns === 'alpha' ? ({ role: 'primary', epoch: 1, primarySite: 'a' } as const) : undefined) },
      gate: new DeviceBarrier({ drainTimeoutMs: 10_000 }),
      onRequest: (e) => events.push(e),
    });
    await gw.start();
    direct = httpsCaller(sim.url, sim.certPem);
  });

  afterAll(async () => {
    await direct?.close();
    await gw?.close();
    await sim?.close();
  });

  it('keeps the barrier until the NetHSM answered, so an exclusive holder sees the write done or never sent', async () => {
    const admin = sim.nsUsers.alpha!.admin;
    const dispatcher = new Agent({ connect: { ca: cert.certPem } });
    const gone = new AbortController();
    const call = request(`${gw.url}/api/v1/keys/late`, {
      method: 'PUT',
      headers: { authorization: basicHeader(admin), 'content-type': 'application/json' },
      body: importJson,
      dispatcher,
      signal: gone.signal,
    }).catch((err: unknown) => err);
    try {
      // The write is admitted and at the NetHSM (which sleeps IMPORT_MS, then stores the key); then the client goes.
      await sleep(300);
      expect(gw.gate.inFlight).toBe(1);
      gone.abort(new Error('client gives up'));
      expect(await call).toBeInstanceOf(Error);
      await sleep(100);
      const seen: number[] = [];
      await gw.gate.exclusive([], async () => {
        seen.push((await direct.call('GET', '/keys/late', { auth: admin })).status);
        // On the old code the key appeared here, under the exclusive hold, 1.1 s after the hold began.
        await sleep(IMPORT_MS);
        seen.push((await direct.call('GET', '/keys/late', { auth: admin })).status);
      });
      expect(seen).toEqual([200, 200]);
      expect(gw.gate.inFlight).toBe(0);
      expect(events.at(-1)).toMatchObject({ namespace: 'alpha', class: 'mutation', outcome: 'error' });
    } finally {
      await dispatcher.close();
    }
  });
});
