/**
 * A fault run's processes come back after a restart however busy the host's ports are: another process (a concurrent
 * run, a test) may bind a port a killed daemon or simulator had meanwhile. Every listener takes a port from the system
 * and the proxies in front follow it (site.ts). Needs `npm run build` (skipped otherwise, saying so in its title).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES } from '../../src/lab/lab.js';
import { NetHsmClient } from '../../src/nethsm/client.js';
import { Cluster } from './cluster.js';

const repoRoot = path.resolve(import.meta.dirname, '../..');
const built = existsSync(path.join(repoRoot, 'dist/cli/main.js'));

/** Listens on `port` as another process would, dropping whatever connects. */
function occupy(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer((socket) => socket.destroy());
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

describe.skipIf(!built)('fault cluster ports — needs `npm run build`', () => {
  let cluster: Cluster | undefined;
  let logDir = '';
  const squatters: Server[] = [];

  beforeAll(async () => {
    logDir = await mkdtemp(path.join(tmpdir(), 'nhr-cluster-test-'));
    cluster = await Cluster.create(['a', 'b'], logDir, () => undefined);
  }, 240_000);

  afterAll(async () => {
    await cluster?.close(false);
    for (const s of squatters) s.close();
    await rm(logDir, { recursive: true, force: true });
  });

  it('restarts a killed daemon and simulator whose old ports another process took, and the proxies reach them', async () => {
    const a = cluster!.site('a');
    const old = { ...a.ports };
    await a.daemon.kill();
    await a.sim.kill();
    for (const port of [old.sim, old.peer, old.gateway, old.health]) squatters.push(await occupy(port));

    await a.startSim();
    await a.startDaemon();

    expect([a.ports.sim, a.ports.peer, a.ports.gateway, a.ports.health].filter((p) => Object.values(old).includes(p))).toEqual([]);
    expect(await a.health('/health/live')).toBe(200);
    // Through the gateway proxy to the daemon's new gateway, and through the device proxy to the new simulator.
    const viaGateway = new NetHsmClient({ url: a.gatewayUrl, tls: { caPem: cluster!.caPem }, auth: { username: 'alpha~operator', password: LAB_PASSPHRASES.nsOperator } });
    try {
      expect(Array.isArray(await viaGateway.listKeys())).toBe(true);
    } finally {
      await viaGateway.close();
    }
    // B's daemon reaches A's new peer API through its link: A's status there turns ok again.
    const b = cluster!.site('b');
    const deadline = Date.now() + 60_000;
    let seen: string | undefined;
    while (Date.now() < deadline) {
      seen = (await b.status(5_000).catch(() => undefined))?.members.find((m) => m.name === 'a')?.status;
      if (seen === 'ok') break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(seen).toBe('ok');
  }, 180_000);
});
