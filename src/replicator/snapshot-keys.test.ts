import { describe, expect, it } from 'vitest';
import { deriveBackupKey } from '../backup/crypto.js';
import { TEST_SCRYPT } from '../backup/format.js';
import { SnapshotKeyRing } from './snapshot-keys.js';

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
});
