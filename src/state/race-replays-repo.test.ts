import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StateStore } from './store.js';

let dir: string;
let store: StateStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-replays-'));
  store = StateStore.inDir(path.join(dir, 'state'), { now: () => 7_000 }).open();
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const at = (epoch: number, fromSeq: number) => ({ epoch, fromSeq });

describe('RaceReplaysRepo (race_replays)', () => {
  it('records pending replays with their epoch durably across a reopen, a later plan keeping the earlier start', () => {
    store.raceReplays.record(new Map([['beta', at(3, 12)], ['gamma', at(1, 3)]]));
    store.raceReplays.record(new Map([['beta', at(3, 20)]]));
    store.raceReplays.record(new Map([['gamma', at(1, 2)]]));
    store.close();
    store.open();
    expect(store.raceReplays.all()).toEqual([
      { namespace: 'beta', epoch: 3, fromSeq: 12, toSeq: null, createdAt: 7_000, unexportedIn: null },
      { namespace: 'gamma', epoch: 1, fromSeq: 2, toSeq: null, createdAt: 7_000, unexportedIn: null },
    ]);
  });

  it('forgets a replay once done from its start, but not one an overlapping plan moved earlier, nor one of another epoch', () => {
    store.raceReplays.record(new Map([['beta', at(2, 12)]]));
    // A second plan moved beta's start to 5 while the first replay (from 12) ran: that one's end must not clear it.
    store.raceReplays.record(new Map([['beta', at(2, 5)]]));
    store.raceReplays.done('beta', 2, 12);
    expect(store.raceReplays.all().map((r) => r.fromSeq)).toEqual([5]);
    store.raceReplays.done('beta', 1, 5);
    expect(store.raceReplays.all().map((r) => r.fromSeq)).toEqual([5]);
    store.raceReplays.done('beta', 2, 5);
    expect(store.raceReplays.all()).toEqual([]);
  });

  it('refuses a bad seq or epoch, or a second epoch for a namespace pending, and records nothing of the plan', () => {
    expect(() => store.raceReplays.record(new Map([['beta', at(1, 4)], ['gamma', at(1, 0)]]))).toThrow(/seq 0 of namespace gamma/);
    expect(() => store.raceReplays.record(new Map([['beta', at(1, 1.5)]]))).toThrow(RangeError);
    expect(() => store.raceReplays.record(new Map([['beta', at(-1, 4)]]))).toThrow(/epoch -1 of namespace beta/);
    expect(store.raceReplays.all()).toEqual([]);
    store.raceReplays.record(new Map([['beta', at(1, 4)]]));
    expect(() => store.raceReplays.record(new Map([['gamma', at(1, 2)], ['beta', at(2, 3)]]))).toThrow(/pending at epoch 1, not 2/);
    expect(store.raceReplays.all()).toEqual([{ namespace: 'beta', epoch: 1, fromSeq: 4, toSeq: null, createdAt: 7_000, unexportedIn: null }]);
  });

  it('a row a fence exported without stays until its quarantine file is acknowledged', () => {
    store.raceReplays.record(new Map([['beta', at(1, 4)], ['gamma', at(1, 2)]]));
    store.raceReplays.unexported('beta', 1, 4, 'beta-fenced-epoch1.nhrq');
    expect(store.raceReplays.all()[0]).toMatchObject({ namespace: 'beta', unexportedIn: 'beta-fenced-epoch1.nhrq' });
    expect(store.raceReplays.acknowledged('other.nhrq')).toBe(0);
    expect(store.raceReplays.acknowledged('beta-fenced-epoch1.nhrq')).toBe(1);
    expect(store.raceReplays.all().map((r) => r.namespace)).toEqual(['gamma']);
  });

  it('validates what it reads: a bad stored epoch or seq is reported, not taken for a good row, and left as it is', () => {
    store.raceReplays.record(new Map([['beta', at(1, 4)]]));
    const db = store.db;
    for (const [epoch, why] of [[null, /epoch null/], [-2, /epoch -2/], [1.5, /epoch 1.5/], ['two', /epoch "two"/]] as const) {
      db.prepare('UPDATE race_replays SET epoch = ?').run(epoch);
      expect(store.raceReplays.all()).toEqual([expect.objectContaining({ namespace: 'beta', invalid: expect.stringMatching(why) })]);
    }
    db.prepare('UPDATE race_replays SET epoch = 1, from_seq = 0').run();
    expect(store.raceReplays.all()[0]!.invalid).toMatch(/from-seq 0/);
  });

  it('migration 009 gives existing rows their namespace\'s current epoch (NULL, refused on read, when it has none)', () => {
    const db = store.db;
    store.roles.insert({ namespace: 'beta', role: 'primary', epoch: 6, primarySite: 'a' });
    // The table as 007 made it, with a row each of a known and an unknown namespace; then 009 again.
    db.exec(`DROP TABLE race_replays;
      CREATE TABLE race_replays (namespace TEXT NOT NULL PRIMARY KEY, from_seq INTEGER NOT NULL, created_at INTEGER NOT NULL);
      INSERT INTO race_replays VALUES ('beta', 9, 5), ('gone', 3, 5);`);
    for (const name of ['009_race_replays_epoch.sql', '010_race_replays_to_seq.sql']) {
      const sql = readMigration(name);
      db.transaction(() => db.exec(sql))();
    }
    store.close();
    store.open();
    const rows = store.raceReplays.all();
    expect(rows[0]).toEqual({ namespace: 'beta', epoch: 6, fromSeq: 9, toSeq: null, createdAt: 5, unexportedIn: null });
    expect(rows[1]).toMatchObject({ namespace: 'gone', invalid: expect.stringMatching(/epoch null/) });
  });

  it('keeps where a replay ends durably across a reopen; a second plan for the namespace clears it, and a replaced record is left alone', () => {
    store.raceReplays.record(new Map([['beta', at(2, 12)], ['gamma', at(1, 3)]]));
    store.raceReplays.ended(new Map([['beta', { ...at(2, 12), toSeq: 40 }], ['gamma', { ...at(1, 3), toSeq: 2 }]]));
    store.close();
    store.open();
    expect(store.raceReplays.all().map((r) => [r.namespace, r.toSeq])).toEqual([['beta', 40], ['gamma', 2]]);
    // A second restore erases what came after the first one's end too: its own `ended` sets the new end.
    store.raceReplays.record(new Map([['beta', at(2, 20)]]));
    expect(store.raceReplays.all()[0]).toMatchObject({ fromSeq: 12, toSeq: null });
    // Of another start or epoch (a record replaced meanwhile): not this record's end.
    store.raceReplays.ended(new Map([['beta', { ...at(2, 20), toSeq: 50 }]]));
    store.raceReplays.ended(new Map([['beta', { ...at(1, 12), toSeq: 50 }]]));
    expect(store.raceReplays.all()[0]!.toSeq).toBeNull();
    store.raceReplays.ended(new Map([['beta', { ...at(2, 12), toSeq: 55 }]]));
    expect(store.raceReplays.all()[0]!.toSeq).toBe(55);
  });

  it('refuses an end before the start or not an integer, and sets none of the plan', () => {
    store.raceReplays.record(new Map([['beta', at(1, 4)], ['gamma', at(1, 2)]]));
    expect(() => store.raceReplays.ended(new Map([['beta', { ...at(1, 4), toSeq: 9 }], ['gamma', { ...at(1, 2), toSeq: 0 }]]))).toThrow(/to-seq 0 of namespace gamma/);
    expect(() => store.raceReplays.ended(new Map([['beta', { ...at(1, 4), toSeq: 5.5 }]]))).toThrow(RangeError);
    expect(store.raceReplays.all().map((r) => r.toSeq)).toEqual([null, null]);
  });

  it('validates a stored end on read: one before from-seq − 1 or not an integer is reported, the row left as it is', () => {
    store.raceReplays.record(new Map([['beta', at(1, 4)]]));
    const db = store.db;
    for (const good of [3, 4, 90]) {
      db.prepare('UPDATE race_replays SET to_seq = ?').run(good);
      expect(store.raceReplays.all()).toEqual([expect.objectContaining({ toSeq: good })]);
      expect(store.raceReplays.all()[0]!.invalid).toBeUndefined();
    }
    for (const [bad, why] of [[2, /to-seq 2 is not an integer ≥ its from-seq 4 − 1/], [-1, /to-seq -1/], [7.5, /to-seq 7.5/], ['nine', /to-seq "nine"/]] as const) {
      db.prepare('UPDATE race_replays SET to_seq = ?').run(bad);
      expect(store.raceReplays.all()).toEqual([expect.objectContaining({ namespace: 'beta', invalid: expect.stringMatching(why) })]);
    }
    expect(db.prepare('SELECT to_seq FROM race_replays').get()).toEqual({ to_seq: 'nine' });
  });

  it('migration 010 gives existing rows no end (NULL: replayed to the head, as before)', () => {
    const db = store.db;
    // The table as 009 made it, with a row; then 010 again.
    db.exec(`DROP TABLE race_replays;
      CREATE TABLE race_replays (namespace TEXT NOT NULL PRIMARY KEY, epoch INTEGER, from_seq INTEGER NOT NULL, created_at INTEGER NOT NULL, unexported_in TEXT);
      INSERT INTO race_replays VALUES ('beta', 2, 9, 5, NULL);`);
    const sql = readMigration('010_race_replays_to_seq.sql');
    db.transaction(() => db.exec(sql))();
    store.close();
    store.open();
    expect(store.raceReplays.all()).toEqual([{ namespace: 'beta', epoch: 2, fromSeq: 9, toSeq: null, createdAt: 5, unexportedIn: null }]);
  });
});

function readMigration(name: string): string {
  return readFileSync(path.join(import.meta.dirname, '../../migrations', name), 'utf8');
}
