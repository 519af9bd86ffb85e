/**
 * Streaming under faults, two sites on loopback with real HTTPS: a partition (B's daemon down while A takes writes),
 * replica restarts mid-stream, an intent left open by a primary crash, envelopes for another site or key, a real
 * envelope replayed under another key id, old-epoch changes after a promote, and a search for key material where it must never be.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EnvelopeInvalidError, PeerStaleEpochError, RoleNotPrimaryError } from '../../src/errors.js';
import { capturingLogger } from '../../src/gateway/test-support.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import type { NetHsmClient, PrivateKey } from '../../src/nethsm/client.js';
import { StateStore } from '../../src/state/store.js';
import { applyChange, type ApplyDeps } from '../../src/stream/apply.js';
import { sealEnvelope, type Envelope } from '../../src/stream/envelope.js';
import { envelopeContext, type ChangeLine } from '../../src/stream/protocol.js';
import { caughtUp, diffInventories, eventually, importBody, inventory, streamReady } from './stream-helpers.js';

const NS = 'alpha';

async function compare(a: LabSite, b: LabSite): Promise<{ missing: string[]; extra: string[]; differ: string[] }> {
  const [pa, pb] = [a.nsAdmin(NS), b.client(`${NS}~replicator`, LAB_PASSPHRASES.replicator)];
  try {
    return diffInventories(await inventory(pa), await inventory(pb));
  } finally {
    await Promise.all([pa.close(), pb.close()]);
  }
}

/** A mix of changes: imports, tags, labels, certificates, moves and deletes under `prefix`. */
async function writes(gw: NetHsmClient, prefix: string, n: number, secrets?: PrivateKey[]): Promise<void> {
  for (let i = 0; i < n; i++) {
    const id = `${prefix}${i}`;
    const body = importBody('EC_P256', ['ECDSA_Signature']);
    secrets?.push(body);
    await gw.importKey(body, id);
    if (i % 2 === 0) await gw.addKeyTag(id, 'even');
    if (i % 3 === 0) await gw.setKeyLabel(id, `label ${i}`);
    if (i % 4 === 0) await gw.putCert(id, Buffer.from(`cert of ${id}`));
    if (i % 5 === 1) await gw.moveKey(id, `${id}m`);
    if (i % 5 === 2) await gw.deleteKey(id);
  }
}

function applyDeps(site: LabSite): ApplyDeps {
  const d = site.daemon!;
  const info = d.stream.transportKey!.publicInfo();
  return {
    site: site.name,
    store: d.ctx.store,
    client: (ns) => d.stream.client(ns),
    transportKey: () => ({ keyId: info.keyId, fingerprint: info.fingerprint, unwrap: (w) => d.stream.transportKey!.unwrap(w) }),
  };
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

describe('streaming under faults', () => {
  let lab: Lab;
  const logs = new Map<string, string[]>();
  const imported: PrivateKey[] = [];

  beforeAll(async () => {
    lab = await Lab.create({
      namespaces: [{ name: NS, primary: 'a' }],
      gateway: true,
      logger: (site) => {
        const { logger, lines } = capturingLogger();
        logs.set(site, lines);
        return logger;
      },
    });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    await lab.site('b').daemon!.syncer.sync(NS, { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('converges after a partition: B down while A takes writes, nothing missing, duplicated or extra', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    const gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    await writes(gw, 'pre', 5, imported);
    await caughtUp(a, b, NS);
    await b.stopDaemon();
    await writes(gw, 'part', 12, imported);
    await b.startDaemon();
    await writes(gw, 'post', 3, imported);
    await gw.close();
    await caughtUp(a, b, NS);
    expect(await compare(a, b)).toEqual({ missing: [], extra: [], differ: [] });
    // Each change was recorded once at B (the key of applied_changes), and in the order the log numbered them.
    const seqs = (b.daemon!.ctx.store.db.prepare(`SELECT seq FROM applied_changes WHERE namespace = '${NS}' ORDER BY applied_at, seq`).all() as { seq: number }[]).map((r) => r.seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(new Set(seqs).size).toBe(seqs.length);
  });

  it('converges when the replica restarts mid-stream while writes continue', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    const gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    const writer = writes(gw, 'crash', 20, imported);
    for (let i = 0; i < 3; i++) {
      const at = b.daemon!.ctx.store.positions.get(NS, 'a')?.seq ?? 0;
      await eventually(() => (b.daemon?.ctx.store.positions.get(NS, 'a')?.seq ?? 0) > at, 10_000, 'B applying changes');
      await b.stopDaemon();
      await new Promise((r) => setTimeout(r, 50));
      await b.startDaemon();
    }
    await writer;
    await gw.close();
    await caughtUp(a, b, NS);
    expect(await compare(a, b)).toEqual({ missing: [], extra: [], differ: [] });
  });

  it('settles an intent a primary crash left open, by asking the device', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    const gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'doomed');
    await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'kept');
    await gw.close();
    await caughtUp(a, b, NS);
    // The crash: A forwarded a delete (the NetHSM made it) and a label change (the NetHSM never got it), then died.
    await a.stopDaemon();
    const direct = a.nsAdmin(NS);
    await direct.deleteKey('doomed');
    await direct.close();
    const store = StateStore.inDir(a.stateDir).open();
    store.intents.open({ id: randomUUID(), namespace: NS, epoch: 1, kind: 'key-deleted', keyId: 'doomed', detail: {} });
    store.intents.open({ id: randomUUID(), namespace: NS, epoch: 1, kind: 'label-set', keyId: 'kept', detail: { label: 'never made' } });
    store.close();
    await a.startDaemon();
    expect(a.daemon!.ctx.store.intents.list()).toEqual([]);
    const last = a.daemon!.ctx.store.changelog.after(NS, 1, 0, 100_000).at(-1)!;
    expect(last).toMatchObject({ kind: 'key-deleted', keyId: 'doomed' });
    await caughtUp(a, b, NS);
    const rb = b.client(`${NS}~replicator`, LAB_PASSPHRASES.replicator);
    expect(await rb.listKeys()).not.toContain('doomed');
    expect((await rb.getKey('kept')).label).toBeUndefined();
    await rb.close();
    expect(await compare(a, b)).toEqual({ missing: [], extra: [], differ: [] });
  });

  it('refuses an envelope for another site or transport key, or sealed for another change, and changes nothing', async () => {
    const b = lab.site('b');
    const store = b.daemon!.ctx.store;
    const deps = applyDeps(b);
    const mine = b.daemon!.stream.transportKey!.publicInfo();
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const body = Buffer.from(JSON.stringify(importBody('EC_P256', ['ECDSA_Signature'])));
    const before = { pos: store.positions.get(NS, 'a'), applied: store.applied.count(NS) };
    const ref = randomUUID();
    const line = (envelope: Envelope): ChangeLine => ({
      type: 'change',
      // The primary's change log (the position's): a line of another log would be refused before its envelope is read.
      log: before.pos!.logId!,
      epoch: 1,
      seq: before.pos!.seq! + 1,
      at: Date.now(),
      ref,
      kind: 'key-imported',
      keyId: 'intruder',
      envelope,
    });
    const cases: [ReturnType<typeof sealEnvelope>, RegExp][] = [
      [sealEnvelope(body, { site: 'c', keyId: mine.keyId, publicKeyPem: mine.publicKeyPem }, envelopeContext({ namespace: NS, keyId: 'intruder', kind: 'key-imported', ref })), /addressed to site "c", not "b"/],
      [sealEnvelope(body, { site: 'b', keyId: mine.keyId, publicKeyPem: other }, envelopeContext({ namespace: NS, keyId: 'intruder', kind: 'key-imported', ref })), /sealed to transport key/],
      [sealEnvelope(body, { site: 'b', keyId: mine.keyId, publicKeyPem: mine.publicKeyPem }, envelopeContext({ namespace: 'other-ns', keyId: 'intruder', kind: 'key-imported', ref })), /failed authentication/],
    ];
    body.fill(0);
    for (const [env, message] of cases) {
      const err = await b.daemon!.ctx.applyLock(NS).run(() => applyChange(deps, NS, 'a', line(env))).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EnvelopeInvalidError);
      expect((err as Error).message).toMatch(message);
    }
    expect(store.positions.get(NS, 'a')).toMatchObject({ epoch: before.pos!.epoch, seq: before.pos!.seq });
    expect(store.applied.count(NS)).toBe(before.applied);
    const rb = b.client(`${NS}~replicator`, LAB_PASSPHRASES.replicator);
    expect(await rb.listKeys()).not.toContain('intruder');
    await rb.close();
  });

  it('refuses a real envelope replayed under a new key id, and imports nothing', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    const gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    const body = importBody('EC_P256', ['ECDSA_Signature']);
    imported.push(body);
    await gw.importKey(body, 'genuine');
    await gw.close();
    await caughtUp(a, b, NS);
    // What an authenticated peer can replay: the envelope A really sealed for B, from A's change log.
    const logged = a.daemon!.ctx.store.changelog.after(NS, 1, 0, 100_000).find((c) => c.kind === 'key-imported' && c.keyId === 'genuine')!;
    const envelope = logged.envelopes!['b'] as Envelope;
    const store = b.daemon!.ctx.store;
    const before = { pos: store.positions.get(NS, 'a'), applied: store.applied.count(NS) };
    // In the primary's change log (the position's): a line of another log would be refused before its envelope is read.
    const replay: ChangeLine = {
      type: 'change',
      epoch: 1,
      seq: before.pos!.seq! + 1,
      log: before.pos!.logId!,
      at: Date.now(),
      ref: logged.ref,
      kind: 'key-imported',
      keyId: 'replayed',
      envelope,
    };
    const err = await b.daemon!.ctx.applyLock(NS).run(() => applyChange(applyDeps(b), NS, 'a', replay)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EnvelopeInvalidError);
    expect((err as Error).message).toMatch(/failed authentication/);
    expect(store.positions.get(NS, 'a')).toMatchObject({ epoch: before.pos!.epoch, seq: before.pos!.seq });
    expect(store.applied.count(NS)).toBe(before.applied);
    const rb = b.client(`${NS}~replicator`, LAB_PASSPHRASES.replicator);
    const keys = await rb.listKeys();
    await rb.close();
    expect(keys).toContain('genuine');
    expect(keys).not.toContain('replayed');
  });

  it('leaves no key material in the logs, the state databases or the work directories', async () => {
    expect(imported.length).toBeGreaterThan(30);
    const needles: Buffer[] = [];
    for (const body of imported) {
      for (const v of Object.values(body.private ?? {})) {
        if (typeof v !== 'string' || v.length < 16) continue;
        needles.push(Buffer.from(v), Buffer.from(v, 'base64'));
      }
    }
    const haystacks: [string, Buffer][] = [];
    for (const s of ['a', 'b']) {
      for (const f of filesUnder(lab.site(s).stateDir)) if (statSync(f).size > 0) haystacks.push([f, readFileSync(f)]);
      haystacks.push([`log of ${s}`, Buffer.from((logs.get(s) ?? []).join(''))]);
    }
    expect(haystacks.some(([f]) => f.endsWith('state.db'))).toBe(true);
    expect(haystacks.find(([f]) => f === 'log of a')![1].length).toBeGreaterThan(1000);
    const found = haystacks.filter(([, hay]) => needles.some((n) => hay.includes(n))).map(([f]) => f);
    expect(found).toEqual([]);
  });

  it('refuses old-epoch changes after a promote, at both sites', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    const oldHead = a.daemon!.ctx.store.changelog.head(NS, 1);
    await b.daemon!.failover.promote(NS, { force: true, actor: 'test' });
    expect(b.daemon!.ctx.store.roles.require(NS)).toMatchObject({ role: 'primary', epoch: 2 });
    await eventually(() => a.daemon!.ctx.store.roles.require(NS).epoch === 2, 30_000, 'A to learn epoch 2');
    // A no longer serves its epoch-1 log to anyone.
    expect(() => a.daemon!.stream.feed.open('b', NS, oldHead, new AbortController().signal)).toThrow(RoleNotPrimaryError);
    // B, now primary, applies nothing from A's old epoch.
    const stale: ChangeLine = { type: 'change', epoch: 1, seq: oldHead.seq + 1, at: Date.now(), ref: randomUUID(), kind: 'key-deleted', keyId: 'kept' };
    const err = await applyChange(applyDeps(b), NS, 'a', stale).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerStaleEpochError);
    expect((err as Error).message).toMatch(/namespace alpha is primary here/);
    const rb = b.nsOperator(NS);
    expect(await rb.listKeys()).toContain('kept');
    await rb.close();
  });
});
