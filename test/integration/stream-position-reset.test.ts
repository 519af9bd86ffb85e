/**
 * A snapshot sync can move a replica's stream position back under a live stream: its restore puts the copy the primary
 * took (at an older head) on the device and forgets the records after it. The primary does not send those changes on
 * that connection again, so the replica must reconnect from its position. Found under load by
 * stream-both-sites.test.ts (a member-recovery sync in the middle of a burst): the replica sat behind for good,
 * heartbeats showing the head, until the next sync.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { caughtUp, streamReady } from './stream-helpers.js';

describe('a stream whose position a snapshot moved back', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a', generate: 'replicated' }], gateway: true });
    await lab.startDaemons();
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
    await streamReady([lab.site('a'), lab.site('b')]);
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('reconnects from the stored position and applies the changes after it again', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    const gw = a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin);
    try {
      for (let i = 0; i < 5; i++) await gw.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    } finally {
      await gw.close();
    }
    await caughtUp(a, b, 'alpha');
    const store = b.daemon!.ctx.store;
    const pos = store.positions.get('alpha', 'a')!;
    expect(pos.seq).toBe(5);
    // What a snapshot sync's restore records when the copy it applied was taken at head 2 (src/daemon/sync.ts).
    store.positions.recordSyncOk('alpha', 'a', { epoch: pos.epoch!, seq: 2, ...(pos.logId ? { log: pos.logId } : {}), takenAt: Date.now(), durationMs: 1 });
    await caughtUp(a, b, 'alpha', 20_000);
    expect(store.positions.get('alpha', 'a')?.seq).toBe(5);
  });
});
