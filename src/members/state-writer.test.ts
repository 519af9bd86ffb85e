import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import type { MemberHealth } from '../state/members-repo.js';
import { StateStore } from '../state/store.js';
import { MemberStateWriter } from './state-writer.js';

let dir: string;
let store: StateStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-member-writer-'));
  store = StateStore.inDir(path.join(dir, 'state')).open();
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const state = (patch: Partial<MemberHealth> = {}): MemberHealth => ({
  name: 'hamburg',
  status: 'ok',
  consecutiveFailures: 0,
  attempts: 0,
  gaveUp: false,
  lastErrorCode: null,
  lastError: null,
  lastOkAt: 1_000,
  nextRetryAt: null,
  ...patch,
});

/** Resolves once the group commit queued before it is durable (groups commit in queue order). */
const settled = () => store.groupCommit(() => undefined);

describe('MemberStateWriter', () => {
  it('stores a state inside a group commit (no commit of its own on the event loop), not synchronously', async () => {
    const w = new MemberStateWriter(store, silentLogger);
    const inTransaction: boolean[] = [];
    const save = store.members.save.bind(store.members);
    store.members.save = (s) => {
      inTransaction.push(store.db.inTransaction);
      save(s);
    };
    w.save(state());
    expect(store.members.get('hamburg')).toBeUndefined();
    await settled();
    expect(store.members.get('hamburg')).toEqual(state());
    expect(inTransaction).toEqual([true]);
    expect(store.groupCommitStats.writes).toBeGreaterThanOrEqual(1);
  });

  it('writes a member changed several times before its write runs once, with its latest state', async () => {
    const w = new MemberStateWriter(store, silentLogger);
    const before = store.groupCommitStats.writes;
    w.save(state({ status: 'unreachable', consecutiveFailures: 1 }));
    w.save(state({ status: 'unreachable', consecutiveFailures: 2 }));
    w.save(state({ status: 'recovering', lastOkAt: 2_000 }));
    w.save(state({ name: 'berlin' }));
    await settled();
    expect(store.members.get('hamburg')).toMatchObject({ status: 'recovering', consecutiveFailures: 0, lastOkAt: 2_000 });
    expect(store.members.get('berlin')).toMatchObject({ status: 'ok' });
    // Two members' writes and the helper's empty one.
    expect(store.groupCommitStats.writes - before).toBe(3);
    // A change after the write ran is written again.
    w.save(state({ status: 'locked' }));
    await settled();
    expect(store.members.get('hamburg')?.status).toBe('locked');
  });

  it('keeps the caller\'s object out of the queue: a state changed after save() is not what is written', async () => {
    const w = new MemberStateWriter(store, silentLogger);
    const s: { -readonly [K in keyof MemberHealth]: MemberHealth[K] } = state({ consecutiveFailures: 3 });
    w.save(s);
    s.consecutiveFailures = 99;
    await settled();
    expect(store.members.get('hamburg')?.consecutiveFailures).toBe(3);
  });

  it('never throws on a closed store, and writes again once it is open', async () => {
    const w = new MemberStateWriter(store, silentLogger);
    store.close();
    expect(() => w.save(state({ status: 'locked' }))).not.toThrow();
    store.open();
    w.save(state({ status: 'unreachable' }));
    await settled();
    expect(store.members.get('hamburg')?.status).toBe('unreachable');
  });

  it('a clean shutdown stores the state queued last (close() commits queued writes)', () => {
    const w = new MemberStateWriter(store, silentLogger);
    w.save(state({ status: 'fenced' }));
    store.close();
    store.open();
    expect(store.members.get('hamburg')?.status).toBe('fenced');
  });
});
