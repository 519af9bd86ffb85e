import { describe, expect, it } from 'vitest';
import { deriveBackupKey } from '../backup/crypto.js';
import { TEST_SCRYPT } from '../backup/format.js';
import { SnapshotKeyRing, type GenerationRecord, type RecordedGeneration } from './snapshot-keys.js';

describe('SnapshotKeyRing', () => {
  it('hands out one derived key for several snapshots, the one the passphrase and salt give', async () => {
    const ring = new SnapshotKeyRing('pw', TEST_SCRYPT);
    const a = await ring.lease();
    const b = await ring.lease();
    expect(b.key.salt.equals(a.key.salt)).toBe(true);
    expect(b.key.backupKey).toBe(a.key.backupKey);
    expect(a.key.backupKey.equals(await deriveBackupKey('pw', a.key.salt, TEST_SCRYPT))).toBe(true);
    a.release();
    b.release();
    ring.close();
  });

  it('retires a key after maxUses snapshots or maxAgeMs, and zeroes it once no snapshot holds it', async () => {
    let now = 0;
    const ring = new SnapshotKeyRing('pw', TEST_SCRYPT, { maxUses: 2, maxAgeMs: 1_000 }, () => now);
    const first = await ring.lease();
    const kept = Buffer.from(first.key.backupKey);
    const second = await ring.lease();
    const third = await ring.lease(); // a third use: a new salt
    expect(third.key.salt.equals(first.key.salt)).toBe(false);
    first.release();
    await new Promise((r) => setImmediate(r));
    expect(second.key.backupKey.equals(kept), 'still held by a snapshot: not zeroed').toBe(true);
    second.release();
    await new Promise((r) => setImmediate(r));
    expect(first.key.backupKey.every((x) => x === 0)).toBe(true);
    now = 1_000; // too old now
    const fourth = await ring.lease();
    expect(fourth.key.salt.equals(third.key.salt)).toBe(false);
    third.release();
    fourth.release();
    ring.close();
    await new Promise((r) => setImmediate(r));
    expect(fourth.key.backupKey.every((x) => x === 0)).toBe(true);
  });

  it('refuses leases after close, and a lease released twice counts once', async () => {
    const ring = new SnapshotKeyRing('pw', TEST_SCRYPT);
    const a = await ring.lease();
    const b = await ring.lease();
    a.release();
    a.release();
    ring.close();
    await new Promise((r) => setImmediate(r));
    expect(b.key.backupKey.some((x) => x !== 0), 'b still holds it').toBe(true);
    b.release();
    await new Promise((r) => setImmediate(r));
    expect(b.key.backupKey.every((x) => x === 0)).toBe(true);
    await expect(ring.lease()).rejects.toThrow(/closed/);
  });

  it('prepare() derives the current key ahead of the first lease, which then derives nothing and counts one use', async () => {
    const ring = new SnapshotKeyRing('pw', TEST_SCRYPT, { maxUses: 3, maxAgeMs: 60_000 });
    await ring.prepare();
    await ring.prepare();
    expect(ring.derivations).toBe(1);
    const a = await ring.lease();
    const b = await ring.lease();
    expect(b.key.salt.equals(a.key.salt)).toBe(true);
    expect(ring.derivations, 'prepare counted no use: two leases on the prepared key').toBe(1);
    a.release();
    b.release();
    ring.close();
    await ring.prepare();
    expect(ring.derivations, 'a closed ring prepares nothing').toBe(1);
  });

  it('derives the successor in the background at the last use, so the snapshot after a rotation finds it derived', async () => {
    let now = 0;
    const ring = new SnapshotKeyRing('pw', TEST_SCRYPT, { maxUses: 2, maxAgeMs: 1_000 }, () => now);
    const first = await ring.lease();
    expect(ring.derivations).toBe(1);
    const second = await ring.lease(); // the last use of the first key: its successor is derived now
    expect(ring.derivations).toBe(2);
    const third = await ring.lease();
    expect(third.key.salt.equals(first.key.salt)).toBe(false);
    expect(ring.derivations, 'the third took the successor').toBe(2);
    expect(third.key.backupKey.equals(await deriveBackupKey('pw', third.key.salt, TEST_SCRYPT))).toBe(true);
    // Three quarters of its age: the next successor is derived ahead too.
    now = 800;
    const fourth = await ring.lease();
    expect(fourth.key.salt.equals(third.key.salt)).toBe(true);
    expect(ring.derivations).toBe(3);
    for (const l of [first, second, third, fourth]) l.release();
    ring.close();
    await new Promise((r) => setImmediate(r));
    expect(fourth.key.backupKey.every((x) => x === 0)).toBe(true);
  });

  describe('with a record across restarts', () => {
    /** A record as the daemon's SQLite keeps it: what was saved, read back by the next life's ring. */
    function memoryRecord(): GenerationRecord & { saved: RecordedGeneration[]; failing: boolean } {
      const r = {
        saved: [] as RecordedGeneration[],
        failing: false,
        load: () => r.saved.at(-1),
        save: (g: RecordedGeneration) => {
          if (r.failing) throw new Error('disk full');
          r.saved.push({ ...g, salt: Buffer.from(g.salt) });
        },
      };
      return r;
    }
    const limits = { maxUses: 4, maxAgeMs: 1_000 };

    it('a restarted ring within the limits resumes the recorded salt, counting uses across lives', async () => {
      const record = memoryRecord();
      let now = 100;
      const first = new SnapshotKeyRing('pw', TEST_SCRYPT, limits, () => now, record);
      const a = await first.lease();
      const b = await first.lease();
      a.release();
      b.release();
      first.close();
      expect(record.saved.map((g) => g.uses)).toEqual([1, 2]);
      now = 600;
      const second = new SnapshotKeyRing('pw', TEST_SCRYPT, limits, () => now, record);
      await second.prepare();
      expect(second.resumed).toBe(true);
      const c = await second.lease();
      expect(c.key.salt.equals(a.key.salt)).toBe(true);
      expect(c.key.backupKey.equals(await deriveBackupKey('pw', a.key.salt, TEST_SCRYPT))).toBe(true);
      expect(second.derivations).toBe(1);
      expect(record.saved.at(-1)).toEqual({ salt: a.key.salt, params: TEST_SCRYPT, bornAt: 100, uses: 3 });
      c.release();
      second.close();
    });

    it('records the use before the key is handed out', async () => {
      const record = memoryRecord();
      const ring = new SnapshotKeyRing('pw', TEST_SCRYPT, limits, Date.now, record);
      const leasing = ring.lease();
      expect(record.saved.map((g) => g.uses), 'written synchronously in lease()').toEqual([1]);
      (await leasing).release();
      ring.close();
    });

    it('past maxUses, past maxAgeMs, born in the future or under other scrypt parameters: a fresh salt', async () => {
      const salt = Buffer.alloc(16, 7);
      const cases: [string, RecordedGeneration][] = [
        ['used up', { salt, params: TEST_SCRYPT, bornAt: 900, uses: 4 }],
        ['too old', { salt, params: TEST_SCRYPT, bornAt: 0, uses: 1 }],
        ['born later than now', { salt, params: TEST_SCRYPT, bornAt: 1_001, uses: 1 }],
        ['other parameters', { salt, params: { ...TEST_SCRYPT, N: TEST_SCRYPT.N * 2 }, bornAt: 900, uses: 1 }],
      ];
      for (const [why, g] of cases) {
        const record = memoryRecord();
        record.saved.push(g);
        const ring = new SnapshotKeyRing('pw', TEST_SCRYPT, limits, () => 1_000, record);
        const l = await ring.lease();
        expect(l.key.salt.equals(salt), why).toBe(false);
        expect(ring.resumed, why).toBe(false);
        expect(record.saved.at(-1), why).toEqual({ salt: l.key.salt, params: TEST_SCRYPT, bornAt: 1_000, uses: 1 });
        l.release();
        ring.close();
      }
      // Just within: one use and one millisecond left.
      const record = memoryRecord();
      record.saved.push({ salt, params: TEST_SCRYPT, bornAt: 1, uses: 3 });
      const ring = new SnapshotKeyRing('pw', TEST_SCRYPT, limits, () => 1_000, record);
      const l = await ring.lease();
      expect(l.key.salt.equals(salt)).toBe(true);
      l.release();
      ring.close();
    });

    it('a use that cannot be recorded retires the key after that snapshot; a failing load is no record', async () => {
      const record = memoryRecord();
      const ring = new SnapshotKeyRing('pw', TEST_SCRYPT, limits, Date.now, record);
      const a = await ring.lease();
      record.failing = true;
      const b = await ring.lease();
      expect(b.key.salt.equals(a.key.salt), 'the snapshot itself goes ahead').toBe(true);
      record.failing = false;
      const c = await ring.lease();
      expect(c.key.salt.equals(a.key.salt), 'no further use of a key whose count was not recorded').toBe(false);
      for (const l of [a, b, c]) l.release();
      ring.close();
      const broken: GenerationRecord = { load: () => { throw new Error('closed'); }, save: () => undefined };
      const other = new SnapshotKeyRing('pw', TEST_SCRYPT, limits, Date.now, broken);
      (await other.lease()).release();
      expect(other.resumed).toBe(false);
      other.close();
    });
  });
});
