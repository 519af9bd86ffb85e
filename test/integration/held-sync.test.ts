/**
 * A replica that keeps taking writes (it is primary of other namespaces) while it syncs: the held sequence (the merge
 * inside the exclusive hold, docs/concurrency.md "Snapshot sync") takes ONE device backup there, merged as it arrives,
 * when no client writes around the daemon (`replication.directWriters: false`): inside the hold nothing that passes
 * the barrier writes, so a B2 re-check has nothing to catch. And a sync whose attempt outside the hold raced many
 * writes goes to the held sequence at once instead of paying for attempts that would race too. Device backups are
 * counted at the simulator.
 */
import { AsyncResource } from 'node:async_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { applySnapshot, HOPELESS_RACE_WRITES, type ApplyDeps, type ApplyPhase } from '../../src/replicator/snapshot-apply.js';
import { use } from '../helpers/clients.js';
import { snapshotAndDeps as snapshotAt } from '../helpers/snapshot-deps.js';

describe('held syncs at a replica that keeps taking writes', () => {
  let lab: Lab;
  const backupsAtB = () => (lab.site('b').sim as RunningSimulator).backups;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }] });
    await lab.startDaemons();
    await lab.settle();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  /** A fresh snapshot of alpha from A, and B's apply dependencies. */
  const snapshotAndDeps = (over: Partial<ApplyDeps>) => snapshotAt(lab, { site: 'b', ...over });

  const gen = (id: string) => ({ id, type: 'EC_P256' as const, mechanisms: ['ECDSA_Signature' as const] });
  /** A root key written at B through B's device barrier, as a gateway write for a namespace B is primary of would be. */
  const writeThroughBarrier = async (id: string): Promise<void> => {
    await lab.site('b').daemon!.ctx.barrier.shared(() => use(lab.site('b').client(), (c) => c.generateKey(gen(id))));
  };
  const rootKeys = () => use(lab.site('b').client(), (c) => c.listKeys());
  const alphaKeys = () => use(lab.site('b').nsOperator('alpha'), (c) => c.listKeys());

  // Before: the held sequence took B1, then a B2 re-check and a diff of both, whatever `directWriters` said: two device
  // backups (and two more decrypt passes) inside the hold where one is current for every write through the daemon.
  it('without directWriters, the held sequence takes one device backup inside the hold; racing writes survive and foreign writes are still quarantined', async () => {
    const b = lab.site('b');
    const barrier = b.daemon!.ctx.barrier;
    // Written straight into alpha at B (not replicated): the restore removes it, so it must be saved first.
    await use(b.client('alpha~replicator', LAB_PASSPHRASES.replicator), (c) => c.generateKey(gen('foreign-held')));
    let n = 0;
    const heldMerges: unknown[] = [];
    const phases: { phase: ApplyPhase; inside: boolean }[] = [];
    let waiting: Promise<void> | undefined;
    // Bound to the test's own async context: started from inside the hold's context it would count as the holder's
    // own call and run at once (the barrier's re-entry), not as a gateway write that waits.
    const gatewayWrite = AsyncResource.bind(() => writeThroughBarrier('during-held-merge'));
    const { file, deps } = await snapshotAndDeps({
      directWriters: false,
      maxRemerges: 1,
      // One write per attempt: below HOPELESS_RACE_WRITES, so both attempts outside the hold are made.
      beforeHold: () => writeThroughBarrier(`racing-${n++}`),
      onPhase: (phase) => {
        const inside = barrier.insideExclusive;
        phases.push({ phase, inside });
        // A gateway write arriving while the held merge runs waits for the hold, then lands after the restore.
        if (phase === 'backup' && inside) waiting = gatewayWrite();
      },
      onHeldMerge: (...args) => heldMerges.push(args),
    });
    const before = backupsAtB();
    const r = await applySnapshot(deps, 'alpha', file);
    await waiting;
    // Two B1s outside the hold, ONE inside it, and the verification's B3: no B2.
    expect(backupsAtB() - before).toBe(4);
    expect(r).toMatchObject({ heldMerge: true, remerges: 2 });
    expect(heldMerges).toEqual([[['alpha'], 2, 1]]);
    expect(phases.filter((p) => p.phase === 'backup').map((p) => p.inside)).toEqual([false, false, true]);
    expect(phases.filter((p) => p.inside).map((p) => p.phase)).toEqual(['backup', 'merge', 'restore']);
    expect(r.quarantined?.keyIds).toEqual(['foreign-held']);
    expect(await rootKeys()).toEqual(expect.arrayContaining(['racing-0', 'racing-1', 'during-held-merge']));
    const alpha = await alphaKeys();
    expect(alpha).toContain('a1');
    expect(alpha).not.toContain('foreign-held');
  });

  // Before: every attempt outside the hold was made (maxRemerges + 1 of them), however many writes raced the first.
  it(`goes to the held sequence after one attempt that ${HOPELESS_RACE_WRITES} or more writes raced, instead of attempts that would race too`, async () => {
    let n = 0;
    const heldMerges: unknown[] = [];
    const { file, deps } = await snapshotAndDeps({
      directWriters: false,
      beforeHold: async () => {
        for (let i = 0; i < HOPELESS_RACE_WRITES; i++) await writeThroughBarrier(`busy-${n++}`);
      },
      onHeldMerge: (...args) => heldMerges.push(args),
    });
    const before = backupsAtB();
    const r = await applySnapshot(deps, 'alpha', file);
    // One B1 outside the hold, one inside it, B3.
    expect(backupsAtB() - before).toBe(3);
    expect(r).toMatchObject({ heldMerge: true, remerges: 1 });
    expect(heldMerges).toEqual([[['alpha'], 1, HOPELESS_RACE_WRITES]]);
    expect(n).toBe(HOPELESS_RACE_WRITES);
    expect(await rootKeys()).toEqual(expect.arrayContaining(['busy-0', 'busy-1', 'busy-2']));
    expect(await alphaKeys()).toContain('a1');
  });

  it('with fewer racing writes an attempt is tried again outside the hold, and one that passes clean restores without holding the merge', async () => {
    let attempts = 0;
    const { file, deps } = await snapshotAndDeps({
      directWriters: false,
      beforeHold: async () => {
        if (attempts++ === 0) for (let i = 0; i < HOPELESS_RACE_WRITES - 1; i++) await writeThroughBarrier(`burst-${i}`);
      },
    });
    const before = backupsAtB();
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r).toMatchObject({ heldMerge: false, remerges: 1, verified: true });
    expect(backupsAtB() - before).toBe(3);
    expect(await rootKeys()).toEqual(expect.arrayContaining(['burst-0', 'burst-1']));
  });

  it('with directWriters, the held sequence still re-checks with a second backup and keeps a direct write made during the merge', async () => {
    let direct = 0;
    const { file, deps } = await snapshotAndDeps({
      directWriters: true,
      maxRemerges: -1,
      beforeRecheck: async () => {
        if (direct++ === 0) await use(lab.site('b').client(), (c) => c.generateKey(gen('direct-held')));
      },
    });
    const before = backupsAtB();
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r).toMatchObject({ heldMerge: true, remerges: 1 });
    // B1, B2 (saw the direct write), B2 again after merging B2, B3.
    expect(backupsAtB() - before).toBe(4);
    expect(await rootKeys()).toContain('direct-held');
  });
});
