import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InternalError, StateSyncFailedError } from '../errors.js';
import { prepare } from './sqlite.js';
import { StateStore } from './store.js';

let dir: string;
let store: StateStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-group-'));
  store = StateStore.inDir(path.join(dir, 'state')).open();
  store.roles.insert({ namespace: 'payments', role: 'primary', epoch: 1, primarySite: 'berlin' });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const del = (keyId: string) => ({ kind: 'key-deleted' as const, keyId, ref: `r-${keyId}`, detail: {} });
const reopen = () => {
  store.close();
  store = StateStore.inDir(path.join(dir, 'state')).open();
};

describe('group commit', () => {
  it('commits the writes of one event-loop turn in one transaction, in queue order, and resolves after the commit', async () => {
    const before = store.groupCommitStats;
    const writes = Array.from({ length: 20 }, (_, i) => store.groupCommit(() => store.changelog.append('payments', 1, del(`k${i}`))));
    // Nothing is written before the turn ends: the callers have not been told anything yet either.
    expect(store.changelog.count('payments')).toBe(0);
    const changes = await Promise.all(writes);
    expect(changes.map((c) => c.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    const after = store.groupCommitStats;
    expect(after.commits - before.commits).toBe(1);
    expect(after.writes - before.writes).toBe(20);
    reopen();
    expect(store.changelog.after('payments', 1, 0, 100).map((c) => c.keyId)).toEqual(Array.from({ length: 20 }, (_, i) => `k${i}`));
  });

  it('undoes only the write that throws; the others of its group commit', async () => {
    const ok1 = store.groupCommit(() => store.changelog.append('payments', 1, del('a')));
    const bad = store.groupCommit(() => {
      store.changelog.append('payments', 1, del('b'));
      throw new Error('refused half-way');
    });
    const ok2 = store.groupCommit(() => store.changelog.append('payments', 1, del('c')));
    await expect(bad).rejects.toThrow('refused half-way');
    expect((await ok1).seq).toBe(1);
    expect((await ok2).seq).toBe(2);
    reopen();
    expect(store.changelog.after('payments', 1, 0).map((c) => c.keyId)).toEqual(['a', 'c']);
  });

  it('writes later calls in a later group, after the earlier group', async () => {
    const first = await store.groupCommit(() => store.changelog.append('payments', 1, del('a')));
    const second = await store.groupCommit(() => store.changelog.append('payments', 1, del('b')));
    expect([first.seq, second.seq]).toEqual([1, 2]);
  });

  it('commits what is queued when the store closes, and refuses new writes while closed', async () => {
    const queued = store.groupCommit(() => store.changelog.append('payments', 1, del('a')));
    store.close();
    expect((await queued).seq).toBe(1);
    expect(() => store.groupCommit(() => undefined)).toThrow(InternalError);
    store = StateStore.inDir(path.join(dir, 'state')).open();
    expect(store.changelog.count('payments')).toBe(1);
  });

  it('rejects every write of a group whose transaction cannot start, and writes none', async () => {
    // Another transaction is open when the group runs (a misuse): the group must not nest into it.
    const queued = store.groupCommit(() => store.changelog.append('payments', 1, del('a')));
    const refused = expect(queued).rejects.toThrow(InternalError);
    prepare(store.db, 'BEGIN').run();
    await new Promise((r) => setImmediate(r));
    await refused;
    prepare(store.db, 'ROLLBACK').run();
    expect(store.changelog.count('payments')).toBe(0);
  });

  it('lets a lingering write wait for later writes: writes of several turns share one group, and an eager write takes it along', async () => {
    const before = store.groupCommitStats;
    const turn = () => new Promise((r) => setImmediate(r));
    const lingering = [store.groupCommit(() => store.changelog.append('payments', 1, del('l1')), { lingerMs: 60_000 })];
    await turn();
    lingering.push(store.groupCommit(() => store.changelog.append('payments', 1, del('l2')), { lingerMs: 60_000 }));
    await turn();
    await turn();
    // Several turns on, nothing is committed yet: the lingering writes wait for company.
    expect(store.groupCommitStats.commits - before.commits).toBe(0);
    expect(store.changelog.count('payments')).toBe(0);
    // A write queued without lingering fires at the end of its turn and takes the lingering ones along, in queue order.
    const eager = store.groupCommit(() => store.changelog.append('payments', 1, del('e')));
    expect((await eager).seq).toBe(3);
    expect((await Promise.all(lingering)).map((c) => c.seq)).toEqual([1, 2]);
    expect(store.groupCommitStats.commits - before.commits).toBe(1);
    expect(store.groupCommitStats.writes - before.writes).toBe(3);
  });

  it('fires a group for a lingering write alone once its time is up, and never delays an eager write for it', async () => {
    const before = store.groupCommitStats;
    const alone = await store.groupCommit(() => store.changelog.append('payments', 1, del('alone')), { lingerMs: 5 });
    expect(alone.seq).toBe(1);
    expect(store.groupCommitStats.commits - before.commits).toBe(1);
    // Queued after a long lingering write, an eager write still commits at the end of its turn (with it).
    let eagerDone = false;
    const lingering = store.groupCommit(() => store.changelog.append('payments', 1, del('late')), { lingerMs: 60_000 });
    const eager = store.groupCommit(() => store.changelog.append('payments', 1, del('now'))).then((c) => ((eagerDone = true), c));
    expect((await eager).seq).toBe(3);
    expect(eagerDone).toBe(true);
    expect((await lingering).seq).toBe(2);
    // A shorter linger queued after a longer one brings the group forward.
    const long = store.groupCommit(() => store.changelog.append('payments', 1, del('long')), { lingerMs: 60_000 });
    const short = store.groupCommit(() => store.changelog.append('payments', 1, del('short')), { lingerMs: 5 });
    expect([(await long).seq, (await short).seq]).toEqual([4, 5]);
  });

  it('commits lingering writes when the store closes', async () => {
    const queued = store.groupCommit(() => store.changelog.append('payments', 1, del('a')), { lingerMs: 60_000 });
    store.close();
    expect((await queued).seq).toBe(1);
    reopen();
    expect(store.changelog.count('payments')).toBe(1);
  });

  it('commits with synchronous=FULL and no separate sync when asked to', async () => {
    store.close();
    store = StateStore.inDir(path.join(dir, 'state'), { groupSync: 'full' }).open();
    await Promise.all([1, 2, 3].map((i) => store.groupCommit(() => store.changelog.append('payments', 1, del(`f${i}`)))));
    expect(store.groupCommitStats).toMatchObject({ commits: 1, writes: 3, syncs: 0 });
  });
});

describe('group commit with the WAL synced off the event loop', () => {
  /** A store whose WAL syncs wait for `release()` (then run for real, or fail with `fail`). */
  function heldStore() {
    const held: { release: () => void; fail: (err: Error) => void }[] = [];
    store.close();
    store = StateStore.inDir(path.join(dir, 'state'), {
      groupSync: (sync) =>
        new Promise<void>((resolve, reject) => held.push({ release: () => void sync().then(resolve, reject), fail: reject })),
    }).open();
    return held;
  }
  const turn = () => new Promise((r) => setImmediate(r));

  it('tells a caller nothing, and shows the change to no reader, before the WAL sync returned', async () => {
    const held = heldStore();
    let done = false;
    const write = store.groupCommit(() => store.changelog.append('payments', 1, del('a'))).then((c) => ((done = true), c));
    await turn();
    await turn();
    expect(held).toHaveLength(1); // committed, syncing
    expect(done).toBe(false);
    // In the table, but not for readers: the stream, heartbeats and snapshot labels only name changes on disk.
    expect(store.changelog.count('payments')).toBe(1);
    expect(store.changelog.head('payments', 1)).toEqual({ epoch: 1, seq: 0 });
    expect(store.changelog.after('payments', 1, 0)).toEqual([]);
    expect(store.changelog.get('payments', 1)).toBeUndefined();
    held[0]!.release();
    expect((await write).seq).toBe(1);
    expect(store.changelog.head('payments', 1)).toEqual({ epoch: 1, seq: 1 });
    expect(store.changelog.after('payments', 1, 0).map((c) => c.keyId)).toEqual(['a']);
  });

  it('runs two syncs at once; a group committed while both run waits for the next; a sync makes every group before it durable', async () => {
    const held = heldStore();
    const first = store.groupCommit(() => store.changelog.append('payments', 1, del('a')));
    await turn();
    const second = store.groupCommit(() => store.changelog.append('payments', 1, del('b')));
    await turn();
    const third = store.groupCommit(() => store.changelog.append('payments', 1, del('c')));
    await turn();
    const fourth = store.groupCommit(() => store.changelog.append('payments', 1, del('d')));
    await turn();
    expect(held).toHaveLength(2); // the first two groups' own syncs; the third and fourth wait for the next to start
    expect(store.changelog.head('payments', 1).seq).toBe(0);
    let firstDone = false;
    void first.then(() => (firstDone = true));
    // The second sync started after the first group committed: when it returns, both groups are on disk.
    held[1]!.release();
    expect((await second).seq).toBe(2);
    expect(firstDone).toBe(true);
    expect(store.changelog.head('payments', 1).seq).toBe(2);
    await turn();
    expect(held).toHaveLength(3); // started when the second returned, after the third and fourth committed
    held[0]!.release(); // covers only the first group: nothing new
    await turn();
    expect(store.changelog.head('payments', 1).seq).toBe(2);
    held[2]!.release();
    expect([(await third).seq, (await fourth).seq]).toEqual([3, 4]);
    expect(store.changelog.head('payments', 1).seq).toBe(4);
    expect(store.groupCommitStats).toMatchObject({ commits: 4, writes: 4, syncs: 3 });
  });

  it('after a failed sync, acknowledges nothing of the group, keeps its changes hidden and refuses grouped writes', async () => {
    const held = heldStore();
    const write = store.groupCommit(() => store.changelog.append('payments', 1, del('a')));
    const refused = expect(write).rejects.toBeInstanceOf(StateSyncFailedError);
    await turn();
    held[0]!.fail(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    await refused;
    await expect(write).rejects.toThrow(/could not be synced to disk: EIO/);
    expect(store.changelog.head('payments', 1).seq).toBe(0);
    await expect(store.groupCommit(() => store.changelog.append('payments', 1, del('b')))).rejects.toBeInstanceOf(StateSyncFailedError);
    expect(store.changelog.count('payments')).toBe(1);
    // A restart reads back what is on disk (the WAL is synced at open) and takes writes again.
    reopen();
    expect(store.changelog.head('payments', 1).seq).toBe(1);
    expect((await store.groupCommit(() => store.changelog.append('payments', 1, del('b')))).seq).toBe(2);
  });

  it('shows a change again once a rolled-back group gave its seq to a durable one', async () => {
    const held = heldStore();
    const bad = store.groupCommit(() => {
      store.changelog.append('payments', 1, del('x'));
      throw new Error('refused after its append');
    });
    const good = store.groupCommit(() => store.changelog.append('payments', 1, del('a')));
    await turn();
    held[0]!.release();
    await expect(bad).rejects.toThrow('refused after its append');
    expect((await good).seq).toBe(1);
    expect(store.changelog.after('payments', 1, 0).map((c) => c.keyId)).toEqual(['a']);
  });

  it('fails the whole group when SQLite rolled its transaction back (disk full), without running the later writes outside it', async () => {
    // SQLITE_FULL may roll the whole transaction back. The group's later writes then ran as transactions of their own,
    // committed outside the group, and every caller was told `cannot commit - no transaction is active` instead of
    // the full disk (seen in the operator drill with the state directory on a full filesystem).
    const { pragma } = await import('./sqlite.js');
    const db = store.db;
    pragma(db, `max_page_count = ${Number(pragma(db, 'page_count'))}`);
    const big = { kind: 'key-deleted' as const, keyId: 'big', ref: 'r-big', detail: { pad: 'x'.repeat(200_000) } };
    const first = store.groupCommit(() => store.changelog.append('payments', 1, del('a')));
    const full = store.groupCommit(() => store.changelog.append('payments', 1, big));
    const later = store.groupCommit(() => store.changelog.append('payments', 1, del('c')));
    const outcomes = await Promise.allSettled([first, full, later]);
    for (const o of outcomes) {
      expect(o.status).toBe('rejected');
      expect((o as PromiseRejectedResult).reason).toMatchObject({ code: 'NHR_ERR_STATE_WRITE_FAILED' });
      expect(String((o as PromiseRejectedResult).reason)).toContain('database or disk is full');
    }
    expect(store.writeFailure?.message).toContain('SQLITE_FULL');
    pragma(db, 'max_page_count = 1073741823');
    reopen();
    // Nothing of the group is there: not the write after the one that filled the disk either.
    expect(store.changelog.after('payments', 1, 0).map((c) => c.keyId)).toEqual([]);
    // A write that succeeds clears the failure.
    await store.groupCommit(() => store.changelog.append('payments', 1, del('d')));
    expect(store.writeFailure).toBeUndefined();
  });
});
