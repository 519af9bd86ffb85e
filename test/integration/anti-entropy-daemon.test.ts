import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PeerRefusedError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { readInventory } from '../../src/namespaces/inventory.js';
import type { PeerHandlers } from '../../src/peer/server.js';
import { use } from '../helpers/clients.js';

describe('anti-entropy run by the daemon over the peer API', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), async (c) => {
      for (const id of ['k1', 'k2', 'k3']) await c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['t1'] } });
    });
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('finds drift at the replica, repairs tags and extra keys through the API, snapshots a deleted key back, and reports the drift', async () => {
    const b = lab.site('b');
    // Someone with the replication account changes the replica behind the daemon's back.
    await use(b.client('alpha~replicator', LAB_PASSPHRASES.replicator), async (c) => {
      await c.removeKeyTag('k1', 't1');
      await c.generateKey({ id: 'extra', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
      await c.deleteKey('k3');
    });
    const r = await b.daemon!.antiEntropy('alpha');
    expect(r?.diff).toMatchObject({ missing: ['k3'], extra: ['extra'] });
    expect(r?.diff.differs.map((d) => d.id)).toEqual(['k1']);
    expect(r?.needsSnapshot).toBe(true);
    expect(await b.registry.metrics()).toMatch(/nethsm_replicator_drift_entries\{namespace="alpha",kind="missing"\} 1/);
    // Both sites count the device requests of the pass: the replica its own reads, the primary what it served.
    for (const site of [b, lab.site('a')]) expect(await site.registry.metrics()).toMatch(/\nnethsm_replicator_anti_entropy_device_requests_total [1-9]\d*\n/);

    const atA = await use(lab.site('a').nsOperator('alpha'), (c) => readInventory(c, 'alpha'));
    const atB = await use(b.nsOperator('alpha'), (c) => readInventory(c, 'alpha'));
    expect(atB.digest).toBe(atA.digest);
    const again = await b.daemon!.antiEntropy('alpha');
    expect(again?.diff).toEqual({ missing: [], extra: [], differs: [] });
  });

  it('runs one pass of a namespace at a time: a call while one runs is skipped', async () => {
    const b = lab.site('b').daemon!;
    const [first, second] = await Promise.all([b.antiEntropy('alpha'), b.antiEntropy('alpha')]);
    expect(first?.diff).toEqual({ missing: [], extra: [], differs: [] });
    expect(second).toBeUndefined();
    expect((await b.antiEntropy('alpha'))?.diff).toEqual({ missing: [], extra: [], differs: [] });
  });

  it('falls back to the one-answer pass against a primary that serves no inventory ranges (an older version)', async () => {
    // An older primary's peer server has no range routes: it answers 404, as this one does without the handlers.
    const handlers = (lab.site('a').daemon as unknown as { peerServer: { options: { handlers: PeerHandlers } } }).peerServer.options.handlers;
    const { inventoryRanges, inventoryItems } = handlers;
    delete handlers.inventoryRanges;
    delete handlers.inventoryItems;
    try {
      await use(lab.site('b').client('alpha~replicator', LAB_PASSPHRASES.replicator), (c) => c.addKeyTag('k2', 'rogue'));
      const r = await lab.site('b').daemon!.antiEntropy('alpha');
      expect(r).not.toHaveProperty('ranges');
      expect(r?.diff).toEqual({ missing: [], extra: [], differs: [{ id: 'k2', fields: ['tags'] }] });
      expect(r?.repaired).toBe(1);
    } finally {
      Object.assign(handlers, { inventoryRanges, inventoryItems });
    }
    expect((await lab.site('b').daemon!.antiEntropy('alpha'))).toMatchObject({ ranges: 1, diff: { missing: [], extra: [], differs: [] } });
  });

  it('serves inventories only where the namespace is primary', async () => {
    const err = await lab.site('a').daemon!.ctx.peers.get('b')!.inventory('alpha').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerRefusedError);
    expect((err as PeerRefusedError).remoteCode).toBe('NHR_ERR_ROLE_NOT_PRIMARY');
    expect(await lab.site('a').daemon!.antiEntropy('alpha')).toBeUndefined();
    const ranges = await lab.site('a').daemon!.ctx.peers.get('b')!.inventoryRanges('alpha', 16).catch((e: unknown) => e);
    expect((ranges as PeerRefusedError).remoteCode).toBe('NHR_ERR_ROLE_NOT_PRIMARY');
  });

  it('refuses a malformed inventory request with 400, naming what is wrong', async () => {
    const toA = lab.site('b').daemon!.ctx.peers.get('a')!;
    const items = await toA.inventoryItems('alpha', [{ after: 'k2', upTo: 'k1' }]).catch((e: unknown) => e);
    expect(items).toBeInstanceOf(PeerRefusedError);
    expect((items as PeerRefusedError).status).toBe(400);
    expect((items as Error).message).toMatch(/invalid items request: ranges\[0\]: after must come before upTo/);
    const size = await toA.inventoryRanges('alpha', 0).catch((e: unknown) => e);
    expect((size as PeerRefusedError).status).toBe(400);
    expect((size as Error).message).toMatch(/size must be a whole number from 1 to 65536, got "0"/);
  });
});
