/**
 * What a restore forgets in the certificate table (docs/anti-entropy.md, "What a restore forgets"), in daemons: a
 * snapshot sync of one namespace forgets rows of that namespace only, and of it only the keys the restore writes with
 * another value than the device held (replicator/changed-keys.ts), so the next anti-entropy read of the namespace
 * takes the others' certificates from the table, and of another namespace all of them; a restore given no namespaces (an
 * administrator rewrite: promote, demote, fence) forgets everything, and so does a sync whose verification finds
 * entries outside its namespaces changed (the premise that kept the other rows true failed). The interleaving of the
 * last is made on purpose through the simulator's latency table (test/helpers/latencies.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { removeFiles } from '../../src/replicator/workdir.js';
import { use } from '../helpers/clients.js';
import { Latencies } from '../helpers/latencies.js';

const KEYS = 4;
const ids = (ns: string) => Array.from({ length: KEYS }, (_, i) => `${ns}${i}`);

describe('the certificate table across restores, in daemons', () => {
  let lab: Lab;
  let b: LabSite;
  const lat = new Latencies();
  const known = (ns: string) => b.daemon!.ctx.store.keyCerts.count(ns);

  async function generate(ns: string, keyIds: readonly string[]): Promise<void> {
    await use(lab.site('a').nsAdmin(ns), async (c) => {
      for (const id of keyIds) await c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    });
  }

  /** One anti-entropy pass of `ns` at b; its diff must be empty. Returns how b's read got its certificates. */
  async function pass(ns: string): Promise<unknown> {
    const r = await b.daemon!.antiEntropy(ns);
    expect(r?.diff).toEqual({ missing: [], extra: [], differs: [] });
    return r && 'certReads' in r ? r.certReads : undefined;
  }

  /** The namespaces' rows learnt at b (a read of each), and checked warm. */
  async function warm(namespaces = ['alpha', 'beta']): Promise<void> {
    for (const ns of namespaces) {
      await pass(ns);
      expect(await pass(ns)).toEqual({ fromTable: known(ns), unknown: 0, scrubbed: 0 });
    }
  }

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'a' }, { name: 'gamma', primary: 'a' }], latency: lat.table });
    await lab.startDaemons();
    b = lab.site('b');
    for (const ns of ['alpha', 'beta', 'gamma']) {
      await generate(ns, ids(ns));
      await b.daemon!.syncer.sync(ns, { actor: 'test' });
    }
    // A slice this thin (a key is scrubbed when sha256 mod N equals the read number mod N) scrubs none of these keys
    // in the few reads here: only forgets make a pass read a certificate from the device.
    const ctx = b.daemon!.ctx;
    ctx.config = { ...ctx.config, antiEntropy: { ...ctx.config.antiEntropy, certScrubPasses: 2 ** 31 - 1 } };
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('forgets only the synced namespace, and of it only the keys its restore changed: the next reads take the rest from the table', async () => {
    await warm();
    expect([known('alpha'), known('beta')]).toEqual([KEYS, KEYS]);

    // A key generated on a's device reaches b only by a snapshot: the sync restores alpha at b. alpha1's certificate
    // is set at a meanwhile: its stored record changes, and b's row for it (no certificate) must not survive.
    await generate('alpha', ['alpha-new']);
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.putCert('alpha1', Buffer.from('set at the primary')));
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    const rows = b.daemon!.ctx.store.keyCerts.page('alpha', '', 100).map((r) => r.id);
    expect(rows).toEqual(['alpha0', 'alpha2', 'alpha3']);
    expect(known('beta')).toBe(KEYS);

    expect(await pass('beta')).toEqual({ fromTable: KEYS, unknown: 0, scrubbed: 0 });
    // The pass finds nothing to repair (pass() checks): alpha1's certificate was read from the device, not the table.
    expect(await pass('alpha')).toEqual({ fromTable: KEYS - 1, unknown: 2, scrubbed: 0 });
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.deleteCert('alpha1'));
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(known('alpha')).toBe(KEYS);
  });

  it('forgets everything on a restore given no namespaces', async () => {
    await warm();
    expect([known('alpha'), known('beta')]).toEqual([KEYS + 1, KEYS]);

    // The daemon's own device, as an administrator rewrite uses it: its backup restored, with no namespaces named.
    const { ctx } = b.daemon!;
    const file = ctx.work.temp('unscoped-restore');
    try {
      await ctx.barrier.exclusive([], async () => {
        await ctx.device.backupTo(file);
        await ctx.device.restore(file);
      });
    } finally {
      await removeFiles(file);
    }
    expect([known('alpha'), known('beta')]).toEqual([0, 0]);
    expect(await pass('beta')).toEqual({ fromTable: 0, unknown: KEYS, scrubbed: 0 });
  });

  it('forgets everything when the verification of a sync finds entries outside its namespace changed', async () => {
    await warm();
    expect(known('beta')).toBe(KEYS);
    await generate('alpha', ['alpha-late']);
    lat.slow('b', 'restore', 1);
    const restoring = lat.started('b', 'restore');
    const sync = b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await restoring;
    lat.fast('b', 'restore');
    // The next backup at b is the verification's (B3): held back while a certificate of beta is set straight at the
    // NetHSM, after the restore (which left beta's rows, rightly).
    lat.slow('b', 'backup', 2_000);
    const checking = lat.started('b', 'backup');
    await sync;
    await checking;
    lat.fast('b', 'backup');
    expect(known('beta')).toBe(KEYS);
    await use(b.client('beta~replicator', LAB_PASSPHRASES.replicator), (c) => c.putCert('beta0', Buffer.from('around the daemon')));
    await b.daemon!.syncer.drain();

    expect(b.daemon!.ctx.store.positions.forNamespace('alpha')[0]).toMatchObject({ lastSyncOutcome: 'failed', lastErrorCode: 'NHR_ERR_SYNC_VERIFY_FAILED' });
    expect(known('beta')).toBe(0);
    await use(b.client('beta~replicator', LAB_PASSPHRASES.replicator), (c) => c.deleteCert('beta0'));
  });

  it('forgets in each namespace of a coalesced merge-restore the keys it changed, and keeps the others', async () => {
    await warm(['alpha', 'beta', 'gamma']);
    const before = ['alpha', 'beta'].map(known);
    await generate('alpha', ['alpha-batch']);
    await generate('beta', ['beta-batch']);
    await use(lab.site('a').nsAdmin('beta'), (c) => c.putCert('beta2', Buffer.from('set at the primary')));
    const answers = await Promise.all(['alpha', 'beta'].map((ns) => b.daemon!.syncer.sync(ns, { actor: 'test' })));
    expect(answers.map((r) => r.outcome === 'applied' && r.coalescedWith)).toEqual([['beta'], ['alpha']]);
    await b.daemon!.syncer.drain();
    // beta0's record at b was rewritten around the daemon by the test before (a certificate set and deleted): it
    // differs from a's, so the restore changed it too.
    expect(['alpha', 'beta', 'gamma'].map(known)).toEqual([before[0], before[1]! - 2, KEYS]);
    expect(await pass('gamma')).toEqual({ fromTable: KEYS, unknown: 0, scrubbed: 0 });
    expect(await pass('beta')).toEqual({ fromTable: before[1]! - 2, unknown: 3, scrubbed: 0 });
  });
});
