/**
 * The apply window against a simulator over real HTTPS: imports in flight together are recorded strictly in stream
 * order, a failure leaves the position at the last change before it, and the namespace's lock is given up.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FenceTokenStaleError } from '../errors.js';
import { NetHsmClient } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { prepare } from '../state/sqlite.js';
import { StateStore } from '../state/store.js';
import { Mutex } from '../util/mutex.js';
import { waitFor } from '../../test/helpers/wait.js';
import { until } from '../gateway/test-support.js';
import type { ApplyDeps } from './apply.js';
import { ApplyWindow, CatchupNeeded, ReadAheadDropped, RECORD_LINGER_MS, type WindowLimit } from './apply-window.js';
import type { ChangeLine } from './protocol.js';

const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
// The envelope is never opened here: present keys are recognised first, absent ones need a transport key there is none of.
const imported = (seq: number, keyId: string) => ({ type: 'change', epoch: 1, seq, at: 1000 + seq, ref: REF, kind: 'key-imported', keyId, envelope: {} }) as unknown as Extract<ChangeLine, { kind: 'key-imported' }>;

describe('apply window', () => {
  let sim: ProvisionedSimulator;
  let admin: NetHsmClient;
  let dir: string;
  let n = 0;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns'] });
    admin = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, auth: sim.nsUsers.ns!.admin });
    for (const id of ['p1', 'p2', 'p3', 'p4', 'p5']) await admin.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id });
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-window-'));
  });

  afterAll(async () => {
    await admin?.close();
    await sim?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function setup(size: number | WindowLimit = 4) {
    const store = StateStore.inDir(path.join(dir, String(n++))).open();
    store.roles.insert({ namespace: 'ns', role: 'replica', epoch: 1, primarySite: 'a' });
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 0, takenAt: 1, durationMs: 1 });
    const deps: ApplyDeps = { site: 'b', store, client: () => admin, transportKey: () => undefined };
    const lock = new Mutex();
    const seen: string[] = [];
    const window = new ApplyWindow({ deps, namespace: 'ns', source: 'a', lock, size, recorded: (l, o) => seen.push(`${l.seq}:${o}`) });
    const applied = () => store.db.prepare("SELECT seq, outcome FROM applied_changes WHERE namespace = 'ns' ORDER BY seq").all() as { seq: number; outcome: string }[];
    return { store, lock, seen, window, applied };
  }

  it('records imports in flight together in stream order and gives the lock up when drained', async () => {
    const { store, lock, seen, window, applied } = setup();
    for (const [i, id] of ['p1', 'p2', 'p3', 'p4', 'p5'].entries()) await window.add(imported(i + 1, id));
    await window.drain();
    expect(seen).toEqual(['1:present', '2:present', '3:present', '4:present', '5:present']);
    expect(applied().map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(store.positions.get('ns', 'a')?.seq).toBe(5);
    expect(lock.busy).toBe(false);
    store.close();
  });

  it('admits a key once while it is in flight, and only imports', async () => {
    const { store, window } = setup();
    await window.add(imported(1, 'p1')); // returns once the effect has started
    expect(window.accepts(imported(2, 'p1'))).toBe(false);
    expect(window.accepts(imported(2, 'p2'))).toBe(true);
    expect(window.accepts({ ...imported(2, 'p2'), kind: 'key-deleted' } as unknown as ChangeLine)).toBe(false);
    return window.drain().finally(() => store.close());
  });

  it('records nothing from a failed change on, and the drain reports the failure', async () => {
    const { store, lock, window, applied } = setup();
    await window.add(imported(1, 'p1'));
    await window.add(imported(2, 'absent')); // no transport key here: needs a snapshot
    await window.add(imported(3, 'p3'));
    await expect(window.drain()).rejects.toBeInstanceOf(CatchupNeeded);
    expect(applied().map((r) => r.seq)).toEqual([1]);
    expect(store.positions.get('ns', 'a')?.seq).toBe(1);
    expect(lock.busy).toBe(false);
    await window.drain(); // empty again: nothing left to report
    store.close();
  });

  // Before the fix the window learned of a failure only at the next add or drain: a stream that then received only
  // heartbeats kept the failed window, its device hold and the namespace's lock for ever (every sync timed out).
  it('tells its owner at once when a change fails, with no further change or drain', async () => {
    const store = StateStore.inDir(path.join(dir, String(n++))).open();
    store.roles.insert({ namespace: 'ns', role: 'replica', epoch: 1, primarySite: 'a' });
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 0, takenAt: 1, durationMs: 1 });
    const lock = new Mutex();
    const failures: unknown[] = [];
    const window = new ApplyWindow({
      deps: { site: 'b', store, client: () => admin, transportKey: () => undefined },
      namespace: 'ns',
      source: 'a',
      lock,
      size: 4,
      recorded: () => undefined,
      failed: (err) => failures.push(err),
    });
    await window.add(imported(1, 'absent')); // no transport key here: needs a snapshot
    await waitFor(() => failures.length > 0, 'the window to report its failure', 10_000);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toBeInstanceOf(CatchupNeeded);
    expect(lock.busy).toBe(true); // held until the owner drains
    await expect(window.drain()).rejects.toBeInstanceOf(CatchupNeeded);
    expect(lock.busy).toBe(false);
    expect(failures).toHaveLength(1);
    store.close();
  });

  it('refuses a gap after the changes in flight, recording what came before', async () => {
    const { store, window, applied } = setup();
    await window.add(imported(1, 'p1'));
    await expect(window.add(imported(3, 'p3'))).rejects.toThrow(/expected 1\.2 next/);
    expect(applied().map((r) => r.seq)).toEqual([1]);
    store.close();
  });

  it('records the imports of one turn in one transaction, and refuses a record whose predecessor did not commit', async () => {
    const { store, lock, window, applied } = setup();
    // Change 2 was recorded before without the position moving (as after a lost commit of a later change): its record
    // fails on the unique key, inside the group that also holds change 3's.
    prepare(store.db, "INSERT INTO applied_changes (namespace, source_site, log_id, epoch, seq, kind, outcome, applied_at) VALUES ('ns', 'a', '', 1, 2, 'key-imported', 'present', 1)").run();
    await window.add(imported(1, 'p1'));
    await window.add(imported(2, 'p2'));
    await window.add(imported(3, 'p3'));
    await expect(window.drain()).rejects.toThrow();
    // 1 is recorded; 3 is not, although its record was valid on its own: the position never skips 2.
    expect(applied().map((r) => r.seq)).toEqual([1, 2]);
    expect(store.positions.get('ns', 'a')?.seq).toBe(1);
    expect(lock.busy).toBe(false);
    store.close();
  });

  // Before: each record was a group commit of its own (imports end one per turn): a transaction and a WAL sync each.
  it('lets records wait for each other (RECORD_LINGER_MS) to share a group commit: nothing waits for a record but the lag', async () => {
    const { store, window, seen } = setup();
    const lingers: (number | undefined)[] = [];
    const groupCommit = store.groupCommit.bind(store);
    store.groupCommit = ((fn: () => unknown, options?: { lingerMs?: number }) => {
      lingers.push(options?.lingerMs);
      return groupCommit(fn, options);
    }) as typeof store.groupCommit;
    const before = store.groupCommitStats;
    for (const [i, id] of ['p1', 'p2', 'p3', 'p4', 'p5'].entries()) await window.add(imported(i + 1, id));
    await window.drain();
    expect(seen).toEqual(['1:present', '2:present', '3:present', '4:present', '5:present']);
    expect(lingers).toEqual(Array.from({ length: 5 }, () => RECORD_LINGER_MS));
    expect(RECORD_LINGER_MS).toBeGreaterThan(0);
    expect(store.groupCommitStats.writes - before.writes).toBe(5);
    store.close();
  });

  it('sizes itself from an adaptive limit: tells it when full and how long each import took', async () => {
    const samples: { ms: number; failed: boolean | undefined }[] = [];
    let full = 0;
    const limit: WindowLimit = { current: 2, full: () => full++, sample: (ms, failed) => samples.push({ ms, failed }) };
    const { store, window, seen } = setup(limit);
    for (const [i, id] of ['p1', 'p2', 'p3', 'p4', 'p5'].entries()) await window.add(imported(i + 1, id));
    await window.drain();
    expect(seen).toEqual(['1:present', '2:present', '3:present', '4:present', '5:present']);
    expect(full).toBeGreaterThan(0); // the third import waited for room
    expect(samples).toHaveLength(5);
    expect(samples.every((x) => x.ms >= 0 && !x.failed)).toBe(true);
    store.close();
  });

  // Before: a change its fence stopped (no device call) was sampled as an import answered in ~0 ms; that became the
  // limit's baseline, and the next full round's target (gain × rate × baseline) shrank the limit to 1.
  it('tells the adaptive limit nothing of a change its fence stopped before the device', async () => {
    const samples: { ms: number; failed: boolean | undefined }[] = [];
    const limit: WindowLimit = { current: 2, full: () => undefined, sample: (ms, failed) => samples.push({ ms, failed }) };
    const { store, lock, seen } = setup(limit);
    let stale = false;
    const fence = () => {
      if (stale) throw new FenceTokenStaleError('stream apply of namespace ns abandoned before touching the device (test)', { namespace: 'ns' });
    };
    const window = new ApplyWindow({ deps: { site: 'b', store, client: () => admin, transportKey: () => undefined }, namespace: 'ns', source: 'a', lock, size: limit, fence, recorded: (l, o) => seen.push(`${l.seq}:${o}`) });
    const held = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/p[1-5]$/ });
    try {
      await window.add(imported(1, 'p1'));
      await window.add(imported(2, 'p2'));
      await held.waitFor(2);
      stale = true; // e.g. a pause committed; p3 waits for room and is stopped by its fence when it gets it
      const third = window.add(imported(3, 'p3')).catch((err: unknown) => err);
      held.release();
      await third; // admitted once p1 or p2 ended; its effect then stopped at the fence (or the add saw the failure)
      await window.drain().catch((err: unknown) => expect(err).toBeInstanceOf(FenceTokenStaleError));
      expect(held.caught()).toBe(2);
      expect(seen).toEqual(['1:present', '2:present']);
      expect(samples).toHaveLength(2); // p1 and p2, which the device answered
      expect(lock.busy).toBe(false);
    } finally {
      held.close();
      store.close();
    }
  });

  // Before: an add() waiting for room when an exclusive holder began to wait got the room of the next import that
  // ended and started on the device, so the exclusive hold waited for one more import than was in flight.
  it('starts no new import for an add() that waited for room once an exclusive holder wants in: it drains first', async () => {
    const { store, lock, seen } = setup();
    let wanted = false;
    let fenced = 0;
    let reached = 0;
    const window = new ApplyWindow({
      deps: { site: 'b', store, client: () => admin, transportKey: () => undefined },
      namespace: 'ns',
      source: 'a',
      lock,
      size: 2,
      yieldWanted: () => wanted,
      fence: () => void fenced++,
      reached: () => void reached++,
      recorded: (l, o) => seen.push(`${l.seq}:${o}`),
    });
    const held = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/p[1-5]$/ });
    try {
      await window.add(imported(1, 'p1'));
      await window.add(imported(2, 'p2'));
      await held.waitFor(2);
      const third = window.add(imported(3, 'p3')); // waits for room
      wanted = true; // an exclusive holder now waits for this window
      held.release(1);
      await until(() => reached === 1, 'one of the two imports to end');
      expect(fenced).toBe(2); // p3 did not start while the other was still in flight
      held.close(); // the rest, p3 included, pass
      await third;
      await window.drain();
      expect(fenced).toBe(3);
      expect(seen).toEqual(['1:present', '2:present', '3:present']);
      expect(lock.busy).toBe(false);
    } finally {
      held.close();
      store.close();
    }
  });

  // Before: the window drained every `holdBound` changes whether or not anyone waited for the lock, leaving the device
  // idle for a whole window's latency each time (one drain per 256 changes under a steady stream).
  it('keeps the lock past its hold bound while nobody waits for it, and lets a waiter in after the bound', async () => {
    const store = StateStore.inDir(path.join(dir, String(n++))).open();
    store.roles.insert({ namespace: 'ns', role: 'replica', epoch: 1, primarySite: 'a' });
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 0, takenAt: 1, durationMs: 1 });
    const lock = new Mutex();
    let acquisitions = 0;
    const run = lock.run.bind(lock);
    lock.run = ((fn: () => Promise<unknown>) => (acquisitions++, run(fn))) as typeof lock.run;
    const order: string[] = [];
    const deps: ApplyDeps = { site: 'b', store, client: () => admin, transportKey: () => undefined };
    const window = new ApplyWindow({ deps, namespace: 'ns', source: 'a', lock, size: 8, holdBound: 2, recorded: (l) => order.push(`record ${l.seq}`) });
    for (const [i, id] of ['p1', 'p2', 'p3', 'p4'].entries()) await window.add(imported(i + 1, id));
    expect(acquisitions).toBe(1); // four changes under one hold: nobody waited
    // A caller waits for the namespace's lock (a sync): the next change after the bound drains first and lets it in.
    const waiter = lock.run(async () => void order.push('waiter'));
    await window.add(imported(5, 'p5'));
    await waiter;
    await window.drain();
    expect(order).toEqual(['record 1', 'record 2', 'record 3', 'record 4', 'waiter', 'record 5']);
    store.close();
  });
  // Read-ahead (a rewind's re-apply): queued imports that have not started are dropped when the owner stops, never
  // started later (e.g. inside the exclusive hold of a merge-restore that cut the stream); the records before the first
  // dropped one are made, none after it. Before read-ahead there was no queue: every admitted import had started.
  it('drops queued read-ahead imports on abandon: none starts, nothing from the first dropped one is recorded', async () => {
    const { store, lock, window, applied, seen } = setup(2);
    const held = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/p[1-5]$/ });
    try {
      for (const [i, id] of ['p1', 'p2', 'p3', 'p4', 'p5'].entries()) await window.queue(imported(i + 1, id));
      await held.waitFor(2); // the window's size: p3..p5 queued
      const abandoned = window.abandon();
      held.release();
      await abandoned;
      expect(held.caught()).toBe(2);
      expect(seen).toEqual(['1:present', '2:present']);
      expect(applied().map((r) => r.seq)).toEqual([1, 2]);
      expect(store.positions.get('ns', 'a')?.seq).toBe(2);
      expect(lock.busy).toBe(false);
      await window.drain(); // empty and reusable: nothing left to report
    } finally {
      held.close();
      store.close();
    }
  });

  // The token is checked once per device hold (admit), and one hold carries many changes: before, queued read-ahead
  // imports (and an add waiting for room) started on the device after a pause or role change had committed.
  it('starts no change once its fence says the token is stale: queued imports are not started, those at the device are recorded', async () => {
    const { store, lock, applied, seen } = setup(2);
    let stale = false;
    const fence = () => {
      if (stale) throw new FenceTokenStaleError('stream apply of namespace ns abandoned before touching the device (test)', { namespace: 'ns' });
    };
    const window = new ApplyWindow({ deps: { site: 'b', store, client: () => admin, transportKey: () => undefined }, namespace: 'ns', source: 'a', lock, size: 2, fence, recorded: (l, o) => seen.push(`${l.seq}:${o}`) });
    const held = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/p[1-5]$/ });
    try {
      for (const [i, id] of ['p1', 'p2', 'p3', 'p4', 'p5'].entries()) await window.queue(imported(i + 1, id));
      await held.waitFor(2); // the window's size: p3..p5 queued
      stale = true; // e.g. a pause committed
      held.release();
      await expect(window.drain()).rejects.toBeInstanceOf(FenceTokenStaleError);
      expect(held.caught()).toBe(2); // p3..p5 never reached the device
      expect(seen).toEqual(['1:present', '2:present']);
      expect(applied().map((r) => r.seq)).toEqual([1, 2]);
      expect(store.positions.get('ns', 'a')?.seq).toBe(2);
      expect(lock.busy).toBe(false);
    } finally {
      held.close();
      store.close();
    }
  });

  it('starts a barrier drain\'s queued imports and records them all; a later add fails the window if it must let an exclusive holder in', async () => {
    const { store, window, applied } = setup(2);
    for (const [i, id] of ['p1', 'p2', 'p3', 'p4'].entries()) await window.queue(imported(i + 1, id));
    await window.drain();
    expect(applied().map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    // An exclusive holder waits while read-ahead imports are queued: the window drops them rather than start them.
    let wanted = false;
    const lock = new Mutex();
    const w2 = new ApplyWindow({ deps: { site: 'b', store, client: () => admin, transportKey: () => undefined }, namespace: 'ns', source: 'a', lock, size: 2, yieldWanted: () => wanted, recorded: () => undefined });
    const held = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/p[1-5]$/ });
    try {
      for (const [i, id] of ['p5', 'p1', 'p2', 'p3'].entries()) await w2.queue(imported(i + 5, id));
      await held.waitFor(2); // 5 and 6 at the device (the size is 2); 7 and 8 queued
      wanted = true;
      const next = w2.queue(imported(9, 'p4'));
      held.release();
      await expect(next).rejects.toBeInstanceOf(ReadAheadDropped);
      expect(held.caught()).toBe(2); // 7 and 8 never started
      expect(store.positions.get('ns', 'a')?.seq).toBe(6);
      expect(lock.busy).toBe(false);
    } finally {
      held.close();
      store.close();
    }
  });
  // New changes first can leave the span's first import queued, not started, while a new change waits for its record
  // room behind it (RECORD_BACKLOG). A failure then (here: an exclusive holder wants in, so the queue must not start)
  // must drop the queue at once: before, it was dropped only by the drain, which that waiting add() never reached, so
  // the window kept its device hold and the namespace's lock for good.
  it('drops the queued imports as soon as it fails, so a new change waiting for record room behind them is let go', async () => {
    const { store, lock, window: unused } = setup();
    await unused.drain();
    const ids = Array.from({ length: 9 }, (_, i) => `r${i + 1}`);
    for (const id of ids) await admin.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id });
    let wanted = false;
    const deps: ApplyDeps = { site: 'b', store, client: () => admin, transportKey: () => undefined };
    const w = new ApplyWindow({ deps, namespace: 'ns', source: 'a', lock, size: 2, yieldWanted: () => wanted, recorded: () => undefined });
    const held = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/(q0|r\d+)$/ });
    try {
      await w.queue(imported(1, 'q0')); // the span's import: its start waits for this turn's admissions
      await w.add(imported(2, 'r1'));
      await w.add(imported(3, 'r2')); // the device's room (2) taken by new changes: q0 stays queued
      await held.waitFor(2);
      // Each new change waits for room; the effect that ends gives its room to it, never to q0 (new changes first).
      for (let i = 3; i <= 8; i++) {
        const next = w.add(imported(i + 1, `r${i}`));
        held.release(1);
        await next;
        await held.waitFor(2);
      }
      // r1..r8 are done on the device and wait for their records behind q0: the next new change waits for record room.
      const last = w.add(imported(10, 'r9')).then(
        () => 'admitted',
        (err: unknown) => err,
      );
      wanted = true; // an exclusive holder now waits: q0 must never start
      held.release(1);
      await held.waitFor(1);
      held.release();
      const outcome = await Promise.race([last, new Promise((r) => setTimeout(() => r('hung: the window kept its hold and the lock'), 5_000).unref())]);
      expect(outcome).toBeInstanceOf(ReadAheadDropped);
      expect(held.requests().map((r) => r.path)).toEqual([]);
      expect(held.caught()).toBe(8); // r1..r8; q0 never started, r9 was not admitted
      expect(store.positions.get('ns', 'a')?.seq).toBe(0);
      expect(lock.busy).toBe(false);
    } finally {
      held.close();
      for (const id of ids) await admin.deleteKey(id);
      store.close();
    }
  });
});
