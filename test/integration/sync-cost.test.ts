/**
 * The cost model learns from real syncs (two sites, simulators over HTTPS), and a snapshot cost past a bound shows in
 * `status` (with a Try:), in /metrics and in /health/ready as a warning that leaves the site ready. The bound here is a
 * catch-up window of 1 ms, which any sync exceeds: no timing is asserted.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderStatus, statusProblems } from '../../src/cli/status.js';
import { Lab } from '../../src/lab/lab.js';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('sync cost: learnt from syncs, warned about in status, metrics and health', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], catchupWindow: '1ms' });
    await lab.startDaemons();
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('shows no estimate before the first sync, then the measured one with its warning', async () => {
    const b = lab.site('b').daemon!;
    // Daemons may sync at start; a fresh model knows nothing until a sync at this site finished.
    const before = (await b.status()).namespaces.find((n) => n.name === 'alpha')!;
    if (before.lastSync === null) expect(before.syncCost ?? null).toBeNull();

    await b.syncer.sync('alpha', { actor: 'test' });
    const s = await b.status();
    const alpha = s.namespaces.find((n) => n.name === 'alpha')!;
    expect(alpha.syncCost).toMatchObject({ source: 'measured' });
    expect(alpha.syncCost!.deviceEntries).toBeGreaterThan(0);
    expect(alpha.syncCost!.lastHoldSeconds).toBeGreaterThan(0);
    expect(alpha.syncCost!.estimatedSeconds).toBeGreaterThanOrEqual(alpha.syncCost!.lastSyncSeconds!);
    expect(alpha.syncCost!.warnings.map((w) => w.kind)).toEqual(['catchup-window']);

    const text = renderStatus(s);
    expect(text).toMatch(/WARNING: namespace alpha: namespace alpha generates keys on the device .* longer than stream\.catchupWindow \(0\.0 s\)\nTry: Raise stream\.catchupWindow/);
    expect(text).not.toMatch(/\nall ok\n$/);
    // A warning is not a problem: the exit code stays 0 when nothing else is wrong.
    expect(statusProblems(s).join('\n')).not.toMatch(/catchupWindow/);

    const metrics = await get(b.ports.health, '/metrics');
    expect(metrics.body).toMatch(/^nethsm_replicator_sync_cost_warning\{namespace="alpha",kind="catchup-window"\} 1$/m);
    expect(metrics.body).toMatch(/^nethsm_replicator_sync_cost_warning\{namespace="alpha",kind="schedule"\} 0$/m);
    expect(metrics.body).toMatch(/^nethsm_replicator_sync_estimated_hold_seconds\{namespace="alpha"\} [0-9.e-]+$/m);
    expect(metrics.body).toMatch(/^nethsm_replicator_sync_estimated_seconds\{namespace="alpha"\} [0-9.e-]+$/m);

    const ready = await get(b.ports.health, '/health/ready');
    const body = JSON.parse(ready.body) as { ready: boolean; warnings?: string[] };
    expect(body.warnings?.join('\n')).toMatch(/stream\.catchupWindow.*Try: Raise stream\.catchupWindow/);
    if (body.ready) expect(ready.status).toBe(200);

    // At the primary nothing is estimated (it serves snapshots; the replica pays the restore).
    const a = (await lab.site('a').daemon!.status()).namespaces.find((n) => n.name === 'alpha')!;
    expect(a.syncCost).toBeNull();
  });
});
