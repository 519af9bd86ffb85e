import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetHsmHttpError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';

describe('the gateway during syncs', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }], gateway: true });
    await lab.startDaemons();
    const c = lab.site('a').nsAdmin('alpha');
    await c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    await c.close();
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('loses no write made through the gateway while merge-restores run at the same site', async () => {
    const b = lab.site('b');
    const gw = b.gatewayClient('beta~admin', LAB_PASSPHRASES.nsAdmin);
    const acknowledged: string[] = [];
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop && i < 400; i++) {
        const id = `w${i}`;
        await gw.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
        acknowledged.push(id);
      }
    })();
    let syncs = 0;
    for (; syncs < 6; syncs++) await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    stop = true;
    await writer;
    await gw.close();
    expect(syncs).toBe(6);
    expect(acknowledged.length).toBeGreaterThan(0);
    const direct = b.nsOperator('beta');
    const onDevice = new Set(await direct.listKeys());
    await direct.close();
    expect(acknowledged.filter((id) => !onDevice.has(id))).toEqual([]);
  });

  it('refuses writes to a replica namespace with the primary named, and serves reads and crypto there', async () => {
    const b = lab.site('b');
    const op = b.gatewayClient('alpha~operator', LAB_PASSPHRASES.nsOperator);
    expect(await op.listKeys()).toContain('a1');
    const sig = await op.sign('a1', 'ECDSA', Buffer.alloc(32, 1));
    expect(sig.length).toBeGreaterThan(60);
    await op.close();
    const admin = b.gatewayClient('alpha~replicator', LAB_PASSPHRASES.replicator);
    const err = (await admin.generateKey({ id: 'nope', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }).catch((e: unknown) => e)) as NetHsmHttpError;
    expect(err).toBeInstanceOf(NetHsmHttpError);
    expect(err.status).toBe(403);
    expect(err.nethsmMessage).toMatch(/namespace alpha is a read-only replica .* its primary is site a/);
    await admin.close();
    expect(await b.registry.metrics()).toMatch(/nethsm_replicator_gateway_requests_total\{namespace="alpha",class="mutation",outcome="refused_replica"\} 1/);
  });
});
