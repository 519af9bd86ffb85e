import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { DEPLOY, exposedMetricNames, hasTool, metricsIn, run } from './tools.js';

const DIR = path.join(DEPLOY, 'prometheus');
const rules = parse(readFileSync(path.join(DIR, 'alerts.yml'), 'utf8')) as {
  groups: { name: string; rules: { alert: string; expr: string }[] }[];
};
const alerts = rules.groups.flatMap((g) => g.rules);

const havePromtool = hasTool('promtool');
if (!havePromtool) {
  console.warn('promtool is not installed (Debian: apt-get install -y --no-install-recommends prometheus): skipping promtool checks');
}

describe('deploy/prometheus/alerts.yml', () => {
  it('has the alerts the runbook refers to', () => {
    expect(alerts.map((a) => a.alert)).toEqual(expect.arrayContaining([
      'NethsmReplicatorLagOverLimit', 'NethsmReplicatorSyncFailing', 'NethsmReplicatorMemberDown',
      'NethsmReplicatorNoPrimary', 'NethsmReplicatorTwoPrimaries', 'NethsmReplicatorNetHsmMetricsFailing',
    ]));
  });

  it('refers only to metrics the daemon exports', async () => {
    const names = await exposedMetricNames();
    for (const a of alerts) {
      for (const m of metricsIn(a.expr)) expect(names.has(m), `${a.alert} uses ${m}`).toBe(true);
    }
  });

  it('has a promtool unit test for every alert', () => {
    const tests = readFileSync(path.join(DIR, 'alerts.test.yml'), 'utf8');
    for (const a of alerts) expect(tests, a.alert).toContain(`alertname: ${a.alert}\n`);
  });

  it.skipIf(!havePromtool)('passes promtool check rules', () => {
    const r = run('promtool', ['check', 'rules', 'alerts.yml'], DIR);
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });

  it.skipIf(!havePromtool)('passes its promtool unit tests (each rule firing and not firing)', () => {
    const r = run('promtool', ['test', 'rules', 'alerts.test.yml'], DIR);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('SUCCESS');
  });
});
