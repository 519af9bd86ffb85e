/**
 * The replica's puller against a scripted primary over real mutual TLS: bad stream input is refused with a clear error
 * and leaves the replica's state as it was; a snapshot request leads to one snapshot. The replica's device is a
 * simulator over HTTPS holding every request (`sim.hold`): none of these lines may reach it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capturingLogger, until } from '../gateway/test-support.js';
import { SyncDaemonStoppingError } from '../errors.js';
import { createReplicatorMetrics } from '../metrics/metrics.js';
import { NetHsmClient } from '../nethsm/client.js';
import { PeerClient } from '../peer/client.js';
import { PeerServer, type PeerHandlers } from '../peer/server.js';
import type { RequestHold } from '../sim/request-holds.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { StateStore } from '../state/store.js';
import { createCa, issueCert } from '../tls/index.js';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { Mutex } from '../util/mutex.js';
import { MAX_LINE_BYTES } from './protocol.js';
import { NamespacePuller } from './puller.js';

const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
const change = (seq: number, over: Record<string, unknown> = {}) => JSON.stringify({ type: 'change', epoch: 1, seq, at: 1000 + seq, ref: REF, kind: 'key-deleted', keyId: `k${seq}`, ...over });
const beat = (seq: number, over: Record<string, unknown> = {}) => JSON.stringify({ type: 'heartbeat', at: Date.now(), head: { epoch: 1, seq }, ...over });
const OTHER_LOG = 'a9b8c7d6-e5f4-4321-9abc-def012345678';

describe('stream puller: bad input from the primary', () => {
  let dir: string;
  let store: StateStore;
  let server: PeerServer;
  let peers: Map<string, PeerClient>;
  const scripts: string[][] = [];
  let connections = 0;
  const snapshots: string[] = [];
  let sim: ProvisionedSimulator;
  let device: NetHsmClient;
  /** Every request to the replica's device, held unanswered: the tests expect none. */
  let deviceHold: RequestHold;
  /** The `log` parameter of each connection. */
  const logParams: (string | null | undefined)[] = [];

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns'] });
    // A short timeout: a request the hold keeps (a bug) fails the change instead of stalling the puller, so the test
    // goes on to fail on what reached the device rather than on its own time limit.
    device = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, auth: sim.nsUsers.ns!.admin, timeoutMs: 2_000 });
    deviceHold = sim.hold({ path: /^\// });
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-puller-'));
    store = StateStore.inDir(dir).open();
    store.roles.insert({ namespace: 'ns', role: 'replica', epoch: 1, primarySite: 'a' });
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 5, takenAt: 1, durationMs: 1 });
    const ca = await createCa({ commonName: 'test CA' });
    const siteA = await issueCert(ca, { commonName: 'a', usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
    const siteB = await issueCert(ca, { commonName: 'b', usages: ['serverAuth', 'clientAuth'] });
    const handlers: PeerHandlers = {
      status: () => Promise.reject(new Error('unused')),
      snapshot: () => Promise.reject(new Error('unused')),
      announceEpoch: () => Promise.reject(new Error('unused')),
      handoff: () => Promise.reject(new Error('unused')),
      requestSync: () => Promise.reject(new Error('unused')),
      deviceBackup: () => Promise.reject(new Error('unused')),
      changes: async (_peer, _ns, after, signal, log) => {
        connections++;
        logParams.push(log);
        expect(after).toEqual({ epoch: 1, seq: 5 });
        const lines = scripts.shift() ?? [];
        return (async function* () {
          yield* lines;
          // Then stay open like an idle primary until the replica goes away.
          await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
        })();
      },
    };
    server = new PeerServer({ host: '127.0.0.1', port: 0, tls: { ...siteA, caPem: ca.certPem }, peers: [{ name: 'b' }], handlers });
    await server.start();
    peers = new Map([['a', new PeerClient({ url: `https://127.0.0.1:${server.port}`, identity: { name: 'a' }, tls: { ...siteB, caPem: ca.certPem } })]]);
  });

  afterAll(async () => {
    for (const p of peers.values()) await p.close();
    await server.close();
    deviceHold.close();
    await device.close();
    await sim.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function puller(
    backoff = { minMs: 5, maxMs: 20 },
    peerMap: Map<string, PeerClient> = peers,
    snapshot: (reason: string) => Promise<void> = async (reason) => void snapshots.push(reason),
    barrier = new DeviceBarrier(),
  ) {
    const { logger, lines } = capturingLogger();
    const registry = new Registry();
    const p = new NamespacePuller({
      namespace: 'ns',
      site: 'b',
      store,
      peers: peerMap,
      apply: {
        site: 'b',
        store,
        client: () => device,
        transportKey: () => undefined,
      },
      lock: new Mutex(),
      barrier,
      snapshot,
      heartbeatIntervalMs: 1000,
      catchupDebounceMs: 0,
      monitor: { reportSuccess: () => undefined, reportFailure: () => undefined },
      deviceMember: 'nethsm',
      metrics: createReplicatorMetrics({ registry }),
      log: logger,
      backoff,
    });
    return { p, lines, registry };
  }

  const unchanged = () => {
    expect(store.positions.get('ns', 'a')).toMatchObject({ epoch: 1, seq: 5 });
    expect(store.applied.count('ns')).toBe(0);
    expect(deviceHold.requests()).toEqual([]);
    expect(deviceHold.caught()).toBe(0);
  };

  it('skips replayed changes, refuses out-of-order, malformed and oversized lines, and changes nothing', async () => {
    scripts.push(
      [beat(5), change(4), change(5), change(7)],
      ['{"type":"change","epoch":1,'],
      [change(6, { keyId: '../../etc/passwd' })],
      [change(6, { epoch: 0 })],
      ['x'.repeat(MAX_LINE_BYTES + 10)],
    );
    const { p, lines, registry } = puller();
    p.start();
    await until(() => connections >= 6, 'six connections');
    await p.close();
    unchanged();
    const log = lines.join('');
    expect(log).toMatch(/change 1\.7 refused: expected 1\.6 next.*NHR_ERR_STREAM_OUT_OF_ORDER/);
    expect(log).toMatch(/line is not JSON.*NHR_ERR_PEER_MESSAGE_INVALID/);
    expect(log).toMatch(/keyId must be a valid NetHSM id.*NHR_ERR_PEER_MESSAGE_INVALID/);
    expect(log).toMatch(/change 0\.6 from a refused: namespace ns is at epoch 1 here.*NHR_ERR_ROLE_STALE_EPOCH/);
    expect(log).toMatch(/stream line is over 2097152 bytes.*NHR_ERR_PEER_MESSAGE_INVALID/);
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/stream_changes_applied_total\{namespace="ns",outcome="duplicate"\} 2/);
    expect(snapshots).toEqual([]);
  });

  it("says in each hold's write ticket that a duplicate changed nothing on the device", async () => {
    // A merge-restore this hold raced need not re-apply it (apply-ticket.ts): `none`, not the default `unknown`.
    const at = Date.now() + 30_000; // below the later heartbeat test's basis: the lag basis only moves forward
    scripts.push([change(4), change(5), beat(5, { at })]);
    const barrier = new DeviceBarrier();
    const tracker = barrier.trackWrites();
    const { p, registry } = puller(undefined, peers, undefined, barrier);
    try {
      p.start();
      // The heartbeat comes after both changes: once its lag basis is stored, both were handled.
      await until(() => store.positions.get('ns', 'a')?.positionTakenAt === at, 'the heartbeat after the duplicates');
    } finally {
      await p.close();
      tracker.close();
    }
    expect(tracker.writes().map((w) => [w.scope, w.ticket.replay])).toEqual([
      ['ns', { kind: 'none' }],
      ['ns', { kind: 'none' }],
    ]);
    expect(await registry.metrics()).toMatch(/stream_changes_applied_total\{namespace="ns",outcome="duplicate"\} 2/);
    unchanged();
  });

  it('stops promptly when closed while a catch-up snapshot is failing, instead of waiting out its backoff', async () => {
    // The primary asks for a snapshot; the snapshot fails once close() has been called (as a sync does when the daemon
    // stops). The loop must not then sleep its (one-minute) backoff before it notices it was closed.
    scripts.push([JSON.stringify({ type: 'snapshot-required', reason: 'test', head: { epoch: 1, seq: 90 } })]);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered = false;
    const { p } = puller({ minMs: 60_000, maxMs: 60_000 }, peers, async () => {
      entered = true;
      await gate;
      throw new Error('the daemon is stopping');
    });
    p.start();
    await until(() => entered, 'the catch-up to start');
    const closed = p.close().then(() => 'closed');
    release();
    const outcome = await Promise.race([closed, new Promise((r) => setTimeout(() => r('still running'), 5_000))]);
    expect(outcome).toBe('closed');
  });

  it("does not report a catch-up snapshot that the daemon's stop abandoned as a stream failure", async () => {
    // The stop cuts the sync a catch-up waits for (NamespaceSync.stop): nothing failed, it runs again after the start.
    scripts.push([JSON.stringify({ type: 'snapshot-required', reason: 'test', head: { epoch: 1, seq: 90 } })]);
    let tries = 0;
    const { p, lines } = puller({ minMs: 60_000, maxMs: 60_000 }, peers, async () => {
      tries++;
      throw new SyncDaemonStoppingError('sync of namespace ns abandoned: the daemon is stopping (nothing was changed on this NetHSM)', { namespace: 'ns' });
    });
    p.start();
    await until(() => tries === 1 && p.status().state === 'waiting', 'the catch-up to be abandoned');
    // Before: a warning that the catch-up failed, and the stream's lastError (status, the stream-failing gauge) set.
    expect(p.status().lastError).toBeNull();
    const logged = lines.map((l) => JSON.parse(l) as { level: string; msg: string });
    expect(logged.filter((l) => ['warn', 'error', 'fatal'].includes(l.level)).map((l) => l.msg)).toEqual([]);
    expect(logged.some((l) => l.level === 'info' && /daemon is stopping/.test(l.msg))).toBe(true);
    await p.close();
  });

  it('takes one snapshot when the primary asks for it, and nothing else', async () => {
    connections = 0;
    scripts.push([JSON.stringify({ type: 'snapshot-required', reason: 'position older than retention', head: { epoch: 1, seq: 90 } })]);
    const { p } = puller();
    p.start();
    await until(() => snapshots.length >= 1, 'a snapshot');
    await p.close();
    expect(snapshots[0]).toBe('position older than retention');
    unchanged();
  });

  it("takes a snapshot, and applies nothing, when the primary's change log is not the one the position is in", async () => {
    // The position names no log (taken from a primary without log ids): the replica says so, and a primary whose lines
    // name a log (its state was reset, or it was upgraded) is another log.
    scripts.push([beat(5, { log: OTHER_LOG })], [change(6, { log: OTHER_LOG })]);
    const before = snapshots.length;
    logParams.length = 0;
    const { p, lines } = puller();
    p.start();
    await until(() => snapshots.length >= before + 2, 'two snapshots');
    await p.close();
    expect(snapshots.slice(before, before + 2)).toEqual([
      `the primary's change log is ${OTHER_LOG}; this replica's position 1.5 is in (no id)`,
      expect.stringMatching(new RegExp(`change 1\\.6 from a is in change log ${OTHER_LOG}; this replica's position 1\\.5 names no change log`)),
    ]);
    expect(lines.join('')).toMatch(/NHR_ERR_STREAM_LOG_CHANGED/);
    expect(logParams.slice(0, 2)).toEqual([null, null]);
    unchanged();
  });

  it("takes a snapshot when the primary's head is behind the position (its log went back)", async () => {
    scripts.push([beat(3)]);
    const before = snapshots.length;
    const { p } = puller();
    p.start();
    await until(() => snapshots.length > before, 'a snapshot');
    await p.close();
    expect(snapshots[before]).toBe("the primary's head 1.3 is behind this replica's position 1.5: its change log went back");
    unchanged();
  });

  // Before: the write that moves the lag basis on a heartbeat at the position committed on its own, with an fsync on
  // the event loop, at every heartbeat of every namespace.
  it('stores a heartbeat at its position (the new lag basis) inside a group commit, not with a commit of its own', async () => {
    const at = Date.now() + 60_000;
    scripts.push([beat(5, { at })]);
    const inTransaction: boolean[] = [];
    const caughtUp = store.applied.caughtUp.bind(store.applied);
    store.applied.caughtUp = (...args: Parameters<typeof caughtUp>) => {
      inTransaction.push(store.db.inTransaction);
      return caughtUp(...args);
    };
    const { p } = puller();
    try {
      p.start();
      await until(() => store.positions.get('ns', 'a')?.positionTakenAt === at, 'the lag basis to move to the heartbeat');
    } finally {
      await p.close();
      store.applied.caughtUp = caughtUp;
    }
    expect(inTransaction).toEqual([true]);
    expect(store.positions.get('ns', 'a')).toMatchObject({ epoch: 1, seq: 5 });
  });
});
