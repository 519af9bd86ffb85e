import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SyncVerifyFailedError } from '../../src/errors.js';
import { Lab } from '../../src/lab/lab.js';
import { applySnapshot } from '../../src/replicator/snapshot-apply.js';
import { use } from '../helpers/clients.js';
import { snapshotAndDeps } from '../helpers/snapshot-deps.js';

/**
 * The restore's verification when a role change of another namespace lands between the restore and its check backup
 * (B3): a promote takes an exclusive hold of the device barrier, and restores that namespace's administrators by a
 * backup and restore inside it. Everything outside that namespace is restored as the hold's own backup held it, so the
 * hold is scoped to it and the verification leaves only it out (docs/concurrency.md, "Snapshot sync", step 4).
 */
describe("a restore's verification with a promote after it", () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'gamma', primary: 'a' }, { name: 'delta', primary: 'a' }] });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    for (const ns of ['gamma', 'delta']) await lab.site('b').daemon!.syncer.sync(ns, { actor: 'test' });
  });

  afterAll(async () => {
    await lab?.close();
  });

  // Before: the promote's exclusive hold was unscoped ("may change anything"), so the verification skipped itself
  // (verified false, `restore not verified: writes that may touch anything`): 1 to 3 times per fault seed.
  it('verifies a restore when another namespace is promoted before the check backup, leaving that namespace out', async () => {
    let skipped = 0;
    const b = lab.site('b').daemon!;
    const { file, deps } = await snapshotAndDeps(lab, {
      beforeVerify: async () => {
        const r = await b.failover.promote('gamma', { force: true, actor: 'operator@b' });
        expect(r.administratorsRestored).toBe(1);
      },
      onVerifySkipped: () => skipped++,
    });
    const r = await applySnapshot(deps, 'alpha', file);
    expect(r).toMatchObject({ verified: true });
    expect(skipped).toBe(0);
  });

  it('still compares everything outside the promoted namespace: a lost root key fails the verification', async () => {
    let lost = 0;
    const b = lab.site('b');
    await use(b.client(), (c) => c.generateKey({ id: 'root-lost', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    const { file, deps } = await snapshotAndDeps(lab, {
      beforeVerify: async () => {
        await b.daemon!.failover.promote('delta', { force: true, actor: 'operator@b' });
        // A client deletes a root key straight on the NetHSM (invisible to the barrier).
        await use(b.client(), (c) => c.deleteKey('root-lost'));
      },
      onForeignLoss: (n) => (lost += n),
    });
    const err = await applySnapshot(deps, 'alpha', file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncVerifyFailedError);
    expect(lost).toBe(1);
  });
});
