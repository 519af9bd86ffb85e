/**
 * Keys generated inside the primary's NetHSM (`generate: device`) reach the replica by catch-up snapshots, and a burst
 * of them costs at most one merge-restore per `stream.catchupWindow` (issue 11: before, one per burst of generates).
 * The window here is an hour, so the test sees the second catch-up wait for it; nothing is timed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { caughtUp, eventually, streamReady } from './stream-helpers.js';

describe('catch-ups of device-generated keys at a replica, one per window', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], gateway: true, catchupWindow: '1h' });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('takes the first catch-up at once, then holds the next burst for the window and shows it pending', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    const restores = () => b.daemon!.ctx.metrics.restoresTotal.get().then((m) => m.values.filter((v) => v.labels.outcome === 'success').reduce((n, v) => n + v.value, 0));
    const gw = a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin);
    try {
      await gw.generateKey({ id: 'first', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
      // The first catch-up has no window before it.
      await caughtUp(a, b, 'alpha');
      const op = b.client('alpha~replicator', LAB_PASSPHRASES.replicator);
      expect(await op.listKeys()).toContain('first');
      const before = await restores();

      for (let i = 0; i < 5; i++) await gw.generateKey({ id: `burst${i}`, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
      await eventually(async () => (await b.daemon!.status()).namespaces[0]?.stream?.pendingCatchup?.changes === 5, 30_000, 'five changes pending at B');
      const s = (await b.daemon!.status()).namespaces[0]!;
      expect(s.stream?.state).toBe('catching-up');
      expect(Date.parse(s.stream!.pendingCatchup!.dueAt) - Date.now()).toBeGreaterThan(30 * 60_000);
      expect(await restores()).toBe(before);
      expect((await op.listKeys()).filter((k) => k.startsWith('burst'))).toEqual([]);
      await op.close();
    } finally {
      await gw.close();
    }
  });
});
