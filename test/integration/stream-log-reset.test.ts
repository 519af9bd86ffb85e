/**
 * A primary whose change log restarts (data-safety issue, case 4), two sites on loopback with real HTTPS: site A's
 * daemon loses its state database (its NetHSM keeps everything) and numbers the namespace's changes from 1 again.
 * The replica must neither skip the new changes as replays of the old ones (the stream stalled until a scheduled
 * sync) nor continue from its old position inside the new log (changes lost silently): it notices the new change
 * log, takes one snapshot from it, and streams from there.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { STATE_DB_FILE } from '../../src/state/store.js';
import { caughtUp, diffInventories, eventually, importBody, inventory, streamReady } from './stream-helpers.js';

const NS = 'alpha';

async function compare(a: LabSite, b: LabSite): Promise<{ missing: string[]; extra: string[]; differ: string[] }> {
  const [pa, pb] = [a.nsAdmin(NS), b.client(`${NS}~replicator`, LAB_PASSPHRASES.replicator)];
  try {
    return diffInventories(await inventory(pa), await inventory(pb));
  } finally {
    await Promise.all([pa.close(), pb.close()]);
  }
}

/** Site A loses its state database (daemon stopped, `state.db` and its WAL deleted), then starts again. */
async function loseState(a: LabSite): Promise<void> {
  await a.stopDaemon();
  for (const f of [STATE_DB_FILE, `${STATE_DB_FILE}-wal`, `${STATE_DB_FILE}-shm`]) await rm(path.join(a.stateDir, f), { force: true });
  await a.startDaemon();
}

describe("stream after the primary's change log restarted", () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: NS, primary: 'a' }], gateway: true });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    await lab.site('b').daemon!.syncer.sync(NS, { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('applies the new log\'s changes through the stream after one catch-up snapshot, and reports no stall', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    let gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    for (const id of ['old1', 'old2', 'old3']) {
      await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), id);
      await gw.addKeyTag(id, 'before');
    }
    await gw.close();
    await caughtUp(a, b, NS);
    const before = b.daemon!.ctx.store.positions.get(NS, 'a')!;
    expect(before.seq).toBe(6);

    await loseState(a);
    const log = a.daemon!.ctx.store.changelog.logId(NS);
    expect(log).not.toBe(before.logId);
    // A fetches B's transport key again (its copy went with the database), so imports reach B sealed, not as catch-ups.
    await streamReady([a, b]);
    // B's stream is refused (its position is in the old log) and B takes a snapshot from the new one. Writes start once
    // that (and any recovery sync after A's restart) is over and B streams again, so what follows can only travel by
    // the stream.
    const synced = () => b.daemon!.ctx.store.positions.get(NS, 'a')!;
    await eventually(
      () =>
        (synced().lastOkAt ?? 0) > (before.lastOkAt ?? 0) &&
        b.daemon!.ctx.monitor.get('a')?.status === 'ok' &&
        b.daemon!.ctx.streamStatus?.(NS)?.state === 'streaming' &&
        !b.daemon!.syncer.isBusy(NS),
      30_000,
      "B's catch-up snapshot after A's reset",
    );
    expect(synced()).toMatchObject({ epoch: 1, seq: 0, logId: log });

    // Seqs 1..3 of the new log: B applied 1..3 of the old log before; they are other changes.
    gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'new1');
    await gw.addKeyTag('new1', 'after');
    await gw.setKeyLabel('old1', 'relabelled');
    await gw.close();
    expect(a.daemon!.ctx.store.changelog.head(NS, 1).seq).toBe(3);
    await caughtUp(a, b, NS, 20_000);
    expect(await compare(a, b)).toEqual({ missing: [], extra: [], differ: [] });
    // Applied by the stream (a snapshot writes no such records), in the new log.
    const rows = b.daemon!.ctx.store.db.prepare(`SELECT log_id, seq, outcome FROM applied_changes WHERE namespace = '${NS}' ORDER BY seq`).all();
    expect(rows).toEqual([1, 2, 3].map((seq) => ({ log_id: log, seq, outcome: 'applied' })));
    await eventually(() => b.daemon!.ctx.streamStatus?.(NS)?.changesBehind === 0, 10_000, "B's heartbeat");
    expect(b.daemon!.ctx.streamStatus?.(NS)).toMatchObject({ state: 'streaming', position: { epoch: 1, seq: 3 }, changesBehind: 0, lastErrorCode: null });
  });

  it("does not continue inside the new log when the primary wrote past the replica's position while it was away", async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    let gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), 'away');
    await gw.close();
    await caughtUp(a, b, NS);
    const at = b.daemon!.ctx.store.positions.get(NS, 'a')!.seq!;
    await b.stopDaemon();
    await loseState(a);
    // More changes than B's position: served from B's old position, the first `at` of them would be skipped unseen.
    // Tags (no envelope needed: A cannot fetch B's transport key while B is down), each one a change that shows.
    gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    for (let i = 0; i < at + 2; i++) await gw.addKeyTag('away', `reset${i}`);
    await gw.close();
    await b.startDaemon();
    await caughtUp(a, b, NS);
    expect(await compare(a, b)).toEqual({ missing: [], extra: [], differ: [] });
    expect(b.daemon!.ctx.store.positions.get(NS, 'a')).toMatchObject({ seq: at + 2, logId: a.daemon!.ctx.store.changelog.logId(NS) });
  });
});
