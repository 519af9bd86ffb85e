/**
 * The shipped example config works under the shipped unit: the daemon is started with exactly the environment
 * `deploy/nethsm-replicator.service` gives it (its `Environment=` lines, `CREDENTIALS_DIRECTORY` holding one file per
 * `LoadCredential=` name, and PATH; nothing else of the test's environment), against `deploy/config.example.yaml`
 * adapted only where a site must adapt it: host names, ports and paths, plus the NetHSM's certificate pin (the
 * simulator's own certificate). Its secrets, accounts and namespaces are the example's, unchanged.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/lab/lab.js';
import { simCaller, startProvisionedSimulator, type ProvisionedSimulator } from '../../src/sim/fixture.js';
import { createCa, issueCert } from '../../src/tls/index.js';
import { built, cliBin, repoRoot } from '../helpers/daemon-process.js';
import { waitFor } from '../helpers/wait.js';

const unitText = await readFile(path.join(repoRoot, 'deploy/nethsm-replicator.service'), 'utf8');
const exampleText = await readFile(path.join(repoRoot, 'deploy/config.example.yaml'), 'utf8');

/** Values of a unit directive (uncommented lines only). */
function directive(name: string): string[] {
  return unitText.split('\n').flatMap((l) => {
    const m = new RegExp(`^${name}=(.*)$`).exec(l.trim());
    return m ? [m[1] ?? ''] : [];
  });
}

/** Replaces one value of the example, failing loudly when the example no longer holds it (the adaptation is exact). */
function adapt(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`config.example.yaml no longer contains ${from}: update this test's adaptation`);
  return text.split(from).join(to);
}

describe.skipIf(!built)('the example config under the shipped unit — needs `npm run build`', () => {
  let dir: string | undefined;
  let sim: ProvisionedSimulator | undefined;
  let child: ReturnType<typeof spawn> | undefined;
  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await sim?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("starts with only the unit's environment (credentials directory from LoadCredential=, Environment=, PATH)", async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-unit-env-'));
    const creds = path.join(dir, 'credentials');
    const tlsDir = path.join(dir, 'tls');
    await mkdir(creds, { mode: 0o700 });
    await mkdir(tlsDir);

    // The NetHSM, with the accounts the example names.
    sim = await startProvisionedSimulator();
    const c = simCaller(sim);
    const admin = sim.users.admin;
    const secret: Record<string, string> = {
      'replication-passphrase': 'a replication passphrase',
      'nethsm-backup-passphrase': sim.backupPassphrase,
      'nethsm-backup': sim.users.backup.password,
      'nethsm-admin': admin.password,
      'nethsm-metrics': sim.users.metrics.password,
      'nethsm-operator': 'replicatorOperatorPassphrase',
      'payments-replicator': 'paymentsReplicatorPassphrase',
      'signing-replicator': 'signingReplicatorPassphrase',
    };
    try {
      await c.call('PUT', '/users/replicator-operator', { auth: admin, json: { realName: 'replicator', role: 'Operator', passphrase: secret['nethsm-operator'] }, expect: 201 });
      await c.call('PUT', '/users/payments~replicator', { auth: admin, json: { realName: 'replication', role: 'Administrator', passphrase: secret['payments-replicator'] }, expect: 201 });
      await c.call('PUT', '/namespaces/payments', { auth: admin, expect: 204 });
    } finally {
      await c.close();
    }

    // Certificates: the group CA, berlin's peer certificate, the gateway's.
    const ca = await createCa({ commonName: 'replication group CA' });
    const peerCert = await issueCert(ca, { commonName: 'berlin', usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
    const gwCert = await issueCert(ca, { commonName: 'gateway.berlin', usages: ['serverAuth'], ipAddresses: ['127.0.0.1'] });
    await writeFile(path.join(tlsDir, 'group-ca.crt'), ca.certPem);
    await writeFile(path.join(tlsDir, 'berlin.crt'), peerCert.certPem);
    await writeFile(path.join(tlsDir, 'gateway.crt'), gwCert.certPem);
    secret['peer-tls-key'] = peerCert.keyPem;
    secret['gateway-tls-key'] = gwCert.keyPem;

    // One file per LoadCredential= name, as systemd lays out $CREDENTIALS_DIRECTORY.
    const names = directive('LoadCredential').map((v) => v.split(':')[0] ?? '');
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) {
      const value = secret[name];
      if (value === undefined) throw new Error(`the unit loads credential ${name}, which this test does not know: add it`);
      await writeFile(path.join(creds, name), value, { mode: 0o600 });
    }

    // The adaptation: host names, ports, paths, and the NetHSM's pin. Nothing else.
    let config = exampleText;
    config = adapt(config, 'https://nethsm.berlin.example.net:443', sim.url);
    config = adapt(config, /fingerprint256: "([0-9A-F:]+)"/.exec(exampleText)?.[1] ?? 'no pin in the example', sim.fingerprint256);
    config = adapt(config, 'https://replicator.hamburg.example.net:9443', `https://127.0.0.1:${await freePort()}`);
    config = adapt(config, '/etc/nethsm-replicator/tls/', `${tlsDir}/`);
    config = adapt(config, 'listen: 0.0.0.0:9443', `listen: 127.0.0.1:${await freePort()}`);
    config = adapt(config, 'listen: 127.0.0.1:9810', `listen: 127.0.0.1:${await freePort()}`);
    config = adapt(config, 'listen: 0.0.0.0:8443', `listen: 127.0.0.1:${await freePort()}`);
    config = adapt(config, 'stateDir: /var/lib/nethsm-replicator', `stateDir: ${path.join(dir, 'state')}`);
    const configPath = path.join(dir, 'config.yaml');
    await writeFile(configPath, config);

    // The unit's environment and nothing else (PATH as systemd's default search path would give it).
    const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', CREDENTIALS_DIRECTORY: creds };
    for (const v of directive('Environment')) {
      const [k, ...rest] = v.split('=');
      env[k ?? ''] = rest.join('=');
    }
    child = spawn(process.execPath, [cliBin, 'daemon', '--config', configPath], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let logs = '';
    child.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
    let exit: number | null | undefined;
    child.once('exit', (code) => (exit = code));
    await waitFor(() => logs.includes('daemon started') || exit !== undefined, 'the daemon to start or exit', 30_000);
    expect(exit, `the daemon exited (78 = config or secret problem):\n${logs}`).toBeUndefined();

    // It really uses what the unit hands over: its NetHSM member is ok with the credentials from the directory.
    const status = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const s = spawn(process.execPath, [cliBin, 'status', '--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      s.stdout.on('data', (d: Buffer) => (out += d.toString()));
      s.on('close', (code) => resolve({ code, out }));
    });
    expect(status.out).toMatch(/^site berlin /m);
    expect(status.out).toMatch(/^nethsm\s+nethsm\s+ok\b/m);
    expect(status.out).not.toMatch(/refused the .* credential/);
    expect(status.out).toMatch(/^payments\s+primary\b/m);
  }, 60_000);
});
