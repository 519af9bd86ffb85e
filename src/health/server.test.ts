import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { Registry } from 'prom-client';
import { createReplicatorMetrics } from '../metrics/metrics.js';
import { createNetHsmExporter } from '../metrics/nethsm-exporter.js';
import { createSelfSignedCertificate } from '../tls/index.js';
import { HealthServer, type HealthServerOptions } from './server.js';
import type { HealthSource, NamespaceHealth, Readiness } from './source.js';

/** A small in-test source whose answers each test sets. */
class TestSource implements HealthSource {
  readiness: Readiness | (() => Promise<Readiness>) = {
    ready: true,
    checks: { nethsm: { ok: true }, state: { ok: true } },
  };
  namespaces = new Map<string, NamespaceHealth>([
    ['alpha', { role: 'primary', lagSeconds: null, epoch: 3 }],
    ['beta', { role: 'replica', lagSeconds: 42, lagLimitSeconds: 300, epoch: 2 }],
    ['gamma', { role: 'fenced', lagSeconds: null, epoch: 1 }],
    ['delta', { role: 'replica', lagSeconds: null }],
    ['eps', { role: 'replica', lagSeconds: 5000 }],
  ]);
  ready(): Promise<Readiness> {
    return typeof this.readiness === 'function' ? this.readiness() : Promise.resolve(this.readiness);
  }
  namespaceRole(ns: string): NamespaceHealth | undefined {
    return this.namespaces.get(ns);
  }
}

interface Answer { status: number; headers: http.IncomingHttpHeaders; body: string }

function request(url: string, method = 'GET', ca?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.request(url, { method, ...(ca ? { ca } : {}), agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sends raw bytes (for request targets an HTTP client would refuse to send) and returns the status line. */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(text));
    let out = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => (out += c));
    socket.on('end', () => resolve(out.split('\r\n')[0] ?? ''));
    socket.on('error', reject);
  });
}

const servers: HealthServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(overrides: Partial<HealthServerOptions> = {}) {
  const source = new TestSource();
  const registry = new Registry();
  const metrics = createReplicatorMetrics({ registry, processMetrics: false });
  const server = new HealthServer({ host: '127.0.0.1', port: 0, source, metrics: registry, ...overrides });
  servers.push(server);
  const address = await server.start();
  return { server, source, metrics, address, base: address.url };
}

describe('health server: liveness and readiness', () => {
  it('answers live with 200 while running', async () => {
    const { base } = await start();
    const res = await request(`${base}/health/live`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ live: true });
    expect(res.headers['cache-control']).toBe('no-store');
  });

  it('answers ready with 200 when every check passes', async () => {
    const { base } = await start();
    const res = await request(`${base}/health/ready`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body).checks.nethsm).toEqual({ ok: true });
  });

  it('answers 503 naming the failing checks when the NetHSM is not Operational', async () => {
    const { base, source } = await start();
    source.readiness = {
      ready: false,
      checks: { nethsm: { ok: false, detail: 'NetHSM state is Locked' }, state: { ok: true } },
    };
    const res = await request(`${base}/health/ready`);
    expect(res.status).toBe(503);
    const body = JSON.parse(res.body);
    expect(body.failing).toEqual(['nethsm']);
    expect(body.checks.nethsm.detail).toBe('NetHSM state is Locked');
  });

  it('is not ready when a check fails even if the source claims ready', async () => {
    const { base, source } = await start();
    source.readiness = { ready: true, checks: { nethsm: { ok: true }, state: { ok: false, detail: 'read-only' } } };
    const res = await request(`${base}/health/ready`);
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body).failing).toEqual(['state']);
  });

  it('stays ready (200) with warnings, and lists them', async () => {
    const { base, source } = await start();
    source.readiness = { ready: true, checks: { nethsm: { ok: true } }, warnings: ['a snapshot sync of alpha takes about 40 s. Try: space out its schedule'] };
    const res = await request(`${base}/health/ready`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ ready: true, checks: { nethsm: { ok: true } }, warnings: ['a snapshot sync of alpha takes about 40 s. Try: space out its schedule'] });
  });

  it('is not ready when the source says not ready without naming a check', async () => {
    const { base, source } = await start();
    source.readiness = { ready: false, checks: {} };
    const res = await request(`${base}/health/ready`);
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body).failing).toEqual(['ready']);
  });

  it('answers 503 when the readiness check throws', async () => {
    const { base, source } = await start();
    source.readiness = () => Promise.reject(new Error('sqlite: disk I/O error at /var/lib/secret-path'));
    const res = await request(`${base}/health/ready`);
    expect(res.status).toBe(503);
    const body = JSON.parse(res.body);
    expect(body.failing).toEqual(['readiness']);
    // A foreign error's message is not echoed (it may hold anything); the log has it.
    expect(res.body).not.toContain('secret-path');
  });

  it('answers 503 when the readiness check hangs past its timeout', async () => {
    const { base, source } = await start({ readyTimeoutMs: 30 });
    source.readiness = () => new Promise<Readiness>(() => undefined);
    const res = await request(`${base}/health/ready`);
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body).checks.readiness.detail).toMatch(/did not answer within 30 ms/);
  });
});

describe('health server: role checks for load balancers', () => {
  it('answers /primary/<ns> 200 only where the namespace is primary here', async () => {
    const { base } = await start();
    const alpha = await request(`${base}/primary/alpha`);
    expect(alpha.status).toBe(200);
    expect(JSON.parse(alpha.body)).toEqual({ namespace: 'alpha', role: 'primary', epoch: 3 });
    expect((await request(`${base}/primary/beta`)).status).toBe(503);
    expect((await request(`${base}/primary/gamma`)).status).toBe(503);
  });

  it('answers /replica/<ns> 200 for a replica within max_lag and 503 beyond it', async () => {
    const { base } = await start();
    const within = await request(`${base}/replica/beta?max_lag=1m`);
    expect(within.status).toBe(200);
    expect(JSON.parse(within.body)).toMatchObject({ namespace: 'beta', role: 'replica', lagSeconds: 42, maxLagSeconds: 60 });
    expect((await request(`${base}/replica/beta?max_lag=42s`)).status).toBe(200);
    const over = await request(`${base}/replica/beta?max_lag=30s`);
    expect(over.status).toBe(503);
    expect(JSON.parse(over.body).reason).toBe('lag over max_lag');
    expect((await request(`${base}/replica/beta?max_lag=1h30m`)).status).toBe(200);
  });

  it('compares with the namespace lag limit when max_lag is absent', async () => {
    const { base, source } = await start();
    expect((await request(`${base}/replica/beta`)).status).toBe(200);
    source.namespaces.set('beta', { role: 'replica', lagSeconds: 301, lagLimitSeconds: 300 });
    expect((await request(`${base}/replica/beta`)).status).toBe(503);
    // No limit known at all: any synced replica passes.
    expect((await request(`${base}/replica/eps`)).status).toBe(200);
  });

  it('answers 503 for a primary, a fenced namespace and a replica that never synced', async () => {
    const { base } = await start();
    expect((await request(`${base}/replica/alpha?max_lag=1h`)).status).toBe(503);
    expect((await request(`${base}/replica/gamma?max_lag=1h`)).status).toBe(503);
    const never = await request(`${base}/replica/delta?max_lag=1h`);
    expect(never.status).toBe(503);
    expect(JSON.parse(never.body).reason).toBe('never synced');
  });

  it('answers 404 for a namespace this site does not replicate', async () => {
    const { base } = await start();
    expect((await request(`${base}/primary/zeta`)).status).toBe(404);
    expect((await request(`${base}/replica/zeta?max_lag=1m`)).status).toBe(404);
  });

  it('answers 400 for an invalid duration', async () => {
    const { base } = await start();
    for (const bad of ['30', 'abc', '-5s', '5 minutes', '', '1.5s']) {
      const res = await request(`${base}/replica/beta?max_lag=${encodeURIComponent(bad)}`);
      expect(res.status, bad).toBe(400);
      expect(JSON.parse(res.body).error).toMatch(/max_lag/);
    }
    expect((await request(`${base}/replica/beta?max_lag=1m&max_lag=2m`)).status).toBe(400);
  });

  it('answers 400 for an invalid namespace id or an unknown parameter', async () => {
    const { base } = await start();
    for (const bad of ['-x', 'a%20b', 'a~b', '%E0%A4%A', 'x'.repeat(129), '']) {
      expect((await request(`${base}/primary/${bad}`)).status, bad).toBe(400);
    }
    expect((await request(`${base}/primary/alpha?max_lag=1m`)).status).toBe(400);
    expect((await request(`${base}/replica/beta?maxlag=1m`)).status).toBe(400);
  });
});

describe('health server: metrics', () => {
  it('serves the registry as Prometheus text', async () => {
    const { base, metrics } = await start();
    metrics.setRole('alpha', 'primary', 3);
    const res = await request(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(res.body).toContain('nethsm_replicator_namespace_role{namespace="alpha",role="primary"} 1');
  });

  it('reads the NetHSM metrics on each scrape when given the exporter', async () => {
    const registry = new Registry();
    let n = 0;
    const exporter = createNetHsmExporter({ registry, fetch: async () => ({ uptime: String(++n) }) });
    const { base } = await start({ metrics: exporter });
    expect((await request(`${base}/metrics`)).body).toContain('nethsm_uptime 1');
    expect((await request(`${base}/metrics`)).body).toContain('nethsm_uptime 2');
  });

  it('answers 500 when collecting metrics fails', async () => {
    const { base } = await start({
      metrics: { contentType: 'text/plain', metrics: () => Promise.reject(new Error('collector broke')) },
    });
    const res = await request(`${base}/metrics`);
    expect(res.status).toBe(500);
    expect(res.body).not.toContain('collector broke');
  });
});

describe('health server: request validation', () => {
  it('answers 404 for an unknown path', async () => {
    const { base } = await start();
    for (const p of ['/', '/health', '/health/live/', '/primary', '/primary/alpha/x', '/metricsx']) {
      expect((await request(`${base}${p}`)).status, p).toBe(404);
    }
  });

  it('answers 405 with Allow for methods other than GET and HEAD', async () => {
    const { base } = await start();
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const res = await request(`${base}/health/live`, method);
      expect(res.status, method).toBe(405);
      expect(res.headers.allow).toBe('GET, HEAD');
    }
  });

  it('answers HEAD with the status and no body', async () => {
    const { base } = await start();
    const ok = await request(`${base}/primary/alpha`, 'HEAD');
    expect(ok.status).toBe(200);
    expect(ok.body).toBe('');
    expect((await request(`${base}/primary/beta`, 'HEAD')).status).toBe(503);
  });

  it('answers a malformed request with 400 and keeps serving', async () => {
    const { address, base } = await start();
    expect(await raw(address.port, 'GET /health/live HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    expect((await request(`${base}/health/live`)).status).toBe(200);
  });
});

describe('health server: lifecycle', () => {
  it('starts and closes idempotently', async () => {
    const { server, address } = await start();
    expect(await server.start()).toEqual(address);
    expect(server.address).toEqual(address);
    await Promise.all([server.close(), server.close()]);
    await server.close();
    await expect(request(`${address.url}/health/live`)).rejects.toThrow();
    await expect(server.start()).rejects.toMatchObject({ code: 'NHR_ERR_INTERNAL' });
  });

  it('closes without having started', async () => {
    const server = new HealthServer({ host: '127.0.0.1', port: 0, source: new TestSource(), metrics: new Registry() });
    await server.close();
    expect(server.address).toBeUndefined();
  });

  it('closes while a keep-alive connection is open', async () => {
    const { server, base } = await start();
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((resolve, reject) =>
      http.get(`${base}/health/live`, { agent }, (res) => res.resume().on('end', resolve)).on('error', reject));
    await server.close();
    agent.destroy();
  });

  it('refuses an address in use with a config error naming health.listen', async () => {
    const { address } = await start();
    const second = new HealthServer({ host: '127.0.0.1', port: address.port, source: new TestSource(), metrics: new Registry() });
    servers.push(second);
    await expect(second.start()).rejects.toMatchObject({ code: 'NHR_ERR_CONFIG_INVALID', path: 'health.listen' });
  });

  it('refuses a port outside 0..65535 with a config error', async () => {
    const server = new HealthServer({ host: '127.0.0.1', port: 70000, source: new TestSource(), metrics: new Registry() });
    servers.push(server);
    await expect(server.start()).rejects.toMatchObject({ code: 'NHR_ERR_CONFIG_INVALID', path: 'health.listen' });
  });

  it('serves HTTPS when given a certificate and key', async () => {
    const cert = await createSelfSignedCertificate();
    const { address } = await start({ tls: { certPem: cert.certPem, keyPem: cert.keyPem } });
    expect(address.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const res = await request(`${address.url}/health/live`, 'GET', cert.certPem);
    expect(res.status).toBe(200);
  });

  it('refuses an unusable TLS key with a config error', async () => {
    const cert = await createSelfSignedCertificate();
    const server = new HealthServer({
      host: '127.0.0.1', port: 0, source: new TestSource(), metrics: new Registry(),
      tls: { certPem: cert.certPem, keyPem: 'not a key' },
    });
    servers.push(server);
    await expect(server.start()).rejects.toMatchObject({ code: 'NHR_ERR_CONFIG_INVALID', path: 'health.tls' });
  });
});
