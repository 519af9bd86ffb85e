/**
 * A restore's deferred verification (its check backup, B3) waits for the streams the restore moved back to apply again
 * what it erased (SiteContext.streamReapplied; docs/concurrency.md, "Racing writes re-applied"): a whole-device backup
 * taken meanwhile takes the device from that re-apply, and the rewound stream's new changes wait behind it. Device
 * backups are counted at B's simulator; the wait is a gate the test opens, so the order is exact, not timed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { use } from '../helpers/clients.js';
import { eventually } from './stream-helpers.js';

describe('a restore verified once rewound streams re-applied', () => {
  let lab: Lab;
  const backupsAtB = () => (lab.site('b').sim as RunningSimulator).backups;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  // Before: the check backup started as soon as the sync answered, during the re-apply.
  it('takes the check backup only once streamReapplied resolves', async () => {
    const ctx = lab.site('b').daemon!.ctx;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let backupsAtWait: number | undefined;
    const real = ctx.streamReapplied;
    ctx.streamReapplied = () => {
      backupsAtWait ??= backupsAtB();
      return gate;
    };
    try {
      const r = await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
      expect(r).toMatchObject({ outcome: 'applied', verified: 'deferred' });
      await eventually(() => backupsAtWait !== undefined, 10_000, 'the verification to wait for the re-apply');
      // The sync's own backup (B1) is taken; the check backup is not while the gate is shut.
      expect(backupsAtB()).toBe(backupsAtWait);
      open();
      await eventually(() => backupsAtB() === backupsAtWait! + 1, 10_000, 'the check backup once the re-apply is done');
    } finally {
      open();
      ctx.streamReapplied = real;
    }
  });
});
