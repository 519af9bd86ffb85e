/**
 * Key warm-up at start (src/daemon/key-warmup.ts): the first sync after a daemon start used to derive every backup key
 * on its own path (about a second each with the firmware's scrypt: docs/benchmarks.md, "key warm-up at start"). A restarted
 * daemon now derives them in the background from what it remembers (the device's backup salt in SQLite, the salts of
 * the snapshots a replica applied) and a primary prepares its snapshot sealing key; the sync then takes them from the
 * caches. Counted through the caches' derivation counters (no timing). A wrong remembered salt costs one derivation
 * and nothing else; close zeroes what the warm-up derived.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SCRYPT } from '../../src/backup/format.js';
import { Lab } from '../../src/lab/lab.js';
import { StateStore } from '../../src/state/store.js';

describe('key warm-up at daemon start', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    // A first sync: each site learns its device's backup salt; b keeps the snapshot (sealed under a's ring key).
    const b = lab.site('b').daemon!;
    await b.syncer.sync('alpha', { actor: 'test' });
    await b.syncer.drain();
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('remembers the device backup salt (public) in SQLite, never a key', () => {
    for (const site of ['a', 'b']) {
      const d = lab.site(site).daemon!;
      const remembered = d.ctx.store.backupSalt.get();
      expect(remembered?.salt.length, site).toBe(16);
      expect(remembered?.params).toEqual(TEST_SCRYPT);
      const row = d.ctx.store.db.prepare('SELECT * FROM device_backup_salt').get() as Record<string, unknown>;
      expect(Object.keys(row).sort()).toEqual(['id', 'learnt_at', 'salt', 'scrypt_n', 'scrypt_p', 'scrypt_r']);
    }
  });

  it('derives the keys at start, and the first sync after it derives none', async () => {
    await lab.site('a').stopDaemon();
    await lab.site('b').stopDaemon();
    const a = await lab.site('a').startDaemon();
    const b = await lab.site('b').startDaemon();
    // a resumes its recorded sealing generation (migration 008): the salt of the snapshot b applied before.
    expect(await a.warmup).toEqual({ device: 'derived', snapshotRing: 'resumed', snapshotSalts: 0 });
    expect(await b.warmup).toEqual({ device: 'derived', snapshotRing: 'not primary', snapshotSalts: 1 });
    const counts = () => ({
      aDevice: a.ctx.deviceOpen.keyCache!.derivations,
      aRing: a.ctx.snapshotKeys!.derivations,
      bDevice: b.ctx.deviceOpen.keyCache!.derivations,
      bSnapshots: b.ctx.snapshotOpen.keyCache!.derivations,
    });
    expect(counts()).toEqual({ aDevice: 1, aRing: 1, bDevice: 1, bSnapshots: 1 });
    expect((await b.syncer.sync('alpha', { actor: 'test' })).outcome).toBe('applied');
    await b.syncer.drain();
    // Nothing new: the device keys and a's sealing key came warm, and a sealed under the salt b warmed at start.
    expect(counts()).toEqual({ aDevice: 1, aRing: 1, bDevice: 1, bSnapshots: 1 });
  });

  it('a replica restarted alone finds its primary\'s snapshot key warm too', async () => {
    await lab.site('b').stopDaemon();
    const b = await lab.site('b').startDaemon();
    expect(await b.warmup).toEqual({ device: 'derived', snapshotRing: 'not primary', snapshotSalts: 1 });
    await b.syncer.sync('alpha', { actor: 'test' });
    await b.syncer.drain();
    expect(b.ctx.deviceOpen.keyCache!.derivations).toBe(1);
    expect(b.ctx.snapshotOpen.keyCache!.derivations, 'a still seals under the key b derived at start').toBe(1);
  });

  it('a wrong remembered salt costs one derivation: the sync opens its backups and the salt is learnt again', async () => {
    const site = lab.site('b');
    const real = site.daemon!.ctx.store.backupSalt.get()!;
    await site.stopDaemon();
    const store = StateStore.inDir(site.stateDir).open();
    store.backupSalt.remember(randomBytes(16), TEST_SCRYPT);
    store.close();
    const b = await site.startDaemon();
    expect((await b.warmup)?.device).toBe('derived');
    expect((await b.syncer.sync('alpha', { actor: 'test' })).outcome).toBe('applied');
    await b.syncer.drain();
    expect(b.ctx.deviceOpen.keyCache!.derivations, 'the warm-up\'s, then the sync\'s own').toBe(2);
    expect(b.ctx.store.backupSalt.get()?.salt.equals(real.salt)).toBe(true);
  });

  it('close zeroes the keys the warm-up derived', async () => {
    const site = lab.site('b');
    const salt = site.daemon!.ctx.store.backupSalt.get()!;
    await site.stopDaemon();
    const b = await site.startDaemon();
    await b.warmup;
    const key = b.ctx.deviceOpen.keyCache!.get(salt.salt, salt.params);
    expect(key?.some((x) => x !== 0)).toBe(true);
    await site.stopDaemon();
    expect(key?.every((x) => x === 0)).toBe(true);
    expect(b.ctx.deviceOpen.keyCache!.size).toBe(0);
  });
});
