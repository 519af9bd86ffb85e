import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import type { PeerServer } from '../../src/peer/server.js';
import { waitFor } from '../helpers/wait.js';

/** The peer API of a running daemon, to cut and restore one site's link without restarting anything. */
const peerServerOf = (lab: Lab, site: string): PeerServer => (lab.site(site).daemon as unknown as { peerServer: PeerServer }).peerServer;

describe('a partition that heals without restarts', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '200ms' });
    await lab.startDaemons();
    const c = lab.site('a').nsAdmin('alpha');
    await c.generateKey({ id: 'k1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    await c.close();
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('fences the old primary once the link comes back, though it never restarted', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    // The link to a is cut: b cannot tell a about the promote.
    await peerServerOf(lab, 'a').close();
    const promoted = await b.daemon!.failover.promote('alpha', { force: true, actor: 'operator@b' });
    expect(promoted.peersNotTold).toEqual(['a']);
    // (Only a's inbound link is cut here: a's own periodic check of b may already learn epoch 2 before it comes back.)
    await peerServerOf(lab, 'a').start();
    // a learns epoch 2 once the link is back, by whichever check comes first: b's recovery probe of a (which finds a
    // claiming epoch 1 and tells it the current epoch) or a's own periodic check of b. Then: fenced, quarantined,
    // resynced as a replica.
    await waitFor(() => a.daemon!.ctx.store.roles.get('alpha')?.role === 'replica', 'a to follow epoch 2', 20_000);
    expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ epoch: 2, primarySite: 'b' });
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'ok', "b to see a's stale claim gone", 10_000);
  });
});
