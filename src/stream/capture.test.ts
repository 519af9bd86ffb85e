import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { MutationStart } from '../gateway/observer.js';
import { silentLogger } from '../log.js';
import type { Intent } from '../state/intents-repo.js';
import { StateStore } from '../state/store.js';
import { ChangeCapture, lockedKeys, planChange } from './capture.js';
import { KeyLocks } from './key-locks.js';
import { Recipients } from './recipients.js';

const m = (operation: string, over: Partial<MutationStart> = {}): MutationStart => {
  const [method, template] = operation.split(' ');
  return { namespace: 'ns', method: method!, path: template!.replace('{id}', 'k1').replace('{tag}', 't1'), operation, keyId: 'k1', user: 'ns~admin', ...over };
};
const json = (v: unknown) => ({ contentType: 'application/json', bytes: Buffer.from(JSON.stringify(v)), json: v });

describe('planChange', () => {
  it('maps each key mutation to its change', () => {
    const body = json({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: 'AA==' } });
    expect(planChange(m('PUT /keys/{id}', { body }))).toMatchObject({ kind: 'key-imported', keyId: 'k1', sealBody: body.bytes });
    expect(planChange(m('POST /keys', { keyId: undefined, body }))).toMatchObject({ kind: 'key-imported', detail: {} });
    expect(planChange(m('DELETE /keys/{id}'))).toEqual({ kind: 'key-deleted', keyId: 'k1', detail: {} });
    expect(planChange(m('POST /keys/{id}/move', { body: json({ newId: 'k2' }) }))).toEqual({ kind: 'key-moved', keyId: 'k1', detail: { newId: 'k2' }, alsoLocks: ['k2'] });
    expect(planChange(m('PUT /keys/{id}/cert', { body: { contentType: 'application/octet-stream', bytes: Buffer.from('abc') } }))).toEqual({
      kind: 'cert-set',
      keyId: 'k1',
      detail: { contentType: 'application/octet-stream', data: 'YWJj' },
    });
    expect(planChange(m('DELETE /keys/{id}/cert'))).toMatchObject({ kind: 'cert-removed' });
    expect(planChange(m('PUT /keys/{id}/restrictions/tags/{tag}'))).toMatchObject({ kind: 'tag-added', detail: { tag: 't1' } });
    expect(planChange(m('DELETE /keys/{id}/restrictions/tags/{tag}'))).toMatchObject({ kind: 'tag-removed', detail: { tag: 't1' } });
    expect(planChange(m('PUT /keys/{id}/label', { body: json({ label: 'x' }) }))).toMatchObject({ kind: 'label-set', detail: { label: 'x' } });
    expect(planChange(m('DELETE /keys/{id}/label'))).toMatchObject({ kind: 'label-removed' });
  });

  it('turns what the API cannot carry into a catch-up', () => {
    expect(planChange(m('POST /keys/generate', { keyId: undefined }))).toMatchObject({ kind: 'catchup', detail: { reason: /generated inside/ } });
    expect(planChange(m('PUT /keys/{id}', { body: { contentType: 'multipart/form-data; boundary=x', bytes: Buffer.from('--x') } }))).toMatchObject({ kind: 'catchup' });
    expect(planChange(m('POST /users', { keyId: undefined, path: '/users' }))).toMatchObject({ kind: 'catchup', detail: { reason: /user change/ } });
    expect(planChange(m('POST /keys/{id}/move', { body: json({ newId: '../x' }) }))).toMatchObject({ kind: 'catchup' });
    expect(planChange(m('PUT /keys/{id}/label', { body: undefined }))).toMatchObject({ kind: 'catchup' });
    expect(planChange(m('PATCH /keys/{id}/frobnicate'))).toMatchObject({ kind: 'catchup', detail: { reason: /does not carry/ } });
  });
});

describe('KeyLocks', () => {
  it('serialises holders of one key and lets other keys through', async () => {
    const locks = new KeyLocks();
    const order: string[] = [];
    const r1 = await locks.acquire(['ns/a']);
    const waiting = locks.acquire(['ns/a', 'ns/b']).then((r) => (order.push('second'), r));
    const other = await locks.acquire(['ns/c']);
    order.push('other');
    r1();
    r1();
    (await waiting)();
    other();
    expect(order).toEqual(['other', 'second']);
    expect(locks.size).toBe(0);
  });

  it('lets a waiter leave the queue on abort without freeing the key early or letting the next one jump ahead', async () => {
    const locks = new KeyLocks();
    const order: string[] = [];
    const first = await locks.acquire(['ns/a']);
    const leaving = new AbortController();
    const left = locks.acquire(['ns/b', 'ns/a'], leaving.signal);
    const third = locks.acquire(['ns/a']).then((r) => (order.push('third'), r));
    await new Promise((r) => setImmediate(r));
    expect(locks.waiting).toBe(2);
    leaving.abort(new Error('client gone'));
    await expect(left).rejects.toThrow('client gone');
    // ns/b, which the leaver held while it waited for ns/a, is free again; ns/a is still held by the first.
    expect(locks.tryAcquire(['ns/a'])).toBeUndefined();
    const b = locks.tryAcquire(['ns/b']);
    expect(b).toBeDefined();
    b!();
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([]);
    first();
    (await third)();
    expect(order).toEqual(['third']);
    expect(locks.waiting).toBe(0);
    expect(locks.size).toBe(0);
  });

  it('takes free keys at once with tryAcquire and refuses, holding nothing, when one is busy', async () => {
    const locks = new KeyLocks();
    const a = locks.tryAcquire(['ns/a', 'ns/a']);
    expect(a).toBeDefined();
    expect(locks.tryAcquire(['ns/b', 'ns/a'])).toBeUndefined();
    expect(locks.size).toBe(1);
    const waiter = locks.acquire(['ns/a']);
    a!();
    (await waiter)();
    expect(locks.size).toBe(0);
  });
});

describe('ChangeCapture', () => {
  it('commits an intent once when end() records it while resolveOpen works through a list read before', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nhr-capture-'));
    let clock = 1_000;
    const store = StateStore.inDir(dir, { now: () => clock++ }).open();
    try {
      store.roles.insert({ namespace: 'ns', role: 'primary', epoch: 1, primarySite: 'a' });
      // Left open by a crash; older than the mutation below, so resolveOpen reaches it first.
      store.intents.open({ id: 'left-by-a-crash', namespace: 'ns', epoch: 1, kind: 'key-deleted', keyId: 'old', detail: {} });
      let releaseLeftover!: () => void;
      const leftoverAsked = new Promise<void>((r) => (releaseLeftover = r));
      const capture = new ChangeCapture({
        store,
        log: silentLogger,
        recipients: new Recipients({ store, peers: new Map(), log: silentLogger }),
        primaryEpoch: () => 1,
        committed: () => undefined,
        // The device is slow to answer about the leftover; the mutation in flight did take effect.
        resolve: async (i: Intent) => (i.id === 'left-by-a-crash' ? (await leftoverAsked, 'drop') : 'commit'),
      });
      const id = await capture.begin(m('DELETE /keys/{id}'));
      const settling = capture.resolveOpen(); // lists both intents, then waits for the device about the leftover
      await capture.end(id, { status: 204 });
      releaseLeftover();
      expect(await settling).toBe(0);
      expect(store.changelog.after('ns', 1, 0).map((c) => [c.seq, c.kind, c.keyId, c.ref])).toEqual([[1, 'key-deleted', 'k1', id]]);
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("resolves end() with what it recorded: the change and whether the log can re-apply it, or a drop, or unknown", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nhr-capture-'));
    const store = StateStore.inDir(dir).open();
    try {
      store.roles.insert({ namespace: 'ns', role: 'primary', epoch: 1, primarySite: 'a' });
      let verdict: 'commit' | 'drop' | 'unknown' = 'drop';
      const capture = new ChangeCapture({
        store,
        log: silentLogger,
        recipients: new Recipients({ store, peers: new Map(), log: silentLogger }),
        primaryEpoch: () => 1,
        committed: () => undefined,
        resolve: async () => verdict,
        own: { site: 'a', recipient: () => undefined },
      });
      const label = (k: string) => m('PUT /keys/{id}/label', { keyId: k, path: `/keys/${k}/label`, body: json({ label: 'x' }) });
      expect(await capture.end(await capture.begin(label('k1')), { status: 204 })).toEqual({ recorded: 'change', namespace: 'ns', seq: 1, replayable: true });
      expect(await capture.end(await capture.begin(label('k2')), { status: 404 })).toEqual({ recorded: 'dropped' });
      expect(await capture.end(await capture.begin(label('k3')), { status: 0 })).toEqual({ recorded: 'dropped' });
      verdict = 'commit';
      expect(await capture.end(await capture.begin(label('k4')), { status: 0 })).toEqual({ recorded: 'change', namespace: 'ns', seq: 2, replayable: true });
      verdict = 'unknown';
      expect(await capture.end(await capture.begin(label('k5')), { status: 0 })).toEqual({ recorded: 'unknown' });
      // An import without an envelope to this site, and a catch-up: committed, but the log cannot re-apply them.
      const body = json({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: 'AA==' } });
      expect(await capture.end(await capture.begin(m('PUT /keys/{id}', { keyId: 'k6', path: '/keys/k6', body })), { status: 204 })).toEqual({
        recorded: 'change',
        namespace: 'ns',
        seq: 3,
        replayable: false,
      });
      expect(await capture.end(await capture.begin(m('POST /keys/generate', { keyId: undefined, path: '/keys/generate' })), { status: 201 })).toMatchObject({
        recorded: 'change',
        replayable: false,
      });
      expect(await capture.end('no-such-intent', { status: 204 })).toEqual({ recorded: 'unknown' });
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('makes the certificate table forget a key before its certificate mutation is forwarded and again at its commit', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nhr-capture-'));
    const store = StateStore.inDir(dir).open();
    try {
      store.roles.insert({ namespace: 'ns', role: 'primary', epoch: 1, primarySite: 'a' });
      const capture = new ChangeCapture({
        store,
        log: silentLogger,
        recipients: new Recipients({ store, peers: new Map(), log: silentLogger }),
        primaryEpoch: () => 1,
        committed: () => undefined,
        resolve: async () => 'commit',
      });
      const known = () => store.keyCerts.page('ns', '', 10).map((r) => r.id);
      const learn = (...ids: string[]) => store.keyCerts.learn('ns', ids.map((id) => ({ id, cert: '', certType: '', mark: store.keyCerts.mark() })));
      learn('k1', 'k2');
      const cert = await capture.begin(m('PUT /keys/{id}/cert', { body: { contentType: 'application/octet-stream', bytes: Buffer.from('abc') } }));
      expect(known()).toEqual(['k2']); // durable before the NetHSM sees the PUT
      learn('k1'); // a read that raced the PUT and saw the old state
      await capture.end(cert, { status: 204 });
      expect(known()).toEqual(['k2']);
      const tag = await capture.begin(m('PUT /keys/{id}/restrictions/tags/{tag}', { keyId: 'k2', path: '/keys/k2/restrictions/tags/t1' }));
      await capture.end(tag, { status: 204 });
      expect(known()).toEqual(['k2']); // a tag change leaves the certificate alone
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes the key locks before the barrier (lockKeys) and, inside it, never waits for one: a busy key is refused', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nhr-capture-'));
    const store = StateStore.inDir(dir).open();
    try {
      store.roles.insert({ namespace: 'ns', role: 'primary', epoch: 1, primarySite: 'a' });
      const capture = new ChangeCapture({
        store,
        log: silentLogger,
        recipients: new Recipients({ store, peers: new Map(), log: silentLogger }),
        primaryEpoch: () => 1,
        committed: () => undefined,
        resolve: async () => 'commit',
      });
      const move = m('POST /keys/{id}/move', { body: json({ newId: 'k2' }) });
      const held = await capture.lockKeys(move);
      // A write queued behind it waits (outside the barrier) for both keys of the move.
      const leaving = new AbortController();
      const queued = capture.lockKeys(m('DELETE /keys/{id}', { keyId: 'k2', path: '/keys/k2' }), leaving.signal);
      await new Promise((r) => setImmediate(r));
      expect(capture.waitingForKeys).toBe(1);
      // Admitted to the barrier without its keys held (a decision changed after admission): refused, not waited for.
      await expect(capture.begin(m('PUT /keys/{id}/label', { body: json({ label: 'x' }) }), { inBarrier: true })).rejects.toThrow(/key k1 is in flight/);
      const id = await capture.begin(move, { held, inBarrier: true });
      held.release(); // taken over by begin: the keys stay locked until end
      expect(capture.waitingForKeys).toBe(1);
      leaving.abort(new Error('client gone'));
      await expect(queued).rejects.toThrow('client gone');
      expect(capture.waitingForKeys).toBe(0);
      // A fresh key (a generate's substitute without an id of its own) is free: taken at once inside the barrier.
      const fresh = await capture.begin(m('PUT /keys/{id}/label', { keyId: 'fresh', path: '/keys/fresh/label', body: json({ label: 'y' }) }), { inBarrier: true });
      await capture.end(fresh, { status: 204 });
      await capture.end(id, { status: 204 });
      const after = await capture.lockKeys(m('DELETE /keys/{id}', { keyId: 'k2', path: '/keys/k2' }));
      after.release();
      expect(store.changelog.after('ns', 1, 0).map((c) => [c.kind, c.keyId])).toEqual([
        ['label-set', 'fresh'],
        ['key-moved', 'k1'],
      ]);
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("locks the id a generate asks for, so a replicated generate's substitute finds its key already held", () => {
    const gen = (id: unknown) => m('POST /keys/generate', { keyId: undefined, path: '/keys/generate', body: json({ type: 'EC_P256', id }) });
    expect(lockedKeys(gen('mine'))).toEqual(['ns/mine']);
    expect(lockedKeys(gen('../x'))).toEqual([]);
    expect(lockedKeys(gen(undefined))).toEqual([]);
    expect(lockedKeys(m('POST /keys/{id}/move', { body: json({ newId: 'k2' }) }))).toEqual(['ns/k1', 'ns/k2']);
  });
});
