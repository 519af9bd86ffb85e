/**
 * Racing writes re-applied faster (docs/concurrency.md, "Racing writes re-applied"; docs/benchmarks.md, "Busy site: the
 * racing writes re-applied faster"): the log replay after a merge-restore's hold opens this site's own envelopes with
 * the window key the capture made (no NetHSM unwrap), and re-applies distinct keys REPLAY_CONCURRENCY (8) at once. The device calls are counted and kept in flight at B's simulator
 * (`sim.hold`); every write is made through B's real gateway. Its own lab: the first test needs a receiving cache that
 * no earlier replay filled.
 */
import { AsyncResource } from 'node:async_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { applySnapshot, type ApplyDeps, type ApplyPhase } from '../../src/replicator/snapshot-apply.js';
import { DEFAULT_TRANSPORT_KEY_ID } from '../../src/stream/transport-key.js';
import { REPLAY_CONCURRENCY } from '../../src/stream/log-replay.js';
import { use } from '../helpers/clients.js';
import { snapshotAndDeps as snapshotAt } from '../helpers/snapshot-deps.js';
import { eventually, importBody } from './stream-helpers.js';

describe('racing writes re-applied faster', () => {
  let lab: Lab;
  const sim = () => lab.site('b').sim as RunningSimulator;
  const betaAdmin = () => lab.site('b').gatewayClient('beta~admin', LAB_PASSPHRASES.nsAdmin);
  const betaKeys = async () => (await use(lab.site('b').nsAdmin('beta'), (c) => c.listKeys())).sort();
  const ec = () => importBody('EC_P256', ['ECDSA_Signature']);
  /** Imports `ids` into beta through B's gateway, all at once: writes that race the merge-restore. */
  const importAll = (ids: readonly string[]) => AsyncResource.bind(async () => void (await use(betaAdmin(), (c) => Promise.all(ids.map((id) => c.importKey(ec(), id))))));

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }], gateway: true });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    await use(betaAdmin(), (c) => c.importKey(ec(), 'keep'));
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  const snapshotAndDeps = (over: Partial<ApplyDeps>) =>
    snapshotAt(lab, { site: 'b', directWriters: false, maxRemerges: 1, raceReplay: lab.site('b').daemon!.ctx.raceReplayer!, ...over });

  // Before: the replay asked B's NetHSM to unwrap the window key of the own envelopes (an RSA decrypt on the replay's
  // path, once per window), though the capture of this very daemon had made that key.
  it('opens the own envelopes of racing imports without a NetHSM unwrap, and every import is back', async () => {
    const unwraps = sim().hold({ method: 'POST', path: new RegExp(`^/api/v1/keys/${DEFAULT_TRANSPORT_KEY_ID}/decrypt$`) });
    // A caught unwrap goes on at once (the test then fails on the count, not on a stalled replay).
    void unwraps.waitFor(1, 120_000).then(
      () => unwraps.close(),
      () => undefined,
    );
    try {
      const ids = ['own-1', 'own-2', 'own-3'];
      const { file, deps } = await snapshotAndDeps({ beforeHold: importAll(ids) });
      const r = await applySnapshot(deps, 'alpha', file);
      expect(r).toMatchObject({ remerges: 0, heldMerge: false });
      expect(unwraps.caught()).toBe(0);
      expect(await betaKeys()).toEqual(expect.arrayContaining(ids));
    } finally {
      unwraps.close();
    }
  });

  it('re-applies distinct keys REPLAY_CONCURRENCY at once, and reports the replay as its own step', async () => {
    const ids = Array.from({ length: 12 }, (_, i) => `wide-${i}`);
    let held: ReturnType<RunningSimulator['hold']> | undefined;
    const phases: ApplyPhase[] = [];
    const { file, deps } = await snapshotAndDeps({
      beforeHold: importAll(ids),
      // Opened once the racing imports are on the device: what it catches are the replay's own imports.
      onPhase: (phase) => {
        phases.push(phase);
        if (phase === 'restore') held = sim().hold({ method: 'PUT', path: /^\/api\/v1\/keys\/wide-\d+$/ });
      },
    });
    expect(lab.site('b').daemon!.ctx.nethsm.pool.connections).toBeGreaterThanOrEqual(REPLAY_CONCURRENCY);
    const apply = applySnapshot(deps, 'alpha', file);
    // Settled before the test ends even when an expectation below fails (the lab closes after it).
    const settled = apply.then(
      () => undefined,
      () => undefined,
    );
    try {
      await eventually(() => held !== undefined, 30_000, 'the restore to start');
      // Eight of the twelve in flight at once: none of them waits for another to be answered.
      await held!.waitFor(REPLAY_CONCURRENCY, 30_000);
      expect(phases.slice(-2)).toEqual(['restore', 'replay']);
    } finally {
      held?.close();
      await settled;
    }
    expect(await apply).toMatchObject({ remerges: 0, heldMerge: false });
    expect(phases.slice(phases.indexOf('restore'))).toEqual(['restore', 'replay', 'verify']);
    expect(await betaKeys()).toEqual(expect.arrayContaining(ids));
  });
});
