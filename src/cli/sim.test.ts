import { describe, it, expect } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect as tlsConnect } from 'node:tls';
import { Agent, request } from 'undici';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { parseSimFlags } from './sim.js';
import { InputInvalidError } from '../errors.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = path.join(repoRoot, 'bin', 'nethsm-replicator');
const built = existsSync(path.join(repoRoot, 'dist', 'cli', 'sim.js'));
if (!built) console.warn('skipping the sim CLI process test: dist/cli/sim.js is absent (run `npm run build`)');

describe('sim flags', () => {
  it('accepts a port, host, data dir and latency spec', () => {
    expect(parseSimFlags({ port: '0', host: '127.0.0.1', latency: 'sign=40ms,generate=0.9s,restore-per-entry=2' })).toEqual({
      port: 0,
      host: '127.0.0.1',
      latency: { sign: 40, generate: 900, 'restore-per-entry': 2 },
      testScrypt: false,
      durable: false,
      rebootDelayMs: 0,
      fills: [],
    });
    expect(parseSimFlags({ port: '8443', host: '::1', dataDir: '/tmp/x', testScrypt: true }).dataDir).toBe('/tmp/x');
    expect(parseSimFlags({ port: '0', host: 'h', dataDir: '/tmp/x', durable: true }).durable).toBe(true);
  });

  it('refuses a bad port and a bad latency spec with a clear message', () => {
    expect(() => parseSimFlags({ port: '70000', host: 'h' })).toThrow(/--port must be an integer/);
    expect(() => parseSimFlags({ port: 'x', host: 'h' })).toThrow(InputInvalidError);
    expect(() => parseSimFlags({ port: '0', host: 'h', latency: 'sign=fast' })).toThrow(/--latency: latency item "sign=fast"/);
    expect(() => parseSimFlags({ port: '0', host: 'h', latency: 'teleport=5ms' })).toThrow(/unknown operation "teleport"/);
    expect(() => parseSimFlags({ port: '0', host: 'h', rebootDelay: '-1' })).toThrow(/--reboot-delay must be a whole number/);
    expect(() => parseSimFlags({ port: '0', host: 'h', rebootDelay: '1s' })).toThrow(/--reboot-delay must be a whole number/);
    expect(() => parseSimFlags({ port: '0', host: 'h', durable: true })).toThrow(/--durable needs --data-dir/);
  });

  it('takes --device-slots as a whole number from 1 to 1024, and refuses anything else', () => {
    expect(parseSimFlags({ port: '0', host: 'h', deviceSlots: '4' }).deviceSlots).toBe(4);
    expect(parseSimFlags({ port: '0', host: 'h' })).not.toHaveProperty('deviceSlots');
    for (const bad of ['0', '-1', '1.5', 'two', '1025', '']) {
      expect(() => parseSimFlags({ port: '0', host: 'h', deviceSlots: bad })).toThrow(/--device-slots must be a whole number from 1 to 1024/);
    }
  });

  it('takes --fill specs in order, and refuses a bad one naming --fill and the bad part', () => {
    expect(parseSimFlags({ port: '0', host: 'h', fill: ['alpha:1000', 'alpha:2000:s1'] }).fills).toEqual([
      { namespace: 'alpha', count: 1000, seed: 'fill' },
      { namespace: 'alpha', count: 2000, seed: 's1' },
    ]);
    expect(() => parseSimFlags({ port: '0', host: 'h', fill: ['alpha:1000', 'alpha:lots'] })).toThrow(InputInvalidError);
    expect(() => parseSimFlags({ port: '0', host: 'h', fill: ['alpha:lots'] })).toThrow(/^--fill "alpha:lots": count must be a whole number from 1 to 10000000, got "lots"$/);
    expect(() => parseSimFlags({ port: '0', host: 'h', fill: ['alpha'] })).toThrow(/^--fill "alpha" is not <namespace>:<count>\[:<seed>\]$/);
  });

  it('reads --update-key and refuses a missing file or a key that is not RSA', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nhr-sim-flags-'));
    try {
      const rsa = path.join(dir, 'rsa.pem');
      const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
      await writeFile(rsa, pem);
      expect(parseSimFlags({ port: '0', host: 'h', updateKey: rsa, rebootDelay: '250' })).toMatchObject({ updateKeyPem: pem, rebootDelayMs: 250 });
      const ec = path.join(dir, 'ec.pem');
      await writeFile(ec, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString());
      expect(() => parseSimFlags({ port: '0', host: 'h', updateKey: ec })).toThrow(/--update-key .*ec\.pem: update key must be an RSA public key, got ec/);
      expect(() => parseSimFlags({ port: '0', host: 'h', updateKey: path.join(dir, 'missing.pem') })).toThrow(/--update-key: cannot read .*missing\.pem/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!built)('nethsm-replicator sim (process)', () => {
  it('prints its URL and fingerprint, serves the API, and exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, [bin, 'sim', '--port', '0', '--test-scrypt'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NHR_LOG_LEVEL: 'warn' } });
    try {
      let out = '';
      const lines = await new Promise<string[]>((resolve, reject) => {
        child.stdout.setEncoding('utf8');
        child.stdout.on('data', (c: string) => {
          out += c;
          if (/fingerprint .+\n/.test(out)) resolve(out.split('\n'));
        });
        child.once('exit', (code) => reject(new Error(`sim exited early with ${code}`)));
      });
      const url = /^listening on (https:\/\/127\.0\.0\.1:\d+)$/.exec(lines[0] ?? '')?.[1];
      const fp = /^fingerprint ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})$/.exec(lines[1] ?? '')?.[1];
      expect(url).toBeDefined();
      expect(fp).toBeDefined();
      // The served certificate is the one whose fingerprint was printed.
      const u = new URL(url!);
      const seen = await new Promise<string>((resolve, reject) => {
        const sock = tlsConnect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false }, () => {
          resolve(sock.getPeerCertificate().fingerprint256);
          sock.end();
        });
        sock.once('error', reject);
      });
      expect(seen).toBe(fp);
      const agent = new Agent({ connect: { rejectUnauthorized: false } });
      const res = await request(`${url}/api/v1/health/state`, { dispatcher: agent });
      expect(await res.body.json()).toEqual({ state: 'Unprovisioned' });
      await agent.close();
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('stays up after POST /system/shutdown and powers on again on SIGHUP', async () => {
    const { child, waitFor } = spawnSim([]);
    const agent = new Agent({ connect: { rejectUnauthorized: false } });
    try {
      const url = (await waitFor(/listening on (https:\/\/\S+)\n/))[1]!;
      const shut = await request(`${url}/api/v1/system/shutdown`, { method: 'POST', dispatcher: agent });
      await shut.body.dump();
      expect(shut.statusCode).toBe(204);
      await waitFor(/power off \(shutdown\) \(send SIGHUP to power on\)\n/);
      await expect(request(`${url}/api/v1/health/state`, { dispatcher: agent })).rejects.toThrow();
      expect(child.exitCode).toBeNull();
      child.kill('SIGHUP');
      await waitFor(/power on \(power-on\) fingerprint (?:[0-9A-F]{2}:){31}[0-9A-F]{2}\n/);
      const res = await request(`${url}/api/v1/health/state`, { dispatcher: agent });
      expect(await res.body.json()).toEqual({ state: 'Unprovisioned' });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      await agent.close();
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('--fill waits while the device cannot take it, and fills on SIGUSR2 once it can', async () => {
    const { child, waitFor } = spawnSim(['--fill', 'alpha:30']);
    const agent = new Agent({ connect: { rejectUnauthorized: false } });
    const call = async (method: string, p: string, json?: unknown, user = 'admin:adminPassphrase'): Promise<{ status: number; body: string }> => {
      const headers: Record<string, string> = { authorization: `Basic ${Buffer.from(user).toString('base64')}` };
      if (json !== undefined) headers['content-type'] = 'application/json';
      const res = await request(`${url}/api/v1${p}`, { method: method as 'GET', headers, body: json === undefined ? undefined : JSON.stringify(json), dispatcher: agent });
      return { status: res.statusCode, body: await res.body.text() };
    };
    let url = '';
    try {
      url = (await waitFor(/listening on (https:\/\/\S+)\n/))[1]!;
      await waitFor(/fill of alpha waits: cannot fill alpha: the device is not Operational \(send SIGUSR2 to try again\)\n/);
      const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
      expect((await call('POST', '/provision', { unlockPassphrase: 'unlockPassphrase', adminPassphrase: 'adminPassphrase', systemTime: now })).status).toBe(204);
      child.kill('SIGUSR2');
      await waitFor(/fill of alpha waits: cannot fill alpha: namespace "alpha" does not exist/);
      expect((await call('PUT', '/users/alpha~op', { realName: 'op', role: 'Operator', passphrase: 'operatorPassphrase' })).status).toBe(201);
      expect((await call('PUT', '/namespaces/alpha')).status).toBe(204);
      child.kill('SIGUSR2');
      await waitFor(/filled alpha: 30 keys added, 0 kept, in \d+ ms\n/);
      const listed = JSON.parse((await call('GET', '/keys', undefined, 'alpha~op:operatorPassphrase')).body) as { id: string }[];
      expect(listed.length).toBe(30);
      child.kill('SIGUSR2');
      await waitFor(/fill: nothing left to fill\n/);
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      await agent.close();
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('exits non-zero with a clear error for a bad latency flag', async () => {
    const child = spawn(process.execPath, [bin, 'sim', '--port', '0', '--latency', 'sign=soon'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (c: string) => (err += c));
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    expect(code).not.toBe(0);
    expect(err).toMatch(/--latency: latency item "sign=soon"/);
  });
});

/** `nethsm-replicator sim` as a child process on a port the system picks, and a wait for a line of its stdout. */
function spawnSim(args: string[]): { child: ChildProcess; waitFor: (re: RegExp) => Promise<RegExpExecArray> } {
  const child = spawn(process.execPath, [bin, 'sim', '--port', '0', '--test-scrypt', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NHR_LOG_LEVEL: 'warn' } });
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (c: string) => (out += c));
  const waitFor = async (re: RegExp): Promise<RegExpExecArray> => {
    for (let i = 0; i < 1000; i++) {
      const m = re.exec(out);
      if (m) return m;
      if (child.exitCode !== null) throw new Error(`sim exited with ${child.exitCode}: ${out}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`no ${String(re)} in: ${out}`);
  };
  return { child, waitFor };
}
