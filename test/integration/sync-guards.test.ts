import { existsSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupCorruptedError, BackupWrongPassphraseError, NamespaceUnknownError, NetHsmHttpError, SyncNamespaceExistsError, SyncVerifyFailedError } from '../../src/errors.js';
import { listBackupContents } from '../../src/backup/contents.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { Device } from '../../src/replicator/device.js';
import { applySnapshot, applySnapshots, type ApplyDeps, type ApplyPhase } from '../../src/replicator/snapshot-apply.js';
import { checkSnapshot } from '../../src/replicator/snapshot-check.js';
import { EarlyBackup } from '../../src/replicator/early-backup.js';
import { silentLogger } from '../../src/log.js';
import { eventually } from './stream-helpers.js';
import { use } from '../helpers/clients.js';
import { snapshotAndDeps as snapshotAt } from '../helpers/snapshot-deps.js';

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
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }, { name: 'gamma', primary: 'a' }, { name: 'delta', primary: 'a' }] });
    // gamma and delta reach B through the bootstrap; pretend they did not, so B's device holds them of unknown origin.
    const bootstrap = path.join(lab.site('b').stateDir, 'bootstrap.json');
    const data = JSON.parse(await readFile(bootstrap, 'utf8')) as { namespaces: string[] };
    await writeFile(bootstrap, JSON.stringify({ ...data, namespaces: data.namespaces.filter((n) => n !== 'gamma' && n !== 'delta') }));
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
  });

  afterAll(async () => {
    await lab?.close();
  });

  /** A fresh snapshot of alpha from A, and B's apply dependencies. */
  const snapshotAndDeps = (over: Partial<ApplyDeps> = {}) => snapshotAt(lab, over);

  /**
   * Keys outside alpha go to B's root namespace: not replicated, so no peer notices them (a key written straight into
   * beta, which B is primary of, is drift to A, which then fetches snapshots from B meanwhile).
   */
  const rootKey = (id: string) => use(lab.site('b').client(), (c) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
  const rootKeys = () => use(lab.site('b').client(), (c) => c.listKeys());

  /** A key written at B through B's device barrier, as a gateway write would be. */
  async function writeThroughBarrier(id: string): Promise<void> {
    await lab.site('b').daemon!.ctx.barrier.shared(() => rootKey(id));
  }

  it('backs up and merges again, outside the hold, when a write passed the barrier between the backup and the restore', async () => {
    let writes = 0;
    const { file, deps } = await snapshotAndDeps({
      beforeHold: async () => {
        if (writes++ === 0) await writeThroughBarrier('raced-write');
      },
    });
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r).toMatchObject({ remerges: 1, heldMerge: false, verified: true });
    expect(await rootKeys()).toContain('raced-write');
    expect(await use(lab.site('b').nsOperator('alpha'), (c) => c.listKeys())).toContain('a1');
  });

  // Before the exclusive holds counted as writes: another namespace's merge-restore between this sync's backup and
  // its hold went unseen, and this restore (merged from the older backup) wiped what that one restored.
  it('backs up and merges again when another merge-restore ran between the backup and the hold', async () => {
    const barrier = lab.site('b').daemon!.ctx.barrier;
    let restores = 0;
    const { file, deps } = await snapshotAndDeps({
      beforeHold: async () => {
        if (restores++ > 0) return;
        // Stands in for another namespace's sync: an exclusive hold scoped to beta that changes the device.
        await barrier.exclusive([], () => rootKey('restored-meanwhile'), { scope: 'beta' });
      },
    });
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r).toMatchObject({ remerges: 1, heldMerge: false, verified: true });
    expect(await rootKeys()).toContain('restored-meanwhile');
  });

  // No check after the restore caught a loss before the restore's own verification: it must still be loud.
  it('fails verification loudly, keeping the pre-restore backup, when an entry outside the namespace is lost after the restore', async () => {
    let lost = 0;
    await writeThroughBarrier('lost-after-restore');
    const { file, deps } = await snapshotAndDeps({
      // A client deletes a key straight on the NetHSM (invisible to the barrier) before the check backup.
      beforeVerify: () => use(lab.site('b').client(), (c) => c.deleteKey('lost-after-restore')),
      onForeignLoss: (n) => (lost += n),
    });
    const err = await applySnapshot(deps, 'alpha', file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncVerifyFailedError);
    expect(lost).toBe(1);
    const kept = (err as SyncVerifyFailedError).path!;
    expect(existsSync(kept)).toBe(true);
    expect((await listBackupContents(kept, { input: deps.deviceOpen, collectIds: true })).rootKeyIds).toContain('lost-after-restore');
  });

  it('holds writes only around the restore: the backups, the merge and the verification run outside the exclusive hold', async () => {
    const barrier = lab.site('b').daemon!.ctx.barrier;
    const seen: { phase: ApplyPhase; held: boolean; inside: boolean }[] = [];
    const { file, deps } = await snapshotAndDeps({ onPhase: (phase) => seen.push({ phase, held: barrier.held, inside: barrier.insideExclusive }) });
    const holdsBefore = barrier.exclusiveRuns;
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r).toMatchObject({ remerges: 0, heldMerge: false, verified: true });
    expect(barrier.exclusiveRuns - holdsBefore).toBe(1);
    expect(seen).toEqual([
      { phase: 'backup', held: false, inside: false },
      { phase: 'merge', held: false, inside: false },
      { phase: 'hold', held: false, inside: false },
      { phase: 'restore', held: true, inside: true },
      { phase: 'verify', held: false, inside: false },
    ]);
  });

  it('merges inside the hold as a last resort when writes race every attempt, and its re-check still catches direct writers', async () => {
    let n = 0;
    let direct = 0;
    let heldMerges = 0;
    const { file, deps } = await snapshotAndDeps({
      directWriters: true,
      maxRemerges: 1,
      beforeHold: () => writeThroughBarrier(`racing-${n++}`),
      // A client writes to B's device directly (not through the daemon) while the held merge runs.
      beforeRecheck: async () => {
        if (direct++ === 0) await rootKey('direct-write');
      },
      onHeldMerge: () => heldMerges++,
    });
    const r = await applySnapshot(deps, 'alpha', file);
    // Redone: once outside the hold, once inside it, once more after the re-check saw the direct write.
    expect(r).toMatchObject({ heldMerge: true, remerges: 3 });
    expect(heldMerges).toBe(1);
    expect(await rootKeys()).toEqual(expect.arrayContaining(['racing-0', 'racing-1', 'direct-write']));
    expect(await use(lab.site('b').nsOperator('alpha'), (c) => c.listKeys())).toContain('a1');
  });

  it('with replication.directWriters (maxRemerges -1), merges inside the hold at once, and its re-check keeps a direct write made during the merge', async () => {
    let direct = 0;
    let heldMerges = 0;
    const { file, deps } = await snapshotAndDeps({
      directWriters: true,
      maxRemerges: -1,
      beforeHold: () => Promise.reject(new Error('no attempt outside the hold was expected')),
      beforeRecheck: async () => {
        if (direct++ === 0) await rootKey('direct-during-held-merge');
      },
      onHeldMerge: () => heldMerges++,
    });
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r).toMatchObject({ heldMerge: true });
    expect(heldMerges).toBe(1);
    expect(await rootKeys()).toContain('direct-during-held-merge');
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

  // A lone snapshot is opened by its paths only (the merge authenticates its entries): damage inside an entry that is
  // not the manifest must still be refused before the restore.
  it("refuses a snapshot with a damaged key entry before the restore, though its opening reads paths only", async () => {
    const before = await deviceView(lab, 'b');
    const { file, deps } = await snapshotAndDeps();
    const entries: { path: string; offset: number; size: number }[] = [];
    await listBackupContents(file, { input: deps.snapshotOpen, onEntry: (e) => void entries.push(e) });
    const key = entries.find((e) => e.path.startsWith('/key/'))!;
    const bytes = await readFile(file);
    bytes[key.offset + key.size - 2]! ^= 0xff;
    await writeFile(file, bytes);
    await expect(applySnapshot(deps, 'alpha', file)).rejects.toBeInstanceOf(BackupCorruptedError);
    expect(await deviceView(lab, 'b')).toEqual(before);
  });

  // The daemon checks a snapshot by its paths as it downloads (sync.ts, snapshot-check.ts) and hands what it found to
  // the apply, so a lone part does not read its file again: what its opening checks is that check's result. Shown by
  // handing it the check of ANOTHER namespace's snapshot (which no daemon does): refused, the device untouched. Fails
  // if the apply ignores `opened` and reads the file instead (then it applies alpha).
  it("a lone apply opens its snapshot from the paths-only check made as it downloaded, not by reading the file again", async () => {
    const before = await deviceView(lab, 'b');
    const { file, deps } = await snapshotAndDeps();
    const gamma = await snapshotAt(lab, {}, { namespace: 'gamma' });
    const other = await checkSnapshot(gamma.file, deps.snapshotOpen, 'gamma', { pathsOnly: true });
    const { replicationUserId, ...shared } = deps;
    await expect(applySnapshots(shared, [{ namespace: 'alpha', snapshotFile: file, replicationUserId, opened: other.contents }])).rejects.toThrow(/not a namespace backup of alpha/);
    expect(await deviceView(lab, 'b')).toEqual(before);
    // Its own bytes' check applies as the file would.
    const again = await snapshotAndDeps();
    const own = await checkSnapshot(again.file, deps.snapshotOpen, 'alpha', { pathsOnly: true });
    const ok = await applySnapshots(shared, [{ namespace: 'alpha', snapshotFile: again.file, replicationUserId, opened: own.contents }]);
    expect(ok.get('alpha')!.ok).toBe(true);
  });

  // applySnapshots owns the early B1 it is given (used, or discarded) whatever happens. Before: a part that checks the
  // device's copy first (`refuse`) whose snapshot did not open threw before that ownership began, so the B1's write
  // tracker stayed open for good (every later write listed in it) and its file stayed in work/. The daemon hands such
  // a part the check made as it downloaded, which opens as it did then; shown here with another namespace's check.
  it("discards the early B1 it was given when a part's snapshot does not open before the merge", async () => {
    const b = lab.site('b').daemon!;
    const earlyFiles = async () => (await readdir(b.ctx.work.work)).filter((f) => f.startsWith('pre-early'));
    const { file, deps } = await snapshotAndDeps();
    const gamma = await snapshotAt(lab, {}, { namespace: 'gamma' });
    const other = await checkSnapshot(gamma.file, deps.snapshotOpen, 'gamma', { pathsOnly: true });
    const { replicationUserId, ...shared } = deps;
    const early = EarlyBackup.start(b.ctx.device, b.ctx.work, silentLogger);
    await eventually(() => b.ctx.barrier.tracking, 10_000, 'the early B1 to track writes');
    const part = { namespace: 'alpha', snapshotFile: file, replicationUserId, opened: other.contents, options: { onExisting: 'refuse' as const } };
    await expect(applySnapshots(shared, [part], early)).rejects.toThrow(/not a namespace backup of alpha/);
    await eventually(async () => !b.ctx.barrier.tracking && (await earlyFiles()).length === 0, 5_000, 'the early B1 discarded').catch(() => undefined);
    expect(b.ctx.barrier.tracking).toBe(false);
    expect(await earlyFiles()).toEqual([]);
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
    // The apply's temporary files (device backups, merged file) are gone; only the test's snapshots remain. B may be
    // serving a snapshot of beta to A meanwhile (A's recovery of B, whose daemon started after A's first probe): those
    // files are not the apply's.
    // (The atomic writer's temp file of a snapshot being written starts with a dot.)
    const serving = (f: string) => /^\.?(device-shared-|snapshot-beta-)/.test(f);
    expect((await readdir(b.ctx.work.work)).filter((f) => !f.startsWith('test-snapshot') && !serving(f))).toEqual([]);
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

  // Before: saving the copy threw NHR_ERR_BACKUP_NAMESPACE_NOT_FOUND (the device backup has no /namespace/delta), so a
  // namespace whose users the NetHSM kept after its deletion could never be synced, flag or not.
  it("with --on-existing=remove, saves users the device holds without the namespace's record (the snapshot's record in the copy) and syncs", async () => {
    const b = lab.site('b');
    // Deleted straight at B's NetHSM: its keys go, its users stay (FACTS §4).
    await use(b.client(), (c) => c.deleteNamespace('delta'));
    const err = await b.daemon!.syncer.sync('delta', { actor: 'test' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncNamespaceExistsError);
    expect((err as Error).message).toMatch(/already holds namespace delta \(0 keys, \d+ users, no namespace record\)/);

    const r = await b.daemon!.syncer.sync('delta', { actor: 'test', onExisting: 'remove' });
    expect(r).toMatchObject({ outcome: 'applied' });
    expect(await use(b.client(), (c) => c.listNamespaces())).toContain('delta');
    const saved = (r as { savedExisting?: string }).savedExisting!;
    const c = await listBackupContents(saved, { input: b.daemon!.ctx.deviceOpen, collectIds: true });
    expect(c.kind).toBe('namespace');
    expect(c.namespaces.delta).toMatchObject({ present: true, keys: 0 });
    expect(c.namespaces.delta!.userIds!.length).toBeGreaterThan(0);
    expect(c.manifest?.meta).toMatchObject({ reason: 'replaced by first sync', namespaceRecord: 'snapshot' });
  });
});
