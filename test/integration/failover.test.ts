import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { listBackupContents } from '../../src/backup/contents.js';
import { TEST_SCRYPT } from '../../src/backup/format.js';
import { NetHsmHttpError, RolePromoteRefusedError, type NhrError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import { waitFor } from '../helpers/wait.js';
import { use } from '../helpers/clients.js';

const gen = (id: string) => (c: NetHsmClient) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
const keys = (c: NetHsmClient) => c.listKeys();

describe('roles and failover between two sites', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  async function twoSites(maxLagForPromote = '1h'): Promise<Lab> {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], maxLagForPromote });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), gen('k1'));
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
    return lab;
  }

  it('promotes a replica when its primary is lost, puts the administrators back, and the old primary is fenced, quarantined and resynced when it returns', async () => {
    const l = await twoSites();
    const a = l.site('a');
    const b = l.site('b');
    // A writes k2 and is lost before B syncs it: that write exists only at A.
    await use(a.nsAdmin('alpha'), gen('k2-lost-with-a'));
    await a.stopDaemon();

    const result = await b.daemon!.failover.promote('alpha', { force: false, actor: 'operator@b' });
    expect(result).toMatchObject({ role: 'primary', epoch: 2, previousEpoch: 1, previousPrimary: 'a', administratorsRestored: 1, peersNotTold: ['a'] });
    // The namespace's administrator works at B again, and B takes writes.
    await use(b.nsAdmin('alpha'), gen('k3-at-b'));
    expect(await use(b.nsOperator('alpha'), keys)).toEqual(['k1', 'k3-at-b']);

    // A comes back, learns epoch 2 from B, is fenced, exports its copy, and resyncs as a replica.
    await a.startDaemon();
    await waitFor(() => a.daemon!.ctx.store.roles.get('alpha')?.role === 'replica', 'A to resync as a replica', 20_000);
    const row = a.daemon!.ctx.store.roles.require('alpha');
    expect(row).toMatchObject({ role: 'replica', epoch: 2, primarySite: 'b' });
    expect(await use(a.nsOperator('alpha'), keys)).toEqual(['k1', 'k3-at-b']);
    const err = await use(a.nsAdmin('alpha'), keys).catch((e: unknown) => e);
    expect((err as NetHsmHttpError).status).toBe(401);

    // Nothing silently dropped: the quarantine file holds A's post-fork write.
    const qdir = a.daemon!.ctx.work.quarantine;
    // One file: the resync does not export k2 again as a foreign write (the fence's file already holds it).
    const qfiles = await readdir(qdir);
    expect(qfiles).toHaveLength(1);
    const [qfile] = qfiles;
    const q = await listBackupContents(path.join(qdir, qfile!), { input: { passphrase: LAB_PASSPHRASES.replication, scrypt: TEST_SCRYPT }, collectIds: true });
    expect(q.namespaces.alpha?.keyIds).toEqual(['k1', 'k2-lost-with-a']);
    const counted = (await a.registry.getSingleMetric('nethsm_replicator_quarantined_entries_total')?.get())?.values ?? [];
    expect(Object.fromEntries(counted.filter((v) => v.labels.namespace === 'alpha').map((v) => [v.labels.reason, v.value]))).toEqual({
      fenced: 2 + (q.namespaces.alpha?.users ?? 0),
      foreign_writes: 0,
    });

    // The audit log tells the story at both sites.
    const auditA = a.daemon!.ctx.store.audit.list({ namespace: 'alpha' }).map((e) => [e.action, e.fromEpoch ?? null, e.toEpoch ?? null, e.fromRole ?? null, e.toRole ?? null]);
    expect(auditA).toEqual([
      ['init', null, 1, null, 'primary'],
      ['fence', 1, 2, 'primary', 'fenced'],
      ['fence', 1, null, null, null],
      ['resync', 2, 2, 'fenced', 'replica'],
    ]);
    const promoteRow = b.daemon!.ctx.store.audit.list({ namespace: 'alpha' }).find((e) => e.action === 'promote');
    expect(promoteRow).toMatchObject({ actor: 'operator@b', fromEpoch: 1, toEpoch: 2, fromRole: 'replica', toRole: 'primary' });
  });

  it('names what is wrong with promote of an unknown namespace and demote to itself or an unknown site, changing nothing', async () => {
    const l = await twoSites();
    const a = l.site('a').daemon!;
    const unknown = await l.site('b').daemon!.failover.promote('nosuch', { force: false, actor: 'op' }).catch((e: unknown) => e);
    expect((unknown as NhrError).code).toBe('NHR_ERR_NAMESPACE_UNKNOWN');
    const self = await a.failover.demote('alpha', { to: 'a', actor: 'op' }).catch((e: unknown) => e);
    expect((self as Error).message).toBe('demote --to a names this site itself; name the site to hand over to: b');
    const other = await a.failover.demote('alpha', { to: 'zz', actor: 'op' }).catch((e: unknown) => e);
    expect((other as Error).message).toBe("demote --to zz: no such peer; this site's peers are b");
    expect(a.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 1, primarySite: 'a' });
  });

  it('refuses to promote a replica whose last sync failed or that is behind its lag limit, unless forced', async () => {
    const l = await twoSites('1s');
    const b = l.site('b');
    // A live change stream keeps a replica current (heartbeats move its lag basis): stop the primary's daemon so B falls behind.
    await l.site('a').stopDaemon();
    await new Promise((r) => setTimeout(r, 1100));
    const err = await b.daemon!.failover.promote('alpha', { force: false, actor: 'op' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RolePromoteRefusedError);
    expect((err as RolePromoteRefusedError).message).toMatch(/behind, over the limit of 1s/);
    expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'replica', epoch: 1 });

    // A sync that fails only because the primary is gone adds nothing to the lag's verdict (every sync fails once the
    // primary is lost): still refused as behind, not as a failed sync.
    await l.site('a').stop();
    await b.daemon!.syncer.sync('alpha', { actor: 'test' }).catch(() => undefined);
    const failed = await b.daemon!.failover.promote('alpha', { force: false, actor: 'op' }).catch((e: unknown) => e);
    expect((failed as RolePromoteRefusedError).reasons).toEqual(['behind']);
    // A sync that failed here for another reason does count.
    b.daemon!.ctx.store.positions.recordSyncFailed('alpha', 'a', { errorCode: 'NHR_ERR_SYNC_VERIFY_FAILED', durationMs: 1 });
    const broken = await b.daemon!.failover.promote('alpha', { force: false, actor: 'op' }).catch((e: unknown) => e);
    expect((broken as RolePromoteRefusedError).message).toMatch(/last sync failed/);

    const forced = await b.daemon!.failover.promote('alpha', { force: true, actor: 'op' });
    expect(forced).toMatchObject({ epoch: 2, forced: true });
  });

  it('refuses to promote while the primary answers and claims the namespace, pointing to demote', async () => {
    const l = await twoSites();
    const b = l.site('b').daemon!;
    const err = await b.failover.promote('alpha', { force: false, actor: 'op' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RolePromoteRefusedError);
    expect((err as RolePromoteRefusedError).reasons).toEqual(['primary-alive']);
    expect((err as RolePromoteRefusedError).message).toBe('refusing to promote namespace alpha: its primary a answers and still claims it at epoch 1');
    expect((err as RolePromoteRefusedError).hint).toMatch(/^For a switchover that loses nothing, run `nethsm-replicator demote alpha --to b` at a\./);
    expect(b.ctx.store.roles.require('alpha')).toMatchObject({ role: 'replica', epoch: 1 });
    // The documented switchover works from there.
    await l.site('a').daemon!.failover.demote('alpha', { to: 'b', actor: 'op' });
    expect(b.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2 });
  });

  it('hands a namespace over with demote: no write lost, roles swapped, the old primary follows', async () => {
    const l = await twoSites();
    const a = l.site('a');
    const b = l.site('b');
    await use(a.nsAdmin('alpha'), gen('k2-just-before-demote'));
    const r = await a.daemon!.failover.demote('alpha', { actor: 'op@a' });
    expect(r).toEqual({ namespace: 'alpha', to: 'b', epoch: 2, previousEpoch: 1 });
    expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2, primarySite: 'b' });
    expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'replica', epoch: 2, primarySite: 'b' });
    expect(await use(b.nsOperator('alpha'), keys)).toEqual(['k1', 'k2-just-before-demote']);
    // Administrators moved with the role.
    await use(b.nsAdmin('alpha'), gen('k3-at-new-primary'));
    expect(((await use(a.nsAdmin('alpha'), keys).catch((e: unknown) => e)) as NetHsmHttpError).status).toBe(401);
    await a.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(await use(a.nsOperator('alpha'), keys)).toEqual(['k1', 'k2-just-before-demote', 'k3-at-new-primary']);
  });

  it('refuses a snapshot from a site speaking an old epoch', async () => {
    const l = await twoSites();
    const a = l.site('a');
    const b = l.site('b');
    await a.stopDaemon();
    await b.daemon!.failover.promote('alpha', { force: false, actor: 'op' });
    // A peer that still believes it is primary at epoch 1 is told epoch 2, and its claims are not followed.
    const answer = await b.daemon!.ctx.peers.get('a');
    expect(answer).toBeDefined();
    await expect(b.daemon!.failover.observe('alpha', { from: 'a', epoch: 1, primarySite: 'a' })).rejects.toMatchObject({ code: 'NHR_ERR_ROLE_STALE_EPOCH' });
    expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2 });
  });
});
