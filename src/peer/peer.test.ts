import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blameOf } from '../members/blame.js';
import { NhrError, StateDirUnusableError, PeerIdentityError, PeerMessageInvalidError, PeerRefusedError, PeerUnreachableError, SyncSourceReplayingError } from '../errors.js';
import { guard, leavingGet, stalledHandshake } from '../../test/helpers/slow-client.js';
import { waitFor } from '../../test/helpers/wait.js';
import { createCa, issueCert, type CertificateBundle } from '../tls/index.js';
import { PeerClient } from './client.js';
import { PeerServer, type PeerHandlers } from './server.js';
import type { PeerStatus, ServingView } from './messages.js';

class StaleEpochForTest extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_STALE_EPOCH';
}

describe('peer API over mutual TLS', () => {
  let ca: CertificateBundle;
  let siteA: CertificateBundle;
  let siteB: CertificateBundle;
  let stranger: CertificateBundle;
  let rogueB: CertificateBundle;
  let server: PeerServer;
  let dir: string;
  const seen: string[] = [];
  let statusAnswer: unknown;
  let servingAnswer: unknown;
  let openGate!: () => void;
  const gate = { promise: new Promise<void>((r) => (openGate = r)) };
  /** Holds the 'stalled' snapshot's body after its first bytes until the end of the file's tests. */
  let releaseStalled!: () => void;
  const stalled = new Promise<void>((r) => (releaseStalled = r));
  /** When set, the device backup is answered once it opens (a backup taking minutes); the last body served. */
  let backupGate: { promise: Promise<void>; open: () => void } | undefined;
  let servedBackup: Readable | undefined;

  const handlers: PeerHandlers = {
    status: async (peer) => (seen.push(`status:${peer}`), statusAnswer as PeerStatus),
    serving: async (peer) => (seen.push(`serving:${peer}`), servingAnswer as ServingView),
    snapshot: async (peer, ns) => {
      seen.push(`snapshot:${peer}:${ns}`);
      if (ns === 'beta') throw new StaleEpochForTest('not primary for beta', { namespace: ns, epoch: 7 });
      // A snapshot still in the making that fails before its first byte (a source replaying erased changes).
      if (ns === 'replaying') {
        const next = async (): Promise<IteratorResult<Uint8Array>> => {
          await new Promise((r) => setTimeout(r, 5));
          throw new SyncSourceReplayingError('changes up to 4 were erased by a restore here', { namespace: ns });
        };
        return { epoch: 3, site: 'a', body: { [Symbol.asyncIterator]: () => ({ next }) } };
      }
      // One that fails after some bytes went out.
      if (ns === 'midway') {
        return { epoch: 3, site: 'a', body: (async function* () {
          yield Buffer.from('snapshot-');
          await new Promise((r) => setTimeout(r, 5));
          throw new Error('the extract failed');
        })() };
      }
      // One that stalls after its first bytes (a primary whose device backup hangs).
      if (ns === 'stalled') {
        return { epoch: 3, site: 'a', body: (async function* () {
          yield Buffer.from('first-');
          await stalled;
        })() };
      }
      // One whose end waits for the test: its status and first bytes must not.
      if (ns === 'gated') {
        return { epoch: 4, site: 'a', body: (async function* () {
          yield Buffer.from('first-');
          await gate.promise;
          yield Buffer.from('last');
        })() };
      }
      return { epoch: 3, site: 'a', body: Readable.from([Buffer.from('snapshot-'), Buffer.from('bytes')]) };
    },
    announceEpoch: async (peer, ns, a) => (seen.push(`epoch:${peer}:${ns}:${a.epoch}`), { accepted: true, view: { namespace: ns, role: 'replica', epoch: a.epoch, primarySite: a.primarySite } }),
    handoff: async (_peer, _ns, req) => ({ epoch: req.fromEpoch + 1 }),
    requestSync: async (peer, ns) => (seen.push(`sync:${peer}:${ns}`), { started: true }),
    inventory: async (peer, ns) => (seen.push(`inventory:${peer}:${ns}`), { namespace: ns }),
    certificate: async (peer, ns, id) => {
      seen.push(`cert:${peer}:${ns}:${id}`);
      if (id === 'with-cert') return { contentType: 'application/octet-stream', data: Buffer.from('DER') };
      // A peer answering nonsense: an empty content type.
      if (id === 'odd') return { contentType: '', data: Buffer.from('x') };
      return null;
    },
    deviceBackup: async (peer) => {
      seen.push(`device-backup:${peer}`);
      await backupGate?.promise;
      return (servedBackup = Readable.from([Buffer.from('whole-device')]));
    },
    changes: async (peer, ns, after, _signal, log) => {
      seen.push(`changes:${peer}:${ns}:${after ? `${after.epoch}.${after.seq}` : '-'}:${log === undefined ? 'absent' : String(log)}`);
      return (async function* () {
        yield JSON.stringify({ type: 'heartbeat', at: 1, head: { epoch: 1, seq: 0 } });
      })();
    },
  };

  const client = (cert: CertificateBundle, caPem = ca.certPem, expect = 'a') =>
    new PeerClient({ url: `https://127.0.0.1:${server.port}`, identity: { name: expect }, tls: { certPem: cert.certPem, keyPem: cert.keyPem, caPem }, timeoutMs: 5000 });

  beforeAll(async () => {
    ca = await createCa({ commonName: 'group CA' });
    siteA = await issueCert(ca, { commonName: 'a', usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
    siteB = await issueCert(ca, { commonName: 'b', usages: ['serverAuth', 'clientAuth'] });
    stranger = await issueCert(ca, { commonName: 'c', usages: ['clientAuth'] });
    const otherCa = await createCa({ commonName: 'other CA' });
    rogueB = await issueCert(otherCa, { commonName: 'b', usages: ['clientAuth'] });
    server = new PeerServer({ host: '127.0.0.1', port: 0, tls: { ...siteA, caPem: ca.certPem }, peers: [{ name: 'b' }], handlers });
    await server.start();
    await server.start();
    dir = await mkdtemp(join(tmpdir(), 'nhr-peer-'));
  });

  afterAll(async () => {
    await server.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves a configured peer and tells the handler who it is', async () => {
    statusAnswer = { site: 'a', version: '0.1.0', namespaces: [{ namespace: 'alpha', role: 'primary', epoch: 2, primarySite: 'a' }] };
    const c = client(siteB);
    expect(await c.status()).toEqual(statusAnswer);
    expect(await c.announceEpoch('alpha', { epoch: 4, primarySite: 'b' })).toMatchObject({ accepted: true });
    expect(seen).toContain('status:b');
    expect(seen).toContain('epoch:b:alpha:4');
    await c.close();
  });

  it('streams a snapshot to a 0600 file with its epoch', async () => {
    const c = client(siteB);
    const dest = join(dir, 'alpha.snap');
    expect(await c.fetchSnapshot('alpha', dest)).toEqual({ epoch: 3, bytes: 14 });
    expect(await readFile(dest, 'utf8')).toBe('snapshot-bytes');
    expect((await stat(dest)).mode & 0o777).toBe(0o600);
    await c.close();
  });

  it('sends the status and first bytes of a snapshot still in the making, then the rest as it comes', async () => {
    const agent = new Agent({ connect: { ca: ca.certPem, cert: siteB.certPem, key: siteB.keyPem, checkServerIdentity: () => undefined } });
    try {
      const res = await request(`https://127.0.0.1:${server.port}/peer/v1/namespaces/gated/snapshot`, { dispatcher: agent });
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-nhr-epoch']).toBe('4');
      const it = res.body[Symbol.asyncIterator]();
      expect(((await it.next()).value as Buffer).toString()).toBe('first-');
      openGate();
      const rest: Buffer[] = [];
      for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value as Buffer);
      expect(Buffer.concat(rest).toString()).toBe('last');
    } finally {
      await agent.close();
    }
  });

  it('closes a body whose peer left before it was ready (no pipeline left waiting on a closed response)', async () => {
    let open!: () => void;
    backupGate = { promise: new Promise<void>((r) => (open = r)), open: () => open() };
    servedBackup = undefined;
    const sockets = (server as unknown as { sockets: Set<Socket> }).sockets;
    seen.length = 0;
    const peer = leavingGet(server.port, { caPem: ca.certPem, ...siteB }, '/peer/v1/device-backup');
    try {
      const port = await peer.sent;
      await waitFor(() => seen.includes('device-backup:b'), 'the backup to be asked for');
      peer.leave();
      await waitFor(() => ![...sockets].some((s) => s.remotePort === port), 'the server to see the peer gone');
      backupGate.open();
      // Read through a function: the handler sets it in between (not seen by the narrowing above).
      const served = (): Readable | undefined => servedBackup;
      await waitFor(() => served()?.destroyed, 'the body to be closed', 2_000).catch(() => undefined);
      expect(served()?.destroyed).toBe(true);
    } finally {
      backupGate.open();
      backupGate = undefined;
      peer.leave();
    }
  });

  // Before: a file this site could not write (no space, no folder) was a download that "broke off": blamed on the
  // primary, which the member monitor then marked down (docs/errors.md, NHR_ERR_STATE_DIR_UNUSABLE).
  it("names a snapshot file this site cannot write as this site's state directory, not the peer, with or without a check", async () => {
    const c = client(siteB);
    const dest = join(dir, 'no-such-folder', 'alpha.snap');
    const check = async (bytes: AsyncIterable<Buffer>) => {
      for await (const _ of bytes);
      return 'read';
    };
    for (const fetch of [() => c.fetchSnapshot('alpha', dest), () => c.fetchSnapshot('alpha', dest, { check })]) {
      const err = (await fetch().catch((e: unknown) => e)) as StateDirUnusableError;
      expect(err).toBeInstanceOf(StateDirUnusableError);
      expect(blameOf(err)).toBe('none');
      expect(err.message).toMatch(/^snapshot from a could not be written to .*alpha\.snap \(ENOENT\b.*\); the partial file was removed$/);
    }
    await c.close();
  });

  it('answers a snapshot failing before its first byte with its error status and code, and leaves no file', async () => {
    const c = client(siteB);
    const dest = join(dir, 'replaying.snap');
    const err = (await c.fetchSnapshot('replaying', dest).catch((e: unknown) => e)) as PeerRefusedError;
    expect(err).toBeInstanceOf(PeerRefusedError);
    expect(err.status).toBe(503);
    expect(err.remoteCode).toBe('NHR_ERR_SYNC_SOURCE_REPLAYING');
    await expect(stat(dest)).rejects.toThrow();
    await c.close();
  });

  it('cuts a snapshot failing mid-way: the replica sees a broken transfer, says so, and keeps no file', async () => {
    const c = client(siteB);
    const dest = join(dir, 'midway.snap');
    const err = (await c.fetchSnapshot('midway', dest).catch((e: unknown) => e)) as PeerUnreachableError;
    expect(err).toBeInstanceOf(PeerUnreachableError);
    expect(err.message).toMatch(/^snapshot download from a broke off after 9 bytes \(.+\); the partial file was removed$/);
    await expect(stat(dest)).rejects.toThrow();
    await c.close();
  });

  // Before: nothing could cut a download but the 30-minute body idle timeout (a daemon stopping waited it out).
  it('cuts a stalled snapshot download when its signal aborts: rejects with the reason, keeps no file, with or without a check', async () => {
    const c = client(siteB);
    const dest = join(dir, 'stalled.snap');
    const readAll = async (bytes: AsyncIterable<Buffer>) => {
      for await (const _ of bytes);
      return 0;
    };
    try {
      for (const check of [undefined, readAll]) {
        const stop = new AbortController();
        const reason = new Error('the daemon is stopping');
        const fetched = (check ? c.fetchSnapshot('stalled', dest, { check, signal: stop.signal }) : c.fetchSnapshot('stalled', dest, { signal: stop.signal })).catch((e: unknown) => e);
        await waitFor(async () => (await stat(dest).catch(() => undefined))?.size === 6, 'the first bytes to be written');
        stop.abort(reason);
        expect(await fetched).toBe(reason);
        await expect(stat(dest)).rejects.toThrow();
      }
      // Aborted already: the primary is not even asked.
      seen.length = 0;
      const stop = new AbortController();
      stop.abort(new Error('stopped'));
      await expect(c.fetchSnapshot('alpha', dest, { signal: stop.signal })).rejects.toThrow('stopped');
      expect(seen).toEqual([]);
    } finally {
      releaseStalled();
      await c.close();
    }
  });

  it('runs a check over the snapshot as it downloads and returns its result with the file', async () => {
    const c = client(siteB);
    const dest = join(dir, 'checked.snap');
    const check = async (bytes: AsyncIterable<Buffer>) => {
      const parts: Buffer[] = [];
      for await (const b of bytes) parts.push(b);
      return Buffer.concat(parts).toString();
    };
    expect(await c.fetchSnapshot('alpha', dest, { check })).toEqual({ epoch: 3, bytes: 14, checked: 'snapshot-bytes' });
    expect(await readFile(dest, 'utf8')).toBe('snapshot-bytes');
    await c.close();
  });

  it("throws the check's own error for a snapshot it refuses, and the transfer's when it broke, keeping no file", async () => {
    const c = client(siteB);
    const dest = join(dir, 'refused.snap');
    const refuse = async (bytes: AsyncIterable<Buffer>) => {
      for await (const _ of bytes) throw new Error('the snapshot is corrupt');
      return 0;
    };
    await expect(c.fetchSnapshot('alpha', dest, { check: refuse })).rejects.toThrow('the snapshot is corrupt');
    await expect(stat(dest)).rejects.toThrow();
    const readAll = async (bytes: AsyncIterable<Buffer>) => {
      for await (const _ of bytes);
      return 0;
    };
    const err = (await c.fetchSnapshot('midway', dest, { check: readAll }).catch((e: unknown) => e)) as PeerUnreachableError;
    expect(err).toBeInstanceOf(PeerUnreachableError);
    expect(err.message).toMatch(/broke off after 9 bytes/);
    await expect(stat(dest)).rejects.toThrow();
    await c.close();
  });

  it('asks a replica to pull now', async () => {
    const c = client(siteB);
    expect(await c.requestSync('alpha')).toEqual({ started: true });
    expect(seen).toContain('sync:b:alpha');
    await c.close();
  });

  it("serves the primary's inventory and certificates, and refuses malformed namespace and key ids", async () => {
    const c = client(siteB);
    expect(await c.inventory('alpha')).toEqual({ namespace: 'alpha' });
    expect(await c.certificate('alpha', 'with-cert')).toEqual({ contentType: 'application/octet-stream', data: Buffer.from('DER') });
    expect(await c.certificate('alpha', 'none')).toBeNull();
    await expect(c.certificate('alpha', 'odd')).rejects.toBeInstanceOf(PeerMessageInvalidError);
    const before = seen.length;
    for (const call of [() => c.inventory('.bad'), () => c.certificate('alpha', '.hidden'), () => c.certificate('alpha', 'a b'), () => c.certificate('a b', 'k')]) {
      const err = (await call().catch((e: unknown) => e)) as PeerRefusedError;
      expect(err).toBeInstanceOf(PeerRefusedError);
      expect(err.status).toBe(400);
      expect(err.remoteCode).toBe('NHR_ERR_PEER_MESSAGE_INVALID');
    }
    expect(seen.length).toBe(before);
    await c.close();
  });

  it("passes a refusal's code and epoch back, and leaves no file", async () => {
    const c = client(siteB);
    const dest = join(dir, 'beta.snap');
    const err = (await c.fetchSnapshot('beta', dest).catch((e: unknown) => e)) as PeerRefusedError;
    expect(err).toBeInstanceOf(PeerRefusedError);
    expect(err.remoteCode).toBe('NHR_ERR_ROLE_STALE_EPOCH');
    expect(err.epoch).toBe(7);
    await expect(stat(dest)).rejects.toThrow();
    await c.close();
  });

  it("passes the replica's change log to the change stream, and refuses a malformed one before the handler runs", async () => {
    const LOG = '6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f';
    const c = client(siteB);
    for (const log of [LOG, undefined]) {
      const lines: string[] = [];
      for await (const line of await c.changes('alpha', { epoch: 1, seq: 4 }, { idleTimeoutMs: 5000, log })) lines.push(line);
      expect(lines).toHaveLength(1);
    }
    expect(seen.slice(-2)).toEqual([`changes:b:alpha:1.4:${LOG}`, 'changes:b:alpha:1.4:null']);
    await c.close();
    // A replica older than log ids sends no `log` parameter; a malformed one is refused.
    const agent = new Agent({ connect: { ca: ca.certPem, cert: siteB.certPem, key: siteB.keyPem, servername: '127.0.0.1' } });
    const get = (q: string) => request(`https://127.0.0.1:${server.port}/peer/v1/namespaces/alpha/changes${q}`, { dispatcher: agent });
    const legacy = await get('?after=1.4');
    expect(legacy.statusCode).toBe(200);
    await legacy.body.text();
    expect(seen.at(-1)).toBe('changes:b:alpha:1.4:absent');
    const before = seen.length;
    for (const q of ['?after=1.4&log=bogus', `?after=1.4&log=${LOG.toUpperCase()}`, '?after=1.4&log=']) {
      const res = await get(q);
      expect(res.statusCode, q).toBe(400);
      expect(((await res.body.json()) as { error: { code: string; message: string } }).error).toEqual({
        code: 'NHR_ERR_PEER_MESSAGE_INVALID',
        message: 'log must be a change log id (a UUID) or none',
      });
    }
    expect(seen.length).toBe(before);
    await agent.close();
  });

  it('refuses a certificate of the group CA that is not a configured peer', async () => {
    const before = seen.length;
    const c = client(stranger);
    const err = (await c.status().catch((e: unknown) => e)) as PeerRefusedError;
    expect(err).toBeInstanceOf(PeerRefusedError);
    expect(err.status).toBe(403);
    expect(err.remoteCode).toBe('NHR_ERR_PEER_IDENTITY');
    expect(seen.length).toBe(before);
    await c.close();
  });

  it('refuses a client certificate from another CA at the handshake', async () => {
    const before = seen.length;
    const c = client(rogueB);
    await expect(c.status()).rejects.toBeInstanceOf(Error);
    expect(seen.length).toBe(before);
    await c.close();
  });

  it('refuses a server whose certificate names another site', async () => {
    const c = client(siteB, ca.certPem, 'not-a');
    await expect(c.status()).rejects.toBeInstanceOf(PeerIdentityError);
    await c.close();
  });

  it('refuses a server certificate not issued by the group CA', async () => {
    const other = await createCa({ commonName: 'unrelated' });
    const c = client(siteB, other.certPem);
    await expect(c.status()).rejects.toBeInstanceOf(PeerIdentityError);
    await c.close();
  });

  it('rejects malformed messages without acting on them', async () => {
    const before = seen.length;
    const c = client(siteB);
    for (const bad of [{ epoch: -1, primarySite: 'b' }, { epoch: 1 }, { epoch: 1, primarySite: 'b', extra: true }, { epoch: 1.5, primarySite: 'b' }]) {
      const err = (await c.announceEpoch('alpha', bad as never).catch((e: unknown) => e)) as PeerRefusedError;
      expect(err).toBeInstanceOf(PeerRefusedError);
      expect(err.status).toBe(400);
      expect(err.remoteCode).toBe('NHR_ERR_PEER_MESSAGE_INVALID');
    }
    const err = (await c.announceEpoch('.bad', { epoch: 1, primarySite: 'b' }).catch((e: unknown) => e)) as PeerRefusedError;
    expect(err.message).toMatch(/namespace is not a valid namespace id/);
    expect(seen.length).toBe(before);
    await c.close();
  });

  it("rejects a peer's answer that does not have the protocol's shape", async () => {
    statusAnswer = { site: 'a', version: '0.1.0', namespaces: [{ namespace: 'alpha', role: 'boss', epoch: 2, primarySite: 'a' }] };
    const c = client(siteB);
    const err = (await c.status().catch((e: unknown) => e)) as PeerMessageInvalidError;
    expect(err).toBeInstanceOf(PeerMessageInvalidError);
    expect(err.message).toMatch(/namespaces\.0\.role/);
    await c.close();
  });

  it("validates a peer's serving view (cross-site crypto): a well-formed one passes, each malformed field is named", async () => {
    const good = { site: 'a', nethsm: 'ok', gateway: true, namespaces: [{ namespace: 'alpha', role: 'replica', epoch: 2, primarySite: 'b', lagSeconds: 1.5 }] };
    const c = client(siteB);
    servingAnswer = good;
    expect(await c.serving()).toEqual(good);
    expect(seen).toContain('serving:b');
    const bad: [unknown, RegExp][] = [
      [{ ...good, nethsm: 'maybe' }, /GET \/serving: nethsm /],
      [{ ...good, gateway: 'yes' }, /GET \/serving: gateway /],
      [{ ...good, extra: 1 }, /GET \/serving: body|Unrecognized key/],
      [{ ...good, namespaces: [{ ...good.namespaces[0], lagSeconds: -1 }] }, /namespaces\.0\.lagSeconds/],
      [{ ...good, namespaces: [{ ...good.namespaces[0], lagSeconds: '3' }] }, /namespaces\.0\.lagSeconds/],
      [{ ...good, namespaces: [{ ...good.namespaces[0], role: 'boss' }] }, /namespaces\.0\.role/],
      [{ ...good, site: 'a b' }, /site is not a valid site name/],
    ];
    for (const [answer, message] of bad) {
      servingAnswer = answer;
      const err = (await c.serving().catch((e: unknown) => e)) as PeerMessageInvalidError;
      expect(err, JSON.stringify(answer)).toBeInstanceOf(PeerMessageInvalidError);
      expect(err.message).toMatch(message);
    }
    await c.close();
  });

  it('status(timeoutMs) gives up on a peer that never completes the handshake within that bound, not the connect timeout', async () => {
    // A listener that takes the TCP connection and never answers the TLS handshake (a black-holed peer).
    const net = await import('node:net');
    const sockets: import('node:net').Socket[] = [];
    const silent = net.createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as import('node:net').AddressInfo).port;
    const c = new PeerClient({ url: `https://127.0.0.1:${port}`, identity: { name: 'a' }, tls: { certPem: siteB.certPem, keyPem: siteB.keyPem, caPem: ca.certPem }, timeoutMs: 60_000 });
    try {
      const started = Date.now();
      await expect(c.status(300)).rejects.toMatchObject({ code: 'NHR_ERR_PEER_UNREACHABLE' });
      // Bounded by its own 300 ms, far below the connect timeout (10 s) and the client's 60 s.
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await c.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });

  it('cuts connections that never finish the TLS handshake, or never send a whole request', async () => {
    const short = new PeerServer({
      host: '127.0.0.1',
      port: 0,
      tls: { ...siteA, caPem: ca.certPem },
      peers: [{ name: 'b' }],
      handlers,
      handshakeTimeoutMs: 300,
      requestTimeoutMs: 500,
    });
    await short.start();
    try {
      for (const mode of ['silent', 'trickle'] as const) {
        const h = stalledHandshake(short.port, mode);
        try {
          await guard(h.closed, `a ${mode} handshake was never cut`);
        } finally {
          h.stop();
        }
      }
      // A configured peer, authenticated, that starts a request and never finishes it.
      const before = seen.length;
      const socket = tls.connect({ host: '127.0.0.1', port: short.port, ca: ca.certPem, cert: siteB.certPem, key: siteB.keyPem, servername: 'a' });
      socket.on('error', () => {});
      socket.resume(); // read to the end, so the server's close is seen
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.once('secureConnect', () => socket.write('POST /peer/v1/namespaces/alpha/sync HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n{'));
      try {
        await guard(closed, 'an unfinished request was never cut');
      } finally {
        socket.destroy();
      }
      expect(seen.length).toBe(before);
    } finally {
      await short.close();
    }
  });
});
