import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, LAB_PASSPHRASES } from '../../src/lab/lab.js';
import { waitFor } from '../helpers/wait.js';

const repo = path.resolve(import.meta.dirname, '../..');
const bin = path.join(repo, 'bin/nethsm-replicator');
const built = existsSync(path.join(repo, 'dist/cli/main.js'));

function cli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

describe.skipIf(!built)('the daemon as a process (systemd ExecStart) — needs `npm run build`', () => {
  let lab: Lab;
  let daemonB: ChildProcess;
  let logs = '';

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.site('a').startDaemon();
    const c = lab.site('a').nsAdmin('alpha');
    await c.generateKey({ id: 'k1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    await c.close();
    daemonB = spawn(process.execPath, [bin, 'daemon', '--config', path.join(lab.site('b').dir, 'config.yaml')], {
      env: { ...process.env, NHR_UNSAFE_TEST_SCRYPT: '1', NHR_LOG_LEVEL: 'debug' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    daemonB.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
    await waitFor(() => logs.includes('daemon started'), 'daemon b to start', 20_000);
  });

  afterAll(async () => {
    if (daemonB.exitCode === null) daemonB.kill('SIGKILL');
    await lab?.close();
  });

  it('serves the operator CLI: sync and status over the admin socket', async () => {
    const config = path.join(lab.site('b').dir, 'config.yaml');
    const sync = await cli(['sync', 'alpha', '--config', config]);
    expect(sync.err).toBe('');
    expect(sync.code).toBe(0);
    expect(sync.out).toMatch(/alpha/);
    const status = await cli(['status', '--config', config, '--json']);
    expect(status.code).toBe(0);
    const s = JSON.parse(status.out) as { site: string; namespaces: { name: string; role: string; lastSync: { outcome: string } }[] };
    expect(s.site).toBe('b');
    expect(s.namespaces[0]).toMatchObject({ name: 'alpha', role: 'replica', lastSync: { outcome: 'ok' } });
  });

  it('answers the health, role and metrics endpoints a load balancer and Prometheus ask', async () => {
    const port = Number(/"healthPort":(\d+)/.exec(logs)?.[1]);
    const get = async (p: string) => {
      const r = await request(`http://127.0.0.1:${port}${p}`);
      return { status: r.statusCode, body: await r.body.text() };
    };
    expect((await get('/health/live')).status).toBe(200);
    expect((await get('/health/ready')).status).toBe(200);
    expect((await get('/replica/alpha?max_lag=1h')).status).toBe(200);
    expect((await get('/primary/alpha')).status).toBe(503);
    expect((await get('/replica/alpha?max_lag=1ms')).status).toBe(503);
    expect((await get('/replica/alpha?max_lag=soon')).status).toBe(400);
    const metrics = (await get('/metrics')).body;
    expect(metrics).toMatch(/nethsm_replicator_namespace_role\{namespace="alpha",role="replica"\} 1/);
    expect(metrics).toMatch(/nethsm_replicator_member_up\{member="a"\} 1/);
    // The NetHSM's own metrics, re-exported with the Metrics account.
    expect(metrics).toMatch(/nethsm_replicator_nethsm_metrics_up 1/);
    expect(metrics).toMatch(/^nethsm_[a-z0-9_]+ \d/m);
  });

  it('stops cleanly on SIGTERM with exit code 0, removing its admin socket', async () => {
    const exited = new Promise<number | null>((r) => daemonB.once('exit', (code) => r(code)));
    daemonB.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(logs).toMatch(/daemon stopped/);
    // The lab's config says logging.level info; NHR_LOG_LEVEL=debug in the environment overrides it.
    expect(logs).toMatch(/"level":"debug"/);
    expect(existsSync(lab.site('b').config.admin.socket)).toBe(false);
    expect(logs.includes(LAB_PASSPHRASES.admin)).toBe(false);
  });

  it('refuses a broken config with exit code 78 and names the problem', async () => {
    const r = await cli(['daemon', '--config', path.join(lab.dir, 'missing.yaml')]);
    expect(r.code).toBe(78);
    expect(r.err).toMatch(/^Error: config file .*missing\.yaml cannot be read \(ENOENT\) \[NHR_ERR_CONFIG_INVALID\]\nTry: /m);
  });

  it('refuses an unreadable file the config names with exit code 78, naming the setting', async () => {
    const b = lab.site('b');
    const text = (await readFile(path.join(b.dir, 'config.yaml'), 'utf8')).replace(path.join(b.dir, 'peer.key'), path.join(b.dir, 'no-such.key'));
    const broken = path.join(b.dir, 'broken.yaml');
    await writeFile(broken, text, { mode: 0o600 });
    const r = await cli(['daemon', '--config', broken]);
    expect(r.code).toBe(78);
    expect(r.err).toContain(`Error: tls.keyFile ${path.join(b.dir, 'no-such.key')} cannot be read (ENOENT) [NHR_ERR_CONFIG_INVALID]`);
  });
});
