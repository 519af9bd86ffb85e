import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { use } from '../helpers/clients.js';

const backupsAt = async (lab: Lab, site: string): Promise<number> => {
  const m = /^nethsm_replicator_device_backups_total (\d+)/m.exec(await lab.site(site).registry.metrics());
  return Number(m?.[1] ?? 0);
};

describe('snapshots requested together share one device backup at the primary', () => {
  let lab: Lab;

  beforeAll(async () => {
    // A device backup takes 300 ms here, so requests that arrive together overlap it, as on an appliance with many keys.
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'a' }], latency: { backup: 300 } });
    await lab.startDaemons();
    for (const ns of ['alpha', 'beta']) await use(lab.site('a').nsAdmin(ns), (c) => c.generateKey({ id: `${ns}-key`, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('serves both namespaces from one backup, each correct, and takes a fresh backup for a later request', async () => {
    const b = lab.site('b');
    const before = await backupsAt(lab, 'a');
    const results = await Promise.all([b.daemon!.syncer.sync('alpha', { actor: 'test' }), b.daemon!.syncer.sync('beta', { actor: 'test' })]);
    expect(results.map((r) => r.outcome)).toEqual(['applied', 'applied']);
    expect((await backupsAt(lab, 'a')) - before).toBe(1);
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toEqual(['alpha-key']);
    expect(await use(b.nsOperator('beta'), (c) => c.listKeys())).toEqual(['beta-key']);

    // Later: a new key, a new request, a fresh backup (a finished backup is never reused: it could be older than the ask).
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'alpha-later', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect((await backupsAt(lab, 'a')) - before).toBe(2);
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toEqual(['alpha-key', 'alpha-later']);
    // The shared file is gone once both snapshots were served.
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(lab.site('a').daemon!.ctx.work.work)).filter((f) => f.startsWith('device-shared'))).toEqual([]);
  });
});
