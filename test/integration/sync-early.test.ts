/**
 * The replica's own backup (B1) taken while the snapshot downloads (docs/concurrency.md, "Snapshot sync", step 1;
 * src/replicator/early-backup.ts): a sync at B starts B1 as soon as its download from A starts, so B1 is taken while A's
 * device backup (the snapshot) is still held at A's simulator. A write through B's gateway after B1 and before the
 * snapshot is in is a racing write like any other (tracked from before B1): re-applied after the restore, never lost.
 * A sync whose download fails leaves no B1 file and no open tracker behind.
 */
import { readdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import type { RequestHold } from '../../src/sim/request-holds.js';
import { use } from '../helpers/clients.js';
import { eventually, importBody, streamReady } from './stream-helpers.js';

describe('B1 taken while the snapshot downloads', () => {
  let lab: Lab;
  const sim = (site: string) => lab.site(site).sim as RunningSimulator;
  const betaAdmin = () => lab.site('b').gatewayClient('beta~admin', LAB_PASSPHRASES.nsAdmin);
  /** The next device backup at A (the snapshot B's sync asks for) waits until released. */
  const holdBackupAtA = (): RequestHold => sim('a').hold({ method: 'POST', path: /\/system\/backup$/ });
  const earlyFiles = async () => (await readdir(lab.site('b').daemon!.ctx.work.work)).filter((f) => f.startsWith('pre-early'));
  /**
   * Starts a sync of alpha at B while A's backup for the snapshot is held (`hold`), and waits for B's early B1 (the
   * simulator counts a backup once it has taken its consistent copy). `between` runs once A's backup is held.
   */
  const syncWithEarlyB1 = async (hold: RequestHold, between?: () => Promise<void>) => {
    const before = sim('b').backups;
    const sync = lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
    sync.catch(() => undefined);
    await hold.waitFor(1);
    await between?.();
    await eventually(() => sim('b').backups > before, 10_000, "B's own backup while A's is held");
    return { sync, before };
  };

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }], gateway: true });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    // Synced once: later syncs take B1 early (a first sync keeps its own path).
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
    await lab.site('b').daemon!.syncer.drain();
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  // Before: B1 was requested only once the snapshot was fully in, so B took no backup while A's was held.
  it("starts B1 while A's backup for the snapshot is still held, and takes no other B1", async () => {
    const b = lab.site('b').daemon!;
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a2', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    const hold = holdBackupAtA();
    try {
      const { sync, before } = await syncWithEarlyB1(hold);
      expect(b.ctx.barrier.tracking).toBe(true);
      hold.close();
      expect(await sync).toMatchObject({ outcome: 'applied', remerges: 0, heldMerge: false });
      await b.syncer.drain();
      // The early B1 and the verification's B3: no B1 after the download.
      expect(sim('b').backups - before).toBe(2);
      expect(await use(lab.site('b').nsOperator('alpha'), (c) => c.listKeys())).toEqual(['a1', 'a2']);
      expect(b.ctx.barrier.tracking).toBe(false);
      expect(await earlyFiles()).toEqual([]);
    } finally {
      hold.close();
    }
  });

  it('re-applies a gateway write made after the early B1 and before the snapshot is in: nothing lost', async () => {
    const b = lab.site('b').daemon!;
    const replays = async () => (await b.ctx.metrics.syncRaceReplaysTotal.get()).values.find((v) => v.labels.namespace === 'alpha')?.value ?? 0;
    const replaysBefore = await replays();
    const hold = holdBackupAtA();
    try {
      // B1 is taken (its consistent copy): the import below is not in it.
      const { sync } = await syncWithEarlyB1(hold);
      await use(betaAdmin(), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'raced-early'));
      hold.close();
      const r = await sync;
      expect(r).toMatchObject({ outcome: 'applied', heldMerge: false });
      await b.syncer.drain();
      // Made good after the restore from B's change log (or, failing that, merged again): on the device either way.
      expect((await replays()) - replaysBefore + (r.outcome === 'applied' ? r.remerges : 0)).toBeGreaterThanOrEqual(1);
      expect(await use(lab.site('b').nsAdmin('beta'), (c) => c.listKeys())).toContain('raced-early');
      expect(await use(lab.site('b').nsOperator('alpha'), (c) => c.listKeys())).toContain('a1');
    } finally {
      hold.close();
    }
  });

  // Before: the early B1's tracker opened right after the sync began, listing a gateway import captured before it
  // (no envelope sealed to B's own transport key, so not re-appliable): the attempt merged again, and under steady
  // writes every sync went to the held sequence.
  it('lets a gateway write captured before the sync began end before the early B1 tracks writes: no merge again', async () => {
    const b = lab.site('b').daemon!;
    const importHold = sim('b').hold({ method: 'PUT', path: /\/keys\/before-sync$/ });
    const hold = holdBackupAtA();
    try {
      const write = use(betaAdmin(), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'before-sync'));
      await importHold.waitFor(1);
      const { sync } = await syncWithEarlyB1(hold, async () => {
        importHold.close();
        await write;
      });
      hold.close();
      expect(await sync).toMatchObject({ outcome: 'applied', remerges: 0, heldMerge: false });
      await b.syncer.drain();
      expect(await use(lab.site('b').nsAdmin('beta'), (c) => c.listKeys())).toContain('before-sync');
    } finally {
      importHold.close();
      hold.close();
    }
  });

  it('a sync whose download fails leaves no B1 file and no open tracker', async () => {
    const b = lab.site('b').daemon!;
    const hold = holdBackupAtA();
    try {
      const { sync } = await syncWithEarlyB1(hold);
      // A's NetHSM is Locked when the held backup goes on: A cannot serve the snapshot, B's download fails.
      await use(lab.site('a').client(), (c) => c.lock());
      hold.close();
      await expect(sync).rejects.toThrow();
      expect(b.ctx.barrier.tracking).toBe(false);
      // The B1 nobody uses is removed once its backup ended.
      await eventually(async () => (await earlyFiles()).length === 0, 10_000, 'the unused B1 to be removed');
    } finally {
      hold.close();
      await use(lab.site('a').client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    }
    expect(b.ctx.barrier.tracking).toBe(false);
  });
});
