/**
 * The device's backup key is derived once per daemon, not once per sync: every device backup carries the device's one
 * backup salt (FACTS.md, `backup-salt`), and with the firmware's scrypt each derivation costs about a second, which
 * dominated a sync of a small device (docs/benchmarks.md, "Snapshot sync"); and a primary seals its snapshots under a key
 * it keeps for a bounded number of them (src/replicator/snapshot-keys.ts), so its replicas derive it once too. The
 * cached keys are zeroed at close.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';

describe('the device backup key cache', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('keeps one derived key across syncs and zeroes it when the daemon closes', async () => {
    const b = lab.site('b').daemon!;
    const cache = b.ctx.deviceOpen.keyCache;
    expect(cache, 'the daemon opens its device backups through a cache of its own').toBeDefined();
    await b.syncer.sync('alpha', { actor: 'test' });
    await b.syncer.drain();
    expect(cache!.size).toBe(1);
    await b.syncer.sync('alpha', { actor: 'test' });
    await b.syncer.drain();
    expect(cache!.size, 'the second sync derived nothing new').toBe(1);
    // Both snapshots came sealed under one key of a's (its snapshot key ring): b derived it once.
    expect(b.ctx.snapshotOpen.keyCache?.size).toBe(1);
    await lab.site('b').stopDaemon();
    expect(cache!.size).toBe(0);
    expect(b.ctx.snapshotOpen.keyCache?.size).toBe(0);
  });
});
