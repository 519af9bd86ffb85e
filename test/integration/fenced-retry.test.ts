/**
 * Auto-recovery of a fenced namespace: a fenced site whose resync failed continues it by itself once its new primary
 * can serve again (at the next status probe of that primary, every `recovery.retryInterval`), without waiting for the
 * namespace's schedule or for the primary to go down and come back. The interleaving is made on purpose through the
 * simulator's latency table (test/helpers/latencies.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { use } from '../helpers/clients.js';
import { Latencies } from '../helpers/latencies.js';
import { waitFor } from '../helpers/wait.js';

describe('a fenced namespace whose resync failed', () => {
  let lab: Lab;
  const lat = new Latencies();

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], latency: lat.table });
    await lab.startDaemons();
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  // Regression (fault suite, etcd mode, seed 21): a site fenced under a new primary whose NetHSM was unreachable when it
  // tried to resync stayed fenced for minutes with the primary answering: nothing retried the resync but the cron
  // schedule (yearly in the suite) or a member recovery, and the primary's daemon had never gone away.
  it('resyncs by itself once the new primary serves again', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    // a's quarantine backup (the fence's first step) is held back while b's NetHSM is locked, so a's resync fails.
    lat.slow('a', 'backup', 1_000);
    const quarantining = lat.started('a', 'backup');
    await b.daemon!.failover.promote('alpha', { force: true, actor: 'test' });
    await quarantining;
    await use(b.client(), (c) => c.lock());
    lat.fast('a', 'backup');
    await waitFor(() => a.daemon!.ctx.store.positions.forNamespace('alpha')[0]?.lastSyncOutcome === 'failed', "a's resync to fail", 30_000, 50);
    expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'fenced', epoch: 2, primarySite: 'b' });

    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await waitFor(() => a.daemon!.ctx.store.roles.get('alpha')?.role === 'replica', 'a to resync by itself and become a replica', 20_000, 50).catch((err: unknown) => {
      throw new Error(`${String(err)}; a: ${JSON.stringify(a.daemon!.ctx.store.positions.forNamespace('alpha')[0])} ${JSON.stringify(a.daemon!.ctx.store.audit.list({ namespace: 'alpha' }).slice(-4))}`);
    });
    expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'replica', epoch: 2, primarySite: 'b' });
    expect(a.daemon!.ctx.store.positions.forNamespace('alpha')[0]?.lastSyncOutcome).toBe('ok');
  }, 120_000);
});
