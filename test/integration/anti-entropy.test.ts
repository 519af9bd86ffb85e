import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { createReplicatorMetrics } from '../../src/metrics/metrics.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import { antiEntropyPass, type AntiEntropyResult } from '../../src/namespaces/antientropy.js';
import { parseNamespaceInventory, readInventory } from '../../src/namespaces/inventory.js';
import { itemLines, rangeDigestLines, readItemLines, readRangeDigests, type IdRange } from '../../src/namespaces/inventory-ranges.js';
import { rangePass } from '../../src/namespaces/range-pass.js';
import { StateStore } from '../../src/state/store.js';
import { openFilesUnder } from '../helpers/open-files.js';

const CERT = Buffer.from('-----BEGIN CERTIFICATE-----\nMIIBanti-entropy\n-----END CERTIFICATE-----\n');

function ed25519(): { type: 'Curve25519'; mechanisms: ['EdDSA_Signature']; private: { data: string } } {
  return { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: randomBytes(32).toString('base64') } };
}

/** The folder of the range pass's digests' file (the daemon's `work/`): it must stay empty. */
const workDir = mkdtempSync(path.join(tmpdir(), 'nhr-ae-work-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));


/** As the daemon's pass gets the primary's answers over the peer API: lines made there, validated here. */
function rangeSource(atA: NetHsmClient, rangeSize: number) {
  const ctx = { namespace: 'alpha' };
  return {
    primaryRanges: async () => readRangeDigests(rangeDigestLines(atA, 'alpha', rangeSize), { ...ctx, rangeSize }),
    primaryItems: (ranges: IdRange[]) => readItemLines(itemLines(atA, 'alpha', ranges), ranges, ctx),
  };
}

// The same drift, found and repaired the same way by the one-answer pass (older primaries) and the range pass.
describe.each(['one answer', 'ranges'] as const)('anti-entropy between a primary and a replica that drifted (%s)', (kind) => {
  let lab: Lab;
  let atA: NetHsmClient; // the replication account at the primary (what the daemon would read with)
  let atB: NetHsmClient; // the replication account at the replica
  const registry = new Registry();
  const metrics = createReplicatorMetrics({ registry, processMetrics: false });

  const pass = (): Promise<AntiEntropyResult> =>
    kind === 'ranges'
      ? rangePass({ namespace: 'alpha', replica: atB, workDir, ...rangeSource(atA, 3), fetchCert: (id) => atA.getCert(id), setDrift: (c) => metrics.setDrift('alpha', c) })
      : antiEntropyPass({
      namespace: 'alpha',
      // As the daemon would get it from the primary's peer API: read there, sent as JSON, validated here.
      primary: async () => parseNamespaceInventory(JSON.parse(JSON.stringify(await readInventory(atA, 'alpha'))), { namespace: 'alpha' }),
      replica: atB,
      fetchCert: (id) => atA.getCert(id),
      setDrift: (c) => metrics.setDrift('alpha', c),
    });

  async function drift(kind: string): Promise<number> {
    const m = (await registry.getMetricsAsJSON()).find((x) => x.name === 'nethsm_replicator_drift_entries');
    return Number(m?.values.find((v) => v.labels['namespace'] === 'alpha' && v.labels['kind'] === kind)?.value);
  }

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    atA = lab.site('a').client('alpha~replicator', LAB_PASSPHRASES.replicator);
    atB = lab.site('b').client('alpha~replicator', LAB_PASSPHRASES.replicator);
    const admin = lab.site('a').nsAdmin('alpha');
    try {
      for (const id of ['k-cert', 'k-deleted', 'k-label', 'k-label2', 'k-plain', 'k-swap', 'k-tagadd', 'k-tagrm', 'k-untouched']) {
        await admin.importKey(ed25519(), id);
      }
      await admin.generateKey({ id: 'k-ec', type: 'EC_P256', mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['ec'] }, label: 'ec' });
      await admin.putCert('k-cert', CERT);
      await admin.setKeyLabel('k-label', 'orig');
      await admin.addKeyTag('k-tagrm', 't1');
      await admin.addKeyTag('k-swap', 'sw');
    } finally {
      await admin.close();
    }
    const synced = await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(synced).toMatchObject({ outcome: 'applied' });
  });

  afterAll(async () => {
    await atA?.close();
    await atB?.close();
    await lab?.close();
  });

  it('finds nothing right after a snapshot sync', async () => {
    const r = await pass();
    expect(r.diff).toEqual({ missing: [], extra: [], differs: [] });
    expect(r.plan).toEqual({ viaApi: [], needsSnapshot: false, reasons: [] });
    expect(r.repaired).toBe(0);
  });

  it('finds exactly the drift made at the replica and the changes made at the primary since, and repairs what the API can', async () => {
    // Drift at the replica, made on its device directly with the replication account (as anyone holding it could).
    await atB.addKeyTag('k-tagadd', 'rogue');
    await atB.removeKeyTag('k-tagrm', 't1');
    await atB.setKeyLabel('k-label', 'changed');
    await atB.deleteCert('k-cert');
    await atB.importKey(ed25519(), 'k-extra');
    await atB.deleteKey('k-deleted');
    await atB.deleteKey('k-swap');
    await atB.importKey(ed25519(), 'k-swap'); // same id, other key material, without its tag
    // Changes at the primary the replica has not seen.
    await atA.importKey(ed25519(), 'k-new');
    await atA.setKeyLabel('k-label2', 'from primary');
    await atA.addKeyTag('k-plain', 'p');

    const r = await pass();
    expect(r.diff).toEqual({
      missing: ['k-deleted', 'k-new'],
      extra: ['k-extra'],
      differs: [
        { id: 'k-cert', fields: ['cert'] },
        { id: 'k-label', fields: ['label'] },
        { id: 'k-label2', fields: ['label'] },
        { id: 'k-plain', fields: ['tags'] },
        { id: 'k-swap', fields: ['public', 'tags'] },
        { id: 'k-tagadd', fields: ['tags'] },
        { id: 'k-tagrm', fields: ['tags'] },
      ],
    });
    expect(r.plan.viaApi).toEqual([
      { kind: 'delete-extra', id: 'k-extra' },
      { kind: 'cert-set', id: 'k-cert' },
      { kind: 'label-set', id: 'k-label', label: 'orig' },
      { kind: 'label-set', id: 'k-label2', label: 'from primary' },
      { kind: 'tag-add', id: 'k-plain', tag: 'p' },
      { kind: 'tag-add', id: 'k-swap', tag: 'sw' },
      { kind: 'tag-remove', id: 'k-tagadd', tag: 'rogue' },
      { kind: 'tag-add', id: 'k-tagrm', tag: 't1' },
    ]);
    expect(r.repaired).toBe(8);
    expect(r.failed).toBeUndefined();
    expect(r.needsSnapshot).toBe(true);
    expect(r.plan.reasons).toEqual([
      '2 key(s) missing at the replica: k-deleted, k-new',
      '1 key(s) whose key material, type or mechanisms differ: k-swap (public)',
    ]);
    // The drift found before the repair is exported.
    expect([await drift('missing'), await drift('extra'), await drift('differs')]).toEqual([2, 1, 7]);

    // The repairs are on B's device.
    expect(await atB.listKeys()).not.toContain('k-extra');
    expect((await atB.getCert('k-cert'))?.data).toEqual(CERT);
    expect(await atB.getKey('k-label')).toMatchObject({ label: 'orig' });
    expect(await atB.getKey('k-tagadd')).toMatchObject({ restrictions: {} });
    expect(await atB.getKey('k-tagrm')).toMatchObject({ restrictions: { tags: ['t1'] } });
  });

  it('finds only what needs a snapshot on the next pass', async () => {
    const r = await pass();
    expect(r.diff).toEqual({ missing: ['k-deleted', 'k-new'], extra: [], differs: [{ id: 'k-swap', fields: ['public'] }] });
    expect(r.plan.viaApi).toEqual([]);
    expect(r.repaired).toBe(0);
    expect(r.needsSnapshot).toBe(true);
    expect([await drift('missing'), await drift('extra'), await drift('differs')]).toEqual([2, 0, 1]);
  });

  it('finds nothing after a snapshot sync, and the replica holds the primary keys again', async () => {
    const synced = await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(synced).toMatchObject({ outcome: 'applied' });
    const r = await pass();
    expect(r.diff).toEqual({ missing: [], extra: [], differs: [] });
    expect(r.needsSnapshot).toBe(false);
    expect([await drift('missing'), await drift('extra'), await drift('differs')]).toEqual([0, 0, 0]);
    expect(await atB.publicKeyPem('k-swap')).toBe(await atA.publicKeyPem('k-swap'));
    expect((await readInventory(atB, 'alpha')).digest).toBe((await readInventory(atA, 'alpha')).digest);
  });

  it.runIf(kind === 'ranges')('never calls extra a key the primary created and the replica received after the primary read its ranges', async () => {
    // The replica starts reading only once the primary's ranges are read and the key is at both sites (as the stream
    // would carry it): the range holding it differs, and the primary's items, read after the replica's read, have it.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let first = true;
    const limiter = { granted: 0, take: async () => (first ? ((first = false), gate) : undefined) };
    const material = ed25519();
    const src = rangeSource(atA, 3);
    const r = await rangePass({
      namespace: 'alpha',
      replica: atB,
      workDir,
      limiter,
      primaryRanges: async () => {
        const ranges = await src.primaryRanges();
        await atA.importKey(material, 'k-late');
        await atB.importKey(material, 'k-late');
        release();
        return ranges;
      },
      primaryItems: src.primaryItems,
      fetchCert: (id) => atA.getCert(id),
      setDrift: (c) => metrics.setDrift('alpha', c),
    });
    expect(r.rangesDiffering).toBe(1);
    expect(r.diff).toEqual({ missing: [], extra: [], differs: [] });
    expect(await atB.listKeys()).toContain('k-late');
  });

  it.runIf(kind === 'ranges')('leaves no digests\' file, named or open, after a pass, nor after one the primary fails mid-read', async () => {
    expect(readdirSync(workDir)).toEqual([]);
    expect(openFilesUnder(workDir)).toEqual([]);
    // The primary fails once the replica's read has its file open (its first key read): the pass throws that error.
    let opened!: () => void;
    const reading = new Promise<void>((r) => (opened = r));
    let takes = 0;
    const limiter = { granted: 0, take: async () => void (++takes === 2 && opened()) };
    const failing = rangePass({
      namespace: 'alpha',
      replica: atB,
      workDir,
      limiter,
      primaryRanges: async () => {
        await reading;
        expect(openFilesUnder(workDir)).toHaveLength(1);
        expect(readdirSync(workDir)).toEqual([]);
        throw new Error('primary gone');
      },
      primaryItems: rangeSource(atA, 3).primaryItems,
      fetchCert: (id) => atA.getCert(id),
      setDrift: (c) => metrics.setDrift('alpha', c),
    });
    await expect(failing).rejects.toThrow('primary gone');
    expect(openFilesUnder(workDir)).toEqual([]);
    expect(readdirSync(workDir)).toEqual([]);
  });

  it.runIf(kind === 'ranges')('reads each key with two device requests at each site while the certificate tables are cold, one once warm', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nhr-ae-certs-'));
    const stores = ['a', 'b'].map((site) => StateStore.inDir(path.join(dir, site)).open());
    try {
      for (const st of stores) st.roles.insert({ namespace: 'alpha', role: 'replica', epoch: 1, primarySite: 'a' });
      const [atAStore, atBStore] = stores as [StateStore, StateStore];
      const keys = (await atA.listKeyIds()).length;
      // Every device request of the pass takes one grant: the limiters count them at each site.
      const counting = (): { granted: number; take: () => Promise<void> } => ({ granted: 0, take: async function (this: { granted: number }) { this.granted++; } });
      const passAt = async () => {
        const [atALimiter, atBLimiter] = [counting(), counting()];
        const certs = { repo: atAStore.keyCerts, scrubPasses: 1000 };
        const r = await rangePass({
          namespace: 'alpha',
          replica: atB,
          workDir,
          limiter: atBLimiter,
          certs: { repo: atBStore.keyCerts, scrubPasses: 1000 },
          primaryRanges: async () => readRangeDigests(rangeDigestLines(atA, 'alpha', 3, { limiter: atALimiter, certs }), { namespace: 'alpha', rangeSize: 3 }),
          primaryItems: (ranges) => readItemLines(itemLines(atA, 'alpha', ranges, { limiter: atALimiter }), ranges, { namespace: 'alpha' }),
          fetchCert: (id) => atA.getCert(id),
          setDrift: (c) => metrics.setDrift('alpha', c),
        });
        expect(r.diff).toEqual({ missing: [], extra: [], differs: [] });
        return [atALimiter.granted, atBLimiter.granted];
      };
      // +1: the key listing at each site.
      expect(await passAt()).toEqual([1 + 2 * keys, 1 + 2 * keys]);
      expect(await passAt()).toEqual([1 + keys, 1 + keys]);
    } finally {
      for (const st of stores) st.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
