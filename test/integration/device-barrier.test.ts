/**
 * Regression tests for the data-safety cases the device barrier and fencing tokens close (docs/concurrency.md). Each
 * one makes its interleaving happen on purpose: the simulator reads its latency table at every call, so a test slows
 * one operation at one site at the moment it needs to, and learns from the same table when that call has begun.
 * Each failed on the code before the barrier (noted per test).
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminClient } from '../../src/admin/client.js';
import { listBackupContents } from '../../src/backup/contents.js';
import { TEST_SCRYPT } from '../../src/backup/format.js';
import { AdminRemoteError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab, type LabNamespace } from '../../src/lab/lab.js';
import { caughtUp, eventually, importBody, streamReady } from './stream-helpers.js';
import { use } from '../helpers/clients.js';
import { Latencies } from '../helpers/latencies.js';

describe('one barrier per device, fencing tokens', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  async function sites(namespaces: LabNamespace[], latency: Latencies): Promise<Lab> {
    lab = await Lab.create({ namespaces, gateway: true, latency: latency.table });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    for (const n of namespaces) await lab.site('b').daemon!.syncer.sync(n.name, { actor: 'test' });
    return lab;
  }

  // Before the barrier: the puller wrote under its own namespace's lock only, so an import applied while B restored
  // another namespace landed between B's last backup and the restore and was wiped, though recorded as applied.
  it('never lets a restore for one namespace wipe a stream apply of another', async () => {
    const lat = new Latencies();
    const l = await sites([{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'a' }], lat);
    const a = l.site('a');
    const b = l.site('b');
    lat.slow('b', 'restore', 1_500);
    const restoring = lat.started('b', 'restore');
    const sync = b.daemon!.syncer.sync('beta', { actor: 'test' });
    await restoring;
    lat.fast('b', 'restore');
    // While B's NetHSM is in the middle of restoring beta, alpha gets an import at A that streams to B.
    await use(a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'during-restore'));
    expect((await sync).outcome).toBe('applied');
    await caughtUp(a, b, 'alpha');
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toContain('during-restore');
  });

  // Before the fencing tokens: the sync decided before the promote ran after it and stripped the namespace's
  // administrators at the new primary.
  it('abandons a sync decided before a promote instead of stripping the new primary', async () => {
    const lat = new Latencies();
    const l = await sites([{ name: 'alpha', primary: 'a' }], lat);
    const b = l.site('b');
    // A serves the snapshot slowly, so B's sync is still fetching when the operator promotes B.
    lat.slow('a', 'backup', 1_500);
    const serving = lat.started('a', 'backup');
    const sync = b.daemon!.syncer.sync('alpha', { actor: 'schedule' });
    await serving;
    lat.fast('a', 'backup');
    const promoted = await b.daemon!.failover.promote('alpha', { force: true, actor: 'operator@b' });
    expect(promoted).toMatchObject({ epoch: 2, administratorsRestored: 1 });
    const result = await sync;
    expect(result).toMatchObject({ outcome: 'skipped' });
    expect(result.outcome === 'skipped' && result.reason).toMatch(/decided as replica at epoch 1/);
    // The administrator still works at the new primary.
    await use(b.nsAdmin('alpha'), (c) => c.generateKey({ id: 'after-promote', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2, primarySite: 'b' });
  });

  // Before the barrier: the fence's quarantine backup took the device lock but not the gateway's write gate, so a
  // write already forwarded landed after that backup, was acknowledged, and was then wiped by the resync.
  it('puts a write acknowledged while the old primary is fenced into the quarantine file', async () => {
    const lat = new Latencies();
    const l = await sites([{ name: 'alpha', primary: 'a' }], lat);
    const a = l.site('a');
    const b = l.site('b');
    lat.slow('a', 'import', 1_500);
    const importing = lat.started('a', 'import');
    const gw = a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin);
    const write = gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'in-flight-at-fence');
    await importing;
    lat.fast('a', 'import');
    // The other site is promoted by force while A still runs and its write is in flight; A learns it and fences.
    await b.daemon!.failover.promote('alpha', { force: true, actor: 'operator@b' });
    await write; // acknowledged by A's gateway
    await gw.close();
    await eventually(() => a.daemon!.ctx.store.roles.get('alpha')?.role === 'replica', 30_000, 'A to be fenced and resync');
    const qdir = a.daemon!.ctx.work.quarantine;
    const files = await readdir(qdir);
    expect(files).toHaveLength(1);
    const q = await listBackupContents(path.join(qdir, files[0]!), { input: { passphrase: LAB_PASSPHRASES.replication, scrypt: TEST_SCRYPT }, collectIds: true });
    expect(q.namespaces.alpha?.keyIds).toContain('in-flight-at-fence');
  });

  // Before: the demoted site never synced from its successor, so its stream stayed idle ("never synced") until the next
  // scheduled sync, and it kept its own copy meanwhile.
  it('a demoted primary follows its successor at once: new writes there stream back', async () => {
    const lat = new Latencies();
    const l = await sites([{ name: 'alpha', primary: 'a' }], lat);
    const a = l.site('a');
    const b = l.site('b');
    await a.daemon!.failover.demote('alpha', { actor: 'operator@a' });
    await use(b.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'after-demote'));
    await caughtUp(b, a, 'alpha', 20_000);
    expect(await use(a.nsOperator('alpha'), (c) => c.listKeys())).toContain('after-demote');
  });

  // The 60-minute fault run saw writes refused with 401 by a new primary: the role changed first and the administrators
  // came back in a restore after it, and writes the gateway admitted in between (while the snapshot's manifest was read)
  // met a primary without them. Promote now decides, persists and restores inside one exclusive hold. That window is
  // too short to hit on purpose here; this test pins the part that can be: a write during the restore waits for it.
  it('a write arriving while a promote restores the administrators waits for them instead of getting 401', async () => {
    const lat = new Latencies();
    const l = await sites([{ name: 'alpha', primary: 'a' }], lat);
    const b = l.site('b');
    lat.slow('b', 'restore', 1_500);
    const restoring = lat.started('b', 'restore');
    const promoted = b.daemon!.failover.promote('alpha', { force: true, actor: 'operator@b' });
    await restoring;
    lat.fast('b', 'restore');
    expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2 });
    // The role says primary while the administrators' restore runs: this write must wait for it, not meet a 401.
    await use(b.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'during-promote'));
    expect(await promoted).toMatchObject({ administratorsRestored: 1 });
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toContain('during-promote');
  });

  // Before: `pause` only kept the puller from starting; a stream already open went on applying changes.
  it('pause stops the stream at once; a manual sync is refused while paused unless forced', async () => {
    const lat = new Latencies();
    const l = await sites([{ name: 'alpha', primary: 'a' }], lat);
    const a = l.site('a');
    const b = l.site('b');
    const gw = a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin);
    await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'before-pause');
    await caughtUp(a, b, 'alpha');
    const admin = new AdminClient({ socketPath: b.config.admin.socket });
    await admin.namespaceAction('alpha', 'pause', { actor: 'operator@b' });
    await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'while-paused');
    const head = a.daemon!.ctx.store.changelog.head('alpha', 1);
    // The change is at A's head; B must not apply it while paused. Give the stream every chance to (several heartbeats).
    await new Promise((r) => setTimeout(r, 2_000));
    expect(b.daemon!.ctx.store.positions.get('alpha', 'a')?.seq).toBe(head.seq - 1);
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).not.toContain('while-paused');

    const refused = await admin.namespaceAction('alpha', 'sync', { actor: 'operator@b' }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AdminRemoteError);
    expect((refused as AdminRemoteError).code).toBe('NHR_ERR_SYNC_PAUSED');
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).not.toContain('while-paused');

    await admin.namespaceAction('alpha', 'resume', { actor: 'operator@b' });
    await caughtUp(a, b, 'alpha');
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toContain('while-paused');
    await gw.close();
  });
});
