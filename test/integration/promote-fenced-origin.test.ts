/**
 * A former primary that never applied a snapshot (the namespace began there) is fenced (its fence exports its copy and
 * strips the namespace's administrators from its NetHSM) and promoted again with --force before its resync brought a
 * snapshot. Its administrators come back from that fence's quarantine file, the only copy of them here. Before: the
 * promote looked for the last applied snapshot only, found none, restored nothing and said nothing owed: the primary
 * answered its administrators 401 while `status` showed no problem.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import type { RequestHold } from '../../src/sim/request-holds.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { use } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';

const gen = (id: string) => (c: NetHsmClient) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });

describe('a fenced former primary that never applied a snapshot, promoted again', () => {
  let lab: Lab | undefined;
  let hold: RequestHold | undefined;
  afterEach(async () => {
    hold?.close();
    hold = undefined;
    await lab?.close();
    lab = undefined;
  });

  it("gets its administrators back from its fence's quarantine file", async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '200ms' });
    await lab.startDaemons();
    const [a, b] = [lab.site('a'), lab.site('b')];
    await use(a.nsAdmin('alpha'), gen('k1'));
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await b.daemon!.syncer.drain();
    await a.stopDaemon();
    await b.daemon!.failover.promote('alpha', { force: false, actor: 'op@b' });
    // a's resync after its fence waits for b's snapshot: b's device backup is held at b's simulator.
    hold = (b.sim as RunningSimulator).hold({ method: 'POST', path: /\/system\/backup$/ });
    await a.startDaemon();
    const fenced = () => a.daemon!.ctx.store.audit.list({ namespace: 'alpha' }).some((e) => e.action === 'fence' && typeof e.detail.quarantine === 'string');
    await waitFor(fenced, "a's fence to export its copy", 20_000);
    const refused = async () => (await use(a.nsAdmin('alpha'), (c) => c.listKeys()).catch((e: { status?: number }) => e.status)) === 401;
    await waitFor(refused, "a's fence to strip its administrators", 20_000);
    expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'fenced', epoch: 2, primarySite: 'b' });

    const promoted = await a.daemon!.failover.promote('alpha', { force: true, actor: 'op@a' });
    expect(promoted).toMatchObject({ role: 'primary', epoch: 3 });
    expect(promoted.administratorsPending).toBeUndefined();
    expect(promoted.administratorsRestored).toBeGreaterThanOrEqual(1);
    // The NetHSM answers 429 for a second after the 401s above (its rate limit on failed logins): retried past it.
    const written = () => use(a.nsAdmin('alpha'), gen('k2-after-promote')).then(() => true, (e: { status?: number }) => (e.status === 429 ? false : Promise.reject(e)));
    await waitFor(written, 'a write by the namespace administrator at a', 10_000);
    expect(a.daemon!.ctx.store.adminRestores.get('alpha')).toBeUndefined();
  });
});
