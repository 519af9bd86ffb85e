/**
 * Stopping a daemon while a device backup that is only read stalls at its NetHSM (docs/operations.md, "Stopping the
 * daemon"; issue 11): close() cuts it instead of waiting for it (minutes on a large appliance, past systemd's
 * TimeoutStopSec). Three backups: a replica's early B1 (taken while the snapshot downloads), the apply's own B1 before
 * its restore, and the primary's backup for the snapshot a peer asked for. A cut is no device failure: the sync is
 * abandoned (NHR_ERR_SYNC_DAEMON_STOPPING), nothing recorded against the namespace, the primary or this site's
 * NetHSM, no file left in work/; after a start the sync runs to completion. (A download cut by the stop: stop-fetch.)
 *
 * The simulator holds the backup request unanswered (sim.hold) for as long as the test wants: a backup of a large
 * device. Before the change nothing could cut it, and close() waited for it.
 *
 * The same while the sync still waits at this site's device barrier, behind a long exclusive hold (another part's
 * restore, an administrator step): its early B1 waiting for its shared hold, and its apply waiting for its exclusive
 * hold once merged. The test takes that hold itself on the site's own barrier, so that nothing in close() waits for
 * it: what is checked is that the stop no longer waits for the hold to end (before, close() did: the waiting backup or
 * restore was still to come).
 */
import { readdir } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Lab, type LabSite } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import type { RequestHold } from '../../src/sim/request-holds.js';
import type { SiteContext } from '../../src/daemon/context.js';
import type { Daemon } from '../../src/daemon/daemon.js';
import type { ReplicaPosition } from '../../src/state/positions-repo.js';
import { use } from '../helpers/clients.js';
import { longHold } from '../helpers/long-hold.js';
import { waitFor } from '../helpers/wait.js';

/** A stop that waits for the held backup never returns: this bounds the wait (the hold itself has no end). */
const STOP_BOUND_MS = 10_000;

/** The sum of a counter's samples whose labels match `labels` (0 when none). */
async function counter(site: LabSite, metric: string, labels: RegExp): Promise<number> {
  const text = await site.registry.metrics();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${metric}{`) && labels.test(l))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

/** Stops `site`'s daemon; whether close() returned within STOP_BOUND_MS. */
async function stopsInTime(site: LabSite): Promise<boolean> {
  const closed = site.stopDaemon().then(() => true);
  return Promise.race([closed, new Promise<false>((r) => setTimeout(() => r(false), STOP_BOUND_MS))]);
}

describe('stopping the daemon while a device backup only read stalls', () => {
  let lab: Lab | undefined;
  const holds: RequestHold[] = [];
  const sim = (site: string) => lab!.site(site).sim as RunningSimulator;
  /** The next device backups at `site` wait, unanswered, until the hold closes. */
  const holdBackups = (site: string): RequestHold => {
    const h = sim(site).hold({ method: 'POST', path: /\/system\/backup$/ });
    holds.push(h);
    return h;
  };

  afterEach(async () => {
    // First: releasing the held backups frees a daemon whose close() waits for them (the code before the change).
    holds.splice(0).forEach((h) => h.close());
    await lab?.close();
    lab = undefined;
  });

  /** What a stop that cut a replica's sync must leave at `b`: nothing recorded, nothing blamed, nothing in work/. */
  async function expectAbandoned(b: LabSite, ctx: SiteContext, failuresBefore: number, before: { lastSyncOutcome?: string; lastOkAt?: number } | undefined): Promise<void> {
    expect(await counter(b, 'nethsm_replicator_syncs_total', /outcome="failure"/)).toBe(failuresBefore);
    expect(await counter(b, 'nethsm_replicator_sync_failures_total', /namespace="alpha"/)).toBe(0);
    // This site's NetHSM is not marked down for a cut backup, nor the primary.
    expect(ctx.monitor.get('nethsm')!.status).toBe('ok');
    expect(ctx.monitor.get('a')!.status).toBe('ok');
    ctx.store.open();
    try {
      const row = ctx.store.positions.get('alpha', 'a');
      if (before) expect(row).toMatchObject({ lastSyncOutcome: before.lastSyncOutcome, lastOkAt: before.lastOkAt });
      else expect(row?.lastSyncOutcome).toBeUndefined();
      expect(ctx.store.members.get('nethsm')?.status ?? 'ok').toBe('ok');
    } finally {
      ctx.store.close();
    }
    // Neither the B1 (early or the apply's) nor the snapshot is left behind.
    expect(await readdir(ctx.work.work)).toEqual([]);
  }

  // Before: the early B1 took no signal; close() waited for it (drain() awaits an early B1 being thrown away).
  it("cuts the replica's early B1: close() returns, the sync is abandoned, and runs after the start", { timeout: 120_000 }, async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    const b = lab.site('b');
    const d = b.daemon!;
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'k1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    // Synced once: the next sync takes its B1 early, while the snapshot downloads.
    await d.syncer.sync('alpha', { actor: 'test' });
    await d.syncer.drain();
    const before = d.ctx.store.positions.get('alpha', 'a')!;
    const failuresBefore = await counter(b, 'nethsm_replicator_syncs_total', /outcome="failure"/);
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'k2', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));

    const held = holdBackups('b');
    const answer = syncAnswer(d);
    await held.waitFor(1);
    // The snapshot is in and the apply waits for the early B1 (its first attempt merges from it).
    await waitFor(() => d.syncer.progressOf('alpha')?.step.startsWith('backing up'), 'the apply to wait for the early B1', 20_000);
    expect(await stopsInTime(b), `close() returned within ${STOP_BOUND_MS} ms while the early B1 stalled`).toBe(true);
    expect(await answer).toMatchObject({ code: 'NHR_ERR_SYNC_DAEMON_STOPPING', namespace: 'alpha' });
    // The cut closed the backup's connection: the simulator never served it.
    await waitFor(() => held.held() === 0, 'the held backup to be dropped');
    await expectAbandoned(b, d.ctx, failuresBefore, before);
    held.close();

    await syncsAfterStart(b, ['k1', 'k2']);
  });

  // Before: the download was cut, but drain() waited for the early B1 being thrown away.
  it('cuts the early B1 while the snapshot download stalls too: close() returns, the sync is abandoned', { timeout: 120_000 }, async () => {
    const { b, d, before, failuresBefore } = await syncedLab();

    // A's backup for the snapshot and B's early B1 both wait.
    const atA = holdBackups('a');
    const atB = holdBackups('b');
    const answer = syncAnswer(d);
    await atA.waitFor(1);
    await atB.waitFor(1);
    expect(d.syncer.progressOf('alpha')?.step).toMatch(/^fetching/);
    expect(await stopsInTime(b), `close() returned within ${STOP_BOUND_MS} ms while the download and the early B1 stalled`).toBe(true);
    expect(await answer).toMatchObject({ code: 'NHR_ERR_SYNC_DAEMON_STOPPING', namespace: 'alpha' });
    await waitFor(() => atB.held() === 0, "B's held backup to be dropped");
    await expectAbandoned(b, d.ctx, failuresBefore, before);
  });

  /** A lab whose alpha B synced once (its next sync takes an early B1); B's position and failures so far. */
  async function syncedLab(): Promise<{ b: LabSite; d: Daemon; before: ReplicaPosition; failuresBefore: number }> {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    const b = lab.site('b');
    const d = b.daemon!;
    await d.syncer.sync('alpha', { actor: 'test' });
    await d.syncer.drain();
    return { b, d, before: d.ctx.store.positions.get('alpha', 'a')!, failuresBefore: await counter(b, 'nethsm_replicator_syncs_total', /outcome="failure"/) };
  }

  /** A lab whose primary A holds key k1 in alpha, not yet synced at B; B's counts before its first sync. */
  async function firstSyncLab(): Promise<{ b: LabSite; d: Daemon; failuresBefore: number; restoresBefore: number }> {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    const b = lab.site('b');
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'k1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    return { b, d: b.daemon!, failuresBefore: await counter(b, 'nethsm_replicator_syncs_total', /outcome="failure"/), restoresBefore: sim('b').restores };
  }

  /** A sync of alpha at `d`: settles with its error, or undefined. */
  const syncAnswer = (d: Daemon): Promise<unknown> =>
    d.syncer.sync('alpha', { actor: 'test' }).then(
      () => undefined,
      (e: unknown) => e,
    );

  /** Starts B's daemon again: its sync of alpha is applied and B holds `keys`. */
  async function syncsAfterStart(b: LabSite, keys: string[]): Promise<void> {
    const again = await b.startDaemon();
    expect(await again.syncer.sync('alpha', { actor: 'test' })).toMatchObject({ outcome: 'applied' });
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toEqual(keys);
  }

  // Before: the early B1 waited for its shared hold whatever the stop, and drain() waited for it.
  it('cuts the early B1 still waiting for its barrier hold behind a long exclusive hold: close() returns, the device is not asked', { timeout: 120_000 }, async () => {
    const { b, d, before, failuresBefore } = await syncedLab();
    const backupsBefore = sim('b').backups;
    const restoresBefore = sim('b').restores;

    const hold = await longHold(d.ctx);
    try {
      const answer = d.syncer.sync('alpha', { actor: 'test' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      // The snapshot is in; the apply waits for the early B1, which waits for its shared hold.
      await waitFor(() => d.syncer.progressOf('alpha')?.step.startsWith('backing up'), 'the apply to wait for the early B1', 20_000);
      await waitFor(() => d.ctx.barrier.waiting >= 1, 'the early B1 to wait at the barrier');
      expect(await stopsInTime(b), `close() returned within ${STOP_BOUND_MS} ms while the early B1 waited for a long hold`).toBe(true);
      expect(await answer).toMatchObject({ code: 'NHR_ERR_SYNC_DAEMON_STOPPING', namespace: 'alpha' });
      expect(d.ctx.barrier.waiting).toBe(0);
    } finally {
      await hold.end();
    }
    // Left the queue: the hold's end admits nothing that asks the device.
    expect(sim('b').backups).toBe(backupsBefore);
    expect(sim('b').restores).toBe(restoresBefore);
    await expectAbandoned(b, d.ctx, failuresBefore, before);
  });

  // Before: the apply waited for its exclusive hold whatever the stop, then restored (minutes on a large appliance),
  // and drain() waited for all of it.
  it('gives up the apply waiting for its exclusive hold behind a long one: close() returns, nothing restored, and it runs after the start', { timeout: 120_000 }, async () => {
    const { b, d, failuresBefore, restoresBefore } = await firstSyncLab();
    // A first sync: its own B1, held at the simulator until the long hold is pending behind it.
    const held = holdBackups('b');
    const answer = syncAnswer(d);
    await held.waitFor(1);
    const hold = longHold(d.ctx);
    await waitFor(() => d.ctx.barrier.held, 'the long hold to be pending');
    held.close();
    const running = await hold;
    try {
      await waitFor(() => d.syncer.progressOf('alpha')?.step.startsWith('waiting for device writes'), 'the apply to wait for its exclusive hold', 20_000);
      expect(await stopsInTime(b), `close() returned within ${STOP_BOUND_MS} ms while the apply waited for its exclusive hold`).toBe(true);
      expect(await answer).toMatchObject({ code: 'NHR_ERR_SYNC_DAEMON_STOPPING', namespace: 'alpha' });
    } finally {
      await running.end();
    }
    expect(sim('b').restores).toBe(restoresBefore);
    // Only the long hold ran: the apply's never did.
    expect(d.ctx.barrier.held).toBe(false);
    await expectAbandoned(b, d.ctx, failuresBefore, undefined);

    await syncsAfterStart(b, ['k1']);
  });

  // Before: the apply's B1 took no signal; close() waited for it (drain() awaits a sync past its download).
  it("cuts the apply's own B1 before its restore (a first sync): close() returns, nothing changed, and it runs after the start", { timeout: 120_000 }, async () => {
    const { b, d, failuresBefore, restoresBefore } = await firstSyncLab();
    const held = holdBackups('b');
    const answer = syncAnswer(d);
    await held.waitFor(1);
    expect(d.syncer.progressOf('alpha')?.step).toMatch(/^backing up/);
    expect(await stopsInTime(b), `close() returned within ${STOP_BOUND_MS} ms while the apply's B1 stalled`).toBe(true);
    expect(await answer).toMatchObject({ code: 'NHR_ERR_SYNC_DAEMON_STOPPING', namespace: 'alpha' });
    await waitFor(() => held.held() === 0, 'the held backup to be dropped');
    expect(sim('b').restores).toBe(restoresBefore);
    await expectAbandoned(b, d.ctx, failuresBefore, undefined);
    held.close();

    await syncsAfterStart(b, ['k1']);
  });

  // Before: the backup serving the snapshot took no signal; close() waited for it (the peer API and the NetHSM pool).
  it("cuts the primary's backup for a peer's snapshot: the primary's close() returns, its NetHSM not blamed, the sync runs after its start", { timeout: 120_000 }, async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    const a = lab.site('a');
    const b = lab.site('b');
    const actx = a.daemon!.ctx;
    await use(a.nsAdmin('alpha'), (c) => c.generateKey({ id: 'k1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));

    const held = holdBackups('a');
    const answer = b.daemon!.syncer.sync('alpha', { actor: 'test' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    await held.waitFor(1);
    expect(await stopsInTime(a), `close() returned within ${STOP_BOUND_MS} ms while the snapshot's backup stalled`).toBe(true);
    await waitFor(() => held.held() === 0, 'the held backup to be dropped');
    // The replica's sync fails (its primary went away): NHR_ERR_DAEMON_STOPPING in a refusal when it went out before
    // the peer API closed, else a cut connection.
    expect(await answer).toMatchObject({ code: expect.stringMatching(/^NHR_ERR_PEER_(UNREACHABLE|REFUSED)$/) });
    // At the primary: its NetHSM not marked down, nothing left in work/.
    expect(actx.monitor.get('nethsm')!.status).toBe('ok');
    actx.store.open();
    try {
      expect(actx.store.members.get('nethsm')?.status ?? 'ok').toBe('ok');
    } finally {
      actx.store.close();
    }
    // The device backup's file is removed before the snapshot fails; its spool as the failed extract ends (not awaited
    // by the peer API's answer).
    await waitFor(async () => (await readdir(actx.work.work)).length === 0, 'the snapshot spool to be removed', 5_000);
    held.close();

    await a.startDaemon();
    expect(await b.daemon!.syncer.sync('alpha', { actor: 'test' })).toMatchObject({ outcome: 'applied' });
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toEqual(['k1']);
  });
});
