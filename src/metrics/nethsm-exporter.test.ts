import { describe, expect, it } from 'vitest';
import { Gauge, Registry } from 'prom-client';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { createNetHsmExporter, parseNetHsmMetricValue, sanitizeNetHsmMetricName } from './nethsm-exporter.js';

function lines(text: string, prefix: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(prefix));
}

function setup(fetch: (signal: AbortSignal) => Promise<unknown>, extra: { timeoutMs?: number; maxMetrics?: number } = {}) {
  const registry = new Registry();
  const logged: string[] = [];
  const logger = pino({ level: 'info' }, new Writable({ write(chunk, _enc, cb) { logged.push(String(chunk)); cb(); } }));
  const exporter = createNetHsmExporter({ registry, fetch, logger, ...extra });
  return { registry, exporter, logged };
}

describe('NetHSM metric names and values', () => {
  it('sanitizes the firmware names into Prometheus names with the nethsm_ prefix', () => {
    expect(sanitizeNetHsmMetricName('http response 200')).toBe('nethsm_http_response_200');
    expect(sanitizeNetHsmMetricName('kv write')).toBe('nethsm_kv_write');
    expect(sanitizeNetHsmMetricName('  GC/Major--count ')).toBe('nethsm_gc_major_count');
    expect(sanitizeNetHsmMetricName('uptime')).toBe('nethsm_uptime');
  });

  it('refuses names that sanitize to nothing, are too long, or would enter the replicator\'s namespace', () => {
    expect(sanitizeNetHsmMetricName('')).toBeUndefined();
    expect(sanitizeNetHsmMetricName('  ---  ')).toBeUndefined();
    expect(sanitizeNetHsmMetricName('x'.repeat(201))).toBeUndefined();
    expect(sanitizeNetHsmMetricName('replicator up')).toBeUndefined();
  });

  it('parses numeric strings and finite numbers, nothing else', () => {
    expect(parseNetHsmMetricValue('123')).toBe(123);
    expect(parseNetHsmMetricValue(' 1.5e3 ')).toBe(1500);
    expect(parseNetHsmMetricValue('-0.25')).toBe(-0.25);
    expect(parseNetHsmMetricValue(7)).toBe(7);
    for (const bad of ['', 'abc', '12abc', '0x10', 'Infinity', 'NaN', '1e999', Number.NaN, Number.POSITIVE_INFINITY, true, null, {}, ['1']]) {
      expect(parseNetHsmMetricValue(bad)).toBeUndefined();
    }
  });
});

describe('NetHSM metrics exporter', () => {
  it('re-exports the device metrics as gauges on scrape', async () => {
    let uptime = 123;
    const { exporter } = setup(async () => ({ uptime: String(uptime), 'http response 200': '17', 'kv write': '5' }));
    let text = await exporter.metrics();
    expect(text).toContain('# TYPE nethsm_uptime gauge');
    expect(lines(text, 'nethsm_uptime ')).toEqual(['nethsm_uptime 123']);
    expect(lines(text, 'nethsm_http_response_200 ')).toEqual(['nethsm_http_response_200 17']);
    expect(lines(text, 'nethsm_kv_write ')).toEqual(['nethsm_kv_write 5']);
    expect(lines(text, 'nethsm_replicator_nethsm_metrics_up ')).toEqual(['nethsm_replicator_nethsm_metrics_up 1']);
    expect(lines(text, 'nethsm_replicator_nethsm_metrics_skipped ')).toEqual(['nethsm_replicator_nethsm_metrics_skipped 0']);
    uptime = 124;
    text = await exporter.metrics();
    expect(lines(text, 'nethsm_uptime ')).toEqual(['nethsm_uptime 124']);
  });

  it('reports 0 before the first read', async () => {
    const { registry } = setup(async () => ({ uptime: '1' }));
    expect(lines(await registry.metrics(), 'nethsm_replicator_nethsm_metrics_up ')).toEqual(['nethsm_replicator_nethsm_metrics_up 0']);
  });

  it('skips and counts non-numeric values, nested objects and duplicate names', async () => {
    const { exporter } = setup(async () => ({
      uptime: '5',
      version: 'v2.1',
      nested: { a: '1' },
      'kv write': '1',
      'KV  write': '2',
      '': '3',
    }));
    const text = await exporter.metrics();
    expect(lines(text, 'nethsm_replicator_nethsm_metrics_skipped ')).toEqual(['nethsm_replicator_nethsm_metrics_skipped 4']);
    expect(lines(text, 'nethsm_kv_write ')).toEqual(['nethsm_kv_write 1']);
    expect(text).not.toContain('nethsm_version');
    expect(text).not.toContain('nethsm_nested');
  });

  it('caps the number of device metrics so a broken device cannot explode cardinality', async () => {
    const data = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`m${i}`, String(i)]));
    const { exporter } = setup(async () => data, { maxMetrics: 10 });
    const text = await exporter.metrics();
    expect(lines(text, 'nethsm_m').length).toBe(10);
    expect(lines(text, 'nethsm_replicator_nethsm_metrics_skipped ')).toEqual(['nethsm_replicator_nethsm_metrics_skipped 40']);
  });

  it('reports a fetch error as up 0, drops the device gauges and logs once per outage', async () => {
    let fail = false;
    const { exporter, logged } = setup(async () => {
      if (fail) throw Object.assign(new Error('NetHSM answered 412'), { code: 'NHR_ERR_NETHSM_HTTP' });
      return { uptime: '9' };
    });
    await exporter.metrics();
    fail = true;
    const text = await exporter.metrics();
    await exporter.metrics();
    expect(lines(text, 'nethsm_replicator_nethsm_metrics_up ')).toEqual(['nethsm_replicator_nethsm_metrics_up 0']);
    expect(text).not.toContain('nethsm_uptime');
    expect(lines(await exporter.metrics(), 'nethsm_replicator_nethsm_metrics_fetch_failures_total{')).toEqual([
      'nethsm_replicator_nethsm_metrics_fetch_failures_total{reason="error"} 3',
    ]);
    expect(logged.filter((l) => l.includes('reading the NetHSM metrics failed'))).toHaveLength(1);
    expect(logged[0]).toContain('NHR_ERR_NETHSM_HTTP');
    fail = false;
    const back = await exporter.metrics();
    expect(lines(back, 'nethsm_uptime ')).toEqual(['nethsm_uptime 9']);
    expect(logged.some((l) => l.includes('recovered'))).toBe(true);
  });

  it('reports an answer that is not a flat object as invalid, without throwing into the scrape', async () => {
    for (const bad of [null, [1, 2], 'text', 42, new Map()]) {
      const { exporter } = setup(async () => bad);
      const text = await exporter.metrics();
      expect(lines(text, 'nethsm_replicator_nethsm_metrics_up ')).toEqual(['nethsm_replicator_nethsm_metrics_up 0']);
      expect(text).toContain('nethsm_replicator_nethsm_metrics_fetch_failures_total{reason="invalid"} 1');
    }
  });

  it('cuts off a fetch past the timeout and aborts its signal', async () => {
    let aborted = false;
    const { exporter } = setup(
      (signal) =>
        new Promise(() => {
          signal.addEventListener('abort', () => {
            aborted = true;
          });
        }),
      { timeoutMs: 20 },
    );
    const text = await exporter.metrics();
    expect(aborted).toBe(true);
    expect(text).toContain('nethsm_replicator_nethsm_metrics_fetch_failures_total{reason="timeout"} 1');
    expect(lines(text, 'nethsm_replicator_nethsm_metrics_up ')).toEqual(['nethsm_replicator_nethsm_metrics_up 0']);
  });

  it('removes gauges for metrics the device stopped sending', async () => {
    let data: Record<string, string> = { a: '1', b: '2' };
    const { exporter } = setup(async () => data);
    await exporter.metrics();
    data = { a: '3' };
    const text = await exporter.metrics();
    expect(lines(text, 'nethsm_a ')).toEqual(['nethsm_a 3']);
    expect(text).not.toContain('nethsm_b');
  });

  it('shares one fetch between concurrent scrapes', async () => {
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { exporter } = setup(async () => {
      calls++;
      await gate;
      return { uptime: '1' };
    });
    const scrapes = [exporter.metrics(), exporter.metrics(), exporter.refresh()];
    release();
    await Promise.all(scrapes);
    expect(calls).toBe(1);
  });

  it('does not shadow a metric already on the registry, nor enter the replicator\'s names', async () => {
    const registry = new Registry();
    const other = new Gauge({ name: 'nethsm_foo', help: 'someone else', registers: [registry] });
    other.set(42);
    const exporter = createNetHsmExporter({ registry, fetch: async () => ({ foo: '1', 'replicator x': '1', uptime: '2' }) });
    const text = await exporter.metrics();
    expect(lines(text, 'nethsm_replicator_nethsm_metrics_skipped ')).toEqual(['nethsm_replicator_nethsm_metrics_skipped 2']);
    expect(lines(text, 'nethsm_foo ')).toEqual(['nethsm_foo 42']);
    expect(registry.getSingleMetric('nethsm_replicator_x')).toBeUndefined();
    expect(lines(text, 'nethsm_uptime ')).toEqual(['nethsm_uptime 2']);
  });

  it('unregisters everything on close, idempotently, so a new exporter can take its place', async () => {
    const { registry, exporter } = setup(async () => ({ uptime: '1' }));
    await exporter.metrics();
    exporter.close();
    exporter.close();
    expect(registry.getMetricsAsArray()).toHaveLength(0);
    await exporter.refresh();
    expect(registry.getMetricsAsArray()).toHaveLength(0);
    createNetHsmExporter({ registry, fetch: async () => ({}) });
    expect(registry.getSingleMetric('nethsm_replicator_nethsm_metrics_up')).toBeDefined();
  });

  it('exposes the registry content type for the HTTP answer', () => {
    const { registry, exporter } = setup(async () => ({}));
    expect(exporter.contentType).toBe(registry.contentType);
  });
});

describe('NetHSM metrics exporter against the simulator’s /metrics (the firmware key set)', () => {
  it('exports every firmware key as a gauge, the %g response time included, and skips nothing', async () => {
    const { startProvisionedSimulator } = await import('../sim/fixture.js');
    const { NetHsmClient } = await import('../nethsm/client.js');
    const sim = await startProvisionedSimulator();
    const client = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } }).withAuth(sim.users.metrics.username, sim.users.metrics.password);
    try {
      await client.metrics(); // one answered request, so the response keys exist
      const { registry, exporter } = setup(() => client.metrics());
      const text = await exporter.metrics();
      for (const name of [
        'nethsm_uptime',
        'nethsm_log_warnings',
        'nethsm_log_errors',
        'nethsm_gc_major_bytes',
        'nethsm_gc_major_collections',
        'nethsm_gc_minor_collections',
        'nethsm_gc_compactions',
        'nethsm_http_response_200',
        'nethsm_http_response', // "http response total": a gauge drops the counter suffix
        'nethsm_http_response_time',
        'nethsm_kv_write',
      ]) {
        expect(lines(text, `${name} `), name).toHaveLength(1);
      }
      expect(lines(text, 'nethsm_replicator_nethsm_metrics_skipped ')).toEqual(['nethsm_replicator_nethsm_metrics_skipped 0']);
      expect(lines(text, 'nethsm_replicator_nethsm_metrics_up ')).toEqual(['nethsm_replicator_nethsm_metrics_up 1']);
      exporter.close();
      expect(registry.getSingleMetric('nethsm_uptime')).toBeUndefined();
    } finally {
      await client.close();
      await sim.close();
    }
  });
});
