import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { AntiEntropySourceReplayingError } from '../errors.js';
import { silentLogger } from '../log.js';
import { NetHsmClient } from '../nethsm/client.js';
import { StateStore } from '../state/store.js';
import { LogReplay } from '../stream/log-replay.js';
import { InventoryGuard } from './inventory-guard.js';
import { DaemonRaceReplayer } from './race-replayer.js';

describe('InventoryGuard: no inventory answer from a primary mid-restore', () => {
  let dir: string;
  let store: StateStore;
  let replayer: DaemonRaceReplayer;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-inventory-guard-'));
    store = StateStore.inDir(dir).open();
    store.roles.insert({ namespace: 'alpha', role: 'primary', epoch: 1, primarySite: 'a' });
    store.roles.insert({ namespace: 'other', role: 'primary', epoch: 1, primarySite: 'a' });
    // The log is empty: a replay re-applies nothing and makes no device call (the client only fills the constructor).
    const logs = new LogReplay({ store, site: 'a', transportKey: () => undefined, client: () => new NetHsmClient({ url: 'https://127.0.0.1:9', tls: { fingerprint256: 'AA:'.repeat(31) + 'AA' } }) });
    replayer = new DaemonRaceReplayer({ store, barrier: new DeviceBarrier(), log: silentLogger, logs, streams: undefined, isPrimary: () => true });
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const prepare = (ns: string) => replayer.prepare({ logs: new Map([[ns, 1]]), streams: [], writes: 1 });
  const lines = async (g: InventoryGuard, src: string[]) => {
    const out: string[] = [];
    for await (const l of g.lines((async function* () {
      yield* src;
    })())) out.push(l);
    return out;
  };

  it('refuses to start while a replay of the namespace is pending, in memory or only recorded (the peer API starts before the replayer loads its rows)', async () => {
    store.raceReplays.record(new Map([['alpha', { epoch: 1, fromSeq: 1 }]]));
    expect(() => InventoryGuard.open(undefined, store, 'alpha', 'a')).toThrow(AntiEntropySourceReplayingError);
    expect(() => InventoryGuard.open(replayer, store, 'alpha', 'a')).toThrow(/inventory of namespace alpha not served by a: a restore there erased writes to it that are not re-applied yet/);
    // Another namespace is served.
    expect(InventoryGuard.open(replayer, store, 'other', 'a').failure()).toBeUndefined();
  });

  it('fails an answer a replay was prepared after it began, even once that replay is done; passes it through otherwise', async () => {
    const before = InventoryGuard.open(replayer, store, 'alpha', 'a');
    const unrelated = InventoryGuard.open(replayer, store, 'alpha', 'a');
    expect(await lines(unrelated, ['{"kind":"head"}', '{"kind":"end"}'])).toEqual(['{"kind":"head"}', '{"kind":"end"}']);
    expect(replayer.generation('alpha')).toBe(0);
    prepare('alpha');
    expect(replayer.generation('alpha')).toBe(1);
    expect(replayer.generation('other')).toBe(0);
    expect(before.failure()?.message).toMatch(/while the answer was being read/);
    await replayer.finish('alpha');
    expect(replayer.isPending('alpha')).toBe(false);
    // Its reads may have seen the device between the restore and the replay's end: still failed. The stream ends with
    // one error line in place of the rest (and of its end line).
    const out = await lines(before, ['{"kind":"range"}', '{"kind":"end"}']);
    expect(out).toHaveLength(1);
    expect(JSON.parse(out[0]!)).toMatchObject({ kind: 'error', code: 'NHR_ERR_ANTIENTROPY_SOURCE_REPLAYING' });
    expect(() => before.check()).toThrow(AntiEntropySourceReplayingError);
    // An answer begun after the replay is done is served; a replay of another namespace does not touch it.
    const after = InventoryGuard.open(replayer, store, 'alpha', 'a');
    prepare('other');
    expect(after.failure()).toBeUndefined();
    expect(await lines(after, ['{"kind":"head"}', '{"kind":"end"}'])).toHaveLength(2);
  });
});
