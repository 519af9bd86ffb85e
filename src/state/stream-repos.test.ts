import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StateStore } from './store.js';

let dir: string;
let store: StateStore;
let clock = 1_000;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-stream-state-'));
  clock = 1_000;
  store = StateStore.inDir(path.join(dir, 'state'), { now: () => clock }).open();
  store.roles.insert({ namespace: 'payments', role: 'primary', epoch: 1, primarySite: 'berlin' });
  store.roles.insert({ namespace: 'hr', role: 'primary', epoch: 1, primarySite: 'berlin' });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const del = (keyId: string, ref = `r-${keyId}`) => ({ kind: 'key-deleted' as const, keyId, ref, detail: {} });

describe('change log', () => {
  it('numbers changes 1, 2, 3 per namespace and reads them back in order', () => {
    expect(store.changelog.head('payments', 1)).toEqual({ epoch: 1, seq: 0 });
    store.changelog.append('payments', 1, del('a'));
    store.changelog.append('hr', 1, del('x'));
    const c = store.changelog.append('payments', 1, { kind: 'tag-added', keyId: 'a', ref: 'r2', detail: { tag: 't1' } });
    expect(c.seq).toBe(2);
    expect(store.changelog.after('payments', 1, 0).map((x) => [x.seq, x.kind, x.keyId, x.detail])).toEqual([
      [1, 'key-deleted', 'a', {}],
      [2, 'tag-added', 'a', { tag: 't1' }],
    ]);
    expect(store.changelog.after('payments', 1, 1, 10)).toHaveLength(1);
    expect(store.changelog.head('hr', 1).seq).toBe(1);
  });

  // Before: a replay pending longer than the retention was refused for good ("no longer retained"), and its namespace
  // refused writes until an operator intervened.
  it('never prunes the changes a pending re-apply of racing writes still needs', () => {
    for (let i = 0; i < 5; i++) {
      clock = 1_000 + i * 1_000;
      store.changelog.append('payments', 1, del(`k${i}`));
    }
    store.raceReplays.record(new Map([['payments', { epoch: 1, fromSeq: 2 }]]));
    clock = 1_000_000;
    expect(store.changelog.prune(1, 1)).toBe(1); // only seq 1: 2..5 are pending
    expect(store.changelog.after('payments', 1, 0).map((c) => c.seq)).toEqual([2, 3, 4, 5]);
    store.raceReplays.done('payments', 1, 2);
    expect(store.changelog.prune(1, 1)).toBe(4);
  });

  it('keeps seq increasing across epochs, from the replica position after a promote', () => {
    store.changelog.append('payments', 1, del('a'));
    store.positions.recordSyncOk('payments', 'hamburg', { epoch: 1, seq: 40, takenAt: 1, durationMs: 1 });
    expect(store.changelog.head('payments', 2)).toEqual({ epoch: 2, seq: 40 });
    expect(store.changelog.append('payments', 2, del('b')).seq).toBe(41);
    expect(store.changelog.after('payments', 1, 0).map((c) => c.seq)).toEqual([1]);
    expect(store.changelog.after('payments', 2, 0).map((c) => c.seq)).toEqual([41]);
  });

  it('prunes by age and by count but never lowers the head', () => {
    for (let i = 0; i < 5; i++) {
      clock = 1_000 + i * 1_000;
      store.changelog.append('payments', 1, del(`k${i}`));
    }
    clock = 6_000;
    expect(store.changelog.prune(3_500, 100)).toBe(2); // created at 1000 and 2000
    expect(store.changelog.oldest('payments', 1)).toBe(3);
    expect(store.changelog.prune(1_000_000, 1)).toBe(2);
    expect(store.changelog.after('payments', 1, 0).map((c) => c.seq)).toEqual([5]);
    expect(store.changelog.prune(0, 1)).toBe(1);
    expect(store.changelog.oldest('payments', 1)).toBeUndefined();
    expect(store.changelog.append('payments', 1, del('z')).seq).toBe(6);
  });

  it('names each namespace\'s log with an id of its own, kept for the life of the database', () => {
    const id = store.changelog.logId('payments');
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(store.changelog.logId('payments')).toBe(id);
    expect(store.changelog.logId('hr')).not.toBe(id);
    store.close();
    store = StateStore.inDir(path.join(dir, 'state'), { now: () => clock }).open();
    expect(store.changelog.logId('payments')).toBe(id);
    // A lost state directory is a new database: a new log, under a new id.
    const fresh = StateStore.inDir(path.join(dir, 'other')).open();
    fresh.roles.insert({ namespace: 'payments', role: 'primary', epoch: 1, primarySite: 'berlin' });
    expect(fresh.changelog.logId('payments')).not.toBe(id);
    fresh.close();
  });

  it('stores envelopes apart from the public detail', () => {
    const env = { site: 'hamburg', ciphertext: 'AAAA' };
    store.changelog.append('payments', 1, { kind: 'key-imported', keyId: 'k', ref: 'r', detail: {}, envelopes: { hamburg: env } });
    expect(store.changelog.get('payments', 1)?.envelopes).toEqual({ hamburg: env });
  });
});

describe('intents', () => {
  it('opens, lists oldest first, and removes', () => {
    store.intents.open({ id: 'i1', namespace: 'payments', epoch: 1, kind: 'key-deleted', keyId: 'a', detail: {} });
    clock = 2_000;
    store.intents.open({ id: 'i2', namespace: 'hr', epoch: 1, kind: 'label-set', keyId: 'b', detail: { label: 'x' } });
    expect(store.intents.list().map((i) => [i.id, i.ref, i.kind])).toEqual([
      ['i1', 'i1', 'key-deleted'],
      ['i2', 'i2', 'label-set'],
    ]);
    expect(store.intents.get('i2')?.detail).toEqual({ label: 'x' });
    expect(store.intents.remove('i1')).toBe(true);
    expect(store.intents.remove('i1')).toBe(false);
    expect(() => store.intents.open({ id: 'i2', namespace: 'hr', epoch: 1, kind: 'catchup', detail: {} })).toThrow();
  });
});

describe('applied changes', () => {
  const rec = (seq: number, changedAt = 500) => ({ namespace: 'payments', sourceSite: 'hamburg', epoch: 1, seq, kind: 'key-deleted', keyId: 'a', outcome: 'applied' as const, changedAt });

  it('records a change and its position together, and refuses the same change twice', () => {
    store.applied.record(rec(1));
    store.applied.record(rec(2, 700));
    expect(store.applied.has('payments', 1, 2)).toBe(true);
    expect(store.positions.get('payments', 'hamburg')).toMatchObject({ epoch: 1, seq: 2, positionTakenAt: 700 });
    expect(() => store.applied.record(rec(2, 900))).toThrow();
    expect(store.positions.get('payments', 'hamburg')).toMatchObject({ seq: 2, positionTakenAt: 700 });
    expect(store.applied.count('payments')).toBe(2);
  });

  it('forgets, with a snapshot position, the records it does not cover: after it, or of another log', () => {
    const L1 = '6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f';
    const L2 = 'a9b8c7d6-e5f4-4321-9abc-def012345678';
    for (let seq = 1; seq <= 5; seq++) store.applied.record({ ...rec(seq), logId: L1 });
    store.applied.record({ ...rec(7), namespace: 'hr', logId: L1 });
    store.positions.recordSyncOk('payments', 'hamburg', { epoch: 1, seq: 3, log: L1, takenAt: 1, durationMs: 1 });
    expect(store.positions.get('payments', 'hamburg')).toMatchObject({ epoch: 1, seq: 3, logId: L1 });
    expect([1, 2, 3, 4, 5].filter((seq) => store.applied.has('payments', 1, seq, L1))).toEqual([1, 2, 3]);
    // A snapshot of a new log (the primary's state was lost) at its head 2: nothing of L1 describes the device now.
    store.positions.recordSyncOk('payments', 'hamburg', { epoch: 1, seq: 2, log: L2, takenAt: 2, durationMs: 1 });
    expect(store.applied.count('payments')).toBe(0);
    store.applied.record({ ...rec(3), logId: L2 });
    expect(store.applied.has('payments', 1, 3, L2)).toBe(true);
    expect(store.applied.has('payments', 1, 3, L1)).toBe(false);
    expect(store.positions.get('payments', 'hamburg')).toMatchObject({ seq: 3, logId: L2 });
    // Other namespaces keep theirs.
    expect(store.applied.count('hr')).toBe(1);
  });

  it('moves the lag basis on a heartbeat only when caught up', () => {
    store.applied.record(rec(3));
    expect(store.applied.caughtUp('payments', 'hamburg', 1, 4, 2_000)).toBe(false);
    expect(store.applied.caughtUp('payments', 'hamburg', 1, 3, 2_000)).toBe(true);
    expect(store.positions.get('payments', 'hamburg')?.positionTakenAt).toBe(2_000);
  });

  it('rolls back the record when the surrounding transaction fails', () => {
    expect(() =>
      store.transaction(() => {
        store.applied.record(rec(1));
        throw new Error('effect failed');
      }),
    ).toThrow('effect failed');
    expect(store.applied.has('payments', 1, 1)).toBe(false);
    expect(store.positions.get('payments', 'hamburg')).toBeUndefined();
  });
});

describe('stream position rewind (racing writes re-applied)', () => {
  const L1 = '6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f';
  const L2 = 'a9b8c7d6-e5f4-4321-9abc-def012345678';
  const rec = (seq: number, epoch = 1, logId = L1) => ({ namespace: 'payments', sourceSite: 'hamburg', logId, epoch, seq, kind: 'key-deleted', keyId: `k${seq}`, outcome: 'applied' as const, changedAt: 500 + seq });
  const seqs = (epoch = 1, logId = L1) => [1, 2, 3, 4, 5, 6, 7].filter((seq) => store.applied.has('payments', epoch, seq, logId));

  it('moves the position back before a change and forgets the records at and after it, in its epoch and log', () => {
    for (let seq = 1; seq <= 5; seq++) {
      clock = 2_000 + seq;
      store.applied.record(rec(seq));
    }
    expect(store.positions.canRewind('payments', 'hamburg', 3)).toBe(true);
    store.positions.rewind('payments', 'hamburg', 3);
    expect(store.positions.get('payments', 'hamburg')).toMatchObject({ epoch: 1, seq: 2, logId: L1 });
    expect(seqs()).toEqual([1, 2]);
    // Re-applying from there records them again (no replay refusal).
    store.applied.record(rec(3));
    expect(store.positions.get('payments', 'hamburg')).toMatchObject({ seq: 3 });
  });

  it('is durable: a reopened store holds the rewound position', () => {
    for (let seq = 1; seq <= 3; seq++) store.applied.record(rec(seq));
    store.positions.rewind('payments', 'hamburg', 2);
    store.close();
    store = StateStore.inDir(path.join(dir, 'state'), { now: () => clock }).open();
    expect(store.positions.get('payments', 'hamburg')).toMatchObject({ seq: 1 });
    expect(seqs()).toEqual([1]);
  });

  it('refuses (changing nothing) a change not applied in the position\'s epoch and log, or past the position', () => {
    for (let seq = 1; seq <= 3; seq++) store.applied.record(rec(seq));
    expect(store.positions.canRewind('payments', 'hamburg', 4)).toBe(false); // past the position
    expect(store.positions.canRewind('payments', 'hamburg', 0)).toBe(false);
    expect(store.positions.canRewind('payments', 'hamburg', 1.5)).toBe(false);
    expect(store.positions.canRewind('payments', 'nowhere', 1)).toBe(false);
    // An epoch change (a snapshot sync at epoch 2; seq numbering continues): change 2 was applied at epoch 1.
    store.positions.recordSyncOk('payments', 'hamburg', { epoch: 2, seq: 3, log: L1, takenAt: 1, durationMs: 1 });
    store.applied.record(rec(4, 2));
    expect(store.positions.canRewind('payments', 'hamburg', 2)).toBe(false);
    expect(store.positions.canRewind('payments', 'hamburg', 4)).toBe(true);
    // A new log (the primary's state was lost) numbering from 1 again: L1's change 1 is not L2's.
    store.positions.recordSyncOk('payments', 'hamburg', { epoch: 2, seq: 0, log: L2, takenAt: 1, durationMs: 1 });
    store.applied.record(rec(1, 2, L2));
    expect(store.positions.canRewind('payments', 'hamburg', 1)).toBe(true);
    store.positions.recordSyncOk('payments', 'hamburg', { epoch: 2, seq: 5, log: L1, takenAt: 1, durationMs: 1 });
    expect(store.positions.canRewind('payments', 'hamburg', 1)).toBe(false);
    const before = store.positions.get('payments', 'hamburg');
    expect(() => store.positions.rewind('payments', 'hamburg', 1)).toThrow(/cannot be moved back/);
    expect(store.positions.get('payments', 'hamburg')).toEqual(before);
  });

  it('refuses once retention pruned the record of the change', () => {
    clock = 1_000;
    for (let seq = 1; seq <= 2; seq++) store.applied.record(rec(seq));
    clock = 100_000;
    store.applied.prune(10_000);
    expect(store.positions.canRewind('payments', 'hamburg', 2)).toBe(false);
  });

  it('rolls back with the surrounding transaction', () => {
    for (let seq = 1; seq <= 3; seq++) store.applied.record(rec(seq));
    expect(() =>
      store.transaction(() => {
        store.positions.rewind('payments', 'hamburg', 2);
        throw new Error('restore refused');
      }),
    ).toThrow('restore refused');
    expect(store.positions.get('payments', 'hamburg')).toMatchObject({ seq: 3 });
    expect(seqs()).toEqual([1, 2, 3]);
  });
});

describe('peer transport keys', () => {
  it('keeps the last published key per site', () => {
    store.transportKeys.save({ site: 'hamburg', keyId: 'k1', publicKeyPem: 'PEM1', fingerprint: 'f1' });
    clock = 5_000;
    store.transportKeys.save({ site: 'hamburg', keyId: 'k2', publicKeyPem: 'PEM2', fingerprint: 'f2' });
    expect(store.transportKeys.get('hamburg')).toEqual({ site: 'hamburg', keyId: 'k2', publicKeyPem: 'PEM2', fingerprint: 'f2', fetchedAt: 5_000 });
    expect(store.transportKeys.get('paris')).toBeUndefined();
  });
});
