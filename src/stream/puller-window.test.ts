/**
 * The puller keeps its apply window full across the primary's heartbeats: a heartbeat that arrives while imports are in
 * flight (the stored position behind them by design) must not drain the window. A scripted primary over real mutual
 * TLS; the replica's device is a simulator over HTTPS that holds the imports' key reads until the test releases them
 * (`sim.hold`), so what is in flight at a heartbeat is exact, not timed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capturingLogger, until } from '../gateway/test-support.js';
import { createReplicatorMetrics } from '../metrics/metrics.js';
import { NetHsmClient } from '../nethsm/client.js';
import type { PeerClient } from '../peer/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { StateStore } from '../state/store.js';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { Mutex } from '../util/mutex.js';
import { NamespacePuller } from './puller.js';
import { linesThenQuiet, startStreamPrimary, type StreamPrimary } from './test-primary.js';

const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
const b64 = (n: number) => Buffer.alloc(n, 7).toString('base64');
// Well-formed, never opened: this replica has no transport key, so an import of a key already on the device is `present`.
const ENVELOPE = { v: 2, alg: 'RSA-OAEP-SHA256/A256GCM', site: 'b', transportKeyId: 'tk', transportKeyFingerprint: 'ab'.repeat(32), wrappedKey: b64(256), iv: b64(12), ciphertext: b64(32), tag: b64(16) };
const imported = (seq: number) => JSON.stringify({ type: 'change', epoch: 1, seq, at: 1000 + seq, ref: REF, kind: 'key-imported', keyId: `k${seq}`, envelope: ENVELOPE });
const beat = (seq: number) => JSON.stringify({ type: 'heartbeat', at: Date.now(), head: { epoch: 1, seq } });

describe('stream puller: the apply window across heartbeats', () => {
  let dir: string;
  let store: StateStore;
  let primary: StreamPrimary;
  let peer: PeerClient;
  let script: string[] = [];
  let sim: ProvisionedSimulator;
  let device: NetHsmClient;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns'] });
    device = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, auth: sim.nsUsers.ns!.admin });
    // The keys of the imports are on the device already: each import is found `present` by a key read.
    for (const id of ['k6', 'k7', 'k8', 'k9']) await device.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id });
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-puller-window-'));
    store = StateStore.inDir(dir).open();
    store.roles.insert({ namespace: 'ns', role: 'replica', epoch: 1, primarySite: 'a' });
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 5, takenAt: 1, durationMs: 1 });
    primary = await startStreamPrimary(async (_peer, _ns, _after, signal) => {
      const lines = script;
      script = [];
      return linesThenQuiet(lines, signal);
    });
    peer = primary.peer;
  });

  afterAll(async () => {
    await primary?.close();
    await device?.close();
    await sim?.close();
    store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // Before: a heartbeat at the head the connection had delivered, with the position still behind the imports in flight,
  // drained the window (the check for a position a snapshot moved back): no import started until every one in flight
  // had ended and been recorded, a stall of a whole window's latency at every heartbeat under a steady stream.
  it('starts the next import while earlier ones are still in flight at a heartbeat', async () => {
    // The device: a key read (the `present` check of an import here) answers only when the test releases it.
    const hold = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/k\d+$/ });
    const heldKeys = () => hold.requests().map((r) => r.path.slice('/api/v1/keys/'.length)).sort();
    script = [imported(6), imported(7), imported(8), beat(8), imported(9)];
    const { logger } = capturingLogger();
    const p = new NamespacePuller({
      namespace: 'ns',
      site: 'b',
      store,
      peers: new Map([['a', peer]]),
      apply: { site: 'b', store, client: () => device, transportKey: () => undefined },
      lock: new Mutex(),
      barrier: new DeviceBarrier(),
      snapshot: () => Promise.reject(new Error('no snapshot expected')),
      heartbeatIntervalMs: 1000,
      catchupDebounceMs: 0,
      monitor: { reportSuccess: () => undefined, reportFailure: () => undefined },
      deviceMember: 'nethsm',
      metrics: createReplicatorMetrics({ registry: new Registry() }),
      log: logger,
      applyConcurrency: 8,
    });
    try {
      p.start();
      // The import after the heartbeat starts while k6–k8 are in flight: four key reads held at once (before the fix
      // k9 waited for the other three, which the test never answers, so this wait ran out).
      await hold.waitFor(4);
      expect(heldKeys()).toEqual(['k6', 'k7', 'k8', 'k9']);
      expect(store.positions.get('ns', 'a')?.seq).toBe(5);
      hold.release();
      await until(() => store.positions.get('ns', 'a')?.seq === 9, 'the four imports to be recorded');
    } finally {
      hold.close();
      await p.close();
    }
    expect(hold.caught()).toBe(4);
    expect(store.applied.count('ns')).toBe(4);
  });
});
