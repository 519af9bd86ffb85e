import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { assertTokenCurrent } from '../concurrency/fencing.js';
import { createLogger, silentLogger } from '../log.js';
import { NetHsmClient } from '../nethsm/client.js';
import { StateStore } from '../state/store.js';
import { LogReplay } from '../stream/log-replay.js';
import { admitsDuring, DaemonRaceReplayer } from './race-replayer.js';

describe('DaemonRaceReplayer: own envelopes', () => {
  let dir: string;
  let store: StateStore;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-race-replayer-'));
    store = StateStore.inDir(dir).open();
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a drop already running stops once a sync starts: an import sealed for that sync keeps its own envelope', async () => {
    // 'big' is iterated first and its log spans more than one drop slice, so the drop yields to the event loop there.
    store.roles.insert({ namespace: 'big', role: 'primary', epoch: 1, primarySite: 'a' });
    store.roles.insert({ namespace: 'small', role: 'primary', epoch: 1, primarySite: 'a' });
    store.transaction(() => {
      for (let i = 0; i < 20_001; i++) store.changelog.append('big', 1, { kind: 'label-set', keyId: 'k', ref: `r${i}`, detail: { label: `l${i}` } });
    });
    // No device call is made (nothing replays); the client only satisfies the constructor.
    const logs = new LogReplay({ store, site: 'a', transportKey: () => undefined, client: () => new NetHsmClient({ url: 'https://127.0.0.1:9', tls: { fingerprint256: 'AA:'.repeat(31) + 'AA' } }) });
    const replayer = new DaemonRaceReplayer({
      store,
      barrier: new DeviceBarrier(),
      log: silentLogger,
      logs,
      streams: undefined,
      isPrimary: () => true,
      dropOwnEnvelopes: (stop) => logs.dropOwnEnvelopes(stop),
    });
    // The last sync ended: the drop starts (and yields inside 'big').
    const settled = replayer.settle();
    // Before it goes on, a sync starts and an import is logged sealed to this site's own key for its merge-restore.
    const ended = replayer.beginSync();
    expect(replayer.sealOwn).toBe(true);
    const imported = store.changelog.append('small', 1, { kind: 'key-imported', keyId: 'K', ref: 'imp', detail: {}, envelopes: { a: { v: 2, site: 'a' }, b: { v: 2, site: 'b' } } });
    await settled;
    // The merge-restore of that sync may re-apply the import from the log: its own envelope must still be there.
    expect(Object.keys(store.changelog.get('small', imported.seq)!.envelopes ?? {}).sort()).toEqual(['a', 'b']);
    // Once no sync, tracker or replay can need it, it goes.
    ended();
    await replayer.settle();
    expect(Object.keys(store.changelog.get('small', imported.seq)!.envelopes ?? {})).toEqual(['b']);
  });

  it('a stored record with a bad epoch is refused: never replayed, never dropped, and status names it', async () => {
    store.roles.insert({ namespace: 'beta', role: 'primary', epoch: 3, primarySite: 'a' });
    store.raceReplays.record(new Map([['beta', { epoch: 3, fromSeq: 1 }]]));
    store.db.prepare('UPDATE race_replays SET epoch = -1').run();
    const barrier = new DeviceBarrier();
    // No device call can be made: the client points nowhere.
    const logs = new LogReplay({ store, site: 'a', transportKey: () => undefined, client: () => new NetHsmClient({ url: 'https://127.0.0.1:9', tls: { fingerprint256: 'AA:'.repeat(31) + 'AA' } }) });
    const replayer = new DaemonRaceReplayer({ store, barrier, log: silentLogger, logs, streams: undefined, isPrimary: () => true });
    replayer.start();
    await replayer.close();
    expect(barrier.exclusiveRuns).toBe(0);
    expect(replayer.isPending('beta')).toBe(true);
    expect(store.raceReplays.all()).toEqual([expect.objectContaining({ namespace: 'beta', fromSeq: 1, invalid: expect.stringMatching(/epoch -1/) })]);
    const view = replayer.view()!;
    expect(view.records).toEqual([{ namespace: 'beta', epoch: null, fromSeq: null, toSeq: null, state: 'invalid', quarantine: null }]);
    expect(view.cause).toMatch(/beta: its stored epoch -1 is not a non-negative integer/);
    // A demote's finish refuses it too, leaving it as it is.
    await expect(replayer.finish('beta')).rejects.toThrow(/not valid: its stored epoch -1/);
    expect(store.raceReplays.all()).toHaveLength(1);
  });

  // Before (the end kept in memory only): every replay of a record read to the epoch's head, so a change logged after
  // its hold that replay cannot re-apply (here a catch-up) made the demote's finish and the fence's re-apply refuse it.
  it('a demote\'s finish and a fence\'s re-apply read a record only to its stored end; one without an end reads to the head, as before', async () => {
    store.roles.insert({ namespace: 'beta', role: 'primary', epoch: 3, primarySite: 'a' });
    store.roles.insert({ namespace: 'gamma', role: 'fenced', epoch: 3, primarySite: 'b' });
    // No device call can be made: the client points nowhere, so the spans replayed must be empty.
    const logs = new LogReplay({ store, site: 'a', transportKey: () => undefined, client: () => new NetHsmClient({ url: 'https://127.0.0.1:9', tls: { fingerprint256: 'AA:'.repeat(31) + 'AA' } }) });
    const replayer = new DaemonRaceReplayer({ store, barrier: new DeviceBarrier(), log: silentLogger, logs, streams: undefined, isPrimary: (ns) => ns === 'beta' });
    // Restored with nothing logged since the start (end = start − 1); then a change written on the restored device.
    store.raceReplays.record(new Map([['beta', { epoch: 3, fromSeq: 1 }], ['gamma', { epoch: 3, fromSeq: 1 }]]));
    store.raceReplays.ended(new Map([['beta', { epoch: 3, fromSeq: 1, toSeq: 0 }], ['gamma', { epoch: 3, fromSeq: 1, toSeq: 0 }]]));
    for (const ns of ['beta', 'gamma']) store.changelog.append(ns, 3, { kind: 'catchup', ref: `c-${ns}`, detail: { reason: 'generated inside the NetHSM' } });
    expect(logs.check('beta', 1)).toMatch(/catch-up/);
    expect(replayer.view()?.records?.map((r) => r.toSeq)).toEqual([0, 0]);
    await replayer.finish('beta');
    const fence = await replayer.beforeFenceExport('gamma');
    expect(fence).toEqual({ record: expect.objectContaining({ namespace: 'gamma', toSeq: 0 }) });
    replayer.afterFenceExport(fence!, 'gamma-fenced-epoch3.nhrq');
    expect(store.raceReplays.all()).toEqual([]);
    // No end stored (a crash inside the hold before the restore finished, or a pre-010 record): to the head, refused.
    store.raceReplays.record(new Map([['beta', { epoch: 3, fromSeq: 1 }]]));
    await expect(replayer.finish('beta')).rejects.toThrow(/catch-up/);
    expect(store.raceReplays.all()).toHaveLength(1);
  });

  it('a stored end before the start is refused like any bad row: status names it, a demote\'s finish refuses it', async () => {
    store.roles.insert({ namespace: 'beta', role: 'primary', epoch: 3, primarySite: 'a' });
    store.raceReplays.record(new Map([['beta', { epoch: 3, fromSeq: 5 }]]));
    store.db.prepare('UPDATE race_replays SET to_seq = 2').run();
    const barrier = new DeviceBarrier();
    const logs = new LogReplay({ store, site: 'a', transportKey: () => undefined, client: () => new NetHsmClient({ url: 'https://127.0.0.1:9', tls: { fingerprint256: 'AA:'.repeat(31) + 'AA' } }) });
    const replayer = new DaemonRaceReplayer({ store, barrier, log: silentLogger, logs, streams: undefined, isPrimary: () => true });
    replayer.start();
    await replayer.close();
    expect(barrier.exclusiveRuns).toBe(0);
    expect(replayer.isPending('beta')).toBe(true);
    expect(replayer.view()!.cause).toMatch(/beta: its stored to-seq 2 is not an integer ≥ its from-seq 5 − 1/);
    await expect(replayer.finish('beta')).rejects.toThrow(/not valid: its stored to-seq 2/);
    expect(store.raceReplays.all()).toHaveLength(1);
  });
});

// Before: replay() resolved the same whether it re-applied the writes or was abandoned (stale token) or found the
// record ended by another hold, so the sync counted (sync_race_replays_total, racing_writes_reapplied_total) and
// logged them as re-applied.
describe('DaemonRaceReplayer: a replay after the hold says what it did', () => {
  let dir: string;
  let store: StateStore;
  const lines: { level: string; msg: string; abandoned?: string[] }[] = [];
  const log = createLogger({ level: 'info', destination: { write: (s: string) => void lines.push(JSON.parse(s) as (typeof lines)[number]) } });

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-race-replayer-'));
    store = StateStore.inDir(dir).open();
    lines.length = 0;
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A merge-restore's plan for `beta` and `gamma` (primary here), carried through its hold: prepared, then restored. */
  function afterHold() {
    for (const ns of ['beta', 'gamma']) {
      store.roles.insert({ namespace: ns, role: 'primary', epoch: 3, primarySite: 'a' });
      store.changelog.append(ns, 3, { kind: 'label-set', keyId: 'k', ref: `r-${ns}`, detail: { label: 'l' } });
    }
    // No device call can be made: the client points nowhere (a replay that ran would fail, not pass).
    const logs = new LogReplay({ store, site: 'a', transportKey: () => undefined, client: () => new NetHsmClient({ url: 'https://127.0.0.1:9', tls: { fingerprint256: 'AA:'.repeat(31) + 'AA' } }) });
    const barrier = new DeviceBarrier({ check: (t) => assertTokenCurrent((ns) => store.roles.get(ns), t) });
    const replayer = new DaemonRaceReplayer({ store, barrier, log, logs, streams: undefined, isPrimary: (ns) => store.roles.get(ns)?.role === 'primary' });
    const plan = { logs: new Map([['beta', 1], ['gamma', 1]]), streams: [], writes: 2 };
    replayer.prepare(plan);
    replayer.restored(plan);
    return { replayer, plan };
  }

  it('abandoned because a role changed since the hold: nothing claimed re-applied, the records stay pending, the log says so', async () => {
    const { replayer, plan } = afterHold();
    // A fence got the namespace between the hold and the replay's shared hold: its token is stale.
    expect(store.roles.compareAndSet({ namespace: 'beta', role: 'primary', epoch: 3, primarySite: 'a' }, { role: 'fenced', epoch: 4, primarySite: 'b' })).toBe(true);
    const outcome = await replayer.replay(plan);
    expect(outcome.replayed).toEqual([]);
    expect([...outcome.left.keys()]).toEqual(['beta', 'gamma']);
    expect(outcome.left.get('beta')).toEqual({ reason: 'role-changed', detail: expect.stringMatching(/race replay of namespace beta abandoned before touching the device.*now fenced at epoch 4/) });
    expect(outcome.left.get('gamma')).toEqual({ reason: 'role-changed', detail: expect.stringMatching(/not tried: the re-apply of namespace beta before it was abandoned/) });
    expect([...replayer.pending()].sort()).toEqual(['beta', 'gamma']);
    expect(lines.filter((l) => /re-applied/.test(l.msg) && !/abandoned|NOT/.test(l.msg))).toEqual([]);
    expect(lines).toContainEqual(expect.objectContaining({ level: 'warn', abandoned: ['beta', 'gamma'], msg: expect.stringMatching(/abandoned before touching the device.*stay pending/) }));
    await replayer.close();
  });

  it('a record another hold ended first (a demote, a fence) is reported as such, not as re-applied by this replay', async () => {
    const { replayer, plan } = afterHold();
    // A demote queued before the hold's end re-applied beta itself; a fence exported gamma without its writes.
    store.raceReplays.done('beta', 3, 1);
    store.raceReplays.unexported('gamma', 3, 1, 'gamma-fenced-epoch3.nhrq');
    const outcome = await replayer.replay(plan);
    expect(outcome.replayed).toEqual([]);
    expect(outcome.left.get('beta')).toEqual({ reason: 'record-ended', detail: expect.stringMatching(/ended first by another exclusive hold/) });
    expect(outcome.left.get('gamma')).toEqual({ reason: 'record-ended', detail: expect.stringMatching(/quarantine file gamma-fenced-epoch3.nhrq WITHOUT these writes/) });
    await replayer.close();
  });
});

describe('admitsDuring: which gateway writes pass while a replay runs after its hold', () => {
  const keys = new Set(['beta/replayed', 'beta/moved-to']);
  const m = (operation: string, method: string, path: string, keyId?: string, json?: unknown) => ({
    namespace: 'beta',
    method,
    path,
    operation,
    user: 'beta~admin',
    ...(keyId !== undefined ? { keyId } : {}),
    ...(json !== undefined ? { body: { bytes: Buffer.from(JSON.stringify(json)), json, contentType: 'application/json' } } : {}),
  });
  const key = { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: 'AA==' } };

  it('passes always re-appliable kinds on keys the replay does not name', () => {
    expect(admitsDuring(keys, m('PUT /keys/{id}', 'PUT', '/keys/fresh', 'fresh', key))).toBe(true);
    expect(admitsDuring(keys, m('POST /keys', 'POST', '/keys', undefined, key))).toBe(true);
    expect(admitsDuring(keys, m('PUT /keys/{id}/label', 'PUT', '/keys/other/label', 'other', { label: 'x' }))).toBe(true);
    expect(admitsDuring(keys, m('DELETE /keys/{id}', 'DELETE', '/keys/other', 'other'))).toBe(true);
    expect(admitsDuring(keys, m('PUT /keys/{id}/restrictions/tags/{tag}', 'PUT', '/keys/other/restrictions/tags/t1', 'other'))).toBe(true);
  });

  it('holds a write to a replayed key (a move target too), and every move, device generation and user change', () => {
    expect(admitsDuring(keys, m('PUT /keys/{id}/label', 'PUT', '/keys/replayed/label', 'replayed', { label: 'x' }))).toBe(false);
    expect(admitsDuring(keys, m('PUT /keys/{id}', 'PUT', '/keys/moved-to', 'moved-to', key))).toBe(false);
    expect(admitsDuring(keys, m('POST /keys/{id}/move', 'POST', '/keys/other/move', 'other', { newId: 'elsewhere' }))).toBe(false);
    expect(admitsDuring(keys, m('POST /keys/generate', 'POST', '/keys/generate', undefined, { id: 'gen', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }))).toBe(false);
    expect(admitsDuring(keys, m('PUT /users/{id}', 'PUT', '/users/beta~op', undefined, { realName: 'x', role: 'Operator', passphrase: 'p' }))).toBe(false);
    // An import whose body the capture cannot carry is logged as a catch-up: held.
    expect(admitsDuring(keys, m('PUT /keys/{id}', 'PUT', '/keys/fresh', 'fresh'))).toBe(false);
  });
});
