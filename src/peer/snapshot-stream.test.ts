/**
 * A snapshot streamed from a real extract (simulator, device backup over HTTPS) through the peer API, failing mid-way:
 * the primary's device backup is cut after the replica already received snapshot bytes. The replica must see a broken
 * transfer (never a clean end), say so, and keep no file; the primary removes its spool.
 */
import { readdirSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { NetHsmClient } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { TEST_SCRYPT } from '../backup/format.js';
import { PeerRefusedError, PeerUnreachableError } from '../errors.js';
import { Device } from '../replicator/device.js';
import { streamSnapshot, type SnapshotSourceDeps } from '../replicator/snapshot-source.js';
import { WorkDir } from '../replicator/workdir.js';
import { createCa, issueCert } from '../tls/index.js';
import { leavingGet } from '../../test/helpers/slow-client.js';
import { waitFor } from '../../test/helpers/wait.js';
import { PeerClient } from './client.js';
import { PeerServer } from './server.js';

/**
 * A TCP relay in front of the simulator for the backup account only: once `holdAfter` bytes came from the simulator on
 * a connection, it holds the rest (the download stalls there); `cut()` then destroys every connection.
 */
class CuttingRelay {
  holdAfter = Number.POSITIVE_INFINITY;
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  reached!: Promise<void>;
  private onReached!: () => void;

  constructor(private readonly targetPort: number) {
    this.arm();
  }

  /** Bytes from the simulator per connection since the last arm(). */
  private readonly sent = new Map<Socket, number>();

  arm(holdAfter = Number.POSITIVE_INFINITY): void {
    this.holdAfter = holdAfter;
    for (const k of this.sent.keys()) this.sent.set(k, 0);
    this.reached = new Promise((r) => (this.onReached = r));
  }

  async start(): Promise<number> {
    this.server = createServer((client) => {
      const upstream = connect(this.targetPort, '127.0.0.1');
      this.sockets.add(client).add(upstream);
      this.sent.set(upstream, 0);
      client.pipe(upstream);
      upstream.on('data', (chunk: Buffer) => {
        const sent = this.sent.get(upstream) ?? 0;
        const room = this.holdAfter - sent;
        if (room > 0) client.write(chunk.length > room ? chunk.subarray(0, room) : chunk);
        this.sent.set(upstream, sent + Math.min(chunk.length, Math.max(room, 0)));
        // Past the mark the rest is held back (never sent): the download stalls there until cut().
        if (chunk.length >= room) {
          upstream.pause();
          this.onReached();
        }
      });
      upstream.on('end', () => client.end());
      for (const s of [client, upstream]) s.on('error', () => undefined).on('close', () => (this.sockets.delete(s), this.sent.delete(s)));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    return (this.server.address() as { port: number }).port;
  }

  cut(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.server?.close(() => r()));
  }
}

describe('a snapshot streamed through the peer API, cut mid-way at the primary', () => {
  let sim: ProvisionedSimulator;
  let dir: string;
  let relay: CuttingRelay;
  let direct: NetHsmClient;
  let relayed: NetHsmClient;
  let server: PeerServer;
  let client: PeerClient;
  let work: WorkDir;
  let deps: SnapshotSourceDeps;
  /** Resolves when the server has handed the peer the snapshot's first chunk. */
  let firstSent: Promise<void>;
  /** The handler returns the streamed body as it is (as the daemon's does) instead of wrapping it to see its first chunk. */
  let bare = false;
  let caPem: string;
  let siteBPem: { certPem: string; keyPem: string };
  /** The last streamed snapshot's making. */
  let lastDone: Promise<unknown> = Promise.resolve();

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns1'] });
    // Enough keys that the extract writes several 64 KiB chunks before the cut.
    await sim.fill({ namespace: 'ns1', count: 2000, seed: 'fill' });
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-snapshot-stream-'));
    relay = new CuttingRelay(sim.port);
    const relayPort = await relay.start();
    direct = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
    relayed = new NetHsmClient({ url: sim.url.replace(`:${sim.port}`, `:${relayPort}`), tls: { fingerprint256: sim.fingerprint256 } });
    const device = new Device(
      { backup: relayed.withAuth(sim.users.backup.username, sim.users.backup.password), admin: direct.withAuth(sim.users.admin.username, sim.users.admin.password) },
      new DeviceBarrier(),
      sim.backupPassphrase,
    );
    work = new WorkDir(path.join(dir, 'a-work'));
    await work.prepare();
    deps = { site: 'a', device, work, deviceOpen: { passphrase: sim.backupPassphrase, scrypt: TEST_SCRYPT }, replicationPassphrase: 'replication', scrypt: TEST_SCRYPT };

    const ca = await createCa({ commonName: 'group CA' });
    const siteA = await issueCert(ca, { commonName: 'a', usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
    const siteB = await issueCert(ca, { commonName: 'b', usages: ['serverAuth', 'clientAuth'] });
    caPem = ca.certPem;
    siteBPem = siteB;
    server = new PeerServer({
      host: '127.0.0.1',
      port: 0,
      tls: { ...siteA, caPem: ca.certPem },
      peers: [{ name: 'b' }],
      handlers: {
        status: async () => ({ site: 'a', version: 'test', namespaces: [] }),
        snapshot: async (_peer, ns) => {
          const snap = await streamSnapshot(deps, ns, 1);
          snap.done.catch(() => undefined);
          lastDone = snap.done.catch(() => undefined);
          if (bare) return { epoch: 1, site: 'a', body: snap.body };
          let sent!: () => void;
          firstSent = new Promise((r) => (sent = r));
          const body = (async function* () {
            for await (const c of snap.body) {
              yield c;
              sent();
            }
          })();
          return { epoch: 1, site: 'a', body };
        },
        announceEpoch: async () => ({ accepted: true, view: { namespace: 'x', role: 'replica', epoch: 1, primarySite: 'a' } }),
        handoff: async () => ({ epoch: 1 }),
        requestSync: async () => ({ started: true }),
        deviceBackup: async () => (async function* () {})(),
      },
    });
    await server.start();
    client = new PeerClient({ url: `https://127.0.0.1:${server.port}`, identity: { name: 'a' }, tls: { certPem: siteB.certPem, keyPem: siteB.keyPem, caPem: ca.certPem } });
  });

  afterAll(async () => {
    await client?.close();
    await server?.close();
    await relay?.close();
    await relayed?.close();
    await direct?.close();
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const spools = () => readdirSync(path.dirname(work.temp('x'))).filter((f) => f.startsWith('snapshot-'));

  it('streams a whole snapshot through the relay when nothing is cut', async () => {
    const dest = path.join(dir, 'whole.snap');
    const got = await client.fetchSnapshot('ns1', dest);
    expect(got.epoch).toBe(1);
    expect((await stat(dest)).size).toBe(got.bytes);
    expect(got.bytes).toBeGreaterThan(3 * 64 * 1024);
    await rm(dest);
  });

  it('cuts the transfer when the primary fails after bytes went out: B refuses it, names it, keeps no file', async () => {
    // Measure the device backup once, then hold the next one at 60 %: the extract writes what came before.
    const probe = path.join(dir, 'probe.bak');
    await deps.device.backupTo(probe);
    const size = (await stat(probe)).size;
    await rm(probe);
    relay.arm(Math.floor(size * 0.6));
    const dest = path.join(dir, 'cut.snap');
    const fetched = client.fetchSnapshot('ns1', dest).catch((e: unknown) => e);
    await relay.reached;
    await firstSent;
    relay.cut();
    const err = (await fetched) as PeerUnreachableError;
    expect(err).toBeInstanceOf(PeerUnreachableError);
    expect(err.message).toMatch(/^snapshot download from a broke off after [1-9]\d* bytes \(.+\); the partial file was removed$/);
    await expect(stat(dest)).rejects.toThrow();
    relay.arm();
    // The spool existed while streaming (checked above by the bytes B got); it goes once the extract has failed.
    for (let i = 0; i < 50 && spools().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(spools()).toEqual([]);
  });

  it('removes its spool when the peer went away before the first byte (the body closed unread)', async () => {
    // The device backup waits behind an exclusive hold, so the snapshot has no first byte while the peer gives up.
    bare = true;
    let endHold!: () => void;
    let entered!: () => void;
    const inHold = new Promise<void>((r) => (entered = r));
    const hold = deps.device.barrier.exclusive([], () => (entered(), new Promise<void>((r) => (endHold = r))));
    await inHold;
    const sockets = (server as unknown as { sockets: Set<Socket> }).sockets;
    const peer = leavingGet(server.port, { caPem, ...siteBPem }, '/peer/v1/namespaces/ns1/snapshot');
    try {
      const port = await peer.sent;
      await waitFor(() => spools().length === 1, 'the snapshot to start spooling');
      peer.leave();
      await waitFor(() => ![...sockets].some((s) => s.remotePort === port), 'the server to see the peer gone');
      endHold();
      await hold;
      await lastDone;
      await waitFor(() => spools().length === 0, 'the spool to be removed', 3_000).catch(() => undefined);
      expect(spools()).toEqual([]);
    } finally {
      bare = false;
      endHold?.();
      peer.leave();
    }
  });

  it('answers a namespace the device lacks with its error status before any byte', async () => {
    const dest = path.join(dir, 'none.snap');
    const err = (await client.fetchSnapshot('nosuch', dest).catch((e: unknown) => e)) as PeerRefusedError;
    expect(err).toBeInstanceOf(PeerRefusedError);
    expect(err.remoteCode).toBe('NHR_ERR_BACKUP_NAMESPACE_NOT_FOUND');
    await expect(stat(dest)).rejects.toThrow();
  });
});
