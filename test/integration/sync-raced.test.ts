/**
 * Under steady local writes (this site is primary of other namespaces, its gateway busy), every backup and merge a
 * sync tries outside the exclusive hold races, and it ends in the held sequence anyway. After one such sync, the
 * next ones go to the held sequence at once for a while (NamespaceSync.racedAt): fewer device backups, same result.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { use } from '../helpers/clients.js';

describe('syncs under steady local writes', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
  });

  afterAll(async () => {
    await lab?.close();
  });

  async function backups(): Promise<number> {
    const m = await lab.site('b').registry.getSingleMetric('nethsm_replicator_device_backups_total')?.get();
    return (m?.values ?? []).reduce((n, v) => n + v.value, 0);
  }

  it('after a sync whose every attempt outside the hold raced, the next merges inside the hold at once', async () => {
    const b = lab.site('b');
    let writing = true;
    let n = 0;
    // Root keys written through B's barrier, as its gateway's writes for namespaces B is primary of would be.
    const writer = (async () => {
      while (writing) {
        await b.daemon!.ctx.barrier.shared(() => use(b.client(), (c) => c.generateKey({ id: `w${n++}`, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] })));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    try {
      const before1 = await backups();
      const first = await b.daemon!.syncer.sync('alpha', { actor: 'test' });
      const first_ = (await backups()) - before1;
      const before2 = await backups();
      const second = await b.daemon!.syncer.sync('alpha', { actor: 'test' });
      const second_ = (await backups()) - before2;
      expect(first).toMatchObject({ outcome: 'applied', heldMerge: true });
      expect(second).toMatchObject({ outcome: 'applied', heldMerge: true });
      // The first tried three times outside the hold before its held sequence; the second went there at once.
      expect(second_).toBeLessThan(first_);
    } finally {
      writing = false;
      await writer;
    }
    // Nothing the writer wrote was lost by either restore.
    const keys = await use(b.client(), (c) => c.listKeys());
    for (let i = 0; i < n; i++) expect(keys).toContain(`w${i}`);
  });
});
