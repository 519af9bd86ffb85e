/**
 * Metrics of a coalesced merge-restore (docs/metrics.md, "Per namespace or per merge-restore"): what describes the one
 * shared restore is counted once per merge-restore, not once per namespace it carried. The interleaving is made on
 * purpose through the simulator's latency table (test/helpers/latencies.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { use } from '../helpers/clients.js';
import { Latencies } from '../helpers/latencies.js';

describe('metrics of a coalesced merge-restore', () => {
  let lab: Lab;
  const lat = new Latencies();

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'a' }], latency: lat.table });
    await lab.startDaemons();
    const b = lab.site('b').daemon!;
    for (const ns of ['alpha', 'beta']) await b.syncer.sync(ns, { actor: 'test' });
    await b.syncer.drain();
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('counts entries lost outside the namespaces once per merge-restore, not once per namespace', async () => {
    const site = lab.site('b');
    const b = site.daemon!;
    // An entry outside both namespaces, which the merge carries over from B1.
    await use(site.client(), (c) => c.generateKey({ id: 'root-1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    lat.slow('b', 'restore', 1);
    const restoring = lat.started('b', 'restore');
    const syncs = Promise.all(['alpha', 'beta'].map((ns) => b.syncer.sync(ns, { actor: 'test' })));
    await restoring;
    lat.fast('b', 'restore');
    // The next backup at B is the verification's (B3): held back while root-1 is deleted straight at the NetHSM.
    lat.slow('b', 'backup', 2_000);
    const checking = lat.started('b', 'backup');
    const answers = await syncs;
    expect(answers.map((r) => r.outcome === 'applied' && r.coalescedWith)).toEqual([['beta'], ['alpha']]);
    await checking;
    lat.fast('b', 'backup');
    await use(site.client(), (c) => c.deleteKey('root-1'));
    await b.syncer.drain();

    // The verification failed for both namespaces, as loudly as before ...
    for (const ns of ['alpha', 'beta']) expect(b.ctx.store.positions.forNamespace(ns)[0]).toMatchObject({ lastSyncOutcome: 'failed', lastErrorCode: 'NHR_ERR_SYNC_VERIFY_FAILED' });
    // ... and the one entry lost is counted once (under the merge-restore's first namespace), not once per namespace.
    const lost = await b.ctx.metrics.restoreForeignEntriesLostTotal.get();
    expect(lost.values.reduce((n, v) => n + v.value, 0)).toBe(1);
    expect(lost.values.find((v) => v.labels.namespace === 'alpha')?.value).toBe(1);
    // Each namespace's restore is its own fact: one success each, and one coalesced merge-restore.
    expect((await b.ctx.metrics.syncCoalescedRestoresTotal.get()).values[0]?.value).toBe(1);
  });
});
