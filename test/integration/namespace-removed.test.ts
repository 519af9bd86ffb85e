/**
 * A namespace removed from a replica's config (and the daemon restarted, as removing one takes): its role row and
 * position stay in the state store, but nothing is to replicate it here any more. A primary's restart queues no
 * anti-entropy pass of it (before: queued, failing every recovery.retryInterval for want of its replication account,
 * kept in restart_passes, and named in /health/ready's warnings for good), and this site's NetHSM coming back takes
 * no snapshot of it, nor does its primary's request for one.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { use } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';
import { streamReady } from './stream-helpers.js';

describe('a namespace removed from the config of a replica', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  /** a primary of alpha and beta, b their replica (both synced); b restarted with beta removed from its config. */
  const start = async (): Promise<{ a: LabSite; b: LabSite }> => {
    lab = await Lab.create({
      namespaces: [
        { name: 'alpha', primary: 'a' },
        { name: 'beta', primary: 'a' },
      ],
      retryInterval: '200ms',
    });
    const [a, b] = [lab.site('a'), lab.site('b')];
    await lab.startDaemons();
    await streamReady([a, b]);
    for (const ns of ['alpha', 'beta']) await b.daemon!.syncer.sync(ns, { actor: 'test' });
    await b.daemon!.syncer.drain();
    await b.stopDaemon();
    b.config = { ...b.config, namespaces: b.config.namespaces.filter((n) => n.name !== 'beta') };
    await b.startDaemon();
    await streamReady([a, b]);
    return { a, b };
  };

  it("queues no anti-entropy pass of it after the primary's restart: only the configured namespace's, which completes", async () => {
    const { a, b } = await start();
    await a.stopDaemon();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'unreachable', 'b to mark a down', 10_000);
    await a.startDaemon();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'ok', 'a to recover', 15_000);
    // Both were queued in the same recovery (resumeMember), before a is marked ok: alpha's is the one to wait for.
    await waitFor(() => !b.daemon!.restartPasses.pending().includes('alpha'), "alpha's pass to complete", 30_000);
    expect(b.daemon!.restartPasses.pending()).toEqual([]);
    expect(b.daemon!.ctx.store.restartPasses.list()).toEqual([]);
  });

  it('refuses a sync of it that its primary requests, naming why', async () => {
    const { a, b } = await start();
    const synced = b.daemon!.ctx.store.positions.get('beta', 'a')!.lastOkAt;
    const asked = await a.daemon!.syncer.sync('beta', { actor: 'test' });
    expect(asked).toMatchObject({ outcome: 'requested', peers: [{ name: 'b', ok: false, error: expect.stringContaining('namespace beta is not in the config of site b') }] });
    await b.daemon!.syncer.drain();
    expect(b.daemon!.ctx.store.positions.get('beta', 'a')!.lastOkAt).toBe(synced);
  });

  it("takes no snapshot of it when this site's NetHSM comes back, and marks the NetHSM ok", async () => {
    const { b } = await start();
    const synced = b.daemon!.ctx.store.positions.get('beta', 'a')!.lastOkAt;
    await use(b.client(), (c) => c.lock());
    await waitFor(() => b.daemon!.ctx.monitor.get('nethsm')!.status === 'locked', 'b to see its NetHSM locked', 10_000);
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await waitFor(() => b.daemon!.ctx.monitor.get('nethsm')!.status === 'ok', "b's NetHSM to be ok again", 30_000);
    expect(b.daemon!.ctx.store.positions.get('beta', 'a')!.lastOkAt).toBe(synced);
  });
});
