/**
 * A replica's stream re-applying what a restore erased reads ahead (apply-window.ts, "Read-ahead"): the new changes
 * after the erased span reach the device first, while records (and the stored position) still go strictly in stream
 * order. A scripted primary over real mutual TLS; the replica's device is a simulator over HTTPS that holds the
 * imports' key reads until the test releases them (`sim.hold`), so what is started when is exact, not timed.
 *
 * Every test here fails on the code before read-ahead: there a new change waited behind the whole span (it started only
 * once every span change before it had room in the window), and the window started one more import after an exclusive
 * device hold began to wait.
 */
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
import type { WindowLimit } from './apply-window.js';
import { NamespacePuller } from './puller.js';
import { linesThenQuiet, startStreamPrimary, type StreamPrimary } from './test-primary.js';

const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
const b64 = (n: number) => Buffer.alloc(n, 7).toString('base64');
// Well-formed, never opened: this replica has no transport key, so an import of a key already on the device is `present`.
const ENVELOPE = { v: 2, alg: 'RSA-OAEP-SHA256/A256GCM', site: 'b', transportKeyId: 'tk', transportKeyFingerprint: 'ab'.repeat(32), wrappedKey: b64(256), iv: b64(12), ciphertext: b64(32), tag: b64(16) };
const imported = (seq: number, keyId = `k${seq}`) => JSON.stringify({ type: 'change', epoch: 1, seq, at: 1000 + seq, ref: REF, kind: 'key-imported', keyId, envelope: ENVELOPE });
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
/** Keys on the replica's device (imports of them are found present). */
const KEYS = range(6, 20).map((i) => `k${i}`);
/** The erased span: the position was at 17 and a merge-restore moved it back to 5. */
const SPAN = range(6, 17);
/** A key read of one of `seqs`' keys (`k<seq>`). */
const keyRead = (seqs: number[]) => ({ method: 'GET', path: new RegExp(`^/api/v1/keys/k(${seqs.join('|')})$`) });
const keysOf = (h: RequestHold) => h.requests().map((r) => r.path.slice('/api/v1/keys/'.length));

describe('stream puller: new changes first while the erased span is applied again', () => {
  let dir: string;
  let primary: StreamPrimary;
  let peer: PeerClient;
  let scripts: string[][] = [];
  let sim: ProvisionedSimulator;
  let device: NetHsmClient;
  let n = 0;
  let store: StateStore;
  let barrier: DeviceBarrier;
  let puller: NamespacePuller;
  let snapshots: string[];
  /** Connections the replica cut (its window failed, or it reconnects). */
  let cuts = 0;
  const holds: RequestHold[] = [];

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns'] });
    // As in the daemon, the window never has more imports in flight than the client has connections (16 here).
    device = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, auth: sim.nsUsers.ns!.admin, connections: 16 });
    for (const id of KEYS) await device.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id });
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-puller-readahead-'));
    // Each connection gets the next script (then stays open, quiet); none left: nothing.
    primary = await startStreamPrimary(async (_peer, _ns, _after, signal) => {
      signal.addEventListener('abort', () => cuts++, { once: true });
      return linesThenQuiet(scripts.shift() ?? [], signal);
    });
    peer = primary.peer;
  });

  afterAll(async () => {
    await primary?.close();
    await device?.close();
    await sim?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    store = StateStore.inDir(path.join(dir, String(n++))).open();
    store.roles.insert({ namespace: 'ns', role: 'replica', epoch: 1, primarySite: 'a' });
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 5, takenAt: 1, durationMs: 1 });
    barrier = new DeviceBarrier();
    snapshots = [];
    cuts = 0;
    // The adaptive limit learnt 1 (a stream that never filled it); the span gets the re-apply's floor of 8, and new
    // changes the rest of the pool (16).
    const limit: WindowLimit = { current: 1, full: () => undefined, sample: () => undefined };
    puller = new NamespacePuller({
      namespace: 'ns',
      site: 'b',
      store,
      peers: new Map([['a', peer]]),
      apply: { site: 'b', store, client: () => device, transportKey: () => undefined },
      lock: new Mutex(),
      barrier,
      snapshot: async (reason) => void snapshots.push(reason),
      heartbeatIntervalMs: 1000,
      catchupDebounceMs: 0,
      monitor: { reportSuccess: () => undefined, reportFailure: () => undefined },
      deviceMember: 'nethsm',
      metrics: createReplicatorMetrics({ registry: new Registry() }),
      log: capturingLogger().logger,
      maxApplyConcurrency: 16,
      applyLimit: limit,
      backoff: { minMs: 10, maxMs: 10 },
    });
  });

  afterEach(async () => {
    for (const h of holds.splice(0)) h.close();
    await puller.close();
    store.close();
    scripts = [];
  });

  const hold = (seqs: number[]) => {
    const h = sim.hold(keyRead(seqs));
    holds.push(h);
    return h;
  };
  const position = () => store.positions.get('ns', 'a')?.seq;
  const recordedSeqs = () => (store.db.prepare("SELECT seq FROM applied_changes WHERE namespace = 'ns' ORDER BY seq").all() as { seq: number }[]).map((r) => r.seq);

  it('starts new changes after the span on the device before the span ends, and records everything in order', async () => {
    const span = hold(SPAN);
    const fresh = hold([18, 19]);
    scripts = [range(6, 19).map((s) => imported(s))];
    puller.rewound(17, 5);
    puller.start();
    // The span's first 8 (the floor) are at the device and held; the new changes 18 and 19 reach it at once, while
    // span changes 14..17 wait, queued. Before: 18 started only once 14..17 had started, so this wait ran out.
    await fresh.waitFor(2, 5_000);
    await span.waitFor(8, 5_000);
    expect(keysOf(span).sort()).toEqual(range(6, 13).map((s) => `k${s}`).sort());
    expect(span.caught()).toBe(8);
    fresh.release();
    // Their effects are done (on the device) while nothing is recorded: records wait for the span, in order.
    await until(() => puller.status().onDevice?.seq === 19, 'the new changes to reach the device');
    expect(position()).toBe(5);
    expect(recordedSeqs()).toEqual([]);
    span.close();
    await until(() => position() === 19, 'every change to be recorded');
    expect(recordedSeqs()).toEqual(range(6, 19));
    await puller.reapplied();
  });

  it('drops the queued span changes for an exclusive device hold: nothing starts after the drain, and the stream reads them again', async () => {
    const span = hold(SPAN);
    scripts = [SPAN.map((s) => imported(s)), range(14, 17).map((s) => imported(s))];
    puller.rewound(17, 5);
    puller.start();
    await span.waitFor(8, 5_000);
    // A merge-restore of another namespace asks for the device while 14..17 are queued.
    let inside: { caught: number; held: number; position: number | undefined } | undefined;
    const exclusive = barrier.exclusive([], async () => {
      inside = { caught: span.caught(), held: span.held(), position: position() };
    });
    await until(() => barrier.held, 'the exclusive hold to wait');
    span.release(); // the 8 in flight end; the queued ones must not start (before: 14 started here)
    await exclusive;
    expect(inside).toEqual({ caught: 8, held: 0, position: 13 });
    // The stream reconnected from 13 and applies 14..17 after the hold.
    span.close();
    await until(() => position() === 17, 'the dropped changes to be read and applied again');
    expect(recordedSeqs()).toEqual(range(6, 17));
  });

  it('does not report on the device what a restore erased after a drop: onDevice restarts from the stored position', async () => {
    const span = hold(SPAN);
    const fresh = hold([18, 19]);
    scripts = [range(6, 19).map((s) => imported(s)), range(14, 17).map((s) => imported(s))];
    puller.rewound(17, 5);
    puller.start();
    await fresh.waitFor(2, 5_000);
    await span.waitFor(8, 5_000);
    fresh.release();
    await until(() => puller.status().onDevice?.seq === 19, 'the new changes to reach the device');
    // A merge-restore of another namespace whose restore erases 18 and 19 (unrecorded: its hold's ticket names the
    // span's records only, so no rewind of this namespace follows; the stream reads 14.. again from the position).
    const exclusive = barrier.exclusive([], async () => {
      await device.deleteKey('k18');
      await device.deleteKey('k19');
    });
    try {
      await until(() => barrier.held, 'the exclusive hold to wait');
      span.release();
      await exclusive;
      span.close();
      await until(() => position() === 17, 'the dropped changes to be read and applied again');
      // Before: 19, the high-water mark of the cut connection, though this device holds neither k18 nor k19.
      expect(puller.status().onDevice).toEqual({ epoch: 1, seq: 17 });
    } finally {
      await exclusive.catch(() => undefined);
      for (const id of ['k18', 'k19']) await device.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id });
    }
  });

  it('after a failed span change, starts no queued change and records nothing from the failed one on', async () => {
    // Change 6 imports a key this device lacks, and there is no transport key here: it needs a snapshot.
    const failing = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/absent$/ });
    holds.push(failing);
    const started = hold(range(7, 14));
    const queued = hold(range(15, 17));
    const fresh = hold([20]);
    scripts = [[...SPAN.map((s) => imported(s, s === 6 ? 'absent' : `k${s}`)), imported(18, 'k20')]];
    puller.rewound(17, 5);
    puller.start();
    await fresh.waitFor(1, 5_000); // the new change started first (before: it waited behind the span)
    await failing.waitFor(1, 5_000);
    await started.waitFor(7, 5_000); // 6..13 at the device (the floor); 14..17 queued
    failing.release();
    await until(() => cuts === 1, 'the failure to cut the stream');
    started.close();
    fresh.close();
    await until(() => snapshots.length === 1, 'the failure to lead to a catch-up');
    expect(queued.caught()).toBe(0); // never started: not by the drain, nor after it
    expect(recordedSeqs()).toEqual([]);
    expect(position()).toBe(5);
  });

  it('keeps per-key order: a second change of a key in the span drains the window first, and the changes after it wait', async () => {
    const span = hold(SPAN);
    const fresh = hold([18, 20]);
    // 18 is new (distinct key); 19 imports k7 again (a key in the span); 20 is new again.
    scripts = [[...SPAN.map((s) => imported(s)), imported(18), imported(19, 'k7'), imported(20)]];
    puller.rewound(17, 5);
    puller.start();
    await fresh.waitFor(1, 5_000); // 18 started ahead of the span (before: it waited behind it)
    await span.waitFor(8, 5_000);
    expect(keysOf(fresh)).toEqual(['k18']);
    // Release: the window drains for 19 (14..17 start as room frees), then 19 is applied alone, then 20 starts.
    span.close();
    fresh.release();
    await fresh.waitFor(1, 5_000);
    expect(keysOf(fresh)).toEqual(['k20']);
    expect(position()).toBe(19); // everything before 20, the second change of k7 included, is recorded
    fresh.close();
    await until(() => position() === 20, 'every change to be recorded');
    expect(recordedSeqs()).toEqual(range(6, 20));
  });
});
