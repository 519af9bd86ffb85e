/**
 * Test support for the replica's stream puller (not shipped behaviour): a primary, site `a`, that serves only the change
 * stream over real mutual TLS (every other peer call is refused), and the replica's (`b`) PeerClient of it.
 */
import { PeerClient } from '../peer/client.js';
import { PeerServer, type PeerHandlers } from '../peer/server.js';
import { createCa, issueCert } from '../tls/index.js';

export interface StreamPrimary {
  /** Site b's client of the primary (its name: `a`). */
  readonly peer: PeerClient;
  /** Closes the client, then the primary. */
  close(): Promise<void>;
}

/** Starts the primary on a free port of 127.0.0.1; `changes` answers each stream connection. */
export async function startStreamPrimary(changes: NonNullable<PeerHandlers['changes']>): Promise<StreamPrimary> {
  const ca = await createCa({ commonName: 'test CA' });
  const siteA = await issueCert(ca, { commonName: 'a', usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
  const siteB = await issueCert(ca, { commonName: 'b', usages: ['serverAuth', 'clientAuth'] });
  const unused = () => Promise.reject(new Error('unused'));
  const handlers: PeerHandlers = { status: unused, snapshot: unused, announceEpoch: unused, handoff: unused, requestSync: unused, deviceBackup: unused, changes };
  const server = new PeerServer({ host: '127.0.0.1', port: 0, tls: { ...siteA, caPem: ca.certPem }, peers: [{ name: 'b' }], handlers });
  await server.start();
  const peer = new PeerClient({ url: `https://127.0.0.1:${server.port}`, identity: { name: 'a' }, tls: { ...siteB, caPem: ca.certPem } });
  return {
    peer,
    close: async () => {
      await peer.close();
      await server.close();
    },
  };
}

/** A connection's answer that sends `lines`, then stays open and quiet until the replica cuts it. */
export function linesThenQuiet(lines: readonly string[], signal: AbortSignal): AsyncIterable<string> {
  return (async function* () {
    yield* lines;
    await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
  })();
}
