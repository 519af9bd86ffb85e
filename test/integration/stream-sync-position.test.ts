/**
 * A snapshot sync of a replica namespace whose stream is live: the sync records the snapshot's position inside its
 * exclusive hold, and that position may be behind what the stream applied meanwhile (the primary reads its position
 * before its backup, and the stream goes on during the download and the merge). The restore erased the stream's
 * effects above it. The stream must go on from the recorded position, not from its connection's in-memory cursor: a
 * change that arrived during the hold was admitted after it against the moved position and refused as a gap (a
 * "failed" change, a warn, `lastError` in status and a backoff), and `stream.onDevice` kept the cut connection's
 * high-water mark above what the device held. Both failed before the sync told the stream (StreamService.restored).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { eventually, streamingPair } from './stream-helpers.js';

const NS = 'alpha';

describe('a snapshot sync under a live stream', () => {
  let lab: Lab;
  let a: LabSite;
  let b: LabSite;

  beforeAll(async () => {
    ({ lab, a, b } = await streamingPair(NS));
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  const head = () => a.daemon!.ctx.store.changelog.head(NS, a.daemon!.ctx.store.roles.require(NS).epoch).seq;
  const positionAtB = () => b.daemon!.ctx.store.positions.get(NS, 'a')?.seq;
  const failedAtB = async () => (await b.daemon!.ctx.metrics.streamChangesAppliedTotal.get()).values.find((v) => v.labels.namespace === NS && v.labels.outcome === 'failed')?.value ?? 0;
  const generate = async () => {
    const gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    try {
      return await gw.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    } finally {
      await gw.close();
    }
  };

  it('goes on from the position the sync recorded: no refused change, and onDevice never above that position', async () => {
    const simA = a.sim as RunningSimulator;
    const simB = b.sim as RunningSimulator;
    await eventually(() => positionAtB() === head(), 30_000, 'b to catch up');
    const failedBefore = await failedAtB();
    // a's backup for the snapshot is held: its position (read before the backup) is the head now.
    const backupA = simA.hold({ method: 'POST', path: /^\/api\/v1\/system\/backup/ });
    const restoreB = simB.hold({ method: 'POST', path: /^\/api\/v1\/system\/restore/ });
    let synced: Promise<unknown> | undefined;
    try {
      synced = b.daemon!.syncer.sync(NS, { actor: 'test' });
      await backupA.waitFor(1, 30_000);
      const claimed = head();
      // The stream takes a change past the snapshot's position before the restore.
      const ahead = await generate();
      await eventually(() => positionAtB() === claimed + 1, 30_000, 'b to apply the change past the snapshot');
      backupA.close();
      await restoreB.waitFor(1, 30_000);
      // Inside b's exclusive hold: a change arriving now waits for its device hold.
      const late = await generate();
      await eventually(() => b.daemon!.ctx.barrier.waiting > 0, 10_000, "the late change to wait for b's device");
      restoreB.close();
      await synced;
      // The sync recorded the snapshot's position (behind the stream's): nothing above it is known to be on the device.
      const onDevice = b.daemon!.stream.status(NS)?.onDevice;
      expect(onDevice === null || (onDevice !== undefined && onDevice.seq <= positionAtB()!)).toBe(true);
      await eventually(() => positionAtB() === head(), 30_000, 'b to apply the changes again from the recorded position');
      const keys = new Set(await b.daemon!.stream.client(NS).listKeys());
      expect(keys.has(ahead) && keys.has(late)).toBe(true);
      // Before: the late change was admitted against the moved position and refused as a gap.
      expect(await failedAtB()).toBe(failedBefore);
      expect(b.daemon!.stream.status(NS)?.lastError).toBeNull();
    } finally {
      backupA.close();
      restoreB.close();
      await synced?.catch(() => undefined);
    }
  });

  it('an idle stream does not report on the device what the restore erased', async () => {
    const simA = a.sim as RunningSimulator;
    await eventually(() => positionAtB() === head() && !b.daemon!.syncer.isBusy(NS), 30_000, 'b to catch up');
    const backupA = simA.hold({ method: 'POST', path: /^\/api\/v1\/system\/backup/ });
    let synced: Promise<unknown> | undefined;
    try {
      synced = b.daemon!.syncer.sync(NS, { actor: 'test' });
      await backupA.waitFor(1, 30_000);
      const claimed = head();
      await generate();
      await eventually(() => b.daemon!.stream.status(NS)?.onDevice?.seq === claimed + 1, 30_000, 'b to apply the change past the snapshot');
      backupA.close();
      await synced;
      expect(positionAtB()).toBe(claimed);
      // Before: claimed + 1, the connection's high-water mark, until a heartbeat showed the position behind the head
      // (the device held the snapshot, at `claimed`). No change comes meanwhile: the stream is idle.
      const onDevice = b.daemon!.stream.status(NS)?.onDevice;
      expect(onDevice === null || (onDevice !== undefined && onDevice.seq <= claimed)).toBe(true);
      await eventually(() => positionAtB() === head(), 30_000, 'b to apply the change again');
    } finally {
      backupA.close();
      await synced?.catch(() => undefined);
    }
  });
});
