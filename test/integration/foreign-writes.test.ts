/**
 * Writes made straight to a replica's NetHSM (not through a gateway, not by replication) are exported to a quarantine
 * file before the snapshot's restore removes them, and reported; keys replication itself put there and the primary
 * deleted are removed without a false alarm (docs/operations.md "Foreign writes at a replica").
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBackupContents } from '../../src/backup/contents.js';
import { TEST_SCRYPT } from '../../src/backup/format.js';
import { SyncQuarantineFailedError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import { applySnapshot } from '../../src/replicator/snapshot-apply.js';
import { takeSnapshot } from '../../src/replicator/snapshot-source.js';
import { WorkDir } from '../../src/replicator/workdir.js';
import { caughtUp, importBody, streamReady } from './stream-helpers.js';
import { use } from '../helpers/clients.js';

const gen = (id: string) => (c: NetHsmClient) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
const keys = (c: NetHsmClient) => c.listKeys();
/** The namespace's replication account, straight at the site's NetHSM: the one Administrator a replica keeps. */
const replicator = (s: LabSite, ns: string) => s.client(`${ns}~replicator`, LAB_PASSPHRASES.replicator);
const replicationOpen = { passphrase: LAB_PASSPHRASES.replication, scrypt: TEST_SCRYPT };

async function quarantined(s: LabSite): Promise<string[]> {
  return (await readdir(s.daemon!.ctx.work.quarantine)).sort();
}

async function metric(s: LabSite, labels: Record<string, string>): Promise<number | undefined> {
  const m = await s.registry.getSingleMetric('nethsm_replicator_quarantined_entries_total')?.get();
  return m?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;
}

describe('foreign writes at a replica', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'a' }, { name: 'gamma', primary: 'a' }], gateway: true });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    await use(lab.site('a').nsAdmin('alpha'), gen('a1'));
    await use(lab.site('a').nsAdmin('beta'), gen('b1'));
    await use(lab.site('a').nsAdmin('gamma'), gen('g1'));
    for (const ns of ['alpha', 'beta', 'gamma']) await lab.site('b').daemon!.syncer.sync(ns, { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('a snapshot that removes nothing writes no quarantine file', async () => {
    const b = lab.site('b');
    await use(lab.site('a').nsAdmin('alpha'), gen('a2'));
    const r = await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(r).toMatchObject({ outcome: 'applied' });
    expect(r).not.toHaveProperty('quarantine');
    expect(await use(b.nsOperator('alpha'), keys)).toEqual(['a1', 'a2']);
    expect(await quarantined(b)).toEqual([]);
    expect(await metric(b, { namespace: 'alpha', reason: 'foreign_writes' })).toBe(0);
  });

  it('saves a key and a user written straight to the replica NetHSM to quarantine before the restore, and reports them', async () => {
    const b = lab.site('b');
    await use(replicator(b, 'alpha'), async (c) => {
      await gen('foreign-1')(c);
      await c.createUser({ realName: 'local', role: 'Operator', passphrase: 'local-operator-passphrase' }, 'alpha~localop');
    });
    const r = await b.daemon!.syncer.sync('alpha', { actor: 'test' });

    // The sync succeeded: B holds the primary's copy again, and says where the foreign entries went.
    expect(r).toMatchObject({ outcome: 'applied', quarantinedKeys: ['foreign-1'], quarantinedUsers: ['localop'] });
    const file = (r as { quarantine?: string }).quarantine!;
    expect(path.dirname(file)).toBe(b.daemon!.ctx.work.quarantine);
    expect(await use(b.nsOperator('alpha'), keys)).toEqual(['a1', 'a2']);

    // The file: a namespace backup under the replication passphrase, holding exactly the foreign entries (blobs).
    const q = await listBackupContents(file, { input: replicationOpen, collectIds: true });
    expect(q.kind).toBe('namespace');
    expect(q.namespaces.alpha).toMatchObject({ present: true, keyIds: ['foreign-1'], userIds: ['localop'] });
    const row = b.daemon!.ctx.store.positions.get('alpha', 'a')!;
    expect(q.manifest?.meta).toMatchObject({
      reason: 'foreign writes at replica',
      namespace: 'alpha',
      site: 'b',
      epoch: 1,
      seq: row.seq,
      keyIds: ['foreign-1'],
      userIds: ['localop'],
    });
    expect(typeof (q.manifest?.meta as { at?: unknown }).at).toBe('number');

    // Reported: metric and audit row.
    expect(await metric(b, { namespace: 'alpha', reason: 'foreign_writes' })).toBe(2);
    const audit = b.daemon!.ctx.store.audit.list({ namespace: 'alpha' }).filter((e) => e.action === 'sync');
    expect(audit.at(-1)).toMatchObject({ actor: 'daemon', detail: { quarantine: file, reason: 'foreign writes at replica', keyIds: ['foreign-1'], userIds: ['localop'] } });
    expect(await quarantined(b)).toEqual([path.basename(file)]);

    // The next sync finds nothing foreign: no second file.
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(await quarantined(b)).toEqual([path.basename(file)]);
    await rm(file);
  });

  it('does not quarantine keys the primary deleted that the replica had from a snapshot or from the stream', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    // From a snapshot: generated at A, synced to B, then deleted at A.
    await use(a.nsAdmin('beta'), gen('from-snapshot'));
    await b.daemon!.syncer.sync('beta', { actor: 'test' });
    expect(await use(b.nsOperator('beta'), keys)).toContain('from-snapshot');
    // From the stream: imported through A's gateway after that sync, then deleted at A's NetHSM directly (so B's
    // stream does not carry the delete, and only the next snapshot removes the key at B).
    const gw = a.gatewayClient('beta~admin', LAB_PASSPHRASES.nsAdmin);
    await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'from-stream');
    await gw.close();
    await caughtUp(a, b, 'beta');
    expect(await use(b.nsOperator('beta'), keys)).toContain('from-stream');
    await use(a.nsAdmin('beta'), async (c) => {
      await c.deleteKey('from-snapshot');
      await c.deleteKey('from-stream');
    });

    const r = await b.daemon!.syncer.sync('beta', { actor: 'test' });
    expect(r).toMatchObject({ outcome: 'applied' });
    expect(r).not.toHaveProperty('quarantine');
    expect(await use(b.nsOperator('beta'), keys)).toEqual(['b1']);
    expect(await quarantined(b)).toEqual([]);
    expect(await metric(b, { namespace: 'beta', reason: 'foreign_writes' })).toBe(0);
  });

  it('does not restore when the foreign entries cannot be saved', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    await use(replicator(b, 'alpha'), gen('foreign-2'));
    const snap = await takeSnapshot(a.daemon!.failover.snapshotDeps(), 'alpha', 1);
    // A state directory whose quarantine folder cannot take files (a plain file stands where the folder should be).
    const work = new WorkDir(path.join(lab.dir, 'b-broken-state'));
    await work.prepare();
    await rm(work.quarantine, { recursive: true });
    await writeFile(work.quarantine, 'not a folder');
    await mkdir(work.snapshots, { recursive: true });
    const file = work.temp('test-snapshot');
    await writeFile(file, await readFile(snap.file));
    const ctx = b.daemon!.ctx;
    const err = await applySnapshot(
      { device: ctx.device, work, deviceOpen: ctx.deviceOpen, snapshotOpen: ctx.snapshotOpen, replicationUserId: 'replicator', site: 'b' },
      'alpha',
      file,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncQuarantineFailedError);
    expect((err as Error).message).toMatch(/foreign-2/);
    // Nothing restored: the foreign key is still on B's device.
    expect(await use(b.nsOperator('alpha'), keys)).toContain('foreign-2');
    expect(existsSync(file)).toBe(true);
    // The real state directory saves it on the next sync.
    const r = await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(r).toMatchObject({ outcome: 'applied', quarantinedKeys: ['foreign-2'] });
  });

  it('anti-entropy deletes a key the primary deleted, but leaves one written straight to the replica to a snapshot, which saves it first', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    const gw = a.gatewayClient('beta~admin', LAB_PASSPHRASES.nsAdmin);
    await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'ae-streamed');
    await gw.close();
    await caughtUp(a, b, 'beta');
    // Deleted at A's NetHSM directly (the stream does not carry it): only anti-entropy or a snapshot removes it at B.
    await use(a.nsAdmin('beta'), (c) => c.deleteKey('ae-streamed'));
    await use(replicator(b, 'beta'), gen('ae-foreign'));

    const r = await b.daemon!.antiEntropy('beta');
    expect(r?.diff.extra).toEqual(['ae-foreign', 'ae-streamed']);
    // Replication wrote ae-streamed here: deleted through the API. Nobody knows ae-foreign: not deleted without a copy.
    expect(r?.plan.viaApi).toEqual([{ kind: 'delete-extra', id: 'ae-streamed' }]);
    expect(r?.plan.reasons.join('\n')).toMatch(/1 key\(s\) at the replica that replication never wrote .*: ae-foreign/);
    // The pass then ran the snapshot it asked for, whose restore saved ae-foreign to quarantine first.
    const files = (await quarantined(b)).filter((f) => f.includes('beta'));
    expect(files).toHaveLength(1);
    const q = await listBackupContents(path.join(b.daemon!.ctx.work.quarantine, files[0]!), { input: replicationOpen, collectIds: true });
    expect(q.namespaces.beta).toMatchObject({ keyIds: ['ae-foreign'] });
    expect(await use(b.nsOperator('beta'), keys)).toEqual(['b1']);
  });

  // Before: the quarantine export threw NHR_ERR_BACKUP_NAMESPACE_NOT_FOUND (the device backup has no /namespace/gamma),
  // so every sync failed with NHR_ERR_SYNC_QUARANTINE_FAILED and the namespace stayed deleted at the replica.
  it("saves the users of a namespace deleted on the replica's NetHSM (kept by the firmware) with the snapshot's namespace record, and restores", async () => {
    const b = lab.site('b');
    // Root deletes the namespace straight at B's NetHSM: its keys go, its users stay (FACTS §4); a root Administrator
    // may then add users to it (it does not exist).
    await use(b.client(), async (c) => {
      await c.deleteNamespace('gamma');
      await c.createUser({ realName: 'stray', role: 'Operator', passphrase: 'stray-operator-passphrase' }, 'gamma~stray');
    });
    const r = await b.daemon!.syncer.sync('gamma', { actor: 'test' });
    expect(r).toMatchObject({ outcome: 'applied', quarantinedUsers: ['stray'], quarantinedKeys: [] });
    expect(await use(b.client(), (c) => c.listNamespaces())).toContain('gamma');
    expect(await use(b.nsOperator('gamma'), keys)).toEqual(['g1']);

    const file = (r as { quarantine?: string }).quarantine!;
    const q = await listBackupContents(file, { input: replicationOpen, collectIds: true });
    expect(q.kind).toBe('namespace');
    expect(q.namespaces.gamma).toMatchObject({ present: true, keys: 0, userIds: ['stray'] });
    expect(q.manifest?.meta).toMatchObject({ reason: 'foreign writes at replica', namespaceRecord: 'snapshot', userIds: ['stray'] });
    await rm(file);
  });
});
