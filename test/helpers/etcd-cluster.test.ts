/**
 * The test etcd cluster survives another process holding a port it picked (a concurrent fault run or test): the member
 * that cannot listen exits, and the start goes again on fresh ports instead of returning a cluster short of it (its two
 * peers still form a quorum, and the check of its port reached the other process). Skipped without an etcd binary.
 */
import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Etcd3 } from 'etcd3';
import { LinkProxy } from '../faults/proxy.js';
import { EtcdCluster, etcdBinary } from './etcd-cluster.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Listens on `port` as another process would, dropping whatever connects. */
function occupy(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer((socket) => socket.destroy());
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

describe.skipIf(!etcdBinary)(`test etcd cluster ports (${etcdBinary ? 'real etcd' : 'SKIPPED: no etcd binary on PATH'})`, () => {
  it("starts every member when another process holds a member's client port from the first pick", async () => {
    // The first pick of the base port is Math.random's first answer (start's first step): 20000 + 2 * 2500 = 25000,
    // so the members listen on 25000/25001, 25002/25003, 25004/25005. Another process holds the witness's client port.
    let squatter: Server | undefined;
    for (const r of [0.5, 0.3, 0.7, 0.1, 0.9]) {
      squatter = await occupy(20_000 + 2 * Math.floor(r * 5_000) + 4).catch(() => undefined);
      if (squatter) {
        vi.spyOn(Math, 'random').mockReturnValueOnce(r);
        break;
      }
    }
    expect(squatter, 'a free port to occupy').toBeDefined();
    const taken = (squatter!.address() as { port: number }).port;
    cleanups.push(() => void squatter!.close());

    const cluster = await EtcdCluster.start(['a', 'b', 'witness']);
    cleanups.push(() => cluster.stop());

    expect(cluster.member('witness').clientPort).not.toBe(taken);
    for (const m of ['a', 'b', 'witness']) expect(cluster.running(m), `etcd ${m} running`).toBe(true);
  }, 120_000);

  it('restarts a member behind proxies on fresh ports when another process took its port while it was down', async () => {
    const peerLinks = new Map<string, LinkProxy>();
    const clientLinks = new Map<string, LinkProxy>();
    const cluster = await EtcdCluster.start(['a', 'b', 'witness'], {
      advertisePeerPort: async (name, peerPort) => {
        await peerLinks.get(name)?.close();
        const p = new LinkProxy(`etcd-peer ${name}`, peerPort);
        await p.start();
        peerLinks.set(name, p);
        return p.port;
      },
      onMemberMoved: (m) => {
        peerLinks.get(m.name)!.targetPort = m.peerPort;
        clientLinks.get(m.name)!.targetPort = m.clientPort;
      },
    });
    cleanups.push(async () => {
      await cluster.stop();
      for (const p of [...peerLinks.values(), ...clientLinks.values()]) await p.close();
    });
    for (const m of cluster.members) {
      const p = new LinkProxy(`etcd ${m.name}`, m.clientPort);
      await p.start();
      clientLinks.set(m.name, p);
    }
    const taken = cluster.member('b').clientPort;
    await cluster.kill('b');
    const squatter = await occupy(taken);
    cleanups.push(() => void squatter.close());

    await cluster.restart('b');

    expect(cluster.running('b')).toBe(true);
    expect(cluster.member('b').clientPort).not.toBe(taken);
    // Through b's proxy, as a daemon reaches it: b answers a linearizable read.
    const client = new Etcd3({ hosts: [`http://127.0.0.1:${clientLinks.get('b')!.port}`], dialTimeout: 2_000 });
    try {
      expect(await client.get('/nhr-test/ready').string()).toBe('b');
    } finally {
      client.close();
    }
  }, 120_000);

  it('waitWhole waits for a stopped member to serve again, and names one that does not', async () => {
    const etcd = await EtcdCluster.start(['a', 'b', 'witness']);
    cleanups.push(() => etcd.stop());
    expect(await etcd.waitWhole(10_000)).toBeLessThan(10_000);
    etcd.pause('b');
    cleanups.push(() => etcd.resume('b'));
    await expect(etcd.waitWhole(1_500)).rejects.toThrow(/etcd not whole after 1500 ms: b serve/);
    setTimeout(() => etcd.resume('b'), 1_000);
    expect(await etcd.waitWhole(15_000)).toBeGreaterThanOrEqual(900);
  }, 60_000);
});
