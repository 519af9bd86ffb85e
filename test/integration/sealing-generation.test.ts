/**
 * A primary's snapshot sealing generation survives its daemon's restart (src/replicator/snapshot-keys.ts, migration
 * 008): a restarted primary within the generation's limits seals its next snapshot under the same salt, so a replica
 * that did not restart opens it with the key it holds (no derivation: counted through its KeyCache); past maxUses or
 * maxAge, or from a bad record, a fresh salt. The use count goes on across restarts. Simulator and real modules (lab).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBackupSalt } from '../../src/backup/reader.js';
import { capturingLogger } from '../../src/gateway/test-support.js';
import { Lab } from '../../src/lab/lab.js';
import { StateStore } from '../../src/state/store.js';

const NS = 'alpha';

describe('the snapshot sealing generation across a primary restart', () => {
  let lab: Lab;
  let aLines: string[] = [];

  beforeAll(async () => {
    lab = await Lab.create({
      namespaces: [{ name: NS, primary: 'a' }],
      logger: (site) => {
        const c = capturingLogger();
        if (site === 'a') aLines = c.lines;
        return c.logger;
      },
    });
    await lab.startDaemons();
    await syncB();
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  async function syncB(): Promise<Buffer> {
    const b = lab.site('b').daemon!;
    expect((await b.syncer.sync(NS, { actor: 'test' })).outcome).toBe('applied');
    await b.syncer.drain();
    return readBackupSalt(b.ctx.work.snapshotOf(NS));
  }
  const bDerivations = () => lab.site('b').daemon!.ctx.snapshotOpen.keyCache!.derivations;
  const recorded = () => lab.site('a').daemon!.ctx.store.sealingGeneration.get();
  /**
   * Snapshots a's daemon served in this life (its log; each start gets a fresh capture): b's stream may ask for one of
   * its own after a's restart, beside the test's syncs.
   */
  const served = () => aLines.filter((l) => l.includes('"serving snapshot"')).length;

  /** The recorded use count of a generation recorded valid. */
  const usesOf = (read: ReturnType<typeof recorded>) => (read && 'generation' in read ? read.generation.uses : Number.NaN);

  /**
   * Restarts a's daemon after `edit` changed its stopped state database; returns its warm-up's ring outcome and the
   * record as the stopped daemon left it (after `edit`).
   */
  async function restartA(edit?: (store: StateStore) => void): Promise<{ ring: string | undefined; left: ReturnType<typeof recorded> }> {
    const site = lab.site('a');
    await site.stopDaemon();
    const store = StateStore.inDir(site.stateDir).open();
    edit?.(store);
    const left = store.sealingGeneration.get();
    store.close();
    return { ring: (await (await site.startDaemon()).warmup)?.snapshotRing, left };
  }

  it('within its limits: the same salt, the replica derives nothing, and the use count goes on', async () => {
    const before = await syncB();
    const derived = bDerivations();
    const { ring, left } = await restartA();
    expect(ring).toBe('resumed');
    const uses = usesOf(left);
    expect(uses).toBeGreaterThanOrEqual(2);
    expect(lab.site('a').daemon!.ctx.snapshotKeys!.derivations, 'a re-derived the recorded salt\'s key, once').toBe(1);
    expect((await syncB()).equals(before)).toBe(true);
    expect(bDerivations(), 'b opened it with the key it held').toBe(derived);
    expect(served()).toBeGreaterThanOrEqual(1);
    expect(recorded()).toEqual({ generation: expect.objectContaining({ salt: before, uses: uses + served() }) });
  });

  it('past maxUses: a fresh salt, counted from one', async () => {
    const before = await syncB();
    const derived = bDerivations();
    expect((await restartA((s) => s.db.prepare('UPDATE snapshot_sealing_generation SET uses = 64').run())).ring).toBe('derived');
    const after = await syncB();
    expect(after.equals(before)).toBe(false);
    expect(bDerivations()).toBe(derived + 1);
    expect(recorded()).toEqual({ generation: expect.objectContaining({ salt: after, uses: served() }) });
  });

  it('past maxAge: a fresh salt', async () => {
    const before = await syncB();
    const old = Date.now() - 3_600_000;
    expect((await restartA((s) => s.db.prepare('UPDATE snapshot_sealing_generation SET born_at = ?').run(old))).ring).toBe('derived');
    const after = await syncB();
    expect(after.equals(before)).toBe(false);
    expect(recorded()).toEqual({ generation: expect.objectContaining({ salt: after, uses: served() }) });
  });

  it('a bad record is ignored with a warning, and the next snapshot\'s record replaces it', async () => {
    const before = await syncB();
    for (const bad of ['salt = zeroblob(8)', 'uses = -1']) {
      const { ring, left } = await restartA((s) => s.db.prepare(`UPDATE snapshot_sealing_generation SET ${bad}`).run());
      expect(ring, bad).toBe('derived');
      expect(left, bad).toHaveProperty('invalid');
      expect(aLines.some((l) => l.includes('recorded snapshot sealing generation is not valid')), bad).toBe(true);
      expect(recorded(), 'left as it was until the next snapshot').toHaveProperty('invalid');
      const after = await syncB();
      expect(after.equals(before), bad).toBe(false);
      expect(recorded(), bad).toEqual({ generation: expect.objectContaining({ salt: after, uses: served() }) });
    }
  });

  it('records public values only: never the key', async () => {
    const key = await lab.site('a').daemon!.ctx.snapshotKeys!.lease();
    try {
      const row = lab.site('a').daemon!.ctx.store.db.prepare('SELECT * FROM snapshot_sealing_generation').get() as Record<string, unknown>;
      expect(Object.keys(row).sort()).toEqual(['born_at', 'id', 'salt', 'scrypt_n', 'scrypt_p', 'scrypt_r', 'updated_at', 'uses']);
      expect(Buffer.from(row.salt as Uint8Array).equals(key.key.salt)).toBe(true);
    } finally {
      key.release();
    }
  });
});
