/**
 * `promtool check metrics` on what a running daemon actually serves at `/metrics`: its own metrics, prom-client's
 * process metrics and the NetHSM's re-exported ones (read from the simulator through the Metrics account).
 */
import { spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { hasTool } from './tools.js';

const havePromtool = hasTool('promtool');
if (!havePromtool) console.warn('promtool is not installed: skipping `promtool check metrics` on a running daemon');

function scrape(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const get = request({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });
    get.on('error', reject);
    get.end();
  });
}

describe.skipIf(!havePromtool)('the daemon\'s /metrics', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
  });
  afterAll(async () => {
    await lab?.close();
  });

  it('passes promtool check metrics, with the NetHSM re-export present', async () => {
    const text = await scrape(lab.site('a').daemon!.ports.health);
    expect(text).toMatch(/^nethsm_uptime /m);
    expect(text).toMatch(/^nethsm_replicator_nethsm_metrics_up 1$/m);
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
