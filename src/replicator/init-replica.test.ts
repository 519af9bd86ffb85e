import { verify } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SCRYPT } from '../backup/format.js';
import { extractNamespace } from '../backup/namespace.js';
import { BackupKindMismatchError, BackupWrongPassphraseError, InitReplicaRefusedError, NhrError } from '../errors.js';
import { NetHsmClient } from '../nethsm/client.js';
import { TEST_KDF } from '../sim/crypto.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { startSimulator, type RunningSimulator } from '../sim/server.js';
import { describePlan, initReplica, type InitReplicaPlan } from './init-replica.js';

const clientFor = (sim: RunningSimulator, auth?: { username: string; password: string }) =>
  new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, ...(auth ? { auth } : {}) });

describe('initReplica against simulators', () => {
  let dir: string;
  let source: ProvisionedSimulator;
  let blank: RunningSimulator;
  let blankClient: NetHsmClient;
  let deviceBackup: string;
  let publicPem: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nhr-init-replica-'));
    [source, blank] = await Promise.all([
      startProvisionedSimulator({ namespaces: ['alpha', 'beta'] }),
      startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF }),
    ]);
    blankClient = clientFor(blank);
    const alphaAdmin = clientFor(source, source.nsUsers.alpha!.admin);
    await alphaAdmin.generateKey({ id: 'signer', type: 'Curve25519', mechanisms: ['EdDSA_Signature'] });
    publicPem = await alphaAdmin.publicKeyPem('signer');
    await alphaAdmin.close();
    deviceBackup = join(dir, 'device.bak');
    const backup = clientFor(source, source.users.backup);
    await backup.backupToFile(deviceBackup);
    await backup.close();
  });

  afterAll(async () => {
    await blankClient?.close();
    await Promise.all([source?.close(), blank?.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  // The simulators use the firmware's test scrypt parameters; 'auto' would try production ones first (slow).
  const run = (target: NetHsmClient, over: Partial<Parameters<typeof initReplica>[0]> = {}) =>
    initReplica({ client: target, url: 'https://target', backupFile: deviceBackup, backupPassphrase: source.backupPassphrase, scrypt: TEST_SCRYPT, confirm: async () => true, ...over });

  async function expectUntouched(): Promise<void> {
    expect(await blankClient.healthState()).toBe('Unprovisioned');
  }

  it('restores onto an Unprovisioned device: after unlocking, it holds the namespaces, users and a key that signs', async () => {
    const target = await startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF });
    const client = clientFor(target);
    try {
      let shown: InitReplicaPlan | undefined;
      const result = await initReplica({
        client,
        url: target.url,
        backupFile: deviceBackup,
        backupPassphrase: source.backupPassphrase,
        scrypt: 'auto',
        confirm: async (plan) => ((shown = plan), true),
      });
      expect(result).toMatchObject({ restored: true, state: 'Locked' });
      expect(shown?.contents.namespaces).toMatchObject({ alpha: { present: true, keys: 1, users: 2 }, beta: { present: true, keys: 0, users: 2 } });
      expect(describePlan(shown!)).toMatch(/namespace alpha: 2 users, 1 key\n {2}namespace beta: 2 users, 0 keys\n/);
      expect(describePlan(shown!)).toMatch(/root: 4 users, 0 keys/);

      await client.unlock(source.unlockPassphrase);
      const admin = client.withAuth(source.users.admin.username, source.users.admin.password);
      expect((await admin.listNamespaces()).sort()).toEqual(['alpha', 'beta']);
      expect(await admin.listUsers()).toEqual(expect.arrayContaining(['admin', 'backup', 'alpha~admin', 'alpha~operator', 'beta~admin']));
      const operator = client.withAuth(source.nsUsers.alpha!.operator.username, source.nsUsers.alpha!.operator.password);
      const message = Buffer.from('signed at the replica');
      const signature = await operator.sign('signer', 'EdDSA', message);
      expect(verify(null, message, publicPem, signature)).toBe(true);
    } finally {
      await client.close();
      await target.close();
    }
  });

  it('refuses a device that is not Unprovisioned, naming its state, before reading the backup', async () => {
    const provisioned = clientFor(source);
    let asked = false;
    const err = await run(provisioned, { confirm: async () => ((asked = true), true), backupFile: join(dir, 'absent.bak') }).catch((e: unknown) => e);
    await provisioned.close();
    expect(err).toBeInstanceOf(InitReplicaRefusedError);
    expect((err as Error).message).toBe('https://target is Operational, not Unprovisioned: init-replica only writes to an unprovisioned NetHSM; nothing was changed');
    expect(asked).toBe(false);
    expect(await clientFor(source, source.users.admin).listNamespaces()).toEqual(['alpha', 'beta']);
  });

  it('refuses a wrong passphrase and leaves the device Unprovisioned', async () => {
    const err = await run(blankClient, { backupPassphrase: 'not the passphrase' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupWrongPassphraseError);
    await expectUntouched();
  });

  it('refuses a corrupted file and one that is not a backup, asking nothing', async () => {
    const bytes = await readFile(deviceBackup);
    const corrupted = Buffer.from(bytes);
    corrupted[Math.floor(corrupted.length / 2)]! ^= 0x55;
    await writeFile(join(dir, 'corrupted.bak'), corrupted);
    await writeFile(join(dir, 'text.bak'), 'this is not a NetHSM backup\n');
    let asked = false;
    for (const file of ['corrupted.bak', 'text.bak']) {
      const err = await run(blankClient, { backupFile: join(dir, file), confirm: async () => ((asked = true), true) }).catch((e: unknown) => e);
      expect(err, file).toBeInstanceOf(NhrError);
      expect((err as NhrError).code, file).toMatch(/^NHR_ERR_BACKUP_(CORRUPTED|NOT_A_BACKUP|TRUNCATED)$/);
    }
    expect(asked).toBe(false);
    await expectUntouched();
  });

  it('refuses a namespace backup (it has a manifest)', async () => {
    const nsFile = join(dir, 'alpha.nsbak');
    await extractNamespace(deviceBackup, 'alpha', nsFile, { input: { passphrase: source.backupPassphrase, scrypt: TEST_SCRYPT } });
    const err = await run(blankClient, { backupFile: nsFile }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupKindMismatchError);
    expect((err as Error).message).toContain('is a namespace backup of namespace alpha, not a device backup; nothing was written');
    await expectUntouched();
  });

  it('writes nothing when the operator says no', async () => {
    const result = await run(blankClient, { confirm: async () => false });
    expect(result.restored).toBe(false);
    await expectUntouched();
  });
});
