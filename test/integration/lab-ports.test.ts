/**
 * The lab survives another process binding a port it picked for a daemon before that daemon listens (seen in CI: a
 * concurrent fault run took a lab daemon's port, and the daemon could not start): the site moves to fresh ports, the
 * peers' configs follow, and replication runs between them.
 */
import { createServer, type Server } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';

/** Listens on `port` as another process would; drops whatever connects (a daemon that still dials the old port). */
function occupy(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer((socket) => socket.destroy());
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

describe('lab ports taken by another process', () => {
  let lab: Lab | undefined;
  let squatter: Server | undefined;

  afterAll(async () => {
    await lab?.close();
    squatter?.close();
  });

  it("starts a daemon whose peer port was taken after the lab picked it, on fresh ports its peers' configs name", async () => {
    lab = await Lab.create({ sites: ['a', 'b'], namespaces: [{ name: 'alpha', primary: 'a' }] });
    const b = lab.site('b');
    const picked = b.config.peerApi.listen.port;
    squatter = await occupy(picked);

    await lab.startDaemons();

    const moved = b.daemon!.ports.peer;
    expect(moved).not.toBe(picked);
    expect(b.config.peerApi.listen.port).toBe(moved);
    expect(lab.site('a').config.peers.find((p) => p.name === 'b')?.url).toBe(`https://127.0.0.1:${moved}`);
    // A reaches B at its new port (the primary asks its peers to pull), and B pulls from A.
    const asked = await lab.site('a').daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(asked).toMatchObject({ outcome: 'requested', peers: [{ name: 'b', ok: true }] });
    await lab.settle();
    expect(await b.daemon!.syncer.sync('alpha', { actor: 'test' })).toMatchObject({ outcome: 'applied', from: 'a' });
  });

  it('starts each simulator on a port the system picked, and restarts it there', async () => {
    const a = lab!.site('a');
    const port = lab!.simPorts.get('a')!;
    expect(a.sim!.url).toBe(`https://127.0.0.1:${port}`);
    await a.stopDaemon();
    await a.stopSim();
    await a.startSim();
    expect(a.sim!.url).toBe(`https://127.0.0.1:${port}`);
  });
});
