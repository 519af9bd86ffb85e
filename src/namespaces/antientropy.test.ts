import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputInvalidError, NetHsmUnreachableError } from '../errors.js';
import { NetHsmClient, type PublicKey } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { applyRepair, planRepair, type RepairPlan } from './antientropy.js';
import { diffInventories, inventoryDigest, inventoryItem, readInventory, type KeyInventoryItem, type NamespaceInventory } from './inventory.js';

const OCTET = 'application/octet-stream';

function item(id: string, over: Partial<PublicKey> = {}, cert: { contentType: string; data: Buffer } | null = null): KeyInventoryItem {
  const key: PublicKey = { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], restrictions: {}, public: { data: Buffer.alloc(32, 1).toString('base64') }, operations: 0, ...over };
  return inventoryItem(id, key, cert);
}

function inv(items: KeyInventoryItem[], namespace = 'ns'): NamespaceInventory {
  return { namespace, takenAt: 0, keys: items, digest: inventoryDigest(items) };
}

function plan(primary: KeyInventoryItem[], replica: KeyInventoryItem[]): RepairPlan {
  const p = inv(primary);
  const r = inv(replica);
  return planRepair(diffInventories(p, r), p, r);
}

describe('planRepair', () => {
  it('adds tags before it removes any, so the key is never left without restriction on the way', () => {
    const p = plan([item('k', { restrictions: { tags: ['new1', 'new2'] } })], [item('k', { restrictions: { tags: ['old'] } })]);
    expect(p.viaApi).toEqual([
      { kind: 'tag-add', id: 'k', tag: 'new1' },
      { kind: 'tag-add', id: 'k', tag: 'new2' },
      { kind: 'tag-remove', id: 'k', tag: 'old' },
    ]);
    expect(p.needsSnapshot).toBe(false);
    expect(p.reasons).toEqual([]);
  });

  it('sets or removes labels as the primary has them', () => {
    const p = plan([item('a', { label: 'A' }), item('b')], [item('a', { label: 'x' }), item('b', { label: 'stray' })]);
    expect(p.viaApi).toEqual([
      { kind: 'label-set', id: 'a', label: 'A' },
      { kind: 'label-remove', id: 'b' },
    ]);
  });

  it('replaces a differing certificate (remove, then set), sets a missing one and removes an extra one', () => {
    const c1 = { contentType: OCTET, data: Buffer.from('one') };
    const c2 = { contentType: OCTET, data: Buffer.from('two') };
    const p = plan([item('a', {}, c1), item('b', {}, c1), item('c')], [item('a', {}, c2), item('b'), item('c', {}, c2)]);
    expect(p.viaApi).toEqual([
      { kind: 'cert-remove', id: 'a' },
      { kind: 'cert-set', id: 'a' },
      { kind: 'cert-set', id: 'b' },
      { kind: 'cert-remove', id: 'c' },
    ]);
    expect(p.needsSnapshot).toBe(false);
  });

  it('asks for a snapshot for a certificate of a content type the API cannot store', () => {
    const p = plan([item('a', {}, { contentType: 'application/x-pem-file', data: Buffer.from('one') })], [item('a')]);
    expect(p.viaApi).toEqual([]);
    expect(p.needsSnapshot).toBe(true);
    expect(p.reasons).toEqual(['1 certificate(s) of a content type the API cannot store: a (application/x-pem-file)']);
  });

  it('deletes keys that exist only at the replica, first', () => {
    const p = plan([item('a', { label: 'A' })], [item('a'), item('z-extra')]);
    expect(p.viaApi).toEqual([
      { kind: 'delete-extra', id: 'z-extra' },
      { kind: 'label-set', id: 'a', label: 'A' },
    ]);
    expect(p.needsSnapshot).toBe(false);
  });

  it('deletes only the extra keys replication wrote; one it never wrote waits for a snapshot, which saves it first', () => {
    const extra = { missing: [], extra: ['mine', 'rogue'], differs: [] };
    const p = planRepair(extra, inv([]), inv([item('mine'), item('rogue')]), (id) => id === 'mine');
    expect(p.viaApi).toEqual([{ kind: 'delete-extra', id: 'mine' }]);
    expect(p.needsSnapshot).toBe(true);
    expect(p.reasons).toEqual([
      '1 key(s) at the replica that replication never wrote (written straight to its NetHSM?), saved to quarantine by the snapshot before it removes them: rogue',
    ]);
  });

  it('asks for a snapshot for missing keys and keys whose material, type or mechanisms differ, and still repairs their tags', () => {
    const other = { data: Buffer.alloc(32, 2).toString('base64') };
    const p = plan(
      [item('gone'), item('swapped', { restrictions: { tags: ['t'] } }), item('typed', { type: 'EC_P256', mechanisms: ['ECDSA_Signature'] })],
      [item('swapped', { public: other }), item('typed')],
    );
    expect(p.viaApi).toEqual([{ kind: 'tag-add', id: 'swapped', tag: 't' }]);
    expect(p.needsSnapshot).toBe(true);
    expect(p.reasons).toEqual([
      '1 key(s) missing at the replica: gone',
      '2 key(s) whose key material, type or mechanisms differ: swapped (public), typed (type, mechanisms)',
    ]);
  });

  it('shortens long id lists in its reasons', () => {
    const ids = Array.from({ length: 12 }, (_, i) => `k${String(i).padStart(2, '0')}`);
    const p = plan(ids.map((id) => item(id)), []);
    expect(p.reasons).toEqual(['12 key(s) missing at the replica: k00, k01, k02, k03, k04, k05, k06, k07, k08, k09, … (2 more)']);
  });

  it('plans nothing for equal inventories', () => {
    expect(plan([item('a', { label: 'x' })], [item('a', { label: 'x' })])).toEqual({ viaApi: [], needsSnapshot: false, reasons: [] });
  });

  it('refuses inventories of different namespaces and a diff that does not belong to them', () => {
    const a = inv([item('a')], 'one');
    const b = inv([item('a')], 'two');
    expect(() => planRepair({ missing: [], extra: [], differs: [] }, a, b)).toThrow(InputInvalidError);
    expect(() => planRepair({ missing: [], extra: [], differs: [{ id: 'zzz', fields: ['label'] }] }, a, inv([item('a')], 'one'))).toThrow(/zzz/);
  });
});

describe('applyRepair against the simulator', () => {
  let sim: ProvisionedSimulator;
  let base: NetHsmClient;
  let admin: NetHsmClient;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns1'] });
    base = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
    admin = base.withAuth(sim.nsUsers['ns1']!.admin.username, sim.nsUsers['ns1']!.admin.password);
    for (const id of ['k1', 'k2']) {
      await admin.importKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: randomBytes(32).toString('base64') } }, id);
    }
  });

  afterAll(async () => {
    await base?.close();
    await sim?.close();
  });

  it('applies each kind of step, and a second run of the same plan changes nothing more', async () => {
    await admin.importKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: randomBytes(32).toString('base64') } }, 'extra');
    await admin.addKeyTag('k2', 'old');
    await admin.setKeyLabel('k2', 'stale');
    const steps: RepairPlan = {
      viaApi: [
        { kind: 'delete-extra', id: 'extra' },
        { kind: 'tag-add', id: 'k1', tag: 'new' },
        { kind: 'tag-remove', id: 'k2', tag: 'old' },
        { kind: 'label-set', id: 'k1', label: 'hello' },
        { kind: 'label-remove', id: 'k2' },
        { kind: 'cert-set', id: 'k1' },
      ],
      needsSnapshot: false,
      reasons: [],
    };
    const certs: string[] = [];
    const fetchCert = async (id: string) => (certs.push(id), { contentType: OCTET, data: Buffer.from(`cert of ${id}`) });
    expect(await applyRepair(steps, admin, fetchCert)).toEqual({ applied: 6, skipped: 0 });
    expect(certs).toEqual(['k1']);
    expect(await admin.listKeys()).toEqual(['k1', 'k2']);
    expect(await admin.getKey('k1')).toMatchObject({ restrictions: { tags: ['new'] }, label: 'hello' });
    expect((await admin.getKey('k2')).label).toBeUndefined();
    expect((await admin.getKey('k2')).restrictions).toEqual({});
    expect((await admin.getCert('k1'))?.data.toString()).toBe('cert of k1');
    const before = await readInventory(admin, 'ns1');

    // Removals of what is already gone count as done; the cert-set now meets an existing certificate and fails.
    const again = await applyRepair(steps, admin, fetchCert);
    expect(again.applied).toBe(5);
    expect(again.failed?.step).toEqual({ kind: 'cert-set', id: 'k1' });
    expect(again.failed?.error).toMatch(/409/);
    expect((await readInventory(admin, 'ns1')).digest).toBe(before.digest);
  });

  it('skips a certificate the primary no longer has', async () => {
    const r = await applyRepair({ viaApi: [{ kind: 'cert-set', id: 'k2' }], needsSnapshot: false, reasons: [] }, admin, async () => null);
    expect(r).toEqual({ applied: 0, skipped: 1 });
    expect(await admin.getCert('k2')).toBeNull();
  });

  it('stops at the first step that fails and reports it with the count applied before', async () => {
    const r = await applyRepair(
      {
        viaApi: [
          { kind: 'label-set', id: 'k2', label: 'first' },
          { kind: 'tag-add', id: 'no-such-key', tag: 't' },
          { kind: 'label-set', id: 'k2', label: 'never' },
        ],
        needsSnapshot: false,
        reasons: [],
      },
      admin,
      async () => null,
    );
    expect(r.applied).toBe(1);
    expect(r.failed?.step).toEqual({ kind: 'tag-add', id: 'no-such-key', tag: 't' });
    expect((await admin.getKey('k2')).label).toBe('first');
  });

  it('lets a retryable error (NetHSM unreachable) propagate', async () => {
    const dead = new NetHsmClient({ url: 'https://127.0.0.1:1', tls: { insecure: true }, auth: { username: 'ns1~admin', password: 'x' }, timeoutMs: 2000 });
    try {
      const err = await applyRepair({ viaApi: [{ kind: 'label-remove', id: 'k1' }], needsSnapshot: false, reasons: [] }, dead, async () => null).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NetHsmUnreachableError);
    } finally {
      await dead.close();
    }
  });
});
