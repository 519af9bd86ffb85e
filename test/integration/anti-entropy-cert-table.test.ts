/**
 * The certificate table in running daemons (docs/anti-entropy.md, "The certificate table"): a certificate set through
 * the primary's gateway and streamed to the replica is re-read at both sites by the next pass (the gateway and the
 * stream apply forget the key), and a certificate set straight at the replica's NetHSM, which no table can know of, is
 * found by the scrub within antiEntropy.certScrubPasses passes and repaired.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { use } from '../helpers/clients.js';
import { caughtUp, streamReady } from './stream-helpers.js';

const IDS = ['c0', 'c1', 'c2', 'c3', 'c4', 'c5'];

describe('anti-entropy with the certificate table, in daemons', () => {
  let lab: Lab;

  function scrubEvery(site: LabSite, passes: number): void {
    const ctx = site.daemon!.ctx;
    ctx.config = { ...ctx.config, antiEntropy: { ...ctx.config.antiEntropy, certScrubPasses: passes } };
  }
  const certOf = (site: LabSite, id: string) => site.daemon!.ctx.store.keyCerts.page('alpha', id, 1).find((r) => r.id === id)?.cert;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], gateway: true });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    await use(lab.site('a').nsAdmin('alpha'), async (c) => {
      for (const id of IDS) await c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    });
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('re-reads at both sites a certificate the gateway set and the stream carried', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    // A slice this thin scrubs none of these six keys here: only the forgets can make a pass re-read one.
    for (const s of [a, b]) scrubEvery(s, 1000);
    const cold = await b.daemon!.antiEntropy('alpha');
    expect(cold?.diff).toEqual({ missing: [], extra: [], differs: [] });
    expect(cold).toMatchObject({ certReads: { fromTable: 0, unknown: IDS.length, scrubbed: 0 } });
    for (const s of [a, b]) expect(s.daemon!.ctx.store.keyCerts.count('alpha')).toBe(IDS.length);
    expect([certOf(a, 'c1'), certOf(b, 'c1')]).toEqual(['', '']);

    await use(a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), (gw) => gw.putCert('c1', Buffer.from('through the gateway')));
    await caughtUp(a, b, 'alpha');
    expect([certOf(a, 'c1'), certOf(b, 'c1')]).toEqual([undefined, undefined]);
    const warm = await b.daemon!.antiEntropy('alpha');
    expect(warm?.diff).toEqual({ missing: [], extra: [], differs: [] });
    expect(warm).toMatchObject({ certReads: { fromTable: IDS.length - 1, unknown: 1, scrubbed: 0 } });
    // Learnt again from the devices by that pass.
    expect(certOf(a, 'c1')).toMatch(/^[0-9a-f]{64}$/);
    expect(certOf(b, 'c1')).toBe(certOf(a, 'c1'));
  });

  it('finds a certificate set straight at the replica within certScrubPasses passes, and repairs it', async () => {
    const b = lab.site('b');
    scrubEvery(b, 3);
    await use(b.client('alpha~replicator', LAB_PASSPHRASES.replicator), (c) => c.putCert('c4', Buffer.from('around the daemon')));
    let found = -1;
    for (let pass = 0; pass < 3 && found < 0; pass++) {
      const r = await b.daemon!.antiEntropy('alpha');
      if (r?.diff.differs.some((d) => d.id === 'c4' && d.fields.includes('cert'))) {
        found = pass;
        expect(r.repaired).toBe(1);
      }
    }
    expect(found).toBeGreaterThanOrEqual(0);
    expect(await use(b.client('alpha~replicator', LAB_PASSPHRASES.replicator), (c) => c.readCert('c4'))).toBeNull();
  });
});
