import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SyncVerifyFailedError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { silentLogger } from '../../src/log.js';
import { writeTicket } from '../../src/concurrency/barrier.js';
import { EarlyBackup } from '../../src/replicator/early-backup.js';
import { applySnapshot } from '../../src/replicator/snapshot-apply.js';
import { eventually } from './stream-helpers.js';
import { use } from '../helpers/clients.js';
import { snapshotAndDeps } from '../helpers/snapshot-deps.js';

/**
 * The restore's verification at a site whose gateway takes writes (every site primary for its own namespaces): a
 * gateway write confined to one namespace passes the device barrier with that scope, so a write landing between a
 * restore and its check backup (B3) leaves only its namespace out of the comparison; a device-wide one still skips it.
 */
describe("a restore's verification with gateway writes after it", () => {
  let lab: Lab;
  /** B's simulator latencies, read at every call: one test slows key generation to keep a gateway write in flight. */
  const latencyAtB: Record<string, number> = {};

  beforeAll(async () => {
    lab = await Lab.create({
      namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }, { name: 'gamma', primary: 'a' }],
      gateway: true,
      latency: (site) => (site === 'b' ? latencyAtB : {}),
    });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
  });

  afterAll(async () => {
    await lab?.close();
  });

  /** A key generated through B's gateway by `user` (B is primary of beta; root keys are not replicated). */
  async function gatewayKey(user: string, password: string, id: string): Promise<void> {
    await use(lab.site('b').gatewayClient(user, password), (c) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
  }

  // Before: gateway writes passed the barrier unscoped, so this one skipped the verification (verified false).
  it("verifies a restore when a gateway write to another namespace lands before the check backup, leaving that namespace out", async () => {
    let skipped = 0;
    const { file, deps } = await snapshotAndDeps(lab, {
      beforeVerify: () => gatewayKey('beta~admin', LAB_PASSPHRASES.nsAdmin, 'beta-after-restore'),
      onVerifySkipped: () => skipped++,
    });
    const r = await applySnapshot(deps, 'alpha', file);
    // beta's new key is in B3 and not in the merged file: compared, it would fail the verification.
    expect(r).toMatchObject({ verified: true });
    expect(skipped).toBe(0);
    expect(await use(lab.site('b').nsOperator('beta'), (c) => c.listKeys())).toContain('beta-after-restore');
  });

  // Before: skipped as the test above was, so the loss outside the namespaces went unnoticed.
  it('still compares everything outside the written namespace: a lost root key fails the verification', async () => {
    let lost = 0;
    await use(lab.site('b').client(), (c) => c.generateKey({ id: 'root-lost', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    const { file, deps } = await snapshotAndDeps(lab, {
      beforeVerify: async () => {
        await gatewayKey('beta~admin', LAB_PASSPHRASES.nsAdmin, 'beta-with-loss');
        // A client deletes a root key straight on the NetHSM (invisible to the barrier).
        await use(lab.site('b').client(), (c) => c.deleteKey('root-lost'));
      },
      onForeignLoss: (n) => (lost += n),
    });
    const err = await applySnapshot(deps, 'alpha', file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncVerifyFailedError);
    expect(lost).toBe(1);
  });

  it('still skips the verification when a device-wide gateway write (a root key) lands before the check backup', async () => {
    const skipped: string[][] = [];
    const { file, deps } = await snapshotAndDeps(lab, {
      beforeVerify: () => gatewayKey('admin', LAB_PASSPHRASES.admin, 'root-after-restore'),
      onVerifySkipped: (ns) => skipped.push([...ns]),
    });
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r).toMatchObject({ verified: false });
    expect(skipped).toEqual([['alpha']]);
    expect(await use(lab.site('b').client(), (c) => c.listKeys())).toContain('root-after-restore');
  });

  // Before: a gateway write scoped to the namespace being synced was left out of the racing writes as a stream apply
  // is (the restore replaces the namespace), though nothing re-applies it: the restore erased the acknowledged change
  // silently (no new merge, nothing quarantined). Such a write passes the gateway when the namespace was not replicated
  // at its decision, e.g. a config reload adds it as a replica while the write is in flight.
  it('treats a gateway write scoped to the namespace being restored as racing: merged again, the key quarantined, not erased', async () => {
    await use(lab.site('a').nsAdmin('gamma'), (c) => c.generateKey({ id: 'g1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    const b = lab.site('b');
    // An administrator of gamma on B's NetHSM (a root administrator may create one only while gamma is not there).
    await use(b.client(), async (c) => {
      await c.deleteNamespace('gamma');
      await c.createUser({ realName: 'gamma admin at b', role: 'Administrator', passphrase: LAB_PASSPHRASES.nsAdmin }, 'gamma~badmin');
      await c.createNamespace('gamma');
    });
    let raced = false;
    const { file, deps } = await snapshotAndDeps(
      lab,
      {
        beforeHold: async () => {
          if (raced) return;
          raced = true;
          // What B's gateway does for `gamma~badmin` generating a key (writeScope: gamma), the NetHSM answering 201.
          await b.daemon!.ctx.barrier.shared(
            () => use(b.client('gamma~badmin', LAB_PASSPHRASES.nsAdmin), (c) => c.generateKey({ id: 'gw-racer', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] })),
            { scope: 'gamma', gateway: true, ticket: writeTicket() },
          );
        },
      },
      { namespace: 'gamma' },
    );
    const r = await applySnapshot(deps, 'gamma', file);
    expect(raced).toBe(true);
    expect(r.remerges).toBeGreaterThanOrEqual(1);
    expect(r.quarantined?.keyIds).toContain('gw-racer');
  });

  // Before: the early B1 waited for unscoped writes only, the gateway's as they were; a scoped one was not waited for,
  // so its tracker listed it (a raced write that cannot be re-applied: the apply merges again).
  it('an early B1 still lets a gateway write in flight end before it opens its tracker, though the write is scoped', async () => {
    const barrier = lab.site('b').daemon!.ctx.barrier;
    latencyAtB.generate = 500;
    try {
      const write = gatewayKey('beta~admin', LAB_PASSPHRASES.nsAdmin, 'beta-in-flight');
      const probe = barrier.trackWrites();
      await eventually(() => probe.writes().some((w) => w.gateway === true && w.scope === 'beta'), 10_000, 'the gateway write admitted');
      probe.close();
      const b = lab.site('b').daemon!;
      const early = EarlyBackup.start(b.ctx.device, b.ctx.work, silentLogger);
      // Write holders at the barrier when the tracker is first seen open (polled every 50 ms; the write takes 500 ms
      // at the device): 0 once the B1 waited for it. Not the client's promise, which settles after the barrier hold
      // ends (the answer still travels back), so it could lag the tracker.
      let writersAtOpen: number | undefined;
      await eventually(() => (barrier.tracking ? ((writersAtOpen = barrier.markWrites().inFlight), true) : false), 10_000, 'the early B1 to track writes');
      expect(writersAtOpen).toBe(0);
      await write;
      await early.discard();
    } finally {
      delete latencyAtB.generate;
    }
  });
});
