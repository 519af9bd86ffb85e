/**
 * Stream applies that a merge-restore's restore erases, made good by moving the stream position back before them
 * (docs/concurrency.md, "Racing writes re-applied"): each stream hold's write ticket names what it applied, and a
 * rewind inside an exclusive hold, before the restore, makes the puller apply those changes again once the hold ends.
 * The restore here is of an older backup of the replica's own device: it loses the keys the stream put there since.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WriteReplay } from '../../src/concurrency/barrier.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { caughtUp, eventually, streamingPair } from './stream-helpers.js';

const NS = 'alpha';

describe('a replica stream rewound inside a merge-restore hold', () => {
  let lab: Lab;
  let a: LabSite;
  let b: LabSite;

  beforeAll(async () => {
    ({ lab, a, b } = await streamingPair(NS));
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  const head = () => a.daemon!.ctx.store.changelog.head(NS, a.daemon!.ctx.store.roles.require(NS).epoch).seq;
  const keysAtB = async () => new Set(await b.daemon!.stream.client(NS).listKeys());

  /** Runs `writes` at a (through its gateway) while a tracker is open at b; b's stream holds of NS and their tickets. */
  async function tracked(writes: (gw: ReturnType<LabSite['gatewayClient']>) => Promise<void>): Promise<WriteReplay[]> {
    const tracker = b.daemon!.ctx.barrier.trackWrites();
    const gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    try {
      await writes(gw);
      await caughtUp(a, b, NS);
      // Read as a merge-restore does, inside an exclusive hold: every holder listed has released, its ticket final
      // (a position is visible at COMMIT, before its group's fsync ends and the hold's ticket is set).
      return await b.daemon!.ctx.barrier.exclusive([], () => Promise.resolve(tracker.writes().filter((w) => w.scope === NS).map((w) => w.ticket.replay)));
    } finally {
      await gw.close();
      tracker.close();
    }
  }

  const failedAtB = async () => (await b.daemon!.ctx.metrics.streamChangesAppliedTotal.get()).values.find((v) => v.labels.namespace === NS && v.labels.outcome === 'failed')?.value ?? 0;
  const generate = (gw: ReturnType<LabSite['gatewayClient']>) => gw.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });

  it('tickets each stream hold with the earliest change it applied: imports (the window) and a delete (alone)', async () => {
    const h0 = head();
    let victim = '';
    const replays = await tracked(async (gw) => {
      victim = await generate(gw);
      await generate(gw);
      await gw.deleteKey(victim);
    });
    expect(replays.length).toBeGreaterThan(0);
    for (const r of replays) expect(r).toMatchObject({ kind: 'stream', namespace: NS, source: 'a' });
    const seqs = replays.map((r) => (r.kind === 'stream' ? r.seq : -1));
    // The first import opens the first hold; the delete is applied alone, under a hold of its own.
    expect(seqs).toContain(h0 + 1);
    expect(seqs).toContain(h0 + 3);
    for (const s of seqs) expect(s).toBeGreaterThan(h0);
    expect((await keysAtB()).has(victim)).toBe(false);
  });

  it('re-applies, after the hold, the changes a restore of an older device backup erased', async () => {
    const ctx = b.daemon!.ctx;
    const file = path.join(lab.dir, 'b-older.bak');
    await ctx.barrier.exclusive([], () => ctx.device.backupTo(file));
    const ids: string[] = [];
    const replays = await tracked(async (gw) => {
      for (let i = 0; i < 3; i++) ids.push(await generate(gw));
    });
    const before = ctx.store.positions.get(NS, 'a')!;
    const earliest = Math.min(...replays.map((r) => (r.kind === 'stream' ? r.seq : Number.NaN)));
    expect(earliest).toBe(before.seq! - 2);
    for (const r of replays) expect(r.kind === 'stream' && ctx.streamRewind!.canRewind(NS, 'a', r.seq)).toBe(true);
    const failedBefore = await failedAtB();
    let late = '';
    await ctx.barrier.exclusive([], async () => {
      // A change that comes during the hold waits for its device hold; applied after it from the cursor the puller
      // had in memory, it would be refused as a gap (the position moved back under it): a failed change and a retry.
      const gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
      try {
        late = await generate(gw);
      } finally {
        await gw.close();
      }
      await eventually(() => ctx.barrier.waiting > 0, 10_000, "the late change to wait for b's device");
      ctx.streamRewind!.rewind(NS, 'a', earliest);
      // A later change of the same namespace after the earliest: already before it, nothing to do.
      ctx.streamRewind!.rewind(NS, 'a', earliest + 1);
      expect(ctx.store.positions.get(NS, 'a')).toMatchObject({ epoch: before.epoch, seq: earliest - 1, logId: before.logId });
      await ctx.device.restore(file);
      const after = await keysAtB();
      // The restore lost them (else this test could not fail).
      for (const id of ids) expect(after.has(id)).toBe(false);
    });
    await caughtUp(a, b, NS);
    const now = await keysAtB();
    for (const id of [...ids, late]) expect(now.has(id)).toBe(true);
    expect(b.daemon!.stream.status(NS)?.lastError).toBeNull();
    expect(await failedAtB()).toBe(failedBefore);
  });

  it('falls back to a snapshot sync when the primary pruned a change the rewind goes back to', async () => {
    const ctx = b.daemon!.ctx;
    const file = path.join(lab.dir, 'b-older-3.bak');
    await ctx.barrier.exclusive([], () => ctx.device.backupTo(file));
    const ids: string[] = [];
    const replays = await tracked(async (gw) => {
      ids.push(await generate(gw), await generate(gw));
    });
    const earliest = Math.min(...replays.map((r) => (r.kind === 'stream' ? r.seq : Number.NaN)));
    const snapshotsBefore = ctx.store.positions.get(NS, 'a')?.lastSyncAt;
    await ctx.barrier.exclusive([], async () => {
      // Retention at the primary keeps only its last change: the first one after the rewound position is gone.
      a.daemon!.ctx.store.changelog.prune(24 * 3600_000, 1);
      ctx.streamRewind!.rewind(NS, 'a', earliest);
      await ctx.device.restore(file);
    });
    await eventually(() => (ctx.store.positions.get(NS, 'a')?.lastSyncAt ?? 0) !== (snapshotsBefore ?? 0), 30_000, 'a catch-up snapshot sync');
    await caughtUp(a, b, NS);
    const now = await keysAtB();
    for (const id of ids) expect(now.has(id)).toBe(true);
  });

  it('rewinds a namespace whose puller is not streaming (paused): it resumes from the rewound position', async () => {
    const ctx = b.daemon!.ctx;
    const file = path.join(lab.dir, 'b-older-2.bak');
    await ctx.barrier.exclusive([], () => ctx.device.backupTo(file));
    const ids: string[] = [];
    const replays = await tracked(async (gw) => {
      ids.push(await generate(gw), await generate(gw));
    });
    const earliest = Math.min(...replays.map((r) => (r.kind === 'stream' ? r.seq : Number.NaN)));
    ctx.store.roles.setPaused(NS, true);
    ctx.roleChanged?.(NS);
    await eventually(() => b.daemon!.stream.status(NS)?.state === 'idle', 10_000, 'the puller to go idle');
    const row = ctx.store.roles.require(NS);
    // Across an epoch change the position is not the one the change was applied in: no rewind.
    const next = { role: row.role, epoch: row.epoch + 1, primarySite: row.primarySite };
    expect(ctx.store.roles.compareAndSet({ namespace: NS, role: row.role, epoch: row.epoch, primarySite: row.primarySite }, next)).toBe(true);
    expect(ctx.streamRewind!.canRewind(NS, 'a', earliest)).toBe(false);
    expect(() => ctx.streamRewind!.rewind(NS, 'a', earliest)).toThrow(/cannot be moved back/);
    expect(ctx.store.roles.compareAndSet({ namespace: NS, ...next }, { role: row.role, epoch: row.epoch, primarySite: row.primarySite })).toBe(true);
    expect(ctx.streamRewind!.canRewind(NS, 'a', earliest)).toBe(true);
    await ctx.barrier.exclusive([], async () => {
      ctx.streamRewind!.rewind(NS, 'a', earliest);
      await ctx.device.restore(file);
    });
    expect(ctx.store.positions.get(NS, 'a')?.seq).toBe(earliest - 1);
    for (const id of ids) expect((await keysAtB()).has(id)).toBe(false);
    ctx.store.roles.setPaused(NS, false);
    ctx.roleChanged?.(NS);
    await caughtUp(a, b, NS);
    const now = await keysAtB();
    for (const id of ids) expect(now.has(id)).toBe(true);
  });
});
