/**
 * A fenced former primary's sync waits for its fence's quarantine export: a sync asked (by an operator, the new
 * primary or a handover) after the fence failed to write it would restore the namespace over what this site held as
 * its primary, which its successor may never have got. Refused with NHR_ERR_SYNC_FENCE_EXPORT_PENDING (retryable);
 * the daemon's own continuation (resumeFenced) exports first and then resyncs.
 */
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { use } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';

describe('a sync of a fenced namespace whose fence export failed', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('is refused before it touches anything, until the fence has written its quarantine export', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    const quarantined = () => readdirSync(a.daemon!.ctx.work.quarantine).filter((f) => f.includes('alpha'));
    // A's NetHSM is locked when it learns it is fenced, and stays locked: the fence's export (a device backup) fails,
    // and so do the daemon's retries of it.
    await use(a.client(), (c) => c.lock());
    await b.daemon!.failover.promote('alpha', { force: true, actor: 'test' });
    await waitFor(() => a.daemon!.ctx.store.roles.get('alpha')?.role === 'fenced', 'a to be fenced', 30_000, 50);
    await a.daemon!.failover.drain();
    expect(quarantined()).toEqual([]);

    // Before: the sync went ahead (fetched b's snapshot and tried to restore it over the namespace: with the NetHSM
    // back before the fence's retry, that restore erased what this site held as its primary).
    await expect(a.daemon!.syncer.sync('alpha', { actor: 'test', manual: true })).rejects.toMatchObject({ code: 'NHR_ERR_SYNC_FENCE_EXPORT_PENDING' });
    expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'fenced', primarySite: 'b' });
    expect(a.daemon!.ctx.store.positions.forNamespace('alpha')[0]?.lastSyncOutcome).not.toBe('ok');

    // The NetHSM back: the daemon's continuation exports first, then resyncs.
    await use(a.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await a.daemon!.failover.resumeFenced('alpha');
    await waitFor(() => a.daemon!.ctx.store.roles.get('alpha')?.role === 'replica', 'a to resync after its export', 30_000, 50);
    expect(quarantined()).toHaveLength(1);
    await expect(a.daemon!.syncer.sync('alpha', { actor: 'test', manual: true })).resolves.toMatchObject({ namespace: 'alpha' });
  }, 120_000);
});
