/**
 * The replica's catch-ups come in batches (catchup-batch.ts): a burst of changes only a snapshot can apply (keys
 * generated inside the primary's NetHSM) costs one snapshot per batch, bounded by count, gather time and window, never
 * one per change. A scripted primary over real mutual TLS; time is the test's clock, never a timed assertion. The
 * replica's device is a simulator over HTTPS holding every request (`sim.hold`): a catch-up never reaches it.
 */
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { capturingLogger, until } from '../gateway/test-support.js';
import { createReplicatorMetrics } from '../metrics/metrics.js';
import { NetHsmClient } from '../nethsm/client.js';
import type { PeerClient } from '../peer/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import type { RequestHold } from '../sim/request-holds.js';
import { StateStore } from '../state/store.js';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { Mutex } from '../util/mutex.js';
import { NamespacePuller, type PullerClock } from './puller.js';
import { startStreamPrimary, type StreamPrimary } from './test-primary.js';

const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
/** What the primary logs for a key generated inside its NetHSM: only a snapshot brings it to a replica. */
const generated = (seq: number) => JSON.stringify({ type: 'change', epoch: 1, seq, at: 1000 + seq, ref: REF, kind: 'catchup', reason: `key g${seq} generated on the device` });

/** A clock whose timers fire only when the test advances it. */
class TestClock implements PullerClock {
  t = 1_000_000;
  #timers: { at: number; fn: () => void }[] = [];
  now = (): number => this.t;
  setTimer = (fn: () => void, ms: number): (() => void) => {
    const timer = { at: this.t + ms, fn };
    this.#timers.push(timer);
    return () => void (this.#timers = this.#timers.filter((x) => x !== timer));
  };
  advance(ms: number): void {
    this.t += ms;
    const due = this.#timers.filter((x) => x.at <= this.t);
    this.#timers = this.#timers.filter((x) => x.at > this.t);
    for (const x of due) x.fn();
  }
}

describe('stream puller: catch-ups in batches', () => {
  let dir: string;
  let store: StateStore;
  let primary: StreamPrimary;
  let peers: Map<string, PeerClient>;
  /** The primary's change log (seq 6 onwards); every connection replays it from its position, then follows it. */
  let log: string[];
  const appended = new EventEmitter();
  const append = (line: string) => {
    log.push(line);
    appended.emit('line');
  };
  let snapshots: string[];
  let connections: number;
  /** The primary ends each connection once it has sent what it has (as a primary going away does). */
  let endAfterReplay: boolean;
  let sim: ProvisionedSimulator;
  let device: NetHsmClient;
  /** Every request to the replica's device, held unanswered: the tests expect none. */
  let deviceHold: RequestHold;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns'] });
    // A short timeout: a request the hold keeps (a bug) fails its change instead of stalling the puller.
    device = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, auth: sim.nsUsers.ns!.admin, timeoutMs: 2_000 });
    deviceHold = sim.hold({ path: /^\// });
    primary = await startStreamPrimary(async (_peer, _ns, after, signal) => {
      connections++;
      return (async function* () {
        let next = (after?.seq ?? 0) + 1;
        while (!signal.aborted) {
          const line = log[next - 6];
          if (line !== undefined) {
            next++;
            yield line;
            continue;
          }
          if (endAfterReplay) return;
          await new Promise<void>((r) => {
            const done = () => {
              appended.off('line', done);
              signal.removeEventListener('abort', done);
              r();
            };
            appended.on('line', done);
            signal.addEventListener('abort', done, { once: true });
          });
        }
      })();
    });
    peers = new Map([['a', primary.peer]]);
  });

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-catchup-'));
    store = StateStore.inDir(dir).open();
    store.roles.insert({ namespace: 'ns', role: 'replica', epoch: 1, primarySite: 'a' });
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 5, takenAt: 1, durationMs: 1 });
    log = [];
    snapshots = [];
    connections = 0;
    endAfterReplay = false;
  });

  afterEach(() => {
    expect(deviceHold.caught()).toBe(0);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  afterAll(async () => {
    await primary.close();
    deviceHold.close();
    await device.close();
    await sim.close();
  });

  function puller(o: { gatherMs: number; windowMs?: number; maxChanges?: number; clock?: PullerClock }) {
    const registry = new Registry();
    const p = new NamespacePuller({
      namespace: 'ns',
      site: 'b',
      store,
      peers,
      apply: {
        site: 'b',
        store,
        client: () => device,
        transportKey: () => undefined,
      },
      lock: new Mutex(),
      barrier: new DeviceBarrier(),
      // A snapshot covers the whole log as it is now.
      snapshot: async (reason) => {
        snapshots.push(reason);
        store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 5 + log.length, takenAt: 2, durationMs: 1 });
      },
      heartbeatIntervalMs: 60_000,
      catchupDebounceMs: o.gatherMs,
      ...(o.windowMs !== undefined ? { catchupWindowMs: o.windowMs } : {}),
      ...(o.maxChanges !== undefined ? { catchupMaxChanges: o.maxChanges } : {}),
      ...(o.clock ? { clock: o.clock } : {}),
      monitor: { reportSuccess: () => undefined, reportFailure: () => undefined },
      deviceMember: 'nethsm',
      metrics: createReplicatorMetrics({ registry, processMetrics: false }),
      log: capturingLogger().logger,
      backoff: { minMs: 5, maxMs: 20 },
    });
    return { p, registry };
  }

  it('takes one snapshot once enough changes wait, not one per change, and shows the pending catch-up meanwhile', async () => {
    const { p, registry } = puller({ gatherMs: 3_600_000, maxChanges: 3 });
    append(generated(6));
    p.start();
    try {
      await until(() => p.status().pendingCatchup?.changes === 1, 'a pending catch-up of one change');
      append(generated(7));
      await until(() => p.status().pendingCatchup?.changes === 2, 'two changes waiting');
      expect(p.status().state).toBe('catching-up');
      expect(p.status().pendingCatchup).toMatchObject({ reason: 'key g6 generated on the device' });
      expect(await registry.metrics()).toMatch(/stream_catchup_pending_changes\{namespace="ns"\} 2/);
      expect(snapshots).toEqual([]);
      append(generated(8));
      await until(() => snapshots.length === 1, 'one snapshot for the three');
      await until(() => p.status().pendingCatchup === null, 'nothing pending');
      expect(store.positions.get('ns', 'a')?.seq).toBe(8);
      expect(await registry.metrics()).toMatch(/stream_catchup_pending_changes\{namespace="ns"\} 0/);
    } finally {
      await p.close();
    }
    expect(snapshots).toHaveLength(1);
  });

  // A snapshot sync started by someone else (the schedule, the operator) while a catch-up gathers covers it: the
  // gathering stops (the sync tells the puller, restored()), and status shows no catch-up waiting. Before the pending
  // catch-up was cleared there, status kept showing it (and its gauge) for as long as the stream then ran.
  it('drops a gathering catch-up that a snapshot sync recorded meanwhile covers, and shows none pending', async () => {
    const { p, registry } = puller({ gatherMs: 3_600_000 });
    append(generated(6));
    p.start();
    try {
      await until(() => p.status().pendingCatchup?.changes === 1, 'a pending catch-up of one change');
      // The schedule's sync, inside its exclusive hold: the position it recorded covers change 6.
      store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 6, takenAt: 2, durationMs: 1 });
      p.restored();
      await until(() => p.status().state === 'streaming', 'the stream to go on from the recorded position');
      expect(p.status().pendingCatchup).toBeNull();
      expect(await registry.metrics()).toMatch(/stream_catchup_pending_changes\{namespace="ns"\} 0/);
      expect(snapshots).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('starts at most one catch-up per window, however many changes wait', async () => {
    const clock = new TestClock();
    const { p } = puller({ gatherMs: 0, windowMs: 60_000, clock });
    append(generated(6));
    p.start();
    try {
      // The first catch-up has no window before it.
      await until(() => snapshots.length === 1, 'the first catch-up');
      const firstAt = clock.t;
      append(generated(7));
      append(generated(8));
      append(generated(9));
      await until(() => p.status().pendingCatchup?.changes === 3, 'three changes waiting');
      expect(p.status().pendingCatchup?.dueAt).toBe(firstAt + 60_000);
      clock.advance(59_000);
      await new Promise((r) => setTimeout(r, 100));
      expect(snapshots).toHaveLength(1);
      clock.advance(1_000);
      await until(() => snapshots.length === 2, 'the second catch-up, when the window opens');
      expect(store.positions.get('ns', 'a')?.seq).toBe(9);
    } finally {
      await p.close();
    }
  });

  it('runs a pending catch-up after its gather time when fewer changes than the count wait', async () => {
    const clock = new TestClock();
    const { p } = puller({ gatherMs: 5_000, windowMs: 0, maxChanges: 1_000, clock });
    append(generated(6));
    p.start();
    try {
      await until(() => p.status().pendingCatchup?.changes === 1, 'a pending catch-up');
      expect(p.status().pendingCatchup?.dueAt).toBe(p.status().pendingCatchup!.since + 5_000);
      expect(snapshots).toEqual([]);
      clock.advance(5_000);
      await until(() => snapshots.length === 1, 'the catch-up after 5 s');
    } finally {
      await p.close();
    }
  });

  it('keeps waiting for the batch when the primary ends the stream it counts on, without reconnecting in a loop', async () => {
    // Before the fix a gathering cut by the primary sent the puller back to its stream, which asked for the same
    // catch-up again: one reconnection after another for as long as the catch-up waited.
    const clock = new TestClock();
    endAfterReplay = true;
    const { p } = puller({ gatherMs: 3_600_000, clock });
    append(generated(6));
    p.start();
    try {
      await until(() => p.status().pendingCatchup !== null && connections >= 2, 'the catch-up pending and its gathering connected');
      await new Promise((r) => setTimeout(r, 300));
      expect(connections).toBe(2);
      expect(snapshots).toEqual([]);
      clock.advance(3_600_000);
      await until(() => snapshots.length === 1, 'the catch-up at its time');
    } finally {
      await p.close();
    }
  });
});
