/**
 * Writes queued on one hot key wait for its change-capture key lock OUTSIDE the device barrier (lock order: capture key
 * locks, then the barrier; docs/concurrency.md), so an exclusive hold requested meanwhile waits only for the write in
 * flight, not for the whole queue. The real change capture, gateway and simulator over HTTPS; the simulator's request
 * hold keeps the first write in device I/O.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { namespaceLocks } from '../concurrency/namespace-locks.js';
import { silentLogger } from '../log.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { StateStore } from '../state/store.js';
import { ChangeCapture } from '../stream/capture.js';
import { Recipients } from '../stream/recipients.js';
import { createSelfSignedCertificate } from '../tls/index.js';
import { GatewayServer, type GatewayRequestEvent, type ReplayInProgress } from './server.js';
import { basicHeader, httpsCaller, until, type Cred } from './test-support.js';

const K = 5;
/** A failure bound for an answer that must come (never a way to wait for one). */
const NO_ANSWER_MS = 5_000;

function captureFor(store: StateStore): ChangeCapture {
  return new ChangeCapture({
    store,
    log: silentLogger,
    recipients: new Recipients({ store, peers: new Map(), log: silentLogger }),
    primaryEpoch: (ns) => (ns === 'alpha' ? 1 : undefined),
    committed: () => undefined,
    resolve: async () => 'unknown',
  });
}

describe('gateway: writes queued on a hot key wait outside the device barrier', () => {
  let sim: ProvisionedSimulator;
  let dir: string;
  let store: StateStore;
  let capture: ChangeCapture;
  let captureShort: ChangeCapture;
  let gw: GatewayServer;
  let gwShort: GatewayServer;
  let gwCertPem: string;
  let gwKeyPem: string;
  let direct: ReturnType<typeof httpsCaller>;
  let viaGw: ReturnType<typeof httpsCaller>;
  let viaShort: ReturnType<typeof httpsCaller>;
  let admin: Cred;
  /** alpha's change log awaits a re-apply (race_replays): writes are refused, or wait at the gate while a hold runs. */
  let replayPending = false;

  const labels = (key: string): string[] =>
    store.changelog
      .after('alpha', 1, 0, 1000)
      .filter((c) => c.keyId === key && c.kind === 'label-set')
      .map((c) => (c.detail as { label: string }).label);
  const setLabel = (via: ReturnType<typeof httpsCaller>, key: string, label: string) => via.call('PUT', `/keys/${key}/label`, { auth: admin, json: { label } });
  const makeKey = async (id: string): Promise<void> => {
    const r = await direct.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id } });
    expect(r.status).toBe(201);
  };

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha'] });
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-hotkey-'));
    store = StateStore.inDir(dir).open();
    store.roles.insert({ namespace: 'alpha', role: 'primary', epoch: 1, primarySite: 'a' });
    capture = captureFor(store);
    captureShort = captureFor(store);
    const cert = await createSelfSignedCertificate();
    gwCertPem = cert.certPem;
    gwKeyPem = cert.keyPem;
    const common = {
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { caPem: sim.certPem } },
      roles: { roleOf: (ns: string) => (ns === 'alpha' ? ({ role: 'primary', epoch: 1, primarySite: 'a', replayPending } as const) : undefined) },
    };
    gw = new GatewayServer({ ...common, observer: capture });
    gwShort = new GatewayServer({ ...common, observer: captureShort, gate: new DeviceBarrier({ maxWaitMs: 300, retryAfterSeconds: 3 }) });
    await Promise.all([gw.start(), gwShort.start()]);
    direct = httpsCaller(sim.url, sim.certPem);
    viaGw = httpsCaller(gw.url, cert.certPem);
    viaShort = httpsCaller(gwShort.url, cert.certPem);
    admin = sim.nsUsers.alpha!.admin;
    for (const id of ['hot', 'hot2', 'hot3', 'hot4', 'hot5', 'other']) await makeKey(id);
  });

  afterAll(async () => {
    await Promise.all([direct?.close(), viaGw?.close(), viaShort?.close()]);
    await Promise.all([gw?.close(), gwShort?.close()]);
    capture?.close();
    captureShort?.close();
    store?.close();
    await sim?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('admits an exclusive hold after the write in flight on a hot key, not after the writes queued behind it', async () => {
    const hold = sim.hold({ method: 'PUT', path: /^\/api\/v1\/keys\/hot\/label$/ });
    let committedAtHold: number | undefined;
    let exclusive: Promise<void> | undefined;
    try {
      const writes = Array.from({ length: K }, (_, i) => setLabel(viaGw, 'hot', `l${i}`));
      await hold.waitFor(1);
      // Every write has arrived: admitted to the barrier (before this change) or queued on the key's lock.
      await until(() => gw.gate.inFlight === K || (gw.gate.inFlight === 1 && capture.waitingForKeys === K - 1), 'every write in flight or queued', 2_500);
      exclusive = gw.gate.exclusive([], async () => {
        committedAtHold = labels('hot').length;
      });
      hold.close();
      await exclusive;
      expect((await Promise.all(writes)).map((r) => r.status)).toEqual(Array(K).fill(204));
    } finally {
      hold.close();
      await exclusive;
    }
    // Only the write that was in device I/O went before the hold; the queue waited outside the barrier.
    expect(committedAtHold).toBe(1);
    // Per key, log order = device order: the device holds the label the log committed last.
    const logged = labels('hot');
    expect(logged).toHaveLength(K);
    const onDevice = JSON.parse((await direct.call('GET', '/keys/hot', { auth: admin })).body) as { label?: string };
    expect(onDevice.label).toBe(logged.at(-1));
    expect(capture.waitingForKeys).toBe(0);
  });

  it('does not deadlock: hot-key writes, an exclusive hold writing the device, and a replica-style apply all finish', async () => {
    const locks = namespaceLocks();
    const hold = sim.hold({ method: 'PUT', path: /^\/api\/v1\/keys\/hot4\/label$/ });
    let committedAtApply: number | undefined;
    let exclusive: Promise<number> | undefined;
    let apply: Promise<number> | undefined;
    try {
      const writes = Array.from({ length: K }, (_, i) => setLabel(viaGw, 'hot4', `d${i}`));
      await hold.waitFor(1);
      await until(() => gw.gate.inFlight === K || (gw.gate.inFlight === 1 && capture.waitingForKeys === K - 1), 'every write in flight or queued', 2_500);
      // A merge-restore's replay writes inside the exclusive hold, to the hot key itself, past the capture.
      exclusive = gw.gate.exclusive([], async () => (await setLabel(direct, 'hot4', 'replayed')).status);
      // A stream apply of another namespace: shared hold (scoped), then its namespace lock, then the device.
      apply = gw.gate.shared(
        () =>
          locks('beta').run(async () => {
            committedAtApply = labels('hot4').length;
            return (await setLabel(direct, 'other', 'applied')).status;
          }),
        { scope: 'beta', wait: 'unbounded' },
      );
      hold.close();
      const statuses = await Promise.race([
        Promise.all([exclusive, apply, ...writes.map((w) => w.then((r) => r.status))]),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('not everything finished: deadlock')), 3 * NO_ANSWER_MS)),
      ]);
      expect(statuses).toEqual([204, 204, ...Array(K).fill(204)]);
    } finally {
      hold.close();
      await Promise.allSettled([exclusive, apply]);
    }
    // The apply waited behind the exclusive hold, which waited for the one write in flight, not for the queue.
    expect(committedAtApply).toBe(1);
    expect(labels('hot4')).toHaveLength(K);
    expect(gw.gate.inFlight).toBe(0);
    expect(capture.waitingForKeys).toBe(0);
  });

  it('answers a write queued on a key past the gate bound with the gate timeout, never sending it', async () => {
    const hold = sim.hold({ method: 'PUT', path: /^\/api\/v1\/keys\/hot2\/label$/ });
    try {
      const first = setLabel(viaShort, 'hot2', 'first');
      await hold.waitFor(1);
      const second = await Promise.race([
        setLabel(viaShort, 'hot2', 'second'),
        new Promise<'no answer'>((r) => setTimeout(() => r('no answer'), NO_ANSWER_MS)),
      ]);
      expect(second).not.toBe('no answer');
      if (second === 'no answer') return;
      expect(second.status).toBe(503);
      expect(second.headers['retry-after']).toBe('3');
      expect(JSON.parse(second.body).message).toMatch(/same key .* \[NHR_ERR_GATEWAY_HOLD_TIMEOUT\]$/);
      expect(hold.held()).toBe(1);
      hold.release();
      expect((await first).status).toBe(204);
    } finally {
      hold.close();
    }
    expect(hold.caught()).toBe(1);
    expect(labels('hot2')).toEqual(['first']);
    expect(captureShort.waitingForKeys).toBe(0);
    // The key is free again.
    expect((await setLabel(viaShort, 'hot2', 'third')).status).toBe(204);
  });

  it('lets a queued write go when its client leaves: out of the key queue, never sent, and the key goes on', async () => {
    const hold = sim.hold({ method: 'PUT', path: /^\/api\/v1\/keys\/hot3\/label$/ });
    const dispatcher = new Agent({ connect: { ca: gwCertPem } });
    try {
      const first = setLabel(viaGw, 'hot3', 'first');
      await hold.waitFor(1);
      const leaving = new AbortController();
      const gone = request(`${gw.url}/api/v1/keys/hot3/label`, {
        method: 'PUT',
        headers: { authorization: basicHeader(admin), 'content-type': 'application/json' },
        body: JSON.stringify({ label: 'gone' }),
        dispatcher,
        signal: leaving.signal,
      }).catch(() => 'aborted' as const);
      await until(() => gw.gate.inFlight === 2 || capture.waitingForKeys === 1, 'the second write queued', 2_500);
      leaving.abort();
      expect(await gone).toBe('aborted');
      // Out of the key's queue and not holding the barrier: an exclusive hold would wait for the first write only.
      await until(() => capture.waitingForKeys === 0 && gw.gate.inFlight === 1, 'the left write let go', 500);
      hold.release();
      expect((await first).status).toBe(204);
    } finally {
      hold.close();
      await dispatcher.close();
    }
    expect(hold.caught()).toBe(1);
    expect((await setLabel(viaGw, 'hot3', 'after')).status).toBe(204);
    expect(labels('hot3')).toEqual(['first', 'after']);
  });

  it('takes the key locks before the gate also for a write that waits only because a re-apply is pending', async () => {
    let endHold!: () => void;
    const held = gw.gate.exclusive([], () => new Promise<void>((r) => (endHold = r)));
    replayPending = true;
    try {
      const first = setLabel(viaGw, 'hot5', 'a');
      await until(() => gw.gate.waiting === 1, 'the first write waiting at the gate', 2_500);
      const second = setLabel(viaGw, 'hot5', 'b');
      // Queued on its key outside the barrier: admitted with the first, it could not take the key without waiting.
      await until(() => capture.waitingForKeys === 1, 'the second write queued on its key', 2_500);
      expect(gw.gate.waiting).toBe(1);
      replayPending = false;
      endHold();
      await held;
      expect([(await first).status, (await second).status]).toEqual([204, 204]);
    } finally {
      replayPending = false;
      endHold?.();
      await held;
    }
    expect(labels('hot5')).toEqual(['a', 'b']);
  });

  // docs/concurrency.md, "Lock order": the wait for the key locks and the wait at the gate share ONE bound, the gate's
  // maxWaitMs, and so does a wait for a running re-apply before them. Before, the key-lock wait started a full bound of
  // its own after the re-apply's end: a write waited up to the re-apply's wait plus a whole bound.
  it('counts a wait for a running re-apply in the one bound the key-lock wait shares', async () => {
    const BOUND_MS = 1_000;
    const REPLAY_MS = 600;
    let running: ReplayInProgress | undefined;
    const events: GatewayRequestEvent[] = [];
    const captureR = captureFor(store);
    const gwR = new GatewayServer({
      site: 'a',
      tls: { certPem: gwCertPem, keyPem: gwKeyPem },
      nethsm: { url: sim.url, tls: { caPem: sim.certPem } },
      roles: { roleOf: (ns: string) => (ns === 'alpha' ? ({ role: 'primary', epoch: 1, primarySite: 'a', replayPending: running !== undefined } as const) : undefined) },
      observer: captureR,
      gate: new DeviceBarrier({ maxWaitMs: BOUND_MS, retryAfterSeconds: 3 }),
      replays: { running: () => running },
      onRequest: (e) => events.push(e),
    });
    await gwR.start();
    const viaR = httpsCaller(gwR.url, gwCertPem);
    await makeKey('bound');
    const hold = sim.hold({ method: 'PUT', path: /^\/api\/v1\/keys\/bound\/label$/ });
    try {
      // The first write is in device I/O, holding the key's lock.
      const first = setLabel(viaR, 'bound', 'first');
      await hold.waitFor(1);
      // A re-apply runs whose keys the second write meets: it waits for its end.
      let endReplay!: () => void;
      let asked: number | undefined;
      running = {
        admits: () => {
          asked ??= performance.now();
          return false;
        },
        done: new Promise<void>((r) => (endReplay = r)),
      };
      const second = setLabel(viaR, 'bound', 'second');
      await until(() => asked !== undefined, 'the second write waiting for the re-apply', 2_500);
      await new Promise((r) => setTimeout(r, REPLAY_MS));
      running = undefined;
      endReplay();
      // Then it waits for the key, which the first write holds: only for what is left of its bound.
      const r2 = await second;
      expect(r2.status).toBe(503);
      expect(JSON.parse(r2.body).message).toMatch(/NHR_ERR_GATEWAY_HOLD_TIMEOUT/);
      const heldMs = events.find((e) => e.status === 503)?.heldMs;
      // A whole bound after the re-apply's end would make it at least REPLAY_MS + BOUND_MS.
      expect(heldMs).toBeGreaterThanOrEqual(BOUND_MS - 5);
      expect(heldMs).toBeLessThan(REPLAY_MS + BOUND_MS);
      hold.release();
      expect((await first).status).toBe(204);
    } finally {
      running = undefined;
      hold.close();
      await viaR.close();
      await gwR.close();
      captureR.close();
    }
    expect(labels('bound')).toEqual(['first']);
  });
});
