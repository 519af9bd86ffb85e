/**
 * Racing writes re-applied (docs/concurrency.md, "Racing writes re-applied"): a replica that keeps taking writes in a
 * namespace it is primary of restores the merge it made outside the hold and re-applies those writes from its change
 * log inside the hold, instead of merging again (one device backup fewer, writes held for the restore and the replay
 * only). Writes that cannot be re-applied (a key generated inside the NetHSM) still send the sync to a new merge. A
 * replay left pending (the NetHSM refused it right after a restore, or the daemon stopped in between) refuses writes to
 * its namespace with 503 until it is done, says so in status, and is finished at the next start before any write.
 * Device backups are counted at the simulator; every write is made through B's real gateway.
 */
import path from 'node:path';
import { AsyncResource } from 'node:async_hooks';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { applySnapshot, type ApplyDeps } from '../../src/replicator/snapshot-apply.js';
import { takeSnapshot } from '../../src/replicator/snapshot-source.js';
import { removeFiles } from '../../src/replicator/workdir.js';
import type { ReplayPlan } from '../../src/replicator/race-replay.js';
import { StateStore, STATE_DB_FILE } from '../../src/state/store.js';
import { NetHsmHttpError, SyncSourceReplayingError } from '../../src/errors.js';
import { use } from '../helpers/clients.js';
import { snapshotAndDeps as snapshotAt } from '../helpers/snapshot-deps.js';
import { caughtUp, eventually, importBody, streamReady } from './stream-helpers.js';

describe('racing writes re-applied after a merge-restore', () => {
  let lab: Lab;
  const backupsAtB = () => (lab.site('b').sim as RunningSimulator).backups;
  const betaAdmin = () => lab.site('b').gatewayClient('beta~admin', LAB_PASSPHRASES.nsAdmin);
  const betaKeys = async () => (await use(lab.site('b').nsAdmin('beta'), (c) => c.listKeys())).sort();

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }, { name: 'gamma', primary: 'a' }], gateway: true });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    await use(betaAdmin(), async (c) => {
      await c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'keep');
      await c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'gone');
    });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  // A test ends when its replay is no longer pending; the retry round that finished it may still hold the barrier a
  // moment, and an attempt starting then counts that hold as a racing write (merging again, importing its racing key
  // twice). Each test starts once the retries are over.
  beforeEach(async () => {
    await lab.site('b').daemon?.ctx.raceReplayer?.idle();
  });

  /** A fresh snapshot of alpha from A, and B's apply dependencies with its daemon's replayer. */
  const snapshotAndDeps = (over: Partial<ApplyDeps>) =>
    snapshotAt(lab, { site: 'b', directWriters: false, maxRemerges: 1, raceReplay: lab.site('b').daemon!.ctx.raceReplayer!, ...over });

  // Before: any write through the gateway during the backup and merge threw the attempt away (a new backup and merge,
  // or the held sequence with a backup inside the hold).
  it('restores the merge made outside the hold and re-applies the racing gateway writes inside it: one device backup, nothing lost', async () => {
    const b = lab.site('b');
    const plans: ReplayPlan[] = [];
    let acknowledged = 0;
    // Bound to the test's context: from inside the apply they are still gateway requests (their own connections).
    const racingWrites = AsyncResource.bind(async () => {
      await use(betaAdmin(), async (c) => {
        await c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'raced-import');
        await c.setKeyLabel('keep', 'relabelled');
        await c.addKeyTag('keep', 'raced');
        await c.deleteKey('gone');
      });
      acknowledged = 4;
    });
    const { file, deps } = await snapshotAndDeps({ beforeHold: racingWrites, onRaceReplayed: (_ns, plan) => plans.push(plan) });
    const before = backupsAtB();
    const r = await applySnapshot(deps, 'alpha', file);
    expect(acknowledged).toBe(4);
    // Verified: beta, re-applied after the restore, is left out of the comparison; everything else is as merged.
    expect(r).toMatchObject({ remerges: 0, heldMerge: false, verified: true });
    // B1 and the verification's B3: no second backup and merge.
    expect(backupsAtB() - before).toBe(2);
    expect(plans).toHaveLength(1);
    expect([...plans[0]!.logs.keys()]).toEqual(['beta']);
    // Every acknowledged write is on the device after the restore.
    expect(await betaKeys()).toEqual(['keep', 'raced-import']);
    const keep = await use(b.nsAdmin('beta'), (c) => c.getKey('keep'));
    expect(keep).toMatchObject({ restrictions: { tags: ['raced'] } });
    expect(await use(b.nsAdmin('beta'), (c) => c.listKeys({ label: 'relabelled' }))).toEqual(['keep']);
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toEqual(['a1']);
    // Nothing left pending; the own-site envelopes are gone once nothing can need them.
    expect(b.daemon!.ctx.store.raceReplays.all()).toEqual([]);
    await b.daemon!.ctx.raceReplayer!.settle();
    const own = b.daemon!.ctx.store.db.prepare("SELECT count(*) AS n FROM change_log WHERE json_type(envelopes, '$.b') IS NOT NULL").get() as { n: number };
    expect(own.n).toBe(0);
  });

  it('a stream apply of another namespace that raced the sync is made good by moving its position back: the stream applies it again', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    const plans: ReplayPlan[] = [];
    const gammaAtB = async () => (await use(b.nsOperator('gamma'), (c) => c.listKeys())).sort();
    await streamReady([a, b]);
    // gamma's first sync at B: its stream starts from that snapshot's position.
    await b.daemon!.syncer.sync('gamma', { actor: 'test' });
    await use(a.gatewayClient('gamma~admin', LAB_PASSPHRASES.nsAdmin), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'g0'));
    await caughtUp(a, b, 'gamma');
    // A imports into gamma; B's stream applies them while B's backup and merge of alpha run.
    const streamed = AsyncResource.bind(async () => {
      await use(a.gatewayClient('gamma~admin', LAB_PASSPHRASES.nsAdmin), async (c) => {
        for (const id of ['g1', 'g2', 'g3']) await c.importKey(importBody('EC_P256', ['ECDSA_Signature']), id);
      });
      await caughtUp(a, b, 'gamma');
      expect(await gammaAtB()).toEqual(['g0', 'g1', 'g2', 'g3']);
    });
    const { file, deps } = await snapshotAndDeps({ beforeHold: streamed, onRaceReplayed: (_ns, plan) => plans.push(plan) });
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r).toMatchObject({ remerges: 0, heldMerge: false });
    expect(plans.map((p) => p.streams.map((s) => s.namespace))).toEqual([['gamma']]);
    // The restore took B back to before those applies; the stream, moved back, applies them again.
    await eventually(async () => (await gammaAtB()).length === 4, 30_000, "gamma's keys back at B");
    await caughtUp(a, b, 'gamma');
  });

  // The first build refused it with 503 NHR_ERR_GATEWAY_REPLAY_PENDING: the replay is recorded as pending while the hold
  // runs, and the gateway took that for a failed replay.
  it('a write arriving while the hold re-applies racing writes waits at the gate like any held write, and lands after them', async () => {
    let duringHold: Promise<void> | undefined;
    const racing = AsyncResource.bind(() => use(betaAdmin(), (c) => c.setKeyLabel('keep', 'raced-again')));
    const writeDuringHold = AsyncResource.bind(() => use(betaAdmin(), (c) => c.addKeyTag('keep', 'during-hold')));
    const { file, deps } = await snapshotAndDeps({
      beforeHold: racing,
      onPhase: (phase) => {
        if (phase === 'restore') duringHold = writeDuringHold();
      },
    });
    const r = await applySnapshot(deps, 'alpha', file);
    await duringHold;
    expect(r).toMatchObject({ remerges: 0, heldMerge: false });
    expect(await use(lab.site('b').nsAdmin('beta'), (c) => c.getKey('keep'))).toMatchObject({ restrictions: { tags: expect.arrayContaining(['raced', 'during-hold']) } });
    expect(await use(lab.site('b').nsAdmin('beta'), (c) => c.listKeys({ label: 'raced-again' }))).toEqual(['keep']);
  });

  it('still merges again when a racing write cannot be re-applied (a key generated inside the NetHSM)', async () => {
    let n = 0;
    const generate = AsyncResource.bind(async () => {
      if (n++ > 0) return;
      await use(betaAdmin(), (c) => c.generateKey({ id: 'device-made', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    });
    const { file, deps } = await snapshotAndDeps({ beforeHold: generate });
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r.remerges).toBe(1);
    expect(await betaKeys()).toContain('device-made');
  });

  it('a replay the NetHSM refuses stays pending: writes to the namespace get 503 naming it, status says so, and it finishes once the NetHSM is back', async () => {
    const b = lab.site('b');
    const replayer = b.daemon!.ctx.raceReplayer!;
    // Lock the NetHSM between the restore and the replay: the restore went through, the replay cannot.
    const lockBeforeReplay = AsyncResource.bind(async () => {
      await use(betaAdmin(), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'pending-import'));
    });
    const { file, deps } = await snapshotAndDeps({ beforeHold: lockBeforeReplay });
    // The fault, injected at the one moment that matters: the NetHSM locks after the restore, as the replay begins.
    const original = replayer.replay.bind(replayer);
    replayer.replay = async (plan) => {
      await use(b.client(), (c) => c.lock());
      return original(plan);
    };
    try {
      await expect(applySnapshot(deps, 'alpha', file)).rejects.toThrow();
    } finally {
      replayer.replay = original;
    }
    expect(replayer.pending()).toEqual(new Set(['beta']));
    const refused = await use(betaAdmin(), (c) => c.setKeyLabel('keep', 'while-pending')).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(NetHsmHttpError);
    expect(refused).toMatchObject({ status: 503 });
    expect(String((refused as NetHsmHttpError).nethsmMessage ?? (refused as Error).message)).toMatch(/NHR_ERR_GATEWAY_REPLAY_PENDING|re-applied from its change log/);
    const holdsBefore = b.daemon!.ctx.barrier.exclusiveRuns;
    const status = await b.daemon!.status();
    expect(status.replaysPending).toMatchObject({ namespaces: ['beta'] });
    expect(status.replaysPending!.cause).toMatch(/NOT RE-APPLIED/);
    // The erased import is the log's head, not on the device: the stream's onDevice stops before it (before: the head).
    const [record] = b.daemon!.ctx.store.raceReplays.all();
    const beta = b.daemon!.stream.status('beta')!;
    expect(beta.position!.seq).toBeGreaterThanOrEqual(record!.fromSeq);
    expect(beta.onDevice).toEqual({ epoch: record!.epoch, seq: record!.fromSeq - 1 });
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await eventually(() => replayer.pending().size === 0, 60_000, 'the pending replay to finish');
    // The retry ran in an exclusive hold of its own (started from inside the sync's hold, it re-entered that one and
    // ran unexcluded in the first build: exclusiveRuns did not move).
    expect(b.daemon!.ctx.barrier.exclusiveRuns).toBeGreaterThan(holdsBefore);
    expect(await betaKeys()).toContain('pending-import');
    expect(b.daemon!.stream.status('beta')!.onDevice).toEqual(b.daemon!.stream.status('beta')!.position);
    await use(betaAdmin(), (c) => c.setKeyLabel('keep', 'after-replay'));
  });

  it('a restore that fails after the replay was recorded leaves it to the daemon, which finishes it in a hold of its own', async () => {
    const b = lab.site('b');
    const replayer = b.daemon!.ctx.raceReplayer!;
    const racing = AsyncResource.bind(async () => {
      await use(betaAdmin(), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'before-failed-restore'));
    });
    const { file, deps } = await snapshotAndDeps({ beforeHold: racing });
    // The fault: the NetHSM locks right before the restore call, which it then refuses.
    const real = deps.device;
    const device = {
      barrier: real.barrier,
      backupForReading: real.backupForReading.bind(real),
      backupTo: real.backupTo.bind(real),
      restore: async (...args: Parameters<typeof real.restore>) => {
        await use(b.client(), (c) => c.lock());
        return real.restore(...args);
      },
    } as unknown as typeof real;
    const holdsBefore = b.daemon!.ctx.barrier.exclusiveRuns;
    await expect(applySnapshot({ ...deps, device }, 'alpha', file)).rejects.toThrow();
    expect(replayer.pending()).toEqual(new Set(['beta']));
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await eventually(() => replayer.pending().size === 0, 60_000, 'the pending replay to finish');
    expect(b.daemon!.ctx.barrier.exclusiveRuns).toBeGreaterThan(holdsBefore + 1);
    expect(await betaKeys()).toContain('before-failed-restore');
  });

  // Before: only a failed restore call started the retries. A throw after the restore and before the replay was fixed
  // (recording the position: a disk error) left the record pending with no retry running: writes to beta refused
  // (503 REPLAY_PENDING) and status promising retries until a role change or a restart.
  it('a failure after the restore, before the replay is fixed, leaves the record to the daemon, which finishes it', async () => {
    const b = lab.site('b');
    const replayer = b.daemon!.ctx.raceReplayer!;
    const racing = AsyncResource.bind(async () => {
      await use(betaAdmin(), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'before-failed-record'));
    });
    const { file, deps } = await snapshotAndDeps({
      beforeHold: racing,
      afterRestore: () => {
        throw new Error('disk I/O error (test): the position could not be recorded');
      },
    });
    await expect(applySnapshot(deps, 'alpha', file)).rejects.toThrow(/disk I\/O error/);
    await eventually(() => replayer.pending().size === 0, 30_000, 'the pending replay to finish (the daemon\'s retries)');
    expect(await betaKeys()).toContain('before-failed-record');
  });

  it('a replay left by a daemon that stopped after the restore is finished at start, before the gateway takes writes', async () => {
    const b = lab.site('b');
    // An import logged at B with its own-site envelope (as while a merge-restore tracks writes), then erased from the
    // device as that restore would, with the daemon gone before it could re-apply it.
    // The daemon stops with the tracker still open, as a crash inside a merge-restore would leave it: closed before,
    // a sync of another namespace ending meanwhile lets the daemon drop the own envelope (nothing could need it then),
    // and the import is no longer re-appliable (a flake under load, not a daemon fault).
    const tracker = b.daemon!.ctx.barrier.trackWrites();
    let seq: number;
    try {
      await use(betaAdmin(), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'crash-import'));
      seq = b.daemon!.ctx.store.changelog.maxSeq('beta');
      await b.stopDaemon();
    } finally {
      tracker.close();
    }
    await use(b.nsAdmin('beta'), (c) => c.deleteKey('crash-import'));
    const store = StateStore.inDir(b.stateDir).open();
    try {
      expect(path.basename(store.file)).toBe(STATE_DB_FILE);
      store.raceReplays.record(new Map([['beta', { epoch: store.roles.require('beta').epoch, fromSeq: seq }]]));
    } finally {
      store.close();
    }
    await b.startDaemon();
    // start() took the barrier for the replay before the gateway listened: a write to beta is refused (503, retryable)
    // while it runs, and lands on the re-imported key once it is done; never on a device still missing it.
    const refusals: unknown[] = [];
    await eventually(
      () =>
        use(betaAdmin(), (c) => c.setKeyLabel('crash-import', 'after-start')).then(
          () => true,
          (err: unknown) => {
            refusals.push(err);
            return false;
          },
        ),
      30_000,
      'a write to beta after the start',
    );
    for (const err of refusals) expect(err).toMatchObject({ status: 503, message: expect.stringMatching(/NHR_ERR_GATEWAY_REPLAY_PENDING/) });
    expect(await betaKeys()).toContain('crash-import');
    expect(b.daemon!.ctx.store.raceReplays.all()).toEqual([]);
  });

  it('a snapshot served while a replay is pending claims no position past the erased changes: a replica streams them again', async () => {
    const b = lab.site('b');
    const replayer = b.daemon!.ctx.raceReplayer!;
    const store = b.daemon!.ctx.store;
    // A label set through B's gateway (logged), then erased from the device as a merge-restore would, its re-apply
    // recorded as pending (as prepare() does inside the hold) and not yet run.
    await use(betaAdmin(), (c) => c.setKeyLabel('keep', 'before-erase'));
    await use(betaAdmin(), (c) => c.setKeyLabel('keep', 'erased-by-restore'));
    const seq = store.changelog.maxSeq('beta');
    await use(b.nsAdmin('beta'), (c) => c.setKeyLabel('keep', 'before-erase'));
    replayer.prepare({ logs: new Map([['beta', seq]]), streams: [], writes: 1 });
    try {
      const snap = await takeSnapshot(b.daemon!.failover.snapshotDeps(), 'beta', store.roles.require('beta').epoch);
      await removeFiles(snap.file);
      // The device lacks change `seq`: a replica restoring this snapshot must stream it again, not resume after it.
      expect(snap.meta.seq).toBeLessThan(seq);
    } finally {
      replayer.kick();
      await eventually(() => replayer.pending().size === 0, 60_000, 'the pending replay to finish');
    }
    expect(await use(lab.site('b').nsAdmin('beta'), (c) => c.listKeys({ label: 'erased-by-restore' }))).toEqual(['keep']);
  });

  // Before: the snapshot's position was read before its backup waited for its hold, so a restore in between that left
  // its re-apply pending made the snapshot claim changes its backup lacked.
  it('a snapshot whose backup is admitted after a restore erased changes it claims is not served', async () => {
    const b = lab.site('b');
    const replayer = b.daemon!.ctx.raceReplayer!;
    const store = b.daemon!.ctx.store;
    const barrier = b.daemon!.ctx.barrier;
    await use(betaAdmin(), (c) => c.setKeyLabel('keep', 'before-hold'));
    await use(betaAdmin(), (c) => c.setKeyLabel('keep', 'erased-in-hold'));
    const seq = store.changelog.maxSeq('beta');
    let release!: () => void;
    const holding = new Promise<void>((r) => (release = r));
    let inHold!: () => void;
    const entered = new Promise<void>((r) => (inHold = r));
    // A merge-restore's hold: it erases change `seq` and leaves its re-apply pending.
    const hold = barrier.exclusive([], async () => {
      inHold();
      await holding;
      await use(b.nsAdmin('beta'), (c) => c.setKeyLabel('keep', 'before-hold'));
      replayer.prepare({ logs: new Map([['beta', seq]]), streams: [], writes: 1 });
    });
    await entered;
    // The snapshot reads its position now (the head, `seq`), then waits for the hold to end before its backup.
    const snapshot = takeSnapshot(b.daemon!.failover.snapshotDeps(), 'beta', store.roles.require('beta').epoch).then(
      async (snap) => {
        await removeFiles(snap.file);
        return snap;
      },
      (err: unknown) => err,
    );
    // Its backup is requested (position read) and waits at the barrier for the hold.
    await eventually(() => barrier.waiting > 0, 10_000, 'the snapshot backup to wait for the hold');
    release();
    await hold;
    try {
      const out = await snapshot;
      expect(out).toBeInstanceOf(SyncSourceReplayingError);
    } finally {
      replayer.kick();
      await eventually(() => replayer.pending().size === 0, 60_000, 'the pending replay to finish');
    }
    expect(await use(b.nsAdmin('beta'), (c) => c.listKeys({ label: 'erased-in-hold' }))).toEqual(['keep']);
  });

  it('a demote while a replay is pending re-applies it before the hand-off snapshot: the successor gets the erased change', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    const replayer = b.daemon!.ctx.raceReplayer!;
    const store = b.daemon!.ctx.store;
    await use(betaAdmin(), (c) => c.setKeyLabel('keep', 'pre-demote'));
    await use(betaAdmin(), (c) => c.setKeyLabel('keep', 'demote-erased'));
    const seq = store.changelog.maxSeq('beta');
    await caughtUp(b, a, 'beta');
    // Erased from B's device by a restore; its re-apply recorded as pending and not yet run.
    await use(b.nsAdmin('beta'), (c) => c.setKeyLabel('keep', 'pre-demote'));
    replayer.prepare({ logs: new Map([['beta', seq]]), streams: [], writes: 1 });
    await b.daemon!.failover.demote('beta', { to: 'a', actor: 'op' });
    expect(a.daemon!.ctx.store.roles.require('beta')).toMatchObject({ role: 'primary', primarySite: 'a' });
    expect(await use(a.nsAdmin('beta'), (c) => c.listKeys({ label: 'demote-erased' }))).toEqual(['keep']);
    await eventually(() => replayer.pending().size === 0, 60_000, 'the pending replay to finish or be dropped');
  });
});
