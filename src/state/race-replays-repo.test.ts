import { mkdtempSync, rmSync } from 'node:fs';
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

describe('RaceReplaysRepo (race_replays)', () => {
  it('records pending replays durably across a reopen, a later plan keeping the earlier start', () => {
    store.raceReplays.record(new Map([['beta', 12], ['gamma', 3]]));
    store.raceReplays.record(new Map([['beta', 20]]));
    store.raceReplays.record(new Map([['gamma', 2]]));
    store.close();
    store.open();
    expect(store.raceReplays.all()).toEqual([
      { namespace: 'beta', fromSeq: 12, createdAt: 7_000 },
      { namespace: 'gamma', fromSeq: 2, createdAt: 7_000 },
    ]);
  });

  it('forgets a replay once done from its start, but not one an overlapping plan moved earlier', () => {
    store.raceReplays.record(new Map([['beta', 12]]));
    // A second plan moved beta's start to 5 while the first replay (from 12) ran: that one's end must not clear it.
    store.raceReplays.record(new Map([['beta', 5]]));
    store.raceReplays.done('beta', 12);
    expect(store.raceReplays.all().map((r) => r.fromSeq)).toEqual([5]);
    store.raceReplays.done('beta', 5);
    expect(store.raceReplays.all()).toEqual([]);
  });

  it('refuses a seq that is not a positive integer and records nothing of the plan', () => {
    expect(() => store.raceReplays.record(new Map([['beta', 4], ['gamma', 0]]))).toThrow(/seq 0 of namespace gamma/);
    expect(() => store.raceReplays.record(new Map([['beta', 1.5]]))).toThrow(RangeError);
    expect(store.raceReplays.all()).toEqual([]);
  });
});
