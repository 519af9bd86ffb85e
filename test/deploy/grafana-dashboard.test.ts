import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { DEPLOY, exposedMetricNames, hasTool, metricsIn, run } from './tools.js';

const FILE = path.join(DEPLOY, 'grafana', 'nethsm-replicator.json');

interface Panel { type: string; title: string; id: number; targets?: { expr: string; refId: string }[]; panels?: Panel[] }
interface Dashboard { uid: string; title: string; panels: Panel[]; templating: { list: { name: string; query: unknown }[] } }

const dashboard = JSON.parse(readFileSync(FILE, 'utf8')) as Dashboard;
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
const variableQueries = dashboard.templating.list
  .map((v) => (typeof v.query === 'object' && v.query !== null ? (v.query as { query: string }).query : String(v.query)))
  .filter((q) => q.includes('nethsm_'));

const havePromtool = hasTool('promtool');
if (!havePromtool) console.warn('promtool is not installed: skipping the PromQL syntax check of the dashboard queries');

describe('deploy/grafana/nethsm-replicator.json', () => {
  it('is a dashboard with a stable uid, unique panel ids and a query on every panel', () => {
    expect(dashboard.uid).toBe('nethsm-replicator');
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels.filter((x) => x.type !== 'row')) expect(p.targets?.length, p.title).toBeGreaterThan(0);
  });

  it('shows roles, epochs, lag against its limit, syncs, members, the stream and NetHSM operations', () => {
    const used = new Set(exprs.flatMap((e) => metricsIn(e.expr)));
    for (const m of [
      'nethsm_replicator_namespace_role', 'nethsm_replicator_epoch', 'nethsm_replicator_replication_lag_seconds',
      'nethsm_replicator_lag_limit_seconds', 'nethsm_replicator_syncs_total', 'nethsm_replicator_sync_failures_total',
      'nethsm_replicator_sync_duration_seconds_bucket', 'nethsm_replicator_member_status', 'nethsm_replicator_stream_lag_seconds',
      'nethsm_sign',
    ]) expect(used.has(m), m).toBe(true);
  });

  it('refers only to metrics the daemon exports', async () => {
    const names = await exposedMetricNames();
    for (const { panel, expr } of exprs) {
      for (const m of metricsIn(expr)) expect(names.has(m), `panel "${panel}" uses ${m}`).toBe(true);
    }
    for (const q of variableQueries) for (const m of metricsIn(q)) expect(names.has(m), q).toBe(true);
  });

  it.skipIf(!havePromtool)('has queries that parse as PromQL (promtool, Grafana variables filled in)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nhr-dash-'));
    try {
      const rules = exprs.map((e, i) => ({
        record: `dashboard:query_${i}`,
        expr: e.expr.replaceAll('$__rate_interval', '5m').replaceAll('$namespace', '.*').replaceAll('$instance', '.*'),
      }));
      writeFileSync(path.join(dir, 'dashboard.rules.yml'), stringify({ groups: [{ name: 'dashboard', rules }] }));
      const r = run('promtool', ['check', 'rules', 'dashboard.rules.yml'], dir);
      expect(r.status, r.stdout + r.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
