/**
 * Shared by the deploy/ tests: the repository paths, external tools (skipped when absent), and the metric names the
 * daemon's registry exposes.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { createReplicatorMetrics } from '../../src/metrics/metrics.js';
import { createNetHsmExporter } from '../../src/metrics/nethsm-exporter.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEPLOY = path.join(REPO, 'deploy');

/** Whether `cmd args…` runs at all (the tool is installed and on PATH). */
export function hasTool(cmd: string, args: string[] = ['--version']): boolean {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.error === undefined && r.status === 0;
}

export function run(cmd: string, args: string[], cwd?: string): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', ...(cwd ? { cwd } : {}) });
}

/**
 * The keys the NetHSM firmware's `/metrics` sends (FACTS §10), so that dashboards may refer to their `nethsm_*` gauges.
 */
export const DEVICE_METRIC_KEYS = [
  'uptime', 'generate', 'sign', 'decrypt', 'encrypt', 'http response 200', 'http response total', 'kv write', 'log errors',
];

/** Every series name a scrape can show: metric names plus the `_bucket`/`_sum`/`_count` of histograms. */
export async function exposedMetricNames(): Promise<Set<string>> {
  const registry = new Registry();
  createReplicatorMetrics({ registry });
  const exporter = createNetHsmExporter({
    registry,
    fetch: async () => Object.fromEntries(DEVICE_METRIC_KEYS.map((k) => [k, '1'])),
  });
  await exporter.refresh();
  const names = new Set<string>();
  for (const { name, type } of await registry.getMetricsAsJSON()) {
    names.add(name);
    if (String(type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(`${name}${s}`);
  }
  return names;
}

/** The `nethsm_*` metric names a PromQL expression refers to. */
export function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/\b(nethsm_[a-z0-9_]+)\b/g)].map((m) => m[1] ?? '');
}
