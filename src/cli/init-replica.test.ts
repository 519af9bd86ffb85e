import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toYaml } from '../config/test-helpers.js';
import { NetHsmClient } from '../nethsm/client.js';
import { PeerServer } from '../peer/server.js';
import { TEST_KDF } from '../sim/crypto.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { startSimulator, type RunningSimulator } from '../sim/server.js';
import { createCa, issueCert } from '../tls/index.js';
import { runCli } from './test-run.js';

const clientFor = (sim: RunningSimulator, auth?: { username: string; password: string }) =>
  new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, ...(auth ? { auth } : {}) });

describe('nethsm-replicator init-replica', () => {
  let dir: string;
  let source: ProvisionedSimulator;
  let peer: PeerServer;
  let deviceBackup: string;
  const targets: RunningSimulator[] = [];
  const fetched: string[] = [];

  async function target(): Promise<RunningSimulator> {
    const t = await startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF });
    targets.push(t);
    return t;
  }

  async function configFor(t: RunningSimulator): Promise<string> {
    const file = join(dir, `config-${targets.indexOf(t)}-${Math.random().toString(36).slice(2)}.yaml`);
    const doc = {
      site: 'b',
      nethsm: {
        url: t.url,
        tls: { fingerprint256: t.fingerprint256 },
        credentials: { backup: { user: 'backup', passphrase: { file: join(dir, 'pw') } }, admin: { user: 'admin', passphrase: { file: join(dir, 'pw') } } },
      },
      peers: [{ name: 'a', url: `https://127.0.0.1:${peer.port}` }],
      tls: { certFile: join(dir, 'b.crt'), keyFile: join(dir, 'b.key'), caFile: join(dir, 'ca.crt') },
      peerApi: { listen: '127.0.0.1:9443' },
      stateDir: join(dir, `state-${targets.indexOf(t)}`),
      replication: { passphrase: { file: join(dir, 'pw') }, backupPassphrase: { file: join(dir, 'backup-pp') } },
    };
    await writeFile(file, toYaml(doc));
    return file;
  }

  const state = async (t: RunningSimulator): Promise<string> => {
    const c = clientFor(t);
    try {
      return await c.healthState();
    } finally {
      await c.close();
    }
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nhr-cli-init-replica-'));
    source = await startProvisionedSimulator({ namespaces: ['alpha'] });
    deviceBackup = join(dir, 'device.bak');
    const backup = clientFor(source, source.users.backup);
    await backup.backupToFile(deviceBackup);
    await backup.close();
    await writeFile(join(dir, 'pw'), 'unused-here\n');
    await writeFile(join(dir, 'backup-pp'), source.backupPassphrase + '\n');
    const ca = await createCa({ commonName: 'group CA' });
    const a = await issueCert(ca, { commonName: 'a', usages: ['serverAuth', 'clientAuth'] });
    const b = await issueCert(ca, { commonName: 'b', usages: ['serverAuth', 'clientAuth'] });
    await writeFile(join(dir, 'ca.crt'), ca.certPem);
    await writeFile(join(dir, 'b.crt'), b.certPem);
    await writeFile(join(dir, 'b.key'), b.keyPem);
    const unused = async (): Promise<never> => Promise.reject(new Error('not used by init-replica'));
    const handlers = {
      status: unused,
      snapshot: unused,
      announceEpoch: unused,
      handoff: unused,
      requestSync: unused,
      deviceBackup: async (from: string) => (fetched.push(from), createReadStream(deviceBackup)),
    };
    peer = new PeerServer({ host: '127.0.0.1', port: 0, tls: { ...a, caPem: ca.certPem }, peers: [{ name: 'b' }], handlers });
    await peer.start();
  });

  afterAll(async () => {
    await peer?.close();
    await Promise.all([source?.close(), ...targets.map((t) => t.close())]);
    await rm(dir, { recursive: true, force: true });
  });

  it('--new-tls gives the unlocked replica a TLS certificate of its own and prints the fingerprint to pin', async () => {
    const t = await target();
    const before = t.fingerprint256; // the simulator's getter follows what it serves
    const config = await configFor(t);
    expect((await runCli(['init-replica', '--config', config, '--from-file', deviceBackup, '--yes'])).code).toBe(0);
    // The root accounts are now the primary's: the config must carry them for this step.
    await writeFile(join(dir, 'pw'), source.users.admin.password + '\n');
    try {
      const locked = await runCli(['init-replica', '--config', config, '--new-tls']);
      expect(locked.code).toBe(1);
      expect(locked.err).toContain('the NetHSM is Locked: a new TLS certificate needs it Operational; nothing was changed');
      const both = await runCli(['init-replica', '--config', config, '--new-tls', '--from-file', deviceBackup]);
      expect(both.err).toContain('--new-tls is a step of its own');
      const c = clientFor(t);
      await c.unlock(source.unlockPassphrase);
      await c.close();
      const r = await runCli(['init-replica', '--config', config, '--new-tls']);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const fingerprint = /SHA-256 fingerprint:\n {2}([0-9A-F:]{95})\n/.exec(r.out)?.[1];
      expect(fingerprint).toBeDefined();
      expect(fingerprint).not.toBe(before);
      expect(fingerprint).toBe(t.fingerprint256);
      expect(r.out).toContain(`tls: { fingerprint256: "${fingerprint}" }`);
      // New connections meet the new certificate: the printed pin works, the old one is refused.
      const pinned = new NetHsmClient({ url: t.url, tls: { fingerprint256: fingerprint! } });
      expect(await pinned.healthState()).toBe('Operational');
      await pinned.close();
      const old = new NetHsmClient({ url: t.url, tls: { fingerprint256: before } });
      await expect(old.healthState()).rejects.toMatchObject({ code: 'NHR_ERR_NETHSM_TLS_PIN_MISMATCH' });
      await old.close();
    } finally {
      await writeFile(join(dir, 'pw'), 'unused-here\n');
    }
  });

  it('--from-file --yes shows the plan, restores, and says how to unlock; the device then unlocks with the primary passphrase', async () => {
    const t = await target();
    const r = await runCli(['init-replica', '--config', await configFor(t), '--from-file', deviceBackup, '--yes']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`${deviceBackup}: device backup (version 1, from device `);
    expect(r.out).toContain('  namespace alpha: 2 users, 0 keys\n');
    expect(r.out).toContain(`Target ${t.url} is Unprovisioned.`);
    expect(r.out).toContain(`restored: ${t.url} is now Locked.\nNext: 1. unlock the NetHSM with the primary's unlock passphrase`);
    expect(r.out).toContain('init-replica --new-tls --config');
    expect(r.out).toContain('nethsm-replicator check-config --config');
    expect(r.out).toContain('then start the daemon');
    // The daemon's first sync will adopt what the restore put there.
    const record = JSON.parse(await readFile(join(dir, `state-${targets.indexOf(t)}`, 'bootstrap.json'), 'utf8')) as { namespaces: string[] };
    expect(record.namespaces).toEqual(['alpha']);
    const c = clientFor(t);
    await c.unlock(source.unlockPassphrase);
    expect(await c.withAuth(source.users.admin.username, source.users.admin.password).listNamespaces()).toEqual(['alpha']);
    await c.close();
  });

  it('--credentials-dir names the directory ${CREDENTIALS_DIRECTORY} stands for in the config (from a shell)', async () => {
    const t = await target();
    const plain = await readFile(await configFor(t), 'utf8');
    // The same config as systemd's unit would have it: every secret file under ${CREDENTIALS_DIRECTORY}.
    const config = join(dir, `config-credentials-${targets.indexOf(t)}.yaml`);
    await writeFile(config, plain.replaceAll(join(dir, 'pw'), '${CREDENTIALS_DIRECTORY}/pw').replaceAll(join(dir, 'backup-pp'), '${CREDENTIALS_DIRECTORY}/backup-pp'));
    const saved = process.env.CREDENTIALS_DIRECTORY;
    delete process.env.CREDENTIALS_DIRECTORY;
    try {
      const without = await runCli(['init-replica', '--config', config, '--from-file', deviceBackup, '--yes']);
      expect(without.code).not.toBe(0);
      expect(without.err).toContain('CREDENTIALS_DIRECTORY');
      const empty = await runCli(['init-replica', '--config', config, '--from-file', deviceBackup, '--yes', '--credentials-dir', '']);
      expect(empty.err).toContain('--credentials-dir must not be empty');
      expect(await state(t)).toBe('Unprovisioned');
      const r = await runCli(['init-replica', '--config', config, '--from-file', deviceBackup, '--yes', '--credentials-dir', dir]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(await state(t)).toBe('Locked');
    } finally {
      if (saved !== undefined) process.env.CREDENTIALS_DIRECTORY = saved;
    }
  });

  it('without a terminal and without --yes, shows the plan and refuses; the device stays Unprovisioned', async () => {
    const t = await target();
    const r = await runCli(['init-replica', '--config', await configFor(t), '--from-file', deviceBackup]);
    expect(r.code).toBe(1);
    expect(r.out).toContain('namespace alpha: 2 users');
    expect(r.err).toMatch(/^Error: not confirmed: stdin is not a terminal to ask on; nothing was written to .* \[NHR_ERR_INIT_REPLICA_REFUSED\]\nTry: Read the plan above, then run again with --yes\.\n$/);
    expect(await state(t)).toBe('Unprovisioned');
  });

  it('--from-peer fetches the device backup from the peer over mutual TLS and restores it, leaving no temp file', async () => {
    const t = await target();
    // A temp directory of this test's own (os.tmpdir() reads TMPDIR): the shared /tmp may hold other runs' files.
    const privateTmp = await mkdtemp(join(tmpdir(), 'nhr-init-replica-test-'));
    const savedTmp = process.env['TMPDIR'];
    process.env['TMPDIR'] = privateTmp;
    let r;
    try {
      r = await runCli(['init-replica', '--config', await configFor(t), '--from-peer', 'a', '--yes']);
    } finally {
      if (savedTmp === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = savedTmp;
    }
    expect(r.code).toBe(0);
    expect(fetched).toEqual(['b']);
    expect(r.err).toMatch(/fetching the device backup from a/);
    expect(r.out).toContain('is now Locked');
    expect(await state(t)).toBe('Locked');
    expect(await readdir(privateTmp)).toEqual([]);
    await rm(privateTmp, { recursive: true, force: true });
  });

  it('refuses an unknown peer, a provisioned target, and a wrong flag combination, writing nothing', async () => {
    const t = await target();
    const config = await configFor(t);
    const unknown = await runCli(['init-replica', '--config', config, '--from-peer', 'zz', '--yes']);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain('Error: peer "zz" is not in the config (configured peers: a) [NHR_ERR_INPUT_INVALID]');
    for (const args of [[], ['--from-file', deviceBackup, '--from-peer', 'a']]) {
      const r = await runCli(['init-replica', '--config', config, '--yes', ...args]);
      expect(r.code).toBe(1);
      expect(r.err).toContain('give exactly one of --from-file <backup> or --from-peer <name>');
    }
    expect(await state(t)).toBe('Unprovisioned');

    // The source itself is Operational: refused by name, before any download.
    const provisioned = join(dir, 'provisioned.yaml');
    await writeFile(provisioned, toYaml({
      site: 'b',
      nethsm: { url: source.url, tls: { fingerprint256: source.fingerprint256 }, credentials: { backup: { user: 'backup', passphrase: { file: join(dir, 'pw') } }, admin: { user: 'admin', passphrase: { file: join(dir, 'pw') } } } },
      peers: [{ name: 'a', url: `https://127.0.0.1:${peer.port}` }],
      tls: { certFile: join(dir, 'b.crt'), keyFile: join(dir, 'b.key'), caFile: join(dir, 'ca.crt') },
      peerApi: { listen: '127.0.0.1:9443' },
      stateDir: join(dir, `state-${targets.indexOf(t)}`),
      replication: { passphrase: { file: join(dir, 'pw') }, backupPassphrase: { file: join(dir, 'backup-pp') } },
    }));
    fetched.length = 0;
    const r = await runCli(['init-replica', '--config', provisioned, '--from-peer', 'a', '--yes']);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`Error: ${source.url} is Operational, not Unprovisioned`);
    expect(fetched).toEqual([]);
  });
});
