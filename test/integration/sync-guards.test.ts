import { existsSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupCorruptedError, BackupWrongPassphraseError, NamespaceUnknownError, NetHsmHttpError, SyncNamespaceExistsError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { Device } from '../../src/replicator/device.js';
import { applySnapshot, type ApplyDeps } from '../../src/replicator/snapshot-apply.js';
import { takeSnapshot } from '../../src/replicator/snapshot-source.js';
import { use } from '../helpers/clients.js';

/** Everything a client with root admin and namespace operators can see, to compare before/after. */
async function deviceView(lab: Lab, site: string): Promise<unknown> {
  const s = lab.site(site);
  const root = await use(s.client(), async (c) => ({ users: await c.listUsers(), keys: await c.listKeys(), namespaces: await c.listNamespaces() }));
  const ns: Record<string, string[]> = {};
  for (const n of root.namespaces) ns[n] = await use(s.nsOperator(n), (c) => c.listKeys()).catch(() => ['(no operator)']);
  return { root, ns, state: await use(s.client(), (c) => c.healthState()) };
}

describe('sync guards at the replica', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }, { name: 'gamma', primary: 'a' }] });
    // gamma reaches B through the bootstrap; pretend it did not, so B's device holds a gamma of unknown origin.
    const bootstrap = path.join(lab.site('b').stateDir, 'bootstrap.json');
    const data = JSON.parse(await readFile(bootstrap, 'utf8')) as { namespaces: string[] };
    await writeFile(bootstrap, JSON.stringify({ ...data, namespaces: data.namespaces.filter((n) => n !== 'gamma') }));
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
  });

  afterAll(async () => {
    await lab?.close();
  });

  /** A fresh snapshot of alpha from A, and B's apply dependencies. */
  async function snapshotAndDeps(over: Partial<ApplyDeps> = {}): Promise<{ file: string; deps: ApplyDeps }> {
    const a = lab.site('a').daemon!;
    const b = lab.site('b').daemon!;
    const snap = await takeSnapshot(a.failover.snapshotDeps(), 'alpha', 1);
    const file = b.ctx.work.temp('test-snapshot');
    await writeFile(file, await readFile(snap.file));
    const deps: ApplyDeps = {
      device: b.ctx.device,
      work: b.ctx.work,
      deviceOpen: b.ctx.deviceOpen,
      snapshotOpen: b.ctx.snapshotOpen,
      replicationUserId: 'replicator',
      ...over,
    };
    return { file, deps };
  }

  it('catches a write racing the sync with the re-check, merges again, and loses nothing', async () => {
    let writes = 0;
    const { file, deps } = await snapshotAndDeps({
      beforeRecheck: async () => {
        // A client writes to B's device directly (not through a gateway) between the backup and the restore.
        if (writes++ === 0) await use(lab.site('b').nsAdmin('beta'), (c) => c.generateKey({ id: 'raced-write', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
      },
    });
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r.remerges).toBe(1);
    expect(await use(lab.site('b').nsOperator('beta'), (c) => c.listKeys())).toContain('raced-write');
    expect(await use(lab.site('b').nsOperator('alpha'), (c) => c.listKeys())).toContain('a1');
  });

  it('refuses a corrupted snapshot before touching the device', async () => {
    const before = await deviceView(lab, 'b');
    const { file, deps } = await snapshotAndDeps();
    const bytes = await readFile(file);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 40) ^ 0xff, bytes.length - 40);
    await writeFile(file, bytes);
    await expect(applySnapshot(deps, 'alpha', file)).rejects.toBeInstanceOf(BackupCorruptedError);
    expect(await deviceView(lab, 'b')).toEqual(before);
  });

  it('refuses a snapshot under another replication passphrase before touching the device', async () => {
    const before = await deviceView(lab, 'b');
    const { file, deps } = await snapshotAndDeps();
    await expect(applySnapshot({ ...deps, snapshotOpen: { passphrase: 'not-the-replication-passphrase', scrypt: deps.snapshotOpen.scrypt! } }, 'alpha', file)).rejects.toBeInstanceOf(
      BackupWrongPassphraseError,
    );
    expect(await deviceView(lab, 'b')).toEqual(before);
  });

  it('leaves the device as it was when the restore itself fails', async () => {
    const before = await deviceView(lab, 'b');
    const b = lab.site('b').daemon!;
    // A restore refused by the NetHSM (wrong backup passphrase sent with it).
    const broken = new Device({ admin: b.ctx.nethsm.admin, backup: b.ctx.nethsm.backup }, b.ctx.barrier, 'wrong-device-backup-passphrase');
    const { file, deps } = await snapshotAndDeps({ device: broken });
    await expect(applySnapshot(deps, 'alpha', file)).rejects.toBeInstanceOf(NetHsmHttpError);
    expect(await deviceView(lab, 'b')).toEqual(before);
    // The daemon's own temporary files (device backups, merged file) are gone; only the test's snapshots remain.
    expect((await readdir(b.ctx.work.work)).filter((f) => !f.startsWith('test-snapshot'))).toEqual([]);
    expect(path.basename(file)).toMatch(/^test-snapshot/);
  });

  it('refuses to sync a namespace it does not replicate', async () => {
    await expect(lab.site('b').daemon!.syncer.sync('nope', { actor: 'test' })).rejects.toBeInstanceOf(NamespaceUnknownError);
  });

  it('refuses a first sync over a namespace of unknown origin, listing it, and replaces it with --on-existing=remove after saving it', async () => {
    const b = lab.site('b');
    await use(b.nsAdmin('gamma'), async (c) => {
      // Something on B's device in gamma that did not come from replication.
      await c.createUser({ realName: 'local', role: 'Operator', passphrase: 'local-operator-pass' }, 'gamma~local');
    });
    const err = await b.daemon!.syncer.sync('gamma', { actor: 'test' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncNamespaceExistsError);
    expect((err as Error).message).toMatch(/already holds namespace gamma \(0 keys, 4 users\)/);
    expect(await use(b.client(), (c) => c.listUsers())).toContain('gamma~local');

    const r = await b.daemon!.syncer.sync('gamma', { actor: 'test', onExisting: 'remove' });
    expect(r).toMatchObject({ outcome: 'applied' });
    const saved = (r as { savedExisting?: string }).savedExisting!;
    expect(existsSync(saved)).toBe(true);
    expect(await use(b.client(), (c) => c.listUsers())).not.toContain('gamma~local');
    // Later syncs need no flag.
    await expect(b.daemon!.syncer.sync('gamma', { actor: 'test' })).resolves.toMatchObject({ outcome: 'applied' });
    expect(LAB_PASSPHRASES.replication).toBeTruthy();
  });
});
