/**
 * A pause (or any role-row change) fences the stream's apply window: once `pause` has committed the paused flag and
 * poked the stream (admin-handlers.ts setPaused), no change of the window starts on the device any more, not even one
 * that was already admitted under the window's shared device hold and only waited for room. The imports already at the
 * device when the pause committed may finish, and are recorded: their effect is on the device, so the position may
 * (and should) cover them. A scripted primary over real mutual TLS; the replica's device is a simulator over HTTPS that
 * holds the imports' key reads until the test releases them (`sim.hold`), so what is in flight is exact, not timed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capturingLogger, until } from '../gateway/test-support.js';
import type { Logger } from '../log.js';
import { createReplicatorMetrics } from '../metrics/metrics.js';
import { NetHsmClient } from '../nethsm/client.js';
import type { PeerClient } from '../peer/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { StateStore } from '../state/store.js';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { assertTokenCurrent } from '../concurrency/fencing.js';
import { Mutex } from '../util/mutex.js';
import { NamespacePuller } from './puller.js';
import { linesThenQuiet, startStreamPrimary, type StreamPrimary } from './test-primary.js';

const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
const b64 = (n: number) => Buffer.alloc(n, 7).toString('base64');
// Well-formed, never opened: this replica has no transport key, so an import of a key already on the device is `present`.
const ENVELOPE = { v: 2, alg: 'RSA-OAEP-SHA256/A256GCM', site: 'b', transportKeyId: 'tk', transportKeyFingerprint: 'ab'.repeat(32), wrappedKey: b64(256), iv: b64(12), ciphertext: b64(32), tag: b64(16) };
const deleted = (seq: number, keyId: string) => JSON.stringify({ type: 'change', epoch: 1, seq, at: 1000 + seq, ref: REF, kind: 'key-deleted', keyId });
const imported = (seq: number) => JSON.stringify({ type: 'change', epoch: 1, seq, at: 1000 + seq, ref: REF, kind: 'key-imported', keyId: `k${seq}`, envelope: ENVELOPE });

describe('stream puller: a pause fences the apply window', () => {
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
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-puller-pause-'));
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

  const puller = (logger: Logger, lock: Mutex) =>
    new NamespacePuller({
      namespace: 'ns',
      site: 'b',
      store,
      peers: new Map([['a', peer]]),
      apply: { site: 'b', store, client: () => device, transportKey: () => undefined },
      lock,
      // The daemon's barrier checks tokens against the role row (daemon.ts).
      barrier: new DeviceBarrier({ check: (token) => assertTokenCurrent((ns) => store.roles.get(ns), token) }),
      snapshot: () => Promise.reject(new Error('no snapshot expected')),
      heartbeatIntervalMs: 1000,
      catchupDebounceMs: 0,
      monitor: { reportSuccess: () => undefined, reportFailure: () => undefined },
      deviceMember: 'nethsm',
      metrics: createReplicatorMetrics({ registry: new Registry() }),
      log: logger,
      applyConcurrency: 2,
    });

  // Before: the window checked the stream's token once, when it took its shared device hold, and admitted every later
  // change under that hold unchecked; an import waiting for room started on the device after the pause had returned.
  it('starts no import after the pause committed; the imports already at the device are recorded', async () => {
    const hold = sim.hold({ method: 'GET', path: /^\/api\/v1\/keys\/k\d+$/ });
    const heldKeys = () => hold.requests().map((r) => r.path.slice('/api/v1/keys/'.length)).sort();
    script = [imported(6), imported(7), imported(8), imported(9)];
    const { logger } = capturingLogger();
    const p = puller(logger, new Mutex());
    try {
      p.start();
      // k6 and k7 fill the window; the puller has read k8 (its head) and waits in add() for room.
      await hold.waitFor(2);
      expect(heldKeys()).toEqual(['k6', 'k7']);
      await until(() => p.status().head?.seq === 8, 'the puller to read k8 and wait for room');
      // What setPaused does: commit the flag, then poke the stream, synchronously.
      store.transaction(() => store.roles.setPaused('ns', true));
      p.poke();
      hold.release();
      // Idle (paused), or (before the fix) an import that started after the pause is held at the device.
      await until(() => p.status().state === 'idle' || hold.held() > 0, 'the puller to go idle (paused)');
    } finally {
      // Before the fix: k8 started after the pause and sat held here (the puller waited for it).
      const started = heldKeys();
      hold.close();
      await p.close();
      expect(started).toEqual([]);
    }
    expect(hold.caught()).toBe(2);
    expect(store.positions.get('ns', 'a')?.seq).toBe(7);
    expect(store.applied.count('ns')).toBe(2);
    // A pause is nobody's failure: the stream ended (the poke, or the window's FenceTokenStaleError, whichever comes
    // first) with no error to show.
    expect(p.status().lastError).toBeNull();
  });

  // A change applied alone (not an import) is admitted by the barrier with its token checked, then waits for the
  // namespace's lock; before, a pause committed during that wait did not stop it.
  it('starts no single change after the pause committed while it waited for the namespace lock', async () => {
    const at = store.positions.get('ns', 'a')!.seq!;
    store.transaction(() => store.roles.setPaused('ns', false));
    const hold = sim.hold({ method: 'DELETE', path: /^\/api\/v1\/keys\/k\d+$/ });
    script = [deleted(at + 1, 'k6')];
    const lock = new Mutex();
    let unlock!: () => void;
    void lock.run(() => new Promise<void>((r) => (unlock = r)));
    const p = puller(capturingLogger().logger, lock);
    try {
      p.start();
      await until(() => lock.waiting > 0, 'the delete to be admitted and wait for the namespace lock');
      store.transaction(() => store.roles.setPaused('ns', true));
      p.poke();
      unlock();
      await until(() => p.status().state === 'idle' || hold.held() > 0, 'the puller to go idle (paused)');
    } finally {
      const started = hold.held();
      hold.close();
      await p.close();
      expect(started).toBe(0);
    }
    expect(hold.caught()).toBe(0);
    expect(store.positions.get('ns', 'a')?.seq).toBe(at);
    expect(p.status().lastError).toBeNull();
  });
});
