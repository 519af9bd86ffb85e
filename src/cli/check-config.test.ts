import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toYaml } from '../config/test-helpers.js';
import { PeerServer } from '../peer/server.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { startSimulator, type RunningSimulator } from '../sim/server.js';
import { TEST_KDF } from '../sim/crypto.js';
import { TEST_SCRYPT } from '../backup/format.js';
import { NetHsmClient } from '../nethsm/client.js';
import { sealPassphraseProof } from '../peer/passphrase-check.js';
import { createCa, issueCert, type CertificateBundle } from '../tls/index.js';
import { runCli } from './test-run.js';
import { checkCatchupCost, type CheckLine } from './check-config.js';
import { parseConfig } from '../config/parse.js';

type ConfigDoc = Record<string, unknown> & {
  nethsm: Record<string, unknown> & { credentials: Record<string, unknown> };
  namespaces: Record<string, unknown>[];
  peers: Record<string, unknown>[];
  tls: Record<string, string>;
};

describe('check-config against a simulator and a peer over mutual TLS', () => {
  let dir: string;
  let sim: ProvisionedSimulator;
  let blank: RunningSimulator;
  let peer: PeerServer;
  let ca: CertificateBundle;
  let siteA: CertificateBundle;
  let siteB: CertificateBundle;
  const secretValues: string[] = [];

  /** Writes a secret file and remembers the value, to check it never shows in the output. */
  async function secret(name: string, value: string): Promise<{ file: string }> {
    const file = join(dir, `${name}.secret`);
    await writeFile(file, value + '\n', { mode: 0o600 });
    secretValues.push(value);
    return { file };
  }

  async function baseDoc(): Promise<ConfigDoc> {
    return {
      site: 'b',
      nethsm: {
        url: sim.url,
        tls: { fingerprint256: sim.fingerprint256 },
        credentials: {
          backup: { user: 'backup', passphrase: await secret('backup', sim.users.backup.password) },
          admin: { user: 'admin', passphrase: await secret('admin', sim.users.admin.password) },
          metrics: { user: 'metrics', passphrase: await secret('metrics', sim.users.metrics.password) },
          operator: { user: 'operator', passphrase: await secret('operator-root', sim.users.operator.password) },
        },
      },
      peers: [{ name: 'a', url: `https://127.0.0.1:${peer.port}` }],
      tls: { certFile: join(dir, 'b.crt'), keyFile: join(dir, 'b.key'), caFile: join(dir, 'ca.crt') },
      peerApi: { listen: '127.0.0.1:9443' },
      replication: { passphrase: await secret('replication', 'replication-pass-xyz'), backupPassphrase: await secret('backup-pp', sim.backupPassphrase) },
      namespaces: [
        {
          name: 'alpha', primary: 'b', schedule: '*/15 * * * *', maxLagForPromote: '30m',
          replicationUser: { user: 'alpha~admin', passphrase: await secret('alpha', sim.nsUsers.alpha!.admin.password) },
        },
        {
          name: 'gamma', primary: 'a', schedule: '*/15 * * * *', maxLagForPromote: '30m',
          replicationUser: { user: 'gamma~replicator', passphrase: await secret('gamma', 'gamma-pass-xyz') },
        },
      ],
    };
  }

  async function check(doc: unknown, ...extra: string[]) {
    const file = join(dir, `config-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, toYaml(doc));
    const r = await runCli(['check-config', '--config', file, ...extra]);
    for (const v of secretValues) {
      expect(r.out).not.toContain(v);
      expect(r.err).not.toContain(v);
    }
    return r;
  }

  const line = (out: string, what: string): string => out.split('\n').find((l) => l.slice(6).startsWith(`${what}:`)) ?? `(no line for ${what})`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nhr-check-config-'));
    [sim, blank] = await Promise.all([startProvisionedSimulator({ namespaces: ['alpha'], backupPassphrase: 'device-backup-pp-xyz' }), startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF })]);
    ca = await createCa({ commonName: 'group CA' });
    siteA = await issueCert(ca, { commonName: 'a', usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
    siteB = await issueCert(ca, { commonName: 'b', usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
    await writeFile(join(dir, 'ca.crt'), ca.certPem);
    await writeFile(join(dir, 'b.crt'), siteB.certPem);
    await writeFile(join(dir, 'b.key'), siteB.keyPem, { mode: 0o600 });
    await writeFile(join(dir, 'a.crt'), siteA.certPem);
    await writeFile(join(dir, 'a.key'), siteA.keyPem, { mode: 0o600 });
    const unused = async (): Promise<never> => Promise.reject(new Error('not used by check-config'));
    const handlers = {
      status: async () => ({ site: 'a', version: '0.1.0', namespaces: [{ namespace: 'gamma', role: 'primary' as const, epoch: 1, primarySite: 'a' }] }),
      snapshot: unused,
      announceEpoch: unused,
      handoff: unused,
      requestSync: unused,
      deviceBackup: unused,
      // Site a's replication passphrase: the one baseDoc gives site b.
      replicationPassphraseProof: (peerName: string, challenge: Buffer) =>
        sealPassphraseProof('replication-pass-xyz', challenge, { sealer: 'a', asker: peerName }, TEST_SCRYPT),
    };
    peer = new PeerServer({ host: '127.0.0.1', port: 0, tls: { ...siteA, caPem: ca.certPem }, peers: [{ name: 'b' }], handlers });
    await peer.start();
  });

  afterAll(async () => {
    await Promise.all([peer?.close(), sim?.close(), blank?.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  it('passes every check of a good site and exits 0, printing no secret', async () => {
    const r = await check(await baseDoc());
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(line(r.out, 'config')).toMatch(/^ok {4}config: site b, 2 namespace\(s\), 1 peer\(s\)$/);
    expect(line(r.out, 'secrets')).toMatch(/^ok/);
    expect(line(r.out, 'tls')).toMatch(/^ok {4}tls: certificate CN=b issued by the group CA, expires in /);
    expect(line(r.out, 'nethsm')).toMatch(/^ok {4}nethsm: https:\/\/127\.0\.0\.1:\d+ \(.+\) is Operational$/);
    expect(line(r.out, 'admin account admin')).toMatch(/^ok {4}.*authenticates as an Administrator/);
    expect(line(r.out, 'backup account backup')).toBe('ok    backup account backup: exists with role Backup and logs in (POST /system/backup)');
    expect(line(r.out, 'device backup passphrase')).toMatch(/^ok {4}device backup passphrase: replication\.backupPassphrase opens this NetHSM's backups \(read the first \d+ bytes of one; download stopped\)$/);
    expect(line(r.out, 'metrics account metrics')).toMatch(/^ok/);
    expect(line(r.out, 'operator account operator')).toBe(
      'ok    operator account operator: authenticates as an Operator; the transport key nhrtransport does not exist yet (the daemon creates it at its first start)',
    );
    expect(line(r.out, 'namespace alpha account alpha~admin')).toMatch(/^ok {4}.*authenticates as an Administrator of alpha$/);
    expect(line(r.out, 'namespace gamma account gamma~replicator')).toMatch(/^warn {2}.*arrives with the namespace's first sync from a$/);
    expect(line(r.out, 'peer a')).toMatch(/^ok {4}peer a: https:\/\/127\.0\.0\.1:\d+ answers over mutual TLS \(nethsm-replicator 0\.1\.0, 1 namespace\(s\)\)$/);
    expect(line(r.out, 'peer a replication passphrase')).toBe("ok    peer a replication passphrase: replication.passphrase is the same as a's (a challenge sealed by a opens here)");
    expect(line(r.out, 'catch-up cost')).toMatch(
      /^ok {4}catch-up cost: namespaces alpha, gamma \(generate: device\): a catch-up snapshot into a NetHSM of \d+ entries \(this one's keys\) takes about [\d.]+ s, holding writes [\d.]+ s \(estimate from the default figures\), within stream\.catchupWindow \(30 s\)$/,
    );
    expect(r.out).toMatch(/\nno check failed \(1 warning\(s\)\)\n$/);
  });

  it('warns when a catch-up of a device-generating namespace would outlast stream.catchupWindow, or nothing bounds it', async () => {
    const doc = (await baseDoc()) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    // Without the peer: the peer limits passphrase checks, which the other tests need.
    doc.namespaces = [doc.namespaces[0]];
    doc.peers = [];
    doc.gateway = { listen: '127.0.0.1:0', certFile: join(dir, 'b.crt'), keyFile: join(dir, 'b.key') };
    doc.stream = { catchupWindow: '0s' };
    const r = await check(doc);
    expect(r.code).toBe(0);
    expect(line(r.out, 'catch-up cost')).toMatch(/^warn {2}catch-up cost: namespace alpha \(generate: device\): stream\.catchupWindow is 0s, so catch-ups are not bounded/);
    doc.namespaces[0].generate = 'replicated';
    expect((await check(doc)).out).not.toContain('catch-up cost');
    // The estimate grows with the device: 100k entries at the default figures (0.21 ms each) outlast a 10 s window.
    const lines: CheckLine[] = [];
    const config = parseConfig(toYaml({ ...doc, namespaces: [{ ...doc.namespaces[0], generate: 'device' }], stream: { catchupWindow: '10s' } }), {});
    checkCatchupCost(config, 100_000, (l) => lines.push(l));
    expect(lines).toEqual([
      {
        outcome: 'warn',
        what: 'catch-up cost',
        detail:
          "namespace alpha (generate: device): a catch-up snapshot into a NetHSM of 100000 entries (this one's keys) takes about 21.0 s, holding writes 6.0 s " +
          '(estimate from the default figures), longer than stream.catchupWindow (10 s). Try: set stream.catchupWindow above 21 s, or generate: replicated for these namespaces so generated keys are streamed per key (docs/streaming.md)',
      },
    ]);
  });

  it('lists every config problem and stops there', async () => {
    const doc = await baseDoc();
    delete doc.site;
    doc.namespaces[0]!.schedule = 'every tuesday';
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^FAIL {2}config: .* is invalid \(\d+ problems\):/);
    expect(r.out).toContain('every tuesday');
    expect(r.out).toContain('- site is required');
    expect(r.out).not.toContain('nethsm:');
    expect(r.out).toMatch(/\n1 check\(s\) FAILED\n$/);
  });

  it('names an unreadable secret by path and skips the account checks', async () => {
    const doc = await baseDoc();
    (doc.nethsm.credentials.admin as { passphrase: unknown }).passphrase = { file: join(dir, 'nope.secret') };
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(line(r.out, 'secrets')).toMatch(/^FAIL/);
    expect(r.out).toContain(`- nethsm.credentials.admin.passphrase: file ${join(dir, 'nope.secret')} cannot be read (ENOENT)`);
    expect(line(r.out, 'nethsm')).toMatch(/^ok/);
    expect(line(r.out, 'accounts')).toMatch(/^skip {2}accounts: not checked: secrets are unreadable/);
    expect(line(r.out, 'peer a')).toMatch(/^ok/);
  });

  it('fails a backup account with the wrong role, a replication account that is an Operator, and a missing one at its primary', async () => {
    const doc = await baseDoc();
    doc.nethsm.credentials.backup = { user: 'operator', passphrase: await secret('operator', sim.users.operator.password) };
    doc.namespaces[0]!.replicationUser = { user: 'alpha~operator', passphrase: await secret('alpha-op', sim.nsUsers.alpha!.operator.password) };
    doc.namespaces[1]!.primary = 'b';
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(line(r.out, 'backup account operator')).toBe('FAIL  backup account operator: has role Operator, needs Backup');
    expect(line(r.out, 'device backup passphrase')).toMatch(/^skip/);
    expect(line(r.out, 'namespace alpha account alpha~operator')).toMatch(/has role Operator; the daemon needs an Administrator of alpha$/);
    expect(line(r.out, 'namespace gamma account gamma~replicator')).toMatch(/^FAIL {2}.*does not exist on the NetHSM/);
  });

  it('fails a peer that presents another certificate and one that does not answer', async () => {
    const doc = await baseDoc();
    doc.peers = [
      { name: 'c', url: `https://127.0.0.1:${peer.port}` },
      { name: 'a', url: 'https://127.0.0.1:1' },
    ];
    doc.namespaces = [doc.namespaces[0]!];
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(line(r.out, 'peer c')).toMatch(/^FAIL {2}peer c: peer c presented the wrong certificate.*\[NHR_ERR_PEER_IDENTITY\]/);
    expect(line(r.out, 'peer a')).toMatch(/^FAIL {2}peer a: peer a is unreachable.*\[NHR_ERR_PEER_UNREACHABLE\]/);
  });

  it("fails this site's certificate when its CN is not the site name, and skips the peers", async () => {
    const doc = await baseDoc();
    doc.tls = { ...doc.tls, certFile: join(dir, 'a.crt'), keyFile: join(dir, 'a.key') };
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(line(r.out, 'tls')).toContain(`tls.certFile's CN is "a", peers expect the site name b`);
    expect(line(r.out, 'peer a')).toMatch(/^skip/);
  });

  it('says what to do with a NetHSM that is not Operational', async () => {
    const doc = await baseDoc();
    doc.nethsm = { ...doc.nethsm, url: blank.url, tls: { fingerprint256: blank.fingerprint256 } };
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(line(r.out, 'nethsm')).toMatch(/is Unprovisioned, not Operational: bootstrap it with `nethsm-replicator init-replica`$/);
    expect(line(r.out, 'accounts')).toMatch(/^skip/);
  });

  it('--offline checks the file, secrets and TLS files only', async () => {
    const doc = await baseDoc();
    doc.nethsm = { ...doc.nethsm, url: 'https://127.0.0.1:1' };
    doc.peers = [{ name: 'a', url: 'https://127.0.0.1:1' }];
    const r = await check(doc, '--offline');
    expect(r.code).toBe(0);
    expect(r.out.split('\n').filter((l) => l.startsWith('ok')).map((l) => l.split(':')[0])).toEqual(['ok    config', 'ok    secrets', 'ok    tls']);
    expect(line(r.out, 'network')).toMatch(/^skip/);
  });

  it('fails a device backup passphrase that is not the NetHSM\'s, naming replication.backupPassphrase, from a backup\'s header only', async () => {
    const doc = await baseDoc();
    (doc.replication as Record<string, unknown>).backupPassphrase = await secret('backup-pp-wrong', 'not-the-device-backup-passphrase');
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(line(r.out, 'backup account backup')).toMatch(/^ok/);
    expect(line(r.out, 'device backup passphrase')).toBe(
      "FAIL  device backup passphrase: replication.backupPassphrase does not open this NetHSM's backups: it is not the backup passphrase set on the NetHSM [NHR_ERR_BACKUP_WRONG_PASSPHRASE]",
    );
  });

  it('fails a replication passphrase that differs from a peer\'s, naming replication.passphrase, without any snapshot', async () => {
    const doc = await baseDoc();
    (doc.replication as Record<string, unknown>).passphrase = await secret('replication-wrong', 'another-group-passphrase');
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(line(r.out, 'peer a')).toMatch(/^ok/);
    expect(line(r.out, 'peer a replication passphrase')).toBe(
      "FAIL  peer a replication passphrase: replication.passphrase differs from a's: every site of the replication group needs the same one (snapshots from a would not open here)",
    );
  });

  it('proves the Operator unwraps with the transport key once the key exists', async () => {
    const admin = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, auth: { username: 'admin', password: sim.users.admin.password } });
    try {
      await admin.generateKey({ id: 'nhrtransport', type: 'RSA', length: 2048, mechanisms: ['RSA_Decryption_OAEP_SHA256'] });
      const r = await check(await baseDoc());
      expect(line(r.out, 'operator account operator')).toBe('ok    operator account operator: authenticates as an Operator and unwraps with this site\'s transport key nhrtransport');
      const doc = await baseDoc();
      doc.nethsm.credentials.operator = { user: 'metrics', passphrase: await secret('metrics-as-op', sim.users.metrics.password) };
      const wrongRole = await check(doc);
      expect(line(wrongRole.out, 'operator account metrics')).toBe('FAIL  operator account metrics: has role Metrics, needs Operator (it unwraps streamed keys with the transport key)');
    } finally {
      await admin.deleteKey('nhrtransport').catch(() => undefined);
      await admin.close();
    }
  });

  it('fails a wrong operator passphrase, naming nethsm.credentials.operator', async () => {
    const doc = await baseDoc();
    doc.nethsm.credentials.operator = { user: 'operator', passphrase: await secret('operator-wrong', 'not-the-operator-pass') };
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(line(r.out, 'operator account operator')).toBe(
      'FAIL  operator account operator: the NetHSM refused the credentials (401): wrong user or passphrase in nethsm.credentials.operator',
    );
  });

  // Last: a failed login makes the NetHSM refuse that user for a second (rate limit), which would upset later tests.
  it('fails a wrong admin passphrase and skips the accounts looked up with it', async () => {
    const doc = await baseDoc();
    doc.nethsm.credentials.admin = { user: 'admin', passphrase: await secret('admin-wrong', 'not-the-admin-pass') };
    const r = await check(doc);
    expect(r.code).toBe(1);
    expect(line(r.out, 'admin account admin')).toMatch(/^FAIL {2}.*refused the credentials \(401\): wrong user or passphrase in nethsm\.credentials\.admin$/);
    expect(line(r.out, 'other accounts')).toMatch(/^skip/);
  });
});

describe('check-config from a shell, with the shipped example config', () => {
  const example = join(import.meta.dirname, '..', '..', 'deploy', 'config.example.yaml');

  it('explains CREDENTIALS_DIRECTORY when it is unset, and --credentials-dir stands in for it', async () => {
    const saved = process.env.CREDENTIALS_DIRECTORY;
    delete process.env.CREDENTIALS_DIRECTORY;
    const dir = await mkdtemp(join(tmpdir(), 'nhr-creds-'));
    try {
      const without = await runCli(['check-config', '--config', example, '--offline']);
      expect(without.code).toBe(1);
      expect(without.out).toContain('refers to environment variable CREDENTIALS_DIRECTORY, which is not set (systemd sets it for the service');
      expect(without.out).toContain('--credentials-dir');
      // The directory given stands for ${CREDENTIALS_DIRECTORY}: the config parses, and the missing files are named there.
      const withDir = await runCli(['check-config', '--config', example, '--offline', '--credentials-dir', dir]);
      expect(withDir.out).toMatch(/^ok {4}config: site berlin/m);
      expect(withDir.out).toContain(join(dir, 'nethsm-admin'));
      const empty = await runCli(['check-config', '--config', example, '--offline', '--credentials-dir', '']);
      expect(empty.code).toBe(1);
      expect(empty.err).toContain('--credentials-dir must not be empty');
    } finally {
      if (saved !== undefined) process.env.CREDENTIALS_DIRECTORY = saved;
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('says where the config file should be when it does not exist', async () => {
    const r = await runCli(['status', '--config', '/nonexistent/nethsm-replicator.yaml']);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain('config file /nonexistent/nethsm-replicator.yaml cannot be read (ENOENT)');
    expect(r.err).toMatch(/\nTry: Give the config file with --config <file> \(default \/etc\/nethsm-replicator\/config\.yaml\)/);
  });
});
