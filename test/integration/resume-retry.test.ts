/**
 * A member recovered, but its owner could not finish resuming it: this site's NetHSM came back and the snapshot sync
 * that recovery owes failed (its primary's peer API was down). The member stays `recovering` and that work runs again
 * every `recovery.retryInterval` until it succeeds; then the member is ok. Before: it stayed RECOVERING in `status`
 * for good (nothing ran the work again; the log said "retried at the next schedule") until its next outage. A retry
 * after a primary's restart still handles it as a restart (the failed attempt had read the peer's restart flag).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { PeerServer } from '../../src/peer/server.js';
import { use } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';

describe("resuming a recovered member that failed", () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  it("runs the recovery's work again until it succeeds, then the member is ok", async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '200ms' });
    await lab.startDaemons();
    const [a, b] = [lab.site('a'), lab.site('b')];
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await b.daemon!.syncer.drain();
    const synced = b.daemon!.ctx.store.positions.get('alpha', 'a')!.lastOkAt;
    const nethsm = () => b.daemon!.ctx.monitor.get('nethsm')!;

    await use(b.client(), (c) => c.lock());
    await waitFor(() => nethsm().status === 'locked', "b to see its NetHSM locked", 10_000);
    // The snapshot b's NetHSM recovery owes cannot be fetched: a's peer API is down.
    await (a.daemon as unknown as { peerServer: PeerServer }).peerServer.close();
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await waitFor(() => b.daemon!.ctx.store.positions.get('alpha', 'a')?.lastSyncOutcome === 'failed', "b's recovery sync to fail", 15_000);
    expect(nethsm().status).toBe('recovering');

    await a.stopDaemon();
    await a.startDaemon();
    await waitFor(() => nethsm().status === 'ok', "b's NetHSM to be ok once the recovery's sync succeeds", 30_000);
    expect(b.daemon!.ctx.store.positions.get('alpha', 'a')!.lastOkAt).toBeGreaterThan(synced!);
  });

  it("takes the snapshot a primary's restart asks for (afterPrimaryRestart: snapshot) at a retry, the restart seen by the failed attempt", async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '200ms' });
    const [a, b] = [lab.site('a'), lab.site('b')];
    b.config = { ...b.config, replication: { ...b.config.replication, afterPrimaryRestart: 'snapshot' } };
    await lab.startDaemons();
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await b.daemon!.syncer.drain();
    const synced = b.daemon!.ctx.store.positions.get('alpha', 'a')!.lastOkAt!;
    await a.stopDaemon();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'unreachable', 'b to mark a down', 10_000);
    // a's NetHSM cannot serve the snapshot b's recovery takes: Locked.
    await use(a.client(), (c) => c.lock());
    await a.startDaemon();
    await waitFor(() => b.daemon!.ctx.store.positions.get('alpha', 'a')?.lastSyncOutcome === 'failed', "b's snapshot after a's restart to fail", 15_000);
    await use(a.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await waitFor(() => b.daemon!.ctx.store.positions.get('alpha', 'a')!.lastOkAt! > synced, "the snapshot a's restart asks for, at a retry", 30_000);
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'ok', 'a to be ok at b', 15_000);
  });
});
