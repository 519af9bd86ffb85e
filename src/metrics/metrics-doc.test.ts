import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { createReplicatorMetrics } from './metrics.js';
import { createNetHsmExporter } from './nethsm-exporter.js';

const DOC = fileURLToPath(new URL('../../docs/metrics.md', import.meta.url));

interface DocEntry { type: string; labels: string[] }

/** Rows of the form | `name` | type | labels | meaning |. */
function documented(): Map<string, DocEntry> {
  const out = new Map<string, DocEntry>();
  for (const line of readFileSync(DOC, 'utf8').split('\n')) {
    const m = /^\| `([a-z_:][a-z0-9_:]*)` \| (\w+) \|([^|]*)\|/.exec(line);
    if (!m) continue;
    const [, name, type, labels] = m as unknown as [string, string, string, string];
    if (out.has(name)) throw new Error(`docs/metrics.md lists ${name} twice`);
    out.set(name, { type, labels: labels.split(',').map((l) => l.trim()).filter(Boolean).sort() });
  }
  return out;
}

async function registered(): Promise<Map<string, DocEntry>> {
  const registry = new Registry();
  createReplicatorMetrics({ registry });
  // The exporter's fixed metrics; the device's own nethsm_<key> gauges are dynamic and described in prose.
  createNetHsmExporter({ registry, fetch: async () => ({}) });
  const out = new Map<string, DocEntry>();
  for (const { name, type } of await registry.getMetricsAsJSON()) {
    const metric = registry.getSingleMetric(name) as unknown as { labelNames?: string[] };
    out.set(name, { type: String(type), labels: [...(metric.labelNames ?? [])].sort() });
  }
  return out;
}

describe('docs/metrics.md', () => {
  it('lists every metric in the registry, with its type and labels', async () => {
    const doc = documented();
    const reg = await registered();
    const missing = [...reg.keys()].filter((n) => !doc.has(n));
    expect(missing, 'metrics not in docs/metrics.md').toEqual([]);
    for (const [name, entry] of reg) expect(doc.get(name), name).toEqual(entry);
  });

  it('lists no metric the registry lacks', async () => {
    const doc = documented();
    const reg = await registered();
    expect(doc.size).toBeGreaterThan(40);
    expect([...doc.keys()].filter((n) => !reg.has(n)), 'documented but not registered').toEqual([]);
  });
});
