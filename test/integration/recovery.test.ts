import { afterEach, describe, expect, it } from 'vitest';
import { Lab, LAB_PASSPHRASES } from '../../src/lab/lab.js';
import type { PeerServer } from '../../src/peer/server.js';
import { PeerUnreachableError } from '../../src/errors.js';
import { waitFor } from '../helpers/wait.js';
import { use } from '../helpers/clients.js';
import { streamReady } from './stream-helpers.js';

describe('member recovery and shutdown', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  it("stores each probe's member state inside a group commit, never with a commit (an fsync) of its own on the event loop", async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '100ms' });
    await lab.startDaemons();
    const { store } = lab.site('b').daemon!.ctx;
    const inTransaction: boolean[] = [];
    const save = store.members.save.bind(store.members);
    store.members.save = (s) => {
      inTransaction.push(store.db.inTransaction);
      save(s);
    };
    // Every probe moves lastOkAt, so each saves both members (the NetHSM and peer a).
    await waitFor(() => inTransaction.length >= 4, 'member states saved by the probes', 10_000);
    expect(inTransaction.every((t) => t)).toBe(true);
    await waitFor(() => store.members.get('a')?.status === 'ok', "a's state stored");
  });

  it('marks an unreachable primary, retries it at the interval, and resumes syncing by itself when it answers again', async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '200ms' });
    await lab.startDaemons();
    const a = lab.site('a');
    const b = lab.site('b');
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await a.stopDaemon();
    await expect(b.daemon!.syncer.sync('alpha', { actor: 'test' })).rejects.toMatchObject({ code: 'NHR_ERR_PEER_UNREACHABLE' });
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.attempts >= 2, 'retries of a', 10_000);
    const down = b.daemon!.ctx.monitor.get('a')!;
    expect(down.status).toBe('unreachable');
    expect(down.lastErrorCode).toBe('NHR_ERR_PEER_UNREACHABLE');
    // Stored through the group commit, lingering up to a second for other writes (members/state-writer.ts).
    await waitFor(() => b.daemon!.ctx.store.members.get('a')?.status === 'unreachable', "a's state stored", 5_000);
    expect(await b.registry.metrics()).toMatch(/nethsm_replicator_member_up\{member="a"\} 0/);

    // While a was away its NetHSM took a write; when its daemon is back, b resumes by itself.
    await use(a.nsAdmin('alpha'), (c) => c.generateKey({ id: 'while-away', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    await a.startDaemon();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'ok', 'a to recover', 10_000);
    await waitFor(async () => (await use(b.nsOperator('alpha'), (c) => c.listKeys())).includes('while-away'), 'b to resync', 10_000);
    expect(b.daemon!.ctx.store.positions.get('alpha', 'a')?.lastSyncOutcome).toBe('ok');
  });

  it('after a primary that kept running answers again, the stream catches up by itself: no snapshot', async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '200ms', gateway: true });
    await lab.startDaemons();
    const a = lab.site('a');
    const b = lab.site('b');
    // A knows B's transport key, so what A's gateway imports can travel by the stream.
    await streamReady([a, b]);
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    const synced = b.daemon!.ctx.store.positions.get('alpha', 'a')!.lastOkAt;
    // The link to a's daemon is cut (it keeps running and its gateway keeps taking writes): b counts a as down.
    const peerServer = (a.daemon as unknown as { peerServer: PeerServer }).peerServer;
    await peerServer.close();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'unreachable', 'b to see a down', 10_000);
    await use(a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), (c) =>
      c.importKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: Buffer.alloc(32, 7).toString('base64') } }, 'during-cut'),
    );
    await peerServer.start();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'ok', 'a to recover', 10_000);
    await waitFor(async () => (await use(b.nsOperator('alpha'), (c) => c.listKeys())).includes('during-cut'), 'the key to reach b', 15_000);
    // It came by the stream (its record follows the device's 2xx in a group commit), and the recovery took no
    // snapshot (a device backup at each site, writes held at b).
    await waitFor(() => b.daemon!.ctx.store.applied.knowsKey('alpha', 'during-cut'), 'the stream to record the key', 15_000);
    expect(b.daemon!.ctx.store.positions.get('alpha', 'a')!.lastOkAt).toBe(synced);
    // And a stays ok: resuming it does not break the live stream off (which counted as a failure of a, recovered
    // again, resumed again: a loop the scale bench caught).
    const monitor = b.daemon!.ctx.monitor;
    let failures = 0;
    const report = monitor.reportFailure.bind(monitor);
    monitor.reportFailure = (name: string, err: unknown) => {
      if (name === 'a') failures++;
      report(name, err);
    };
    await new Promise((r) => setTimeout(r, 1_500));
    expect(failures).toBe(0);
    expect(monitor.get('a')!.status).toBe('ok');
    // A probe of a times out once while the stream runs: the stream's next line brings a back (recovery by a real
    // call). Resuming it must leave the live stream alone: before, it broke it off, which counted against a again.
    monitor.reportFailure('a', new PeerUnreachableError('test: a probe of a timed out', { site: 'a' }));
    expect(monitor.get('a')!.status).toBe('unreachable');
    await waitFor(() => monitor.get('a')!.status === 'ok', 'a to recover by its stream', 20_000);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(failures).toBe(1);
    expect(monitor.get('a')!.status).toBe('ok');
  });

  it('lets an in-flight sync finish its restore before it stops (SIGTERM path)', async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], latency: { 'restore-per-entry': 40 } });
    await lab.startDaemons();
    const b = lab.site('b');
    const syncing = b.daemon!.syncer.sync('alpha', { actor: 'test' });
    // In its restore (a sync still downloading is abandoned by the stop instead: stop-fetch.test.ts).
    await waitFor(() => b.daemon!.syncer.progressOf('alpha')?.step.startsWith('restoring'), 'the sync to restore');
    const ctx = b.daemon!.ctx;
    await b.stopDaemon();
    await expect(syncing).resolves.toMatchObject({ outcome: 'applied' });
    // The store was closed only after the sync recorded its position.
    ctx.store.open();
    expect(ctx.store.positions.get('alpha', 'a')?.lastSyncOutcome).toBe('ok');
    ctx.store.close();
  });
});
