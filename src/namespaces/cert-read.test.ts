import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetHsmClient } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { StateStore } from '../state/store.js';
import { CertRead, certKeysOf } from './cert-read.js';
import { readInventory, type KeyInventoryItem } from './inventory.js';
import { listIds, readItems } from './inventory-reader.js';

const KEYS = 40;

describe('anti-entropy reads with the certificate table, counted at the simulator', () => {
  let sim: ProvisionedSimulator;
  let base: NetHsmClient;
  let admin: NetHsmClient;
  let dir: string;
  let store: StateStore;

  /** Device requests answered by the simulator (its own metrics request is counted after it is answered: -1). */
  let answered: () => Promise<number>;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns'] });
    base = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
    admin = base.withAuth(sim.nsUsers['ns']!.admin.username, sim.nsUsers['ns']!.admin.password);
    for (let i = 0; i < KEYS; i++) {
      await admin.importKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: randomBytes(32).toString('base64') } }, `k${String(i).padStart(2, '0')}`);
    }
    for (const id of ['k03', 'k17', 'k30']) await admin.putCert(id, Buffer.from(`cert of ${id}`));
    const metrics = base.withAuth('metrics', 'metricsPassphrase');
    answered = async () =>
      Object.entries(await metrics.metrics())
        .filter(([k]) => /^http response \d+$/.test(k))
        .reduce((n, [, v]) => n + Number(v), 0);
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-certs-'));
    store = StateStore.inDir(path.join(dir, 'state'), {}).open();
    store.roles.insert({ namespace: 'ns', role: 'primary', epoch: 1, primarySite: 'a' });
  });

  afterAll(async () => {
    store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await base?.close();
    await sim?.close();
  });

  /** One read of the namespace with the table; its items, counts, and the device requests it cost. */
  async function read(scrubPasses: number): Promise<{ items: KeyInventoryItem[]; requests: number; certs: CertRead }> {
    const before = await answered();
    const ids = await listIds(admin);
    const certs = new CertRead(store.keyCerts, 'ns', scrubPasses);
    const items: KeyInventoryItem[] = [];
    try {
      for await (const i of readItems(admin, ids, { certs })) items.push(i);
    } finally {
      certs.end();
    }
    // -1: the listing; -1: the metrics request itself, counted after it was answered.
    return { items, requests: (await answered()) - before - 2, certs };
  }

  it('costs two requests per key while the table is cold and one per key (plus the scrub slice) once warm, with equal items', async () => {
    const full = await readInventory(admin, 'ns');
    const cold = await read(8);
    expect(cold.requests).toBe(2 * KEYS);
    expect(cold.certs.counts).toEqual({ fromTable: 0, unknown: KEYS, scrubbed: 0 });
    expect(store.keyCerts.count('ns')).toBe(KEYS);
    expect(cold.items).toEqual(full.keys);

    let scrubbedAll = 0;
    for (let pass = 0; pass < 8; pass++) {
      const warm = await read(8);
      const { fromTable, unknown, scrubbed } = warm.certs.counts;
      expect(unknown).toBe(0);
      expect(fromTable + scrubbed).toBe(KEYS);
      expect(warm.requests).toBe(KEYS + scrubbed);
      expect(warm.items).toEqual(full.keys);
      scrubbedAll += scrubbed;
    }
    // The eight slices of eight reads cover every key exactly once.
    expect(scrubbedAll).toBe(KEYS);
    // No certificate or key material in the table: ids, digests and content types only.
    const rows = store.keyCerts.page('ns', '', 1000);
    expect(rows.filter((r) => r.cert !== '').map((r) => r.id)).toEqual(['k03', 'k17', 'k30']);
    expect(JSON.stringify(rows)).not.toContain(Buffer.from('cert of k03').toString('base64'));
  });

  it('finds a certificate changed straight at the NetHSM within certScrubPasses reads, and keeps it once learnt', async () => {
    await read(4); // warm
    await admin.putCert('k05', Buffer.from('out of band'));
    const truth = (await readInventory(admin, 'ns')).keys.find((k) => k.id === 'k05')!;
    let foundAt = -1;
    for (let pass = 0; pass < 4 && foundAt < 0; pass++) {
      const k05 = (await read(4)).items.find((k) => k.id === 'k05')!;
      if (k05.hasCert) foundAt = pass;
      else expect(k05.cert).toBe('');
    }
    expect(foundAt).toBeGreaterThanOrEqual(0);
    const after = await read(4);
    expect(after.items.find((k) => k.id === 'k05')).toEqual(truth);
    await admin.deleteCert('k05');
    store.keyCerts.forget('ns', ['k05']);
  });

  it('reads a key in full again after the daemon forgot it, and learns nothing from a read that raced a forget', async () => {
    await read(1000);
    store.keyCerts.forget('ns', ['k10']);
    const next = await read(1000);
    expect(next.certs.counts.unknown).toBe(1);

    // A full read whose key is forgotten while it is in flight (a daemon write racing it) leaves no row behind.
    store.keyCerts.forget('ns', ['k11']);
    const certs = new CertRead(store.keyCerts, 'ns', 1000);
    try {
      const gen = readItems(admin, ['k11'], { certs });
      const pending = gen.next();
      store.keyCerts.forget('ns', ['k11']);
      expect((await pending).value).toMatchObject({ id: 'k11' });
    } finally {
      certs.end();
    }
    expect(store.keyCerts.page('ns', 'k11', 1)[0]?.id).not.toBe('k11');
  });

  it('forgets the ids of certificate, import, delete and move changes, not of tag or label changes', () => {
    expect(certKeysOf('cert-set', 'a')).toEqual(['a']);
    expect(certKeysOf('key-moved', 'a', 'b')).toEqual(['a', 'b']);
    expect(certKeysOf('key-imported', undefined)).toEqual([]);
    expect(certKeysOf('tag-added', 'a')).toEqual([]);
    expect(certKeysOf('label-set', 'a')).toEqual([]);
  });
});
