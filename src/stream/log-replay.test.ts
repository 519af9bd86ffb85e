import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceBarrier, type WriteReplay } from '../concurrency/barrier.js';
import { StreamApplyFailedError, StreamReplayRefusedError } from '../errors.js';
import { GatewayServer } from '../gateway/server.js';
import { httpsCaller } from '../gateway/test-support.js';
import { silentLogger } from '../log.js';
import { NetHsmClient } from '../nethsm/client.js';
import { PeerClient } from '../peer/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { StateStore } from '../state/store.js';
import { createSelfSignedCertificate } from '../tls/index.js';
import { ChangeCapture } from './capture.js';
import { ChangeFeed } from './feed.js';
import { LogReplay } from './log-replay.js';
import { Recipients } from './recipients.js';
import { parseTransportPublicKey, TransportKey } from './transport-key.js';

/** An EC P-256 import body (the NetHSM's PrivateKey JSON) with a fresh key. */
function importBody(): { type: string; mechanisms: string[]; private: { data: string } } {
  const d = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }).d!;
  return { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: Buffer.from(d, 'base64url').toString('base64') } };
}

describe('log replay: racing gateway writes re-applied from the change log', () => {
  let sim: ProvisionedSimulator;
  let dir: string;
  let store: StateStore;
  let root: NetHsmClient;
  let nsAdmin: NetHsmClient;
  let tk: TransportKey;
  let capture: ChangeCapture;
  let gw: GatewayServer;
  let via: ReturnType<typeof httpsCaller>;
  let replay: LogReplay;
  const barrier = new DeviceBarrier();
  /** The daemon seals to its own key while a tracker is open; a test turns that off to log an import without it. */
  let ownSealing = true;
  /** Makes the own seal fail (a transport key that cannot be read). */
  let ownFails = false;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha'] });
    root = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
    nsAdmin = root.withAuth(sim.nsUsers.alpha!.admin.username, sim.nsUsers.alpha!.admin.password);
    tk = new TransportKey({ site: 'a', admin: root.withAuth(sim.users.admin.username, sim.users.admin.password), operator: root.withAuth(sim.users.operator.username, sim.users.operator.password), bits: 2048 });
    await tk.ensure();
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-log-replay-'));
    store = StateStore.inDir(dir).open();
    store.roles.insert({ namespace: 'alpha', role: 'primary', epoch: 1, primarySite: 'a' });
    // Site b's transport key is on record, so its client is never asked for it.
    const peerKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    store.transportKeys.save({ site: 'b', keyId: 'nhrtransport', publicKeyPem: peerKey, fingerprint: parseTransportPublicKey(peerKey).fingerprint });
    const cert = await createSelfSignedCertificate();
    const peer = new PeerClient({ url: 'https://127.0.0.1:9', identity: { name: 'b' }, tls: { certPem: cert.certPem, keyPem: cert.keyPem, caPem: cert.certPem } });
    capture = new ChangeCapture({
      store,
      log: silentLogger,
      recipients: new Recipients({ store, peers: new Map([['b', peer]]), log: silentLogger }),
      primaryEpoch: () => 1,
      committed: () => undefined,
      resolve: async () => 'unknown',
      own: {
        site: 'a',
        recipient: () => {
          if (ownFails) throw new Error('own transport key unreadable');
          if (!ownSealing || !barrier.tracking) return undefined;
          const info = tk.publicInfo();
          return { keyId: info.keyId, publicKeyPem: info.publicKeyPem };
        },
      },
    });
    gw = new GatewayServer({
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { caPem: sim.certPem } },
      roles: { roleOf: (ns: string) => (ns === 'alpha' ? ({ role: 'primary', epoch: 1, primarySite: 'a' } as const) : undefined) },
      gate: barrier,
      observer: capture,
    });
    await gw.start();
    via = httpsCaller(gw.url, cert.certPem);
    const info = tk.publicInfo();
    replay = new LogReplay({
      store,
      site: 'a',
      transportKey: () => ({ keyId: info.keyId, fingerprint: info.fingerprint, unwrap: (w) => tk.unwrap(w) }),
      client: () => nsAdmin,
    });
  });

  afterAll(async () => {
    await via?.close();
    await gw?.close();
    capture?.close();
    await root?.close();
    store?.close();
    await sim?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const auth = () => sim.nsUsers.alpha!.admin;
  const head = () => store.changelog.head('alpha', 1).seq;
  /** Runs `writes` with a write tracker open (a merge-restore between its mark and its hold); returns each write's ticket. */
  async function tracked(writes: () => Promise<void>): Promise<WriteReplay[]> {
    const tracker = barrier.trackWrites();
    try {
      await writes();
      return tracker.writes().map((w) => w.ticket.replay);
    } finally {
      tracker.close();
    }
  }
  async function call(method: string, p: string, json?: unknown, expected?: number): Promise<number> {
    const r = await via.call(method, p, { auth: auth(), ...(json !== undefined ? { json } : {}) });
    if (expected !== undefined) expect(r.status, `${method} ${p}: ${r.body}`).toBe(expected);
    return r.status;
  }
  /** What the namespace holds, as the API shows it. */
  async function inventory(): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    for (const id of (await nsAdmin.listKeys()).sort()) {
      const cert = await nsAdmin.getCert(id).catch(() => null);
      out[id] = { key: await nsAdmin.getKey(id), cert: cert?.data.toString('base64') ?? null };
    }
    return out;
  }

  it('sets gateway tickets: log for a committed label and a sealed import, none for a 4xx, unknown otherwise', async () => {
    await call('PUT', '/keys/t1', importBody(), 204);
    const from = head() + 1;
    const tickets = await tracked(async () => {
      await call('PUT', '/keys/t1/label', { label: 'x' }, 204);
      await call('DELETE', '/keys/no-such-key', undefined, 404);
      await call('PUT', '/keys/t2', importBody(), 204);
      await call('POST', '/keys/generate', { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'gen1' }, 201);
      ownSealing = false;
      await call('PUT', '/keys/t3', importBody(), 204);
      ownSealing = true;
    });
    expect(tickets).toEqual([
      { kind: 'log', namespace: 'alpha', seq: from },
      { kind: 'none' },
      { kind: 'log', namespace: 'alpha', seq: from + 1 },
      { kind: 'unknown' },
      { kind: 'unknown' },
    ]);
    // The import outside a tracker has no own envelope: nothing of this site's is kept when no merge-restore needs it.
    await call('PUT', '/keys/t4', importBody(), 204);
    const rows = store.changelog.after('alpha', 1, from - 1);
    expect(rows.map((r) => [r.kind, r.keyId, Object.keys(r.envelopes ?? {}).sort()])).toEqual([
      ['label-set', 't1', []],
      ['key-imported', 't2', ['a', 'b']],
      ['catchup', undefined, []], // a generate inside the NetHSM: its id is not in the log
      ['key-imported', 't3', ['b']],
      ['key-imported', 't4', ['b']],
    ]);
  });

  it('lets an import through when its own seal fails, with the ticket left unknown', async () => {
    const from = head() + 1;
    ownFails = true;
    let tickets: WriteReplay[];
    try {
      tickets = await tracked(() => call('PUT', '/keys/sealfail', importBody(), 204).then(() => undefined));
    } finally {
      ownFails = false;
    }
    expect(tickets).toEqual([{ kind: 'unknown' }]);
    expect((await nsAdmin.getKey('sealfail')).type).toBe('EC_P256');
    expect(Object.keys(store.changelog.get('alpha', from)!.envelopes ?? {})).toEqual(['b']);
  });

  it('refuses a catch-up and an import without an own envelope in check(), and replay() throws the same', async () => {
    const base = head();
    await tracked(() => call('POST', '/keys/generate', { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'gen2' }, 201).then(() => undefined));
    expect(replay.check('alpha', base + 1)).toMatch(/catch-up/);
    await expect(replay.replay('alpha', base + 1)).rejects.toBeInstanceOf(StreamReplayRefusedError);
    const next = head() + 1;
    await call('PUT', '/keys/t5', importBody(), 204); // no tracker: no own envelope
    expect(replay.check('alpha', next)).toMatch(/imported without an envelope for site a/);
    expect(replay.check('alpha', head() + 1)).toBeUndefined(); // nothing to replay
    expect(replay.check('alpha', 0)).toMatch(/positive integer/);
  });

  it('restores a device reset to an earlier backup, and converges again on a device that has everything', async () => {
    await call('PUT', '/keys/A', importBody(), 204);
    await call('PUT', '/keys/keep', importBody(), 204);
    const backup = path.join(dir, 'before.bin');
    await root.withAuth(sim.users.backup.username, sim.users.backup.password).backupToFile(backup);
    const from = head() + 1;
    const tickets = await tracked(async () => {
      await call('POST', '/keys/A/move', { newId: 'B' }, 200);
      await call('PUT', '/keys/A', importBody(), 204); // A again, after the move
      await call('PUT', '/keys/B/restrictions/tags/t9', undefined, 204);
      await via.call('PUT', '/keys/B/cert', { auth: auth(), headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from('cert-bytes') });
      await call('PUT', '/keys/K', importBody(), 204);
      await call('PUT', '/keys/K/label', { label: 'first' }, 204);
      await call('DELETE', '/keys/K', undefined, 204);
      await call('PUT', '/keys/K', importBody(), 204); // K again, other key material
      await call('PUT', '/keys/keep/label', { label: 'kept' }, 204);
    });
    expect(tickets.every((t) => t.kind === 'log')).toBe(true);
    const want = await inventory();
    expect(Object.keys(want)).toEqual(expect.arrayContaining(['A', 'B', 'K', 'keep']));

    // The merge-restore put the device back as it was at the backup: replay makes every change again.
    await root.withAuth(sim.users.admin.username, sim.users.admin.password).restore(backup, {});
    expect(await inventory()).not.toEqual(want);
    expect(replay.check('alpha', from)).toBeUndefined();
    expect(await replay.replay('alpha', from)).toBeGreaterThanOrEqual(8);
    expect(await inventory()).toEqual(want);

    // A device that already has all of it (a crash after the replay, the replay run again) ends in the same state.
    await replay.replay('alpha', from);
    expect(await inventory()).toEqual(want);
    expect(store.positions.get('alpha', 'a')).toBeUndefined(); // no replica position recorded
  });

  // A replay after a merge-restore's hold reads the log up to the head when the hold restored: a change logged after
  // it (admitted while the replay runs) may be in flight on its key, and is not the replay's to make.
  it('reads no change past toSeq, and span names the keys of the changes up to it (moves\' new ids too)', async () => {
    await call('PUT', '/keys/S1', importBody(), 204);
    const backup = path.join(dir, 'before-span.bin');
    await root.withAuth(sim.users.backup.username, sim.users.backup.password).backupToFile(backup);
    const from = head() + 1;
    await tracked(async () => {
      await call('PUT', '/keys/S1/label', { label: 'in-span' }, 204);
      await call('PUT', '/keys/S2', importBody(), 204);
      await call('POST', '/keys/S1/move', { newId: 'S3' }, 200);
    });
    const toSeq = head();
    // Logged after the hold: a key the span does not name.
    await tracked(() => call('PUT', '/keys/S4', importBody(), 204).then(() => undefined));
    expect(replay.span('alpha', from, { toSeq })).toEqual({ toSeq, keys: new Set(['alpha/S1', 'alpha/S2', 'alpha/S3']) });
    expect(replay.span('alpha', from)?.keys).toContain('alpha/S4');
    await root.withAuth(sim.users.admin.username, sim.users.admin.password).restore(backup, {});
    await replay.replay('alpha', from, { toSeq });
    const keys = await nsAdmin.listKeys();
    expect(keys).toEqual(expect.arrayContaining(['S2', 'S3']));
    expect(keys).not.toContain('S1');
    // Without toSeq it would have imported S4 as well.
    expect(keys).not.toContain('S4');
    expect(replay.check('alpha', from, { toSeq: -1 })).toMatch(/to-seq/);
  });

  // On a device past these moves, replay could not tell which copy of an id it sees: it would re-make a moved key's
  // old id beside it, or delete the only copy of a moved key (a key a move made cannot be made again).
  it('refuses suffixes where a move reuses an id that other changes of the suffix make, remove or change', async () => {
    let from = head() + 1;
    await tracked(async () => {
      await call('PUT', '/keys/M', importBody(), 204);
      await call('POST', '/keys/M/move', { newId: 'N' }, 200);
    });
    expect(replay.check('alpha', from)).toMatch(/change \d+ \(key-moved of M\): an earlier change of the suffix makes or removes M/);
    expect(replay.check('alpha', from + 1)).toBeUndefined();

    await call('PUT', '/keys/A2', importBody(), 204);
    from = head() + 1;
    await tracked(async () => {
      await call('PUT', '/keys/X', importBody(), 204);
      await call('DELETE', '/keys/X', undefined, 204);
      await call('POST', '/keys/A2/move', { newId: 'X' }, 200);
    });
    expect(replay.check('alpha', from)).toMatch(/an earlier change of the suffix names X/);

    await call('PUT', '/keys/C', importBody(), 204);
    from = head() + 1;
    await tracked(async () => {
      await call('PUT', '/keys/C/label', { label: 'old' }, 204);
      await call('POST', '/keys/C/move', { newId: 'D' }, 200);
      await call('PUT', '/keys/C', importBody(), 204);
    });
    expect(replay.check('alpha', from)).toMatch(/C is changed before the move and made again after it/);
    expect(replay.check('alpha', from + 1)).toBeUndefined(); // the brief's case: move, then the old id made again
  });

  // The caller holds the device barrier for the replay (shared right after a merge-restore's hold; exclusive in the
  // retries, a fence, a demote) only until replay() settles. A change of another key still on its way to the NetHSM
  // when one fails would land outside any hold (under a restore, or after a fence's backup), and idle workers took
  // further chains meanwhile: replay() settles only once every change it started has been answered.
  it('settles only once no change it started is still in flight when one of them fails', async () => {
    await call('PUT', '/keys/F1', importBody(), 204);
    await call('PUT', '/keys/F2', importBody(), 204);
    const from = head() + 1;
    await call('PUT', '/keys/F1/label', { label: 'gone' }, 204);
    await call('PUT', '/keys/F2/label', { label: 'slow' }, 204);
    const toSeq = head();
    // Removed around the log: the replay finds F1 missing with nothing later removing it, and fails on it.
    await nsAdmin.deleteKey('F1');
    let failed!: () => void;
    const f1Failed = new Promise<void>((resolve) => (failed = resolve));
    // The real client, counting its label calls not answered yet and telling when F1's fails (everything after that
    // failure happens in memory: no more I/O for F1's chain).
    let inFlight = 0;
    const observed = new Proxy(nsAdmin, {
      get(target, prop) {
        if (prop === 'setKeyLabel') {
          return async (id: string, label: string) => {
            inFlight++;
            try {
              await target.setKeyLabel(id, label);
            } catch (err) {
              if (id === 'F1') failed();
              throw err;
            } finally {
              inFlight--;
            }
          };
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const info = tk.publicInfo();
    const r = new LogReplay({ store, site: 'a', transportKey: () => ({ keyId: info.keyId, fingerprint: info.fingerprint, unwrap: (w) => tk.unwrap(w) }), client: () => observed });
    // F2's label call waits at the NetHSM until released.
    const hold = sim.hold({ method: 'PUT', path: /^\/api\/v1\/keys\/F2\/label$/ });
    let inFlightAtEnd: number | undefined;
    const settled = r.replay('alpha', from, { toSeq }).then(
      () => undefined,
      (err: unknown) => {
        inFlightAtEnd = inFlight;
        return err;
      },
    );
    try {
      await hold.waitFor(1);
      await f1Failed;
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      hold.close();
    }
    expect(await settled).toBeInstanceOf(StreamApplyFailedError);
    expect(inFlightAtEnd, 'device calls of the replay still in flight when replay() settled').toBe(0);
  });

  it('never sends a peer the own envelope, and drops own envelopes on request', async () => {
    const from = head() + 1;
    await tracked(() => call('PUT', '/keys/P', importBody(), 204).then(() => undefined));
    expect(Object.keys(store.changelog.get('alpha', from)!.envelopes ?? {}).sort()).toEqual(['a', 'b']);
    const feed = new ChangeFeed({ site: 'a', store, heartbeatIntervalMs: 60_000, log: silentLogger });
    const abort = new AbortController();
    const lines: string[] = [];
    for await (const line of feed.open('b', 'alpha', { epoch: 1, seq: from - 1 }, abort.signal, store.changelog.logId('alpha'))) {
      lines.push(line);
      abort.abort();
    }
    const sent = JSON.parse(lines[0]!) as { kind: string; envelope: { site: string } };
    expect(sent).toMatchObject({ kind: 'key-imported', keyId: 'P', envelope: { site: 'b' } });
    expect(lines[0]).not.toMatch(/"site":"a"/);

    expect(replay.check('alpha', from)).toBeUndefined();
    expect(await replay.dropOwnEnvelopes()).toBeGreaterThan(0);
    expect(Object.keys(store.changelog.get('alpha', from)!.envelopes ?? {})).toEqual(['b']);
    expect(replay.check('alpha', from)).toMatch(/without an envelope for site a/);
    expect(await replay.dropOwnEnvelopes()).toBe(0);
  });
});
