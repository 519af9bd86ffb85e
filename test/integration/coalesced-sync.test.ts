/**
 * Several namespaces due at one replica at once coalesce into ONE merge-restore (issue 11, snapshot target 3): one
 * device backup, one merged file, one restore (counted at the simulator), one verification; each namespace's position
 * and answer as if it had synced alone. A namespace that drops out (its snapshot fetch failed, its token went stale,
 * its snapshot does not open) does not fail the others.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FenceTokenStaleError, BackupCorruptedError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { applySnapshots, type ApplyPart, type SharedApplyDeps } from '../../src/replicator/snapshot-apply.js';
import type { ForeignQuarantine } from '../../src/replicator/foreign.js';
import { takeSnapshot } from '../../src/replicator/snapshot-source.js';
import { use } from '../helpers/clients.js';

describe('coalesced snapshot syncs at a replica', () => {
  let lab: Lab;
  const restoresAt = (site: string) => (lab.site(site).sim as RunningSimulator).restores;

  beforeAll(async () => {
    // alpha and beta come from A; gamma from C, whose daemon is down (its snapshot fetch fails).
    lab = await Lab.create({
      sites: ['a', 'b', 'c'],
      namespaces: [
        { name: 'alpha', primary: 'a' },
        { name: 'beta', primary: 'a' },
        { name: 'gamma', primary: 'c' },
      ],
    });
    await lab.startDaemons();
    // B and A started before C, found it unreachable, and sync gamma when it recovers, a retry interval later: that
    // sync must be over before the tests count restores (it joined the first test's batch under load).
    await lab.settle();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'alpha-1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    await use(lab.site('a').nsAdmin('beta'), (c) => c.generateKey({ id: 'beta-1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('restores two namespaces due at once with one device restore, recording both positions and answering both applied', async () => {
    const b = lab.site('b');
    const before = restoresAt('b');
    const since = Date.now();
    const [ra, rb] = await Promise.all([b.daemon!.syncer.sync('alpha', { actor: 'test' }), b.daemon!.syncer.sync('beta', { actor: 'test' })]);
    expect(restoresAt('b') - before).toBe(1);
    expect(ra).toMatchObject({ namespace: 'alpha', outcome: 'applied', from: 'a', coalescedWith: ['beta'] });
    expect(rb).toMatchObject({ namespace: 'beta', outcome: 'applied', from: 'a', coalescedWith: ['alpha'] });
    // Each verification (one, shared) ran before the next sync of its namespace may start.
    await b.daemon!.syncer.drain();
    for (const ns of ['alpha', 'beta']) {
      const pos = b.daemon!.ctx.store.positions.forNamespace(ns).find((p) => p.sourceSite === 'a');
      expect(pos?.lastSyncOutcome).toBe('ok');
      expect(pos!.lastOkAt!).toBeGreaterThanOrEqual(since);
    }
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toContain('alpha-1');
    expect(await use(b.nsOperator('beta'), (c) => c.listKeys())).toContain('beta-1');
    const m = await b.daemon!.ctx.metrics.syncCoalescedRestoresTotal.get();
    expect(m.values[0]?.value).toBe(1);
  });

  it("does not fail a namespace whose batch-mate's snapshot fetch fails", async () => {
    await lab.site('c').stopDaemon();
    const b = lab.site('b');
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'alpha-2', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    const before = restoresAt('b');
    const [ra, rg] = await Promise.allSettled([b.daemon!.syncer.sync('alpha', { actor: 'test' }), b.daemon!.syncer.sync('gamma', { actor: 'test' })]);
    expect(ra).toMatchObject({ status: 'fulfilled', value: { outcome: 'applied' } });
    expect(rg.status).toBe('rejected');
    expect(restoresAt('b') - before).toBe(1);
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toContain('alpha-2');
  });

  it('drops a part whose token went stale or whose snapshot does not open, and restores the rest in one restore', async () => {
    const a = lab.site('a').daemon!;
    const b = lab.site('b').daemon!;
    await b.syncer.drain();
    await use(lab.site('a').nsAdmin('beta'), (c) => c.generateKey({ id: 'beta-2', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    const fileOf = async (ns: string) => {
      const snap = await takeSnapshot(a.failover.snapshotDeps(), ns, 1);
      const file = b.ctx.work.temp(`test-${ns}`);
      await writeFile(file, await readFile(snap.file));
      return file;
    };
    const deps: SharedApplyDeps = { device: b.ctx.device, work: b.ctx.work, deviceOpen: b.ctx.deviceOpen, snapshotOpen: b.ctx.snapshotOpen };
    const corrupt = b.ctx.work.temp('test-corrupt');
    const bytes = await readFile(await fileOf('alpha'));
    bytes[bytes.length - 40] = bytes[bytes.length - 40]! ^ 0xff;
    await writeFile(corrupt, bytes);
    const recorded: string[] = [];
    const part = (ns: string, file: string, over: Partial<ApplyPart> = {}): ApplyPart => ({
      namespace: ns,
      snapshotFile: file,
      replicationUserId: 'replicator',
      afterRestore: () => recorded.push(ns),
      ...over,
    });
    const stale = new FenceTokenStaleError('decided under an older epoch', { namespace: 'alpha', epoch: 1, operation: 'sync' });
    const before = restoresAt('b');
    const out = await applySnapshots(deps, [
      part('alpha', await fileOf('alpha'), {
        check: () => {
          throw stale;
        },
      }),
      part('beta', await fileOf('beta')),
      part('gamma', corrupt),
    ]);
    expect(out.get('alpha')).toEqual({ ok: false, error: stale });
    expect(out.get('gamma')).toMatchObject({ ok: false, error: expect.any(BackupCorruptedError) });
    expect(out.get('beta')).toMatchObject({ ok: true, result: { batch: ['beta'], verified: true } });
    expect(recorded).toEqual(['beta']);
    expect(restoresAt('b') - before).toBe(1);
    expect(await use(lab.site('b').nsOperator('beta'), (c) => c.listKeys())).toContain('beta-2');
  });
  it("writes a batch-mate's foreign writes to quarantine once when a stale token makes the batch merge again", async () => {
    const a = lab.site('a').daemon!;
    const b = lab.site('b').daemon!;
    await b.syncer.drain();
    // A key written straight to B's NetHSM in beta: a foreign write the next restore of beta removes.
    await use(lab.site('b').client('beta~replicator', LAB_PASSPHRASES.replicator), (c) =>
      c.generateKey({ id: 'beta-foreign', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }),
    );
    const fileOf = async (ns: string) => {
      const snap = await takeSnapshot(a.failover.snapshotDeps(), ns, 1);
      const file = b.ctx.work.temp(`test-${ns}`);
      await writeFile(file, await readFile(snap.file));
      return file;
    };
    const filesBefore = new Set(b.ctx.work.quarantineFiles());
    const reported: ForeignQuarantine[] = [];
    const stale = new FenceTokenStaleError('the role changed while beta was quarantined', { namespace: 'alpha', epoch: 1, operation: 'sync' });
    let checks = 0;
    const deps: SharedApplyDeps = { device: b.ctx.device, work: b.ctx.work, deviceOpen: b.ctx.deviceOpen, snapshotOpen: b.ctx.snapshotOpen };
    const out = await applySnapshots(deps, [
      // alpha's token holds at the hold's first check and is stale at the second, after beta's foreign writes were
      // saved: the batch merges again without alpha.
      {
        namespace: 'alpha',
        snapshotFile: await fileOf('alpha'),
        replicationUserId: 'replicator',
        check: () => {
          if (++checks >= 2) throw stale;
        },
      },
      { namespace: 'beta', snapshotFile: await fileOf('beta'), replicationUserId: 'replicator', onQuarantined: (q) => reported.push(q) },
    ]);
    expect(out.get('alpha')).toEqual({ ok: false, error: stale });
    const written = b.ctx.work.quarantineFiles().filter((f) => !filesBefore.has(f));
    expect(written).toHaveLength(1);
    expect(reported).toHaveLength(1);
    expect(reported[0]).toMatchObject({ keyIds: ['beta-foreign'] });
    expect(out.get('beta')).toMatchObject({ ok: true, result: { batch: ['beta'], quarantined: { path: reported[0]!.path, keyIds: ['beta-foreign'] } } });
    expect(await use(lab.site('b').nsOperator('beta'), (c) => c.listKeys())).not.toContain('beta-foreign');
  });
});
