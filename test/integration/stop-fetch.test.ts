/**
 * Stopping a replica's daemon while its snapshot download stalls (the primary sent the headers, then nothing): close()
 * cuts the download instead of waiting out the 30-minute body idle timeout (docs/operations.md, 9.1). The sync is
 * abandoned, not failed: the namespace's last sync outcome and the primary's member state stay as they were, no
 * failure is counted, nothing is left in work/, the operator's waiting `sync` gets NHR_ERR_SYNC_DAEMON_STOPPING with
 * its Try:, and a sync queued behind it starts no download. (A stop during a restore lets it finish: recovery.test.ts.)
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDocument, type YAMLMap, type YAMLSeq } from 'yaml';
import { AdminClient } from '../../src/admin/client.js';
import { parseConfig } from '../../src/config/index.js';
import { capturingLogger } from '../../src/gateway/test-support.js';
import { Lab, type LabSite } from '../../src/lab/lab.js';
import { silentLogger } from '../../src/log.js';
import { StallingPeer } from '../helpers/stalling-peer.js';
import { waitFor } from '../helpers/wait.js';

/** Far below the 30 minutes the stalled download would wait by its idle timeout: a stop that waits for it fails. */
const STOP_BOUND_MS = 15_000;

/** Points `site`'s peer `name` at `url` in its config file (before its daemon starts). */
async function repointPeer(site: LabSite, name: string, url: string): Promise<void> {
  const file = path.join(site.dir, 'config.yaml');
  const doc = parseDocument(await readFile(file, 'utf8'));
  for (const p of (doc.get('peers') as YAMLSeq<YAMLMap>).items) if (p.get('name') === name) p.set('url', url);
  await writeFile(file, doc.toString(), { mode: 0o600 });
  site.config = parseConfig(doc.toString(), {}, { baseDir: site.dir });
}

/** The sum of a counter's samples whose labels match `labels` (0 when none). */
async function counter(site: LabSite, metric: string, labels: RegExp): Promise<number> {
  const text = await site.registry.metrics();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${metric}{`) && labels.test(l))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

describe('stopping the daemon while a snapshot download stalls', () => {
  let lab: Lab | undefined;
  let peer: StallingPeer | undefined;
  afterEach(async () => {
    // First: cutting the stalled connection frees a daemon whose close() waits for it (the code before the fix).
    await peer?.close();
    await lab?.close();
    lab = undefined;
    peer = undefined;
  });

  it('cuts the download: close() returns at once, the sync is abandoned (not failed), the operator hears why', { timeout: 120_000 }, async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    peer = new StallingPeer(lab.dir, 'a', 'b', lab.site('a').config.peerApi.listen.port);
    await peer.start();
    const b = lab.site('b');
    await repointPeer(b, 'a', peer.url);
    await lab.startDaemons();
    const d = b.daemon!;
    const { ctx } = d;
    // One sync through the relay first: the next one is not a first sync, so its early B1 runs beside the download.
    await d.syncer.sync('alpha', { actor: 'test' });
    const before = ctx.store.positions.get('alpha', 'a')!;
    expect(before.lastSyncOutcome).toBe('ok');
    const failuresBefore = await counter(b, 'nethsm_replicator_syncs_total', /outcome="failure"/);

    peer.stall = true;
    const operator = new AdminClient({ socketPath: b.config.admin.socket, timeoutMs: 60_000 });
    const answer = operator.namespaceAction('alpha', 'sync', { actor: 'operator' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    await waitFor(() => peer!.stalledCount === 1, 'the snapshot download to stall', 20_000);
    await waitFor(() => d.syncer.progressOf('alpha')?.step.startsWith('fetching'), 'the sync to be fetching');
    // Queued behind the stalled one (the schedule, a peer's request): after the stop it must not download.
    const queued = d.syncer.sync('alpha', { actor: 'schedule' }).then(
      () => undefined,
      (e: unknown) => e,
    );

    const closed = b.stopDaemon().then(() => true);
    const inTime = await Promise.race([closed, new Promise<false>((r) => setTimeout(() => r(false), STOP_BOUND_MS))]);
    expect(inTime, `close() returned within ${STOP_BOUND_MS} ms while the snapshot download stalled`).toBe(true);

    expect(await answer).toMatchObject({ code: 'NHR_ERR_SYNC_DAEMON_STOPPING', namespace: 'alpha', hint: expect.stringMatching(/Start the daemon/) });
    expect(await queued).toMatchObject({ code: 'NHR_ERR_SYNC_DAEMON_STOPPING' });
    expect(peer.stalledCount).toBe(1);
    // Not a failure: nothing recorded against the namespace (a promote would refuse after a failed sync), nothing
    // against the primary, no failure counted.
    expect(await counter(b, 'nethsm_replicator_syncs_total', /outcome="failure"/)).toBe(failuresBefore);
    expect(await counter(b, 'nethsm_replicator_sync_failures_total', /namespace="alpha"/)).toBe(0);
    expect(ctx.monitor.get('a')!.status).toBe('ok');
    ctx.store.open();
    try {
      expect(ctx.store.positions.get('alpha', 'a')).toMatchObject({ lastSyncOutcome: 'ok', lastOkAt: before.lastOkAt });
      expect(ctx.store.members.get('a')?.status ?? 'ok').toBe('ok');
    } finally {
      ctx.store.close();
    }
    // Neither the partial snapshot nor the early B1 is left behind.
    expect(await readdir(ctx.work.work)).toEqual([]);
  });

  // Before: the scheduler logged the abandoned sync as a failed job (warn, NHR_ERR_SYNC_DAEMON_STOPPING) right after
  // the sync itself said, at info, that nothing failed.
  it('a scheduled sync the stop cuts is not logged as a failed job', { timeout: 120_000 }, async () => {
    const { logger, lines } = capturingLogger();
    // Every second: the schedule, not the test, starts the sync that stalls.
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], schedule: '* * * * * *', logger: (site) => (site === 'b' ? logger : silentLogger) });
    peer = new StallingPeer(lab.dir, 'a', 'b', lab.site('a').config.peerApi.listen.port);
    await peer.start();
    const b = lab.site('b');
    await repointPeer(b, 'a', peer.url);
    await lab.startDaemons();
    peer.stall = true;
    const d = b.daemon!;
    await waitFor(() => peer!.stalledCount === 1, 'a scheduled snapshot download to stall', 20_000);
    await waitFor(() => d.syncer.progressOf('alpha')?.actor === 'schedule' && d.syncer.progressOf('alpha')?.step.startsWith('fetching'), 'the scheduled sync to be fetching');
    await b.stopDaemon();
    const logged = lines.map((l) => JSON.parse(l) as { level: string; msg: string; err?: { code?: string } });
    expect(logged.some((l) => l.msg.startsWith('sync of alpha abandoned: the daemon is stopping'))).toBe(true);
    expect(logged.filter((l) => ['warn', 'error', 'fatal'].includes(l.level) && l.err?.code === 'NHR_ERR_SYNC_DAEMON_STOPPING').map((l) => l.msg)).toEqual([]);
  });
});
