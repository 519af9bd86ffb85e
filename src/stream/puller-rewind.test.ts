/**
 * A replica's stream after a merge-restore moved its position back (StreamService.rewind): the changes the restore
 * erased are applied again with a full apply window, whatever the adaptive limit learnt before, and the puller logs
 * where the time went once its position is back where it was. A scripted primary over real mutual TLS; the replica's
 * device is a simulator over HTTPS that holds the imports' key reads until the test releases them (`sim.hold`), so
 * how many are in flight at once is exact, not timed.
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
import type { WindowLimit } from './apply-window.js';
import { NamespacePuller } from './puller.js';
import { linesThenQuiet, startStreamPrimary, type StreamPrimary } from './test-primary.js';

const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
const b64 = (n: number) => Buffer.alloc(n, 7).toString('base64');
// Well-formed, never opened: this replica has no transport key, so an import of a key already on the device is `present`.
const ENVELOPE = { v: 2, alg: 'RSA-OAEP-SHA256/A256GCM', site: 'b', transportKeyId: 'tk', transportKeyFingerprint: 'ab'.repeat(32), wrappedKey: b64(256), iv: b64(12), ciphertext: b64(32), tag: b64(16) };
const imported = (seq: number) => JSON.stringify({ type: 'change', epoch: 1, seq, at: 1000 + seq, ref: REF, kind: 'key-imported', keyId: `k${seq}`, envelope: ENVELOPE });
const KEYS = ['k6', 'k7', 'k8', 'k9', 'k10', 'k11'];

describe('stream puller: re-applying what a restore erased', () => {
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
    for (const id of KEYS) await device.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id });
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-puller-rewind-'));
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

  // Before: the window was the adaptive limit alone, which a steady stream that never fills it (or a host short of CPU)
  // leaves at 1–4, so the changes a restore erased were applied again one or two at a time while every new change
  // waited behind them (bench/scale.mjs --busy stream: 1.2–1.8 s after the hold to regain 60–100 changes).
  it('applies the erased span with a full window although the learnt limit is 1, and logs the parts once regained', async () => {
    const hold = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/k\d+$/ });
    const heldKeys = () => hold.requests().map((r) => r.path.slice('/api/v1/keys/'.length)).sort();
    // The position was at 9 and a merge-restore's hold moved it back to 5 (the store already says 5).
    script = [6, 7, 8, 9, 10, 11].map(imported);
    const limit: WindowLimit = { current: 1, full: () => undefined, sample: () => undefined };
    const { logger, lines } = capturingLogger();
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
      maxApplyConcurrency: 8,
      applyLimit: limit,
    });
    let reapplied = false;
    try {
      await p.reapplied(); // none under way yet: at once
      p.rewound(9, 5);
      void p.reapplied().then(() => (reapplied = true));
      p.start();
      // Six imports in flight at once (before the fix: one, the limit's, and this wait ran out).
      await hold.waitFor(6, 5_000);
      expect(heldKeys()).toEqual([...KEYS].sort());
      expect(store.positions.get('ns', 'a')?.seq).toBe(5);
      // The re-apply is under way until the position is back at 9.
      expect(reapplied).toBe(false);
      hold.release();
      await until(() => store.positions.get('ns', 'a')?.seq === 11, 'the six imports to be recorded');
      await until(() => reapplied, 'reapplied() to resolve once the position is back');
    } finally {
      hold.close();
      await p.close();
    }
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((j) => j.msg === 'stream position back where it was before a restore erased changes; the stream applied them again');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ namespace: 'ns', from: 'a', regained: 9, rewoundTo: 5, applied: 0, present: 4, applyLimit: { atRewind: 1, atRegain: 1 } });
    const ms = logged[0]!.ms as Record<string, number>;
    expect(ms.reconnected).toBeGreaterThanOrEqual(0);
    expect(ms.admitted).toBeGreaterThanOrEqual(ms.reconnected!);
    expect(ms.regained).toBeGreaterThanOrEqual(ms.firstRecord!);
  });
});
