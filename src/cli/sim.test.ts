import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect as tlsConnect } from 'node:tls';
import { Agent, request } from 'undici';
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
    });
    expect(parseSimFlags({ port: '8443', host: '::1', dataDir: '/tmp/x', testScrypt: true }).dataDir).toBe('/tmp/x');
    expect(parseSimFlags({ port: '0', host: 'h', dataDir: '/tmp/x', durable: true }).durable).toBe(true);
  });

  it('refuses a bad port and a bad latency spec with a clear message', () => {
    expect(() => parseSimFlags({ port: '70000', host: 'h' })).toThrow(/--port must be an integer/);
    expect(() => parseSimFlags({ port: 'x', host: 'h' })).toThrow(InputInvalidError);
    expect(() => parseSimFlags({ port: '0', host: 'h', latency: 'sign=fast' })).toThrow(/--latency: latency item "sign=fast"/);
    expect(() => parseSimFlags({ port: '0', host: 'h', latency: 'teleport=5ms' })).toThrow(/unknown operation "teleport"/);
    expect(() => parseSimFlags({ port: '0', host: 'h', durable: true })).toThrow(/--durable needs --data-dir/);
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
