/**
 * A primary's daemon restarts (stopped long enough for the replica to mark it down): the replica resumes its stream
 * and queues an anti-entropy pass of the namespace, instead of a full snapshot sync (a device backup at both sites, a
 * restore at the replica with its writes held). Device backups and restores are counted at the simulators. The pass
 * finds what was written straight to the primary's NetHSM while its daemon was down (a key, a certificate).
 * `replication.afterPrimaryRestart: snapshot` keeps the old behaviour.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { AfterPrimaryRestart } from '../../src/config/schema.js';
import { LAB_PASSPHRASES, type Lab, type LabSite } from '../../src/lab/lab.js';
import type { PeerServer } from '../../src/peer/server.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { use } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';
import { replicaLab, type ReplicaLab } from './replica-lab.js';
import { importBody } from './stream-helpers.js';

const NS = 'alpha';

describe("a primary's daemon restart", () => {
  let lab: Lab | undefined;
  let logged: ReplicaLab['logged'] = () => [];
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  /** Site a primary of alpha, b its replica (synced once, streaming), b's log captured. */
  const start = async (afterPrimaryRestart?: AfterPrimaryRestart, sync = true): Promise<{ a: LabSite; b: LabSite }> => {
    const r = await replicaLab({ namespace: NS, afterPrimaryRestart, gateway: true, sync });
    ({ lab, logged } = r);
    return r;
  };

  const gatewayImport = (a: LabSite, id: string) => use(a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), id));
  const sim = (s: LabSite) => s.sim as RunningSimulator;

  /**
   * Writes `before-stop` through a's gateway with a's peer API closed (so it is in a's change log only), stops a's
   * daemon until b marks it down, runs `whileDown`, and starts a's daemon again (a new instance: a restart).
   */
  const restartPrimary = async (a: LabSite, b: LabSite, whileDown: () => Promise<void> = async () => undefined) => {
    await gatewayImport(a, 'streamed');
    await waitFor(() => b.daemon!.ctx.store.applied.knowsKey(NS, 'streamed'), 'the stream to carry the first key', 15_000);
    await (a.daemon as unknown as { peerServer: PeerServer }).peerServer.close();
    await gatewayImport(a, 'before-stop');
    await a.stopDaemon();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'unreachable', 'b to mark a down', 10_000);
    await whileDown();
    await a.startDaemon();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'ok', 'a to recover', 15_000);
  };

  it('resumes the stream and runs an anti-entropy pass: no snapshot sync, no device backup or restore at either site', async () => {
    const { a, b } = await start();
    const synced = b.daemon!.ctx.store.positions.get(NS, 'a')!.lastOkAt;
    const [backupsA, backupsB, restoresB] = [sim(a).backups, sim(b).backups, sim(b).restores];
    await restartPrimary(a, b);
    // The write a acknowledged before its stop comes by the stream (its record follows the device's 2xx).
    await waitFor(() => b.daemon!.ctx.store.applied.knowsKey(NS, 'before-stop'), 'the stream to carry the key acknowledged before the stop', 15_000);
    await waitFor(() => logged(/^anti-entropy pass$/).length > 0 && b.daemon!.restartPasses.pending().length === 0, 'the queued pass to run', 30_000);
    expect(logged(/^anti-entropy pass$/)).toEqual([expect.objectContaining({ namespace: NS, missing: 0, differs: 0 })]);
    expect(logged(/stream resumed from 1\.\d+; anti-entropy pass queued to find writes made around its daemon/)).toHaveLength(1);
    await b.daemon!.syncer.drain();
    expect(b.daemon!.ctx.store.positions.get(NS, 'a')!.lastOkAt).toBe(synced);
    expect([sim(a).backups - backupsA, sim(b).backups - backupsB, sim(b).restores - restoresB]).toEqual([0, 0, 0]);
    expect(b.daemon!.ctx.monitor.get('a')!.status).toBe('ok');
  });

  it("finds a key written straight to the primary's NetHSM while its daemon was down, and fetches it by the snapshot it asks for", async () => {
    const { a, b } = await start();
    await restartPrimary(a, b, async () => void (await use(a.nsAdmin(NS), (c) => c.generateKey({ id: 'around', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }))));
    await waitFor(() => b.daemon!.restartPasses.pending().length === 0 && logged(/^anti-entropy pass$/).length > 0, 'the queued pass to run', 30_000);
    expect(logged(/^anti-entropy pass$/)).toEqual([expect.objectContaining({ namespace: NS, missing: 1, differs: 0 })]);
    // Key material the API cannot carry: the pass's snapshot brings it.
    await waitFor(async () => (await use(b.nsOperator(NS), (c) => c.listKeys())).includes('around'), 'the key to reach b', 30_000);
  });

  // Before: a namespace paused at the replica was skipped at the primary's recovery: no pass queued, and nothing ran
  // after the resume either, so the key written around the primary's daemon was not looked for.
  it('queues the pass of a namespace paused at the replica too: it waits while paused and runs after the resume', async () => {
    const { a, b } = await start();
    await restartPrimary(a, b, async () => {
      b.daemon!.ctx.store.roles.setPaused(NS, true);
      await use(a.nsAdmin(NS), (c) => c.generateKey({ id: 'around-paused', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    });
    expect(b.daemon!.restartPasses.pending()).toEqual([NS]);
    b.daemon!.ctx.store.roles.setPaused(NS, false);
    await waitFor(() => b.daemon!.restartPasses.pending().length === 0 && logged(/^anti-entropy pass$/).length > 0, 'the queued pass to run', 30_000);
    expect(logged(/^anti-entropy pass$/)).toEqual([expect.objectContaining({ namespace: NS, missing: 1 })]);
  });

  it("finds a certificate changed straight at the primary's NetHSM while its daemon was down (its certificate table is read afresh) and repairs it through the API", async () => {
    const { a, b } = await start();
    const cert = (s: LabSite) => use(s.nsOperator(NS), (c) => c.getCert('with-cert').catch(() => null)).then((x) => x?.data.toString());
    await gatewayImport(a, 'with-cert');
    await use(a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin), (c) => c.putCert('with-cert', Buffer.from('first certificate')));
    await waitFor(async () => (await cert(b)) === 'first certificate', 'the certificate to reach b', 15_000);
    // A pass first: a's certificate table learns the certificate. The key is outside the scrub slice of a's next read.
    await b.daemon!.antiEntropy(NS);
    expect(a.daemon!.ctx.store.keyCerts.count(NS)).toBe(1);
    await restartPrimary(a, b, () =>
      use(a.nsAdmin(NS), async (c) => {
        await c.deleteCert('with-cert');
        await c.putCert('with-cert', Buffer.from('changed around the daemon'));
      }),
    );
    await b.daemon!.syncer.drain();
    const backupsB = sim(b).backups;
    await waitFor(() => b.daemon!.restartPasses.pending().length === 0 && logged(/^anti-entropy pass$/).length >= 2, 'the queued pass to run', 30_000);
    expect(logged(/^anti-entropy pass$/).at(-1)).toMatchObject({ namespace: NS, missing: 0, differs: 1, repaired: 2 });
    expect(await cert(b)).toBe('changed around the daemon');
    expect(sim(b).backups).toBe(backupsB);
  });

  it('takes a snapshot sync instead with replication.afterPrimaryRestart: snapshot', async () => {
    const { a, b } = await start('snapshot');
    const synced = b.daemon!.ctx.store.positions.get(NS, 'a')!.lastOkAt;
    const backupsB = sim(b).backups;
    await restartPrimary(a, b);
    await waitFor(() => b.daemon!.ctx.store.positions.get(NS, 'a')!.lastOkAt !== synced, 'the recovery snapshot', 30_000);
    expect(sim(b).backups).toBeGreaterThan(backupsB);
    expect(b.daemon!.restartPasses.pending()).toEqual([]);
    expect(logged(/the primary's daemon restarted while it was down: snapshot sync \(replication\.afterPrimaryRestart: snapshot\)/)).toHaveLength(1);
    expect(logged(/^anti-entropy pass$/)).toEqual([]);
  });

  // Before: with afterPrimaryRestart: snapshot a namespace paused at the replica when the primary came back was skipped,
  // and nothing queued the snapshot for its resume (with `stream` its pass is queued): the key written around the
  // primary's daemon never reached the replica, and status said nothing.
  it('queues the snapshot sync of a namespace paused at the replica (afterPrimaryRestart: snapshot): shown while paused, taken after the resume', async () => {
    const { a, b } = await start('snapshot');
    const synced = b.daemon!.ctx.store.positions.get(NS, 'a')!.lastOkAt;
    await restartPrimary(a, b, async () => {
      b.daemon!.ctx.store.roles.setPaused(NS, true);
      await use(a.nsAdmin(NS), (c) => c.generateKey({ id: 'around-paused', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    });
    expect(b.daemon!.restartPasses.pending()).toEqual([NS]);
    const alpha = (await b.daemon!.status()).namespaces.find((n) => n.name === NS)!;
    expect(alpha.restartPass).toMatchObject({ primary: 'a', action: 'snapshot sync', state: 'waiting: the namespace is paused here; runs once it is resumed (replication.afterPrimaryRestart: snapshot)' });
    expect(b.daemon!.ctx.store.positions.get(NS, 'a')!.lastOkAt).toBe(synced);
    b.daemon!.ctx.store.roles.setPaused(NS, false);
    await waitFor(() => b.daemon!.restartPasses.pending().length === 0, 'the queued snapshot sync to run', 30_000);
    expect(b.daemon!.ctx.store.positions.get(NS, 'a')!.lastOkAt).not.toBe(synced);
    expect(await use(b.nsOperator(NS), (c) => c.listKeys())).toContain('around-paused');
    expect(logged(/^anti-entropy pass$/)).toEqual([]);
  });

  it('takes a snapshot sync at a replica with no position from the primary yet (its namespace account may not exist here: no pass could read it)', async () => {
    const { a, b } = await start(undefined, false);
    expect(b.daemon!.ctx.store.positions.get(NS, 'a')?.seq).toBeUndefined();
    await a.stopDaemon();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'unreachable', 'b to mark a down', 10_000);
    await a.startDaemon();
    await waitFor(() => b.daemon!.ctx.store.positions.get(NS, 'a')?.lastSyncOutcome === 'ok', 'the recovery snapshot', 30_000);
    expect(b.daemon!.restartPasses.pending()).toEqual([]);
    expect(logged(/the primary's daemon restarted while it was down: snapshot sync \(no position from it yet/)).toHaveLength(1);
  });
});
