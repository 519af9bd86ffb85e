/**
 * A replica whose primary runs an older nethsm-replicator (a rolling upgrade that has not reached it): its peer status
 * names no daemon instance, and it serves no inventory ranges. The older primary is the current daemon with its peer
 * answers changed as an older one answers: its status without `instance` (and another version), its range routes
 * gone (404), its one-answer inventory beyond the cap.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AntiEntropyPrimaryTooOldError, PeerUnreachableError } from '../../src/errors.js';
import type { Lab, LabSite } from '../../src/lab/lab.js';
import { MAX_INVENTORY_KEYS } from '../../src/namespaces/inventory.js';
import type { PeerHandlers } from '../../src/peer/server.js';
import type { PeerStatus } from '../../src/peer/messages.js';
import { waitFor } from '../helpers/wait.js';
import { replicaLab, type ReplicaLab } from './replica-lab.js';

const NS = 'alpha';
const OLD_VERSION = '0.0.9';

const handlersOf = (s: LabSite) => (s.daemon as unknown as { peerServer: { options: { handlers: PeerHandlers } } }).peerServer.options.handlers;

/** Makes site `s`'s peer status answer as an older daemon's (no instance); returns the undo (its upgrade). */
function olderStatus(s: LabSite): () => void {
  const handlers = handlersOf(s);
  const status = handlers.status;
  handlers.status = async (peer) => {
    const { instance: _, ...older } = (await status(peer)) as PeerStatus;
    return { ...older, version: OLD_VERSION };
  };
  return () => void (handlers.status = status);
}

describe('a replica of a primary running an older nethsm-replicator', () => {
  let lab: Lab | undefined;
  let logged: ReplicaLab['logged'] = () => [];
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  /** Site a (older peer status from its start on: b first hears from it so) primary of alpha, b its replica, synced once. */
  const start = async (afterPrimaryRestart?: 'stream' | 'snapshot'): Promise<{ a: LabSite; b: LabSite; upgrade: () => void }> => {
    let upgrade = () => undefined as void;
    const r = await replicaLab({ namespace: NS, afterPrimaryRestart, beforeReplica: (a) => void (upgrade = olderStatus(a)) });
    ({ lab, logged } = r);
    return { ...r, upgrade };
  };

  /** One failed call marks a down at b (a blip: its daemon ran all along); waits for the recovery to finish. */
  const blip = async (b: LabSite) => {
    b.daemon!.ctx.monitor.reportFailure('a', new PeerUnreachableError('a blip', { site: 'a' }));
    expect(b.daemon!.ctx.monitor.get('a')!.status).toBe('unreachable');
    await waitFor(() => b.daemon!.ctx.monitor.get('a')!.status === 'ok', 'a to recover at b', 15_000);
  };
  const scrape = async (s: LabSite) => (await fetch(`http://127.0.0.1:${s.daemon!.ports.health}/metrics`)).text();
  const alphaAt = async (s: LabSite) => (await s.daemon!.status()).namespaces.find((n) => n.name === NS)!;

  // Before: a primary that names no instance counted as restarted at every recovery: each blip queued a pass of each
  // namespace (with afterPrimaryRestart: snapshot, a snapshot sync of each), and status did not say why.
  it('queues no pass at a blip of it, says so in status and /health/ready, and queues one at its upgrade restart', async () => {
    const { b, upgrade } = await start();
    await blip(b);
    expect(logged(/anti-entropy pass queued/)).toEqual([]);
    expect(b.daemon!.restartPasses.pending()).toEqual([]);
    expect(logged(/names no daemon instance \(an older nethsm-replicator\)/)).toHaveLength(1);
    const unseen = (await alphaAt(b)).restartsUnseen;
    expect(unseen).toMatchObject({ primary: 'a', version: OLD_VERSION });
    expect(unseen?.cause).toMatch(/^its primary a runs nethsm-replicator 0\.0\.9, whose peer status does not say when its daemon restarts/);
    expect(unseen?.try).toMatch(/^Upgrade nethsm-replicator at a/);
    const ready = JSON.parse(await (await fetch(`http://127.0.0.1:${b.daemon!.ports.health}/health/ready`)).text()) as { warnings?: string[] };
    expect(ready.warnings?.join('\n')).toMatch(/namespace alpha: its primary a runs nethsm-replicator 0\.0\.9.*Try: Upgrade nethsm-replicator at a/);
    expect(await scrape(b)).toMatch(/^nethsm_replicator_primary_outdated\{namespace="alpha",kind="restarts-unseen"\} 1$/m);

    // Its upgrade: the status names an instance now, which b counts as a restart (writes may have been made around it).
    upgrade();
    await blip(b);
    expect(logged(/stream resumed from 1\.\d+; anti-entropy pass queued/)).toHaveLength(1);
    expect((await alphaAt(b)).restartsUnseen).toBeNull();
    expect(await scrape(b)).toMatch(/^nethsm_replicator_primary_outdated\{namespace="alpha",kind="restarts-unseen"\} 0$/m);
    await waitFor(() => b.daemon!.restartPasses.pending().length === 0, 'the pass to run', 30_000);
  });

  it('takes no snapshot sync at a blip of it with afterPrimaryRestart: snapshot either', async () => {
    const { b } = await start('snapshot');
    const synced = b.daemon!.ctx.store.positions.get(NS, 'a')!.lastOkAt;
    await blip(b);
    await b.daemon!.syncer.drain();
    expect(logged(/snapshot sync \(replication\.afterPrimaryRestart: snapshot\)/)).toEqual([]);
    expect(b.daemon!.ctx.store.positions.get(NS, 'a')!.lastOkAt).toBe(synced);
  });

  // Before: the one-answer pass beyond the cap failed the same way at every try, each asking the primary for its whole
  // namespace again: the queued pass every recovery.retryInterval, forever, with a generic error in status.
  it('stops asking it for an inventory it cannot serve (beyond the cap), says why with "upgrade", and asks again once it is upgraded', async () => {
    const { a, b, upgrade } = await start();
    const handlers = handlersOf(a);
    const { inventoryRanges, inventoryItems } = handlers;
    delete handlers.inventoryRanges;
    delete handlers.inventoryItems;
    let asked = 0;
    handlers.inventory = async () => {
      asked++;
      return { namespace: NS, takenAt: Date.now(), keys: new Array<number>(MAX_INVENTORY_KEYS + 1).fill(0) };
    };
    const err = await b.daemon!.antiEntropy(NS).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AntiEntropyPrimaryTooOldError);
    expect((err as Error).message).toMatch(/the primary a serves no inventory ranges .* \(1000001 keys, more than one answer may hold \(1000000\)\)/);
    expect(asked).toBe(1);
    const deferred = (await alphaAt(b)).antiEntropyDeferred;
    expect(deferred?.cause).toMatch(/no anti-entropy pass of it can run against that primary/);
    expect(deferred?.try).toMatch(/^Upgrade nethsm-replicator at the primary/);
    expect(await scrape(b)).toMatch(/^nethsm_replicator_primary_outdated\{namespace="alpha",kind="inventory-too-large"\} 1$/m);

    // Every later pass, the one queued after a restart included, is refused without asking it, and not retried.
    await expect(b.daemon!.antiEntropy(NS)).rejects.toBeInstanceOf(AntiEntropyPrimaryTooOldError);
    b.daemon!.restartPasses.queue(NS, 'a');
    await waitFor(async () => /^not retried: /.test((await alphaAt(b)).restartPass?.state ?? ''), 'the queued pass to wait for the upgrade', 15_000);
    expect(asked).toBe(1);
    expect(logged(/anti-entropy pass cannot run against this primary/)).toHaveLength(1);

    // Upgraded (another version in its status, and its range routes): the next pass asks it, and completes.
    Object.assign(handlers, { inventoryRanges, inventoryItems });
    upgrade();
    await b.daemon!.ctx.monitor.checkNow('a');
    expect(await b.daemon!.antiEntropy(NS)).toMatchObject({ diff: { missing: [], extra: [], differs: [] } });
    expect((await alphaAt(b)).antiEntropyDeferred).toBeNull();
    expect(await scrape(b)).toMatch(/^nethsm_replicator_primary_outdated\{namespace="alpha",kind="inventory-too-large"\} 0$/m);
    // It covers the pass that waited (it started after the stream had caught up).
    expect(b.daemon!.restartPasses.pending()).toEqual([]);
  });
});
