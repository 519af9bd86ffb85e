import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PeerMessageInvalidError } from '../errors.js';
import { NetHsmClient, type PublicKey } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import {
  diffInventories,
  inventoryDigest,
  inventoryItem,
  MAX_INVENTORY_KEYS,
  namespaceInventorySchema,
  parseNamespaceInventory,
  readInventory,
  type KeyInventoryItem,
  type NamespaceInventory,
} from './inventory.js';

const ED_PUBLIC = Buffer.alloc(32, 1).toString('base64');

function key(over: Partial<PublicKey> = {}): PublicKey {
  return { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], restrictions: {}, public: { data: ED_PUBLIC }, operations: 0, ...over };
}

function inv(namespace: string, items: KeyInventoryItem[]): NamespaceInventory {
  return { namespace, takenAt: 1_700_000_000_000, keys: items, digest: inventoryDigest(items) };
}

/** A JSON round trip, as a peer's answer arrives. */
function wire(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v));
}

function refusal(input: unknown): string {
  try {
    parseNamespaceInventory(input);
  } catch (err) {
    expect(err).toBeInstanceOf(PeerMessageInvalidError);
    return (err as Error).message;
  }
  throw new Error('the inventory was accepted');
}

describe('inventoryItem', () => {
  it('sorts mechanisms as the NetHSM does and tags lexicographically, and leaves operations out', () => {
    const a = inventoryItem(
      'k1',
      key({ type: 'RSA', mechanisms: ['RSA_Signature_PKCS1', 'RSA_Decryption_RAW'], restrictions: { tags: ['zeta', 'alpha'] }, public: { modulus: 'AQAB', publicExponent: 'AQAB' }, operations: 5 }),
      null,
    );
    expect(a.mechanisms).toEqual(['RSA_Decryption_RAW', 'RSA_Signature_PKCS1']);
    expect(a.tags).toEqual(['alpha', 'zeta']);
    expect(a.label).toBe('');
    expect(a.hasCert).toBe(false);
    const b = inventoryItem(
      'k1',
      key({ type: 'RSA', mechanisms: ['RSA_Decryption_RAW', 'RSA_Signature_PKCS1'], restrictions: { tags: ['alpha', 'zeta'] }, public: { modulus: 'AQAB', publicExponent: 'AQAB' }, operations: 99 }),
      null,
    );
    expect(b).toEqual(a);
  });

  it('digests the public part by its bytes, not its base64 spelling, and tells different bytes apart', () => {
    const raw = Buffer.alloc(32, 9).toString('base64');
    const a = inventoryItem('k', key({ public: { data: raw } }), null);
    const b = inventoryItem('k', key({ public: { data: `${raw.slice(0, 10)}\n${raw.slice(10)}` } }), null);
    const c = inventoryItem('k', key({ public: { data: Buffer.alloc(32, 8).toString('base64') } }), null);
    expect(b.public).toBe(a.public);
    expect(c.public).not.toBe(a.public);
    expect(c.digest).not.toBe(a.digest);
  });

  it('keeps no public data or certificate bytes, only digests', () => {
    const certBytes = Buffer.from('-----BEGIN CERTIFICATE-----\nsecretish\n-----END CERTIFICATE-----\n');
    const item = inventoryItem('k', key(), { contentType: 'application/octet-stream', data: certBytes });
    const text = JSON.stringify(item);
    expect(text).not.toContain(ED_PUBLIC);
    expect(text).not.toContain('secretish');
    expect(item).toMatchObject({ hasCert: true, certType: 'application/octet-stream' });
    expect(item.cert).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('diffInventories', () => {
  const base = (id: string, over: Partial<PublicKey> = {}, cert: Buffer | null = null) =>
    inventoryItem(id, key(over), cert ? { contentType: 'application/octet-stream', data: cert } : null);

  it('finds missing, extra and differing keys and names the fields that differ', () => {
    const primary = inv('ns', [
      base('a'),
      base('b', { restrictions: { tags: ['t1'] }, label: 'B' }),
      base('c', {}, Buffer.from('cert-1')),
      base('d', { public: { data: Buffer.alloc(32, 2).toString('base64') } }),
      base('e', { type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }),
      base('m'),
    ]);
    const replica = inv('ns', [
      base('a'),
      base('b', { restrictions: { tags: ['t2'] } }),
      base('c', {}, Buffer.from('cert-2')),
      base('d'),
      base('e'),
      base('x'),
    ]);
    expect(diffInventories(primary, replica)).toEqual({
      missing: ['m'],
      extra: ['x'],
      differs: [
        { id: 'b', fields: ['tags', 'label'] },
        { id: 'c', fields: ['cert'] },
        { id: 'd', fields: ['public'] },
        { id: 'e', fields: ['type', 'mechanisms'] },
      ],
    });
  });

  it('finds nothing between equal inventories, and everything missing against an empty replica', () => {
    const items = [base('a'), base('b')];
    expect(diffInventories(inv('ns', items), inv('ns', items))).toEqual({ missing: [], extra: [], differs: [] });
    expect(diffInventories(inv('ns', items), inv('ns', []))).toEqual({ missing: ['a', 'b'], extra: [], differs: [] });
    expect(diffInventories(inv('ns', []), inv('ns', items))).toEqual({ missing: [], extra: ['a', 'b'], differs: [] });
  });
});

describe('namespaceInventorySchema', () => {
  const good = inv('ns', [
    inventoryItem('a', key({ restrictions: { tags: ['x', 'y'] }, label: 'Ä label' }), { contentType: 'application/octet-stream', data: Buffer.from('c') }),
    inventoryItem('b', key({ type: 'Generic', mechanisms: ['AES_Decryption_CBC', 'AES_Encryption_CBC'], public: undefined }), null),
  ]);

  it("accepts a peer's well-formed inventory after a JSON round trip", () => {
    expect(parseNamespaceInventory(wire(good), { namespace: 'ns' })).toEqual(good);
    expect(namespaceInventorySchema.safeParse(wire(inv('ns', []))).success).toBe(true);
  });

  it('refuses a malformed inventory, naming the field', () => {
    expect(refusal(null)).toMatch(/invalid namespace inventory: \(root\)/);
    expect(refusal({ ...good, extraField: 1 })).toMatch(/extraField/);
    expect(refusal({ ...good, namespace: '~bad' })).toMatch(/namespace: must be a NetHSM id/);
    const noDigest = wire(good) as { keys: Record<string, unknown>[] };
    delete noDigest.keys[1]!['digest'];
    expect(refusal(noDigest)).toMatch(/keys\[1\]\.digest/);
    const badTag = wire(good) as { keys: { tags: string[] }[] };
    badTag.keys[0]!.tags = ['x', 'has space'];
    expect(refusal(badTag)).toMatch(/keys\[0\]\.tags\[1\]/);
    const longLabel = wire(good) as { keys: { label: string }[] };
    longLabel.keys[0]!.label = 'é'.repeat(17);
    expect(refusal(longLabel)).toMatch(/keys\[0\]\.label: must be at most 32 bytes/);
  });

  it('refuses an item whose fields do not match its digest, and an inventory whose digest does not match its items', () => {
    const tampered = wire(good) as { keys: { label: string }[] };
    tampered.keys[0]!.label = 'other';
    expect(refusal(tampered)).toMatch(/keys\[0\]\.digest: does not match the item's fields/);
    expect(refusal({ ...(wire(good) as object), digest: 'f'.repeat(64) })).toMatch(/^invalid namespace inventory: digest: does not match the keys/);
    const certless = wire(good) as { keys: { hasCert: boolean }[] };
    certless.keys[0]!.hasCert = false;
    expect(refusal(certless)).toMatch(/keys\[0\]\.hasCert: must agree with cert/);
  });

  it('refuses unsorted keys and duplicate ids', () => {
    const [a, b] = good.keys;
    expect(refusal(wire(inv('ns', [b!, a!])))).toMatch(/keys\[1\]\.id: ids must be sorted/);
    expect(refusal(wire(inv('ns', [a!, a!])))).toMatch(/keys\[1\]\.id: duplicate id "a"/);
    const unsortedTags = wire(good) as { keys: { tags: string[] }[] };
    unsortedTags.keys[0]!.tags = ['y', 'x'];
    expect(refusal(unsortedTags)).toMatch(/keys\[0\]\.tags: must be unique and sorted/);
  });

  it('refuses an oversized inventory without looking at its items', () => {
    const huge = { ...good, keys: new Array<number>(MAX_INVENTORY_KEYS + 1).fill(0) };
    expect(refusal(huge)).toMatch(/keys: must hold at most 1000000 keys/);
  });

  it('refuses an inventory of another namespace than asked for', () => {
    expect(() => parseNamespaceInventory(wire(good), { namespace: 'other' })).toThrow(/inventory is of namespace "ns", not "other"/);
  });
});

describe('readInventory against the simulator', () => {
  let sim: ProvisionedSimulator;
  let admin: NetHsmClient;
  let operator: NetHsmClient;
  let base: NetHsmClient;

  beforeAll(async () => {
    // Reads take a little while, as on an appliance, so concurrent reads overlap.
    sim = await startProvisionedSimulator({ namespaces: ['ns1'], latency: { 'key-get': 3 } });
    base = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, connections: 16 });
    admin = base.withAuth(sim.nsUsers['ns1']!.admin.username, sim.nsUsers['ns1']!.admin.password);
    operator = base.withAuth(sim.nsUsers['ns1']!.operator.username, sim.nsUsers['ns1']!.operator.password);
    await admin.generateKey({ id: 'ec', type: 'EC_P256', mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['b', 'a'] }, label: 'the ec key' });
    await admin.generateKey({ id: 'aes', type: 'Generic', length: 256, mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'] });
    await admin.putCert('ec', Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'));
    await admin.importKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: randomBytes(32).toString('base64') } }, 'ed');
    // A few hundred keys, for the concurrency test.
    const ids = Array.from({ length: 300 }, (_, i) => `bulk-${String(i).padStart(3, '0')}`);
    for (let i = 0; i < ids.length; i += 20) {
      await Promise.all(
        ids.slice(i, i + 20).map((id) => admin.importKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: randomBytes(32).toString('base64') } }, id)),
      );
    }
  });

  afterAll(async () => {
    await base?.close();
    await sim?.close();
  });

  it('reads every key of the namespace, sorted, with what the API shows', async () => {
    const i = await readInventory(admin, 'ns1');
    expect(i.namespace).toBe('ns1');
    expect(i.keys).toHaveLength(303);
    expect(i.keys.map((k) => k.id)).toEqual([...i.keys.map((k) => k.id)].sort());
    const ec = i.keys.find((k) => k.id === 'ec')!;
    expect(ec).toMatchObject({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], tags: ['a', 'b'], label: 'the ec key', hasCert: true, certType: 'application/octet-stream' });
    expect(i.keys.find((k) => k.id === 'aes')).toMatchObject({ type: 'Generic', mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'], public: '', hasCert: false });
    // What we read is what a peer would accept.
    expect(parseNamespaceInventory(wire(i), { namespace: 'ns1' })).toEqual(i);
  });

  it('gives the same digest to an Operator and an Administrator, and is unchanged by use of a key (operations)', async () => {
    const before = await readInventory(admin, 'ns1');
    await operator.sign('ed', 'EdDSA', Buffer.from('hello'));
    expect((await operator.getKey('ed')).operations).toBe(1);
    const after = await readInventory(operator, 'ns1');
    expect(after.digest).toBe(before.digest);
  });

  it('changes the digest when a tag, label or certificate changes', async () => {
    const d0 = (await readInventory(admin, 'ns1')).digest;
    await admin.addKeyTag('ed', 'new-tag');
    const d1 = (await readInventory(admin, 'ns1')).digest;
    await admin.setKeyLabel('ed', 'labelled');
    const d2 = (await readInventory(admin, 'ns1')).digest;
    await admin.putCert('ed', Buffer.from('cert'));
    const d3 = (await readInventory(admin, 'ns1')).digest;
    expect(new Set([d0, d1, d2, d3]).size).toBe(4);
    await admin.deleteCert('ed');
    await admin.removeKeyLabel('ed');
    await admin.removeKeyTag('ed', 'new-tag');
    expect((await readInventory(admin, 'ns1')).digest).toBe(d0);
  });

  it('reads a few hundred keys with the configured number of requests in flight, never more', async () => {
    for (const concurrency of [8, 3]) {
      const stats = { inFlight: 0, max: 0, calls: 0 };
      const counted = countingGetKey(admin, stats);
      const i = await readInventory(counted, 'ns1', { concurrency });
      expect(i.keys).toHaveLength(303);
      expect(stats.calls).toBeGreaterThanOrEqual(303);
      expect(stats.max).toBe(concurrency);
    }
  });

  it('reads each key with two device requests, counted at the simulator (the key is not read again on a certificate 404)', async () => {
    const metrics = base.withAuth('metrics', 'metricsPassphrase');
    const answered = async (): Promise<number> =>
      Object.entries(await metrics.metrics())
        .filter(([k]) => /^http response \d+$/.test(k))
        .reduce((n, [, v]) => n + Number(v), 0);
    const before = await answered();
    const i = await readInventory(admin, 'ns1');
    // The metrics request itself is counted after it was answered: +1.
    expect((await answered()) - before).toBe(1 + 1 + 2 * i.keys.length);
  });

  it('leaves out a key deleted while the inventory is read', async () => {
    await admin.importKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: randomBytes(32).toString('base64') } }, 'vanishing');
    let deleted = false;
    const racing = new Proxy(admin, {
      get(t, k) {
        if (k === 'getKey') {
          return async (id: string) => {
            if (id === 'vanishing' && !deleted) {
              deleted = true;
              await t.deleteKey(id);
            }
            return t.getKey(id);
          };
        }
        const v: unknown = Reflect.get(t, k, t);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
    const i = await readInventory(racing, 'ns1');
    expect(deleted).toBe(true);
    expect(i.keys.map((k) => k.id)).not.toContain('vanishing');
    expect(i.keys).toHaveLength(303);
  });
});

/** The real client with its getKey calls counted (the simulator still answers every request). */
function countingGetKey(c: NetHsmClient, stats: { inFlight: number; max: number; calls: number }): NetHsmClient {
  return new Proxy(c, {
    get(t, k) {
      if (k === 'getKey') {
        return async (id: string) => {
          stats.calls++;
          stats.inFlight++;
          stats.max = Math.max(stats.max, stats.inFlight);
          try {
            return await t.getKey(id);
          } finally {
            stats.inFlight--;
          }
        };
      }
      const v: unknown = Reflect.get(t, k, t);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  });
}
