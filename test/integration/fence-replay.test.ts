/**
 * A pending re-apply of erased writes across role changes (docs/concurrency.md, "Racing writes re-applied"): a fence
 * re-applies it before its quarantine export (the successor may never have streamed those writes), keeps the record
 * marked when the device refuses it, a record kept across an epoch change of a namespace still primary here replays
 * its own epoch's log, and a retry decided under an old role is abandoned before touching the device. Each namespace
 * is primary at B; the erased writes are made through B's real gateway and erased from B's device as a merge-restore
 * would (straight to the NetHSM, bypassing the log), their re-apply recorded as pending as prepare() does in the hold.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBackupContents } from '../../src/backup/contents.js';
import { ackQuarantine } from '../../src/daemon/quarantine.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { applyRoleChange } from '../../src/roles/apply.js';
import { demote, observeEpoch, stepDown } from '../../src/roles/role-machine.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { use } from '../helpers/clients.js';
import { eventually, importBody } from './stream-helpers.js';

describe('a pending re-apply of erased writes across role changes', () => {
  let lab: Lab;
  const nsAdminAt = (ns: string) => lab.site('b').gatewayClient(`${ns}~admin`, LAB_PASSPHRASES.nsAdmin);
  const daemonB = () => lab.site('b').daemon!;
  const simB = () => lab.site('b').sim as RunningSimulator;

  beforeAll(async () => {
    lab = await Lab.create({
      namespaces: ['fa', 'fb', 'ep', 'ct', 'ma', 'mb', 'mw', 'mr'].map((name) => ({ name, primary: 'b' })),
      gateway: true,
    });
    await lab.startDaemons();
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  /**
   * Imports `id` into `ns` through B's gateway while a merge-restore would track writes (so its body is also sealed to
   * B's own transport key, as the capture does then), erases it from B's device, and records its re-apply as pending.
   * Returns the seq recorded.
   */
  async function erasedImport(ns: string, id: string): Promise<number> {
    const b = lab.site('b');
    const tracker = daemonB().ctx.barrier.trackWrites();
    try {
      await use(nsAdminAt(ns), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), id));
    } finally {
      tracker.close();
    }
    const seq = daemonB().ctx.store.changelog.maxSeq(ns);
    await use(b.nsAdmin(ns), (c) => c.deleteKey(id));
    daemonB().ctx.raceReplayer!.prepare({ logs: new Map([[ns, seq]]), streams: [], writes: 1 });
    return seq;
  }

  /** A forced promote of `ns` at A: B learns the newer epoch with another primary and fences (in the background). */
  async function fenceB(ns: string): Promise<string> {
    const a: LabSite = lab.site('a');
    await a.daemon!.failover.promote(ns, { force: true, actor: 'operator@a' });
    await eventually(() => daemonB().ctx.store.roles.require(ns).role !== 'primary', 30_000, `B to learn that ${ns} moved`);
    await daemonB().failover.drain();
    const fence = daemonB()
      .ctx.store.audit.list({ namespace: ns, limit: 1000 })
      .findLast((e) => e.action === 'fence' && typeof e.detail.quarantine === 'string');
    expect(fence).toBeDefined();
    return fence!.detail.quarantine as string;
  }

  /**
   * A key imported through B's gateway, then a change to it that the NetHSM will refuse to re-apply (the key deleted
   * straight at the NetHSM), then an erased import after it: the re-apply of the erased writes from `seq` fails until
   * the key is back. Returns the seq recorded.
   */
  async function erasedWithRefusal(ns: string): Promise<number> {
    const b = lab.site('b');
    await use(nsAdminAt(ns), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), `${ns}-key`));
    await use(nsAdminAt(ns), (c) => c.setKeyLabel(`${ns}-key`, 'erased-label'));
    const seq = daemonB().ctx.store.changelog.maxSeq(ns);
    await erasedImport(ns, `${ns}-erased`);
    await use(b.nsAdmin(ns), (c) => c.deleteKey(`${ns}-key`));
    daemonB().ctx.raceReplayer!.prepare({ logs: new Map([[ns, seq]]), streams: [], writes: 2 });
    return seq;
  }

  /** B demotes `ns` to A; the demote's re-apply of the erased writes fails, so B stays stepped down with the record. */
  async function failedDemote(ns: string): Promise<void> {
    const failed = await daemonB()
      .failover.demote(ns, { to: 'a', actor: 'operator@b' })
      .then(() => undefined, (e: unknown) => e);
    expect(failed).toBeDefined();
    expect(daemonB().ctx.store.roles.require(ns)).toMatchObject({ role: 'replica', primarySite: 'b' });
    expect(recordsOf(ns)).toHaveLength(1);
  }

  /** `promote --force` of `ns` at A (B is stepped down, not primary): B learns the newer epoch. */
  async function takeOverAtA(ns: string, epoch: number): Promise<void> {
    await lab.site('a').daemon!.failover.promote(ns, { force: true, actor: 'operator@a' });
    await eventually(() => daemonB().ctx.store.roles.require(ns).epoch > epoch, 30_000, `B to learn that ${ns} moved`);
  }

  const fenceAudit = (ns: string) =>
    daemonB()
      .ctx.store.audit.list({ namespace: ns, limit: 1000 })
      .findLast((e) => e.action === 'fence' && typeof e.detail.quarantine === 'string');

  const recordsOf = (ns: string) => daemonB().ctx.store.raceReplays.all().filter((r) => r.namespace === ns);
  const keyIdsIn = async (file: string, ns: string) =>
    (await listBackupContents(file, { input: daemonB().ctx.snapshotOpen, collectIds: true })).namespaces[ns]?.keyIds ?? [];

  // Before: the fence exported the device without the erased import (and the retry loop dropped the record as "no
  // longer primary"): the write, acknowledged to the client, was in neither the quarantine file nor the device.
  it('a fence re-applies a pending replay before its quarantine export: the file holds the erased write, the record goes only after', async () => {
    const seq = await erasedImport('fa', 'fa-erased');
    const epoch = daemonB().ctx.store.roles.require('fa').epoch;
    // The fence's device backup is held at B's NetHSM: by then the replay ran, but the record must still be there.
    const hold = simB().hold({ method: 'POST', path: /^\/api\/v1\/system\/backup/ });
    let fenced: Promise<string> | undefined;
    try {
      fenced = fenceB('fa');
      await hold.waitFor(1, 30_000);
      expect(recordsOf('fa')).toEqual([expect.objectContaining({ fromSeq: seq })]);
    } finally {
      hold.close();
    }
    const quarantine = await fenced;
    expect(await keyIdsIn(quarantine, 'fa')).toContain('fa-erased');
    expect(recordsOf('fa')).toEqual([]);
    const audit = daemonB().ctx.store.audit.list({ namespace: 'fa', limit: 1000 }).findLast((e) => e.action === 'fence');
    expect(audit?.detail).toMatchObject({ erasedWrites: { epoch, fromSeq: seq, reapplied: true } });
  });

  // Before: the record was dropped (or kept saying only "not re-applied yet"), nothing said the quarantine file lacked
  // those writes.
  it('a replay the device refuses at fence time: the fence still exports, the record stays saying which seqs of which epoch the file lacks, until that file is acknowledged', async () => {
    const b = lab.site('b');
    // A label set through the gateway on a key then deleted straight at the NetHSM: the log says the key exists, the
    // device contradicts it, so the re-apply of that change is refused.
    await use(nsAdminAt('fb'), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'fb-key'));
    await use(nsAdminAt('fb'), (c) => c.setKeyLabel('fb-key', 'erased-label'));
    const seq = daemonB().ctx.store.changelog.maxSeq('fb');
    await use(b.nsAdmin('fb'), (c) => c.deleteKey('fb-key'));
    daemonB().ctx.raceReplayer!.prepare({ logs: new Map([['fb', seq]]), streams: [], writes: 1 });
    const epoch = daemonB().ctx.store.roles.require('fb').epoch;
    const quarantine = await fenceB('fb');
    const file = quarantine.split('/').pop()!;
    expect(recordsOf('fb')).toEqual([expect.objectContaining({ epoch, fromSeq: seq, unexportedIn: file })]);
    const status = await daemonB().status();
    expect(status.replaysPending?.records).toEqual([{ namespace: 'fb', epoch, fromSeq: seq, toSeq: seq, state: 'not-in-quarantine', quarantine: file }]);
    expect(status.replaysPending?.cause).toContain(`namespace fb (epoch ${epoch}, seqs ${seq}–${seq}) are NOT in quarantine file ${file}`);
    expect(status.replaysPending?.try).toContain(`nethsm-replicator quarantine ack ${file}`);
    const audit = daemonB().ctx.store.audit.list({ namespace: 'fb', limit: 1000 }).findLast((e) => e.action === 'fence');
    expect(audit?.detail).toMatchObject({ erasedWrites: { epoch, fromSeq: seq, reapplied: false } });
    // The daemon's own retries leave it alone (not primary here, exported without): nothing drops it.
    daemonB().ctx.raceReplayer!.kick();
    await daemonB().ctx.raceReplayer!.close();
    daemonB().ctx.raceReplayer!.start();
    expect(recordsOf('fb')).toHaveLength(1);
    // The operator looked at the file (and at the new primary): the ack ends the record.
    await ackQuarantine(daemonB().ctx, file, 'operator@b');
    expect(recordsOf('fb')).toEqual([]);
    expect((await daemonB().status()).replaysPending ?? null).toBeNull();
  });

  // Before: the retry's hold carried no token and checked the role inside, where it dropped the record of a namespace
  // that had moved away: its writes were then in neither the device nor any quarantine file.
  it('a retry decided under an epoch is abandoned before any device call when the role changes before its hold is admitted', async () => {
    const ctx = daemonB().ctx;
    const barrier = ctx.barrier;
    const seq = await erasedImport('ct', 'ct-erased');
    const row = ctx.store.roles.require('ct');
    // Every request the replay would make names the key.
    const keyCalls = simB().hold({ path: /ct-erased/ });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inHold = new Promise<void>((r) => (entered = r));
    const hold = barrier.exclusive([], async () => {
      entered();
      await held;
    });
    try {
      await inHold;
      // The retry decides now (ct primary at its epoch) and requests its hold at once (synchronously), behind this one.
      ctx.raceReplayer!.kick();
      const runs = barrier.exclusiveRuns;
      // The role changes before the retry is admitted: a newer epoch has another primary (no fence run in this test).
      const obs = observeEpoch(row, 'b', { from: 'a', epoch: row.epoch + 1, primarySite: 'a' });
      if (obs.kind !== 'change') throw new Error(`expected a role change, got ${obs.kind}`);
      applyRoleChange(ctx.store, obs.change, 'peer:a');
      release();
      await hold;
      await eventually(() => !barrier.held, 10_000, 'the retry to give up its place');
      // Abandoned at admission: its function never ran, no device call, the record kept for the fence.
      expect(barrier.exclusiveRuns).toBe(runs);
      expect(keyCalls.caught()).toBe(0);
      expect(recordsOf('ct')).toEqual([expect.objectContaining({ fromSeq: seq })]);
      expect(recordsOf('ct')[0]!.epoch).toBe(row.epoch);
    } finally {
      release();
      keyCalls.close();
    }
    // The fence of that epoch takes it over (its resync fails here: A never became primary of ct).
    await daemonB().failover.fence('ct', row.epoch).catch(() => undefined);
    expect(recordsOf('ct')).toEqual([]);
  });
  // Before: the replay read the current epoch's log, which lacks the earlier epoch's changes: refused, and the
  // namespace refused writes until an operator acted.
  it('a record kept across an epoch change of a namespace still primary here replays its own epoch: finished, writes accepted after', async () => {
    const ctx = daemonB().ctx;
    await erasedImport('ep', 'ep-erased');
    const before = ctx.store.roles.require('ep');
    // The etcd lease lapses (stepped down: fenced, still naming itself) and is re-acquired at the next epoch.
    applyRoleChange(ctx.store, stepDown(before, { localSite: 'b', reason: 'test: lease lapsed' }), 'daemon');
    ctx.roleChanged?.('ep');
    expect(ctx.raceReplayer!.isPending('ep')).toBe(true);
    await daemonB().failover.resumeLeadership('ep', before.epoch + 1);
    ctx.raceReplayer!.kick();
    await eventually(() => !ctx.raceReplayer!.isPending('ep'), 30_000, 'the replay of the earlier epoch to finish');
    expect(await use(lab.site('b').nsAdmin('ep'), (c) => c.listKeys())).toContain('ep-erased');
    expect(ctx.store.roles.require('ep')).toMatchObject({ role: 'primary', epoch: before.epoch + 1 });
    await use(nsAdminAt('ep'), (c) => c.setKeyLabel('ep-erased', 'after-epoch-change'));
  });

  // Before: B followed A (no fence: it was not primary); the record was kept as `moved-away`, nothing exported the
  // erased writes, and the next sync from A replaced the namespace on B's device.
  it('a stepped-down site whose re-apply failed, when another site takes over: fenced, the re-apply runs before its export and before any sync from the new primary', async () => {
    const ns = 'ma';
    const seq = await erasedWithRefusal(ns);
    const epoch = daemonB().ctx.store.roles.require(ns).epoch;
    await failedDemote(ns);
    // B's own retries stop here (the next one had not come before A took over); then the NetHSM can take the re-apply
    // again, and the import the demote may have made is erased again, so only a re-apply puts it back.
    await daemonB().ctx.raceReplayer!.close();
    await use(lab.site('b').nsAdmin(ns), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), `${ns}-key`));
    await use(lab.site('b').nsAdmin(ns), (c) => c.deleteKey(`${ns}-erased`)).catch(() => undefined);
    const restores = simB().restores;
    const hold = simB().hold({ method: 'POST', path: /^\/api\/v1\/system\/backup/ });
    try {
      await takeOverAtA(ns, epoch);
      // The fence's device backup (inside its exclusive hold: no shared holder in flight; a snapshot B serves A for
      // another namespace meanwhile is a shared one, let through): no restore (a sync from A) came before it, the
      // writes are re-applied by then, and the record is still there until the file is written.
      const barrier = daemonB().ctx.barrier;
      for (;;) {
        await hold.waitFor(1, 30_000);
        if (barrier.held && barrier.inFlight === 0) break;
        hold.release(1);
        await eventually(() => hold.held() === 0, 10_000, 'a shared backup to be let through');
      }
      expect(simB().restores).toBe(restores);
      expect(await use(lab.site('b').nsAdmin(ns), (c) => c.listKeys())).toContain(`${ns}-erased`);
      expect(recordsOf(ns)).toEqual([expect.objectContaining({ epoch, fromSeq: seq })]);
      const status = await daemonB().status();
      expect(status.replaysPending?.records).toEqual([expect.objectContaining({ namespace: ns, state: 'awaiting-fence' })]);
    } finally {
      hold.close();
    }
    await eventually(() => fenceAudit(ns) !== undefined, 30_000, 'the fence export');
    await daemonB().failover.drain();
    const quarantine = fenceAudit(ns)!.detail.quarantine as string;
    expect(await keyIdsIn(quarantine, ns)).toContain(`${ns}-erased`);
    expect(recordsOf(ns)).toEqual([]);
    expect(fenceAudit(ns)!.detail).toMatchObject({ erasedWrites: { epoch, fromSeq: seq, reapplied: true } });
    daemonB().ctx.raceReplayer!.start();
  });

  // Before: as above, and nothing said the writes were in no quarantine file; nothing could end the record.
  it('the same when the NetHSM still refuses the re-apply at the export: exported anyway, the record marked with the file until its ack', async () => {
    const ns = 'mb';
    const seq = await erasedWithRefusal(ns);
    const epoch = daemonB().ctx.store.roles.require(ns).epoch;
    await failedDemote(ns);
    await takeOverAtA(ns, epoch);
    await eventually(() => fenceAudit(ns) !== undefined, 30_000, 'the fence export');
    await daemonB().failover.drain();
    const file = (fenceAudit(ns)!.detail.quarantine as string).split('/').pop()!;
    expect(fenceAudit(ns)!.detail).toMatchObject({ erasedWrites: { epoch, fromSeq: seq, reapplied: false } });
    expect(recordsOf(ns)).toEqual([expect.objectContaining({ epoch, fromSeq: seq, unexportedIn: file })]);
    const status = await daemonB().status();
    expect(status.replaysPending?.records).toEqual([expect.objectContaining({ namespace: ns, state: 'not-in-quarantine', quarantine: file })]);
    await ackQuarantine(daemonB().ctx, file, 'operator@b');
    expect(recordsOf(ns)).toEqual([]);
  });

  // Before: a record of a namespace B followed away from (a follow persisted while the record was being made) stayed
  // `moved-away` for good, exported by nothing.
  it('a running site with a record of a namespace that moved away without a fence: fenced at the next status probe of the new primary, the writes exported', async () => {
    const ns = 'mw';
    const ctx = daemonB().ctx;
    const seq = await erasedImport(ns, `${ns}-erased`);
    const before = ctx.store.roles.require(ns);
    // The state such a race leaves: stepped down, then following A's newer epoch. Both persisted at once, so no retry
    // of B's runs in between. Then A takes over (at a later epoch still: it sees B's), and B follows that too.
    applyRoleChange(ctx.store, demote(before, { localSite: 'b', toSite: 'a' }), 'operator@b');
    const obs = observeEpoch(ctx.store.roles.require(ns), 'b', { from: 'a', epoch: before.epoch + 1, primarySite: 'a' });
    if (obs.kind !== 'change' || obs.change.action !== 'follow') throw new Error(`expected a follow, got ${obs.kind}`);
    applyRoleChange(ctx.store, obs.change, 'peer:a');
    await lab.site('a').daemon!.failover.promote(ns, { force: true, actor: 'operator@a' });
    await eventually(() => fenceAudit(ns) !== undefined, 30_000, 'the fence export after a status probe of A');
    await daemonB().failover.drain();
    expect(await keyIdsIn(fenceAudit(ns)!.detail.quarantine as string, ns)).toContain(`${ns}-erased`);
    expect(recordsOf(ns)).toEqual([]);
    expect(fenceAudit(ns)!.detail).toMatchObject({ erasedWrites: { epoch: before.epoch, fromSeq: seq, reapplied: true } });
  });

  // Before: a daemon started with a record of a namespace it followed away from kept it (`moved-away`) for good.
  it('a daemon started with a record of a namespace that moved away without a fence: fenced at start, the writes exported', async () => {
    const ns = 'mr';
    const ctx = daemonB().ctx;
    const seq = await erasedImport(ns, `${ns}-erased`);
    const before = ctx.store.roles.require(ns);
    // The state an earlier version left: stepped down (a demote whose re-apply failed), then it followed A's newer
    // epoch. Both persisted at once, so no retry of B's runs in between.
    applyRoleChange(ctx.store, demote(before, { localSite: 'b', toSite: 'a' }), 'operator@b');
    const stepped = ctx.store.roles.require(ns);
    const obs = observeEpoch(stepped, 'b', { from: 'a', epoch: before.epoch + 1, primarySite: 'a' });
    if (obs.kind !== 'change' || obs.change.action !== 'follow') throw new Error(`expected a follow, got ${obs.kind}`);
    applyRoleChange(ctx.store, obs.change, 'peer:a');
    await lab.site('b').stopDaemon();
    // A takes over at that epoch while B is down.
    await lab.site('a').daemon!.failover.promote(ns, { force: true, actor: 'operator@a' });
    expect(lab.site('a').daemon!.ctx.store.roles.require(ns).epoch).toBe(before.epoch + 1);
    await lab.site('b').startDaemon();
    await eventually(() => fenceAudit(ns) !== undefined, 30_000, 'the fence export at start');
    await daemonB().failover.drain();
    expect(await keyIdsIn(fenceAudit(ns)!.detail.quarantine as string, ns)).toContain(`${ns}-erased`);
    expect(recordsOf(ns)).toEqual([]);
    expect(fenceAudit(ns)!.detail).toMatchObject({ erasedWrites: { epoch: before.epoch, fromSeq: seq, reapplied: true } });
  });
});
