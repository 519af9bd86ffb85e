/**
 * Stopping the daemon while an anti-entropy pass is in flight (docs/concurrency.md, "Waits the stop gives up";
 * docs/anti-entropy.md). The pass takes the daemon's stop: its waits (rate limiter, barrier, namespace lock) give up and
 * its device reads stop at the next request, and close() awaits it before closing the state store and the NetHSM pool.
 * The pass is abandoned (logged at info), not failed: no warn or error about it, no deferred pass, and a restart pass
 * keeps its `restart_passes` record for the next start.
 *
 * The simulator's key reads at the replica are slowed (test/helpers/latencies.ts) so that the pass is reading its
 * device when close() is called. Before the change the pass ran on against the closed pool and store and failed.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { Lab, type LabSite } from '../../src/lab/lab.js';
import { createLogger } from '../../src/log.js';
import type { Daemon } from '../../src/daemon/daemon.js';
import { use } from '../helpers/clients.js';
import { Latencies } from '../helpers/latencies.js';
import { longHold } from '../helpers/long-hold.js';
import { waitFor } from '../helpers/wait.js';

/** close() waits for the reads in flight (at most one slowed key read each): well inside this. */
const STOP_BOUND_MS = 15_000;
/** A key read at the replica while the test wants the pass in flight. */
const SLOW_READ_MS = 1_000;
/** More keys than a pass reads at once (8): its reads take several slowed rounds. */
const KEYS = 20;

interface Line {
  level: string;
  msg: string;
  cause?: string;
}

describe('stopping the daemon while an anti-entropy pass is in flight', () => {
  let lab: Lab | undefined;
  const lat = new Latencies();
  /** Site b's log from `since` on (info and above). */
  const lines: Line[] = [];

  afterEach(async () => {
    lat.fast('b', 'key-get');
    await lab?.close();
    lab = undefined;
    lines.length = 0;
  });

  /** a primary of alpha with a few keys, b its replica (synced). */
  async function syncedLab(): Promise<{ a: LabSite; b: LabSite }> {
    const sink = { write: (s: string) => void lines.push(JSON.parse(s) as Line) };
    lab = await Lab.create({
      namespaces: [{ name: 'alpha', primary: 'a' }],
      latency: lat.table,
      logger: (site) => createLogger({ level: site === 'b' ? 'info' : 'silent', destination: sink }),
    });
    await lab.startDaemons();
    const [a, b] = [lab.site('a'), lab.site('b')];
    await use(a.nsAdmin('alpha'), async (c) => {
      for (let i = 0; i < KEYS; i++) await c.generateKey({ id: `k${i}`, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    });
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await b.daemon!.syncer.drain();
    return { a, b };
  }

  /** Sets b's `antiEntropy.schedule` in its config file and reloads it (a reloadable setting). */
  async function scheduleAntiEntropy(b: LabSite, schedule: string): Promise<void> {
    const file = path.join(b.dir, 'config.yaml');
    const doc = parseDocument(await readFile(file, 'utf8'));
    doc.setIn(['antiEntropy', 'schedule'], schedule);
    await writeFile(file, doc.toString(), { mode: 0o600 });
    expect(await b.daemon!.reloadConfig()).toMatchObject({ outcome: 'ok', changed: ['antiEntropy.schedule'] });
  }

  /** Stops b while its pass is in flight: close() returns in time, the pass logged as abandoned, nothing at warn or above. */
  async function stopDuringPass(b: LabSite, passStarted: Promise<void>): Promise<void> {
    await passStarted;
    const from = lines.length;
    const closed = b.stopDaemon().then(() => true);
    const inTime = await Promise.race([closed, new Promise<false>((r) => setTimeout(() => r(false), STOP_BOUND_MS))]);
    expect(inTime, `close() returned within ${STOP_BOUND_MS} ms`).toBe(true);
    const after = lines.slice(from);
    // Nothing about the pass (nor anything else) at warn or error: no failure against a closed pool or store.
    expect(after.filter((l) => l.level === 'warn' || l.level === 'error' || l.level === 'fatal').map((l) => l.msg)).toEqual([]);
    const abandoned = after.filter((l) => l.msg.startsWith('anti-entropy pass abandoned: the daemon is stopping'));
    expect(abandoned).toHaveLength(1);
    // Cut by the stop itself (its wait given up, its next read not made), not failed against a closed pool or store.
    expect(abandoned[0]!.cause).toBeUndefined();
    expect(after.some((l) => l.msg === 'daemon stopped')).toBe(true);
  }

  /** The namespaces whose passes show as deferred at `d` (status reads this map; status itself needs the open store). */
  const deferred = (d: Daemon): string[] => [...(d as unknown as { antiEntropyDeferred: Map<string, unknown> }).antiEntropyDeferred.keys()];

  // Before: the scheduled pass ran on after close() closed the pool and the store, and failed ("scheduled job failed").
  it('abandons a scheduled pass: close() awaits it, nothing logged at warn or error', { timeout: 120_000 }, async () => {
    const { b } = await syncedLab();
    const d = b.daemon!;
    lat.slow('b', 'key-get', SLOW_READ_MS);
    const read = lat.started('b', 'key-get');
    // Scheduled only now (a reload), once b is synced: nothing else reads b's keys, so the next key read is a pass's.
    await scheduleAntiEntropy(b, '*/2 * * * * *');
    await stopDuringPass(b, read);
    expect(deferred(d)).toEqual([]);
  });

  // Before: the restart pass ran on against the closed pool and store and failed.
  it('abandons a restart pass: close() awaits it, and its restart_passes record stays for the next start', { timeout: 120_000 }, async () => {
    const { b } = await syncedLab();
    // A pass queued after a's restart and not completed before b stopped, as such a stop leaves it: queued at the start.
    const before = b.daemon!;
    await b.stopDaemon();
    before.ctx.store.open();
    before.ctx.store.restartPasses.put('alpha', 'a');
    before.ctx.store.close();
    lat.slow('b', 'key-get', SLOW_READ_MS);
    const read = lat.started('b', 'key-get');
    const d = await b.startDaemon();
    const running = read.then(() => waitFor(() => d.restartPasses.view('alpha')?.state === 'running', 'the restart pass to run', 60_000));
    await stopDuringPass(b, running.then(() => undefined));
    expect(deferred(d)).toEqual([]);
    d.ctx.store.open();
    try {
      expect(d.ctx.store.restartPasses.list()).toMatchObject([{ namespace: 'alpha', primarySite: 'a' }]);
    } finally {
      d.ctx.store.close();
    }
  });

  // Before: the pass waited for its shared hold whatever the stop; close() returned without it, and once the hold ended
  // the pass ran its repair against the closed pool and store.
  it('gives up a pass waiting at the barrier for its repair behind a long exclusive hold', { timeout: 120_000 }, async () => {
    const { b } = await syncedLab();
    const d = b.daemon!;
    const hold = await longHold(d.ctx);
    const answer = d.antiEntropy('alpha').then(
      () => 'completed',
      (e: unknown) => e,
    );
    try {
      await waitFor(() => d.ctx.barrier.waiting >= 1, 'the pass to wait at the barrier for its repair', 30_000);
      await stopDuringPass(b, Promise.resolve());
        expect(d.ctx.barrier.waiting).toBe(0);
    } finally {
      await hold.end();
    }
    expect(await answer).toMatchObject({ code: 'NHR_ERR_DAEMON_STOPPING', namespace: 'alpha' });
    expect(deferred(d)).toEqual([]);
  });
});
