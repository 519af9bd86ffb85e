/**
 * Racing writes re-applied AFTER the exclusive hold (docs/concurrency.md, "Racing writes re-applied"): the hold is the
 * restore alone; the log replay runs right after it under a shared hold, and meanwhile the gateway lets through writes
 * that cannot meet it (other keys, kinds the replay can always re-apply) and holds the others until it is done. The
 * replay's device calls are kept in flight at the simulator (`sim.hold`), so what passes and what waits is seen while
 * it runs. Every write is made through B's real gateway.
 */
import { AsyncResource } from 'node:async_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { applySnapshot, type ApplyDeps } from '../../src/replicator/snapshot-apply.js';
import { use } from '../helpers/clients.js';
import { snapshotAndDeps as snapshotAt } from '../helpers/snapshot-deps.js';
import { StateStore } from '../../src/state/store.js';
import { eventually, importBody } from './stream-helpers.js';

describe('racing writes re-applied after the exclusive hold', () => {
  let lab: Lab;
  const sim = () => lab.site('b').sim as RunningSimulator;
  const betaAdmin = () => lab.site('b').gatewayClient('beta~admin', LAB_PASSPHRASES.nsAdmin);
  const betaKeys = async () => (await use(lab.site('b').nsAdmin('beta'), (c) => c.listKeys())).sort();
  const ec = () => importBody('EC_P256', ['ECDSA_Signature']);
  /** Settles to 'ok' or the error, and says whether it has settled yet. */
  const track = <T>(p: Promise<T>) => {
    const t = { settled: false, result: undefined as unknown };
    const done = p.then(
      () => 'ok' as const,
      (err: unknown) => err,
    );
    void done.then((r) => {
      t.settled = true;
      t.result = r;
    });
    return Object.assign(t, { done });
  };

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }], gateway: true });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    await use(betaAdmin(), async (c) => {
      await c.importKey(ec(), 'keep');
      await c.importKey(ec(), 'other');
    });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  const snapshotAndDeps = (over: Partial<ApplyDeps>) =>
    snapshotAt(lab, { site: 'b', directWriters: false, maxRemerges: 1, raceReplay: lab.site('b').daemon!.ctx.raceReplayer!, ...over });

  /**
   * A merge-restore of alpha at B raced by an import of `raced` into beta (primary at B): its replay after the hold is
   * held at the simulator at that import. Resolves once the replay's import is held; `apply` is the apply's outcome.
   */
  async function applyWithHeldReplay(raced: string) {
    const racing = AsyncResource.bind(async () => void (await use(betaAdmin(), (c) => c.importKey(ec(), raced))));
    let held: ReturnType<RunningSimulator['hold']> | undefined;
    const { file, deps } = await snapshotAndDeps({
      beforeHold: racing,
      // Opened once the racing import is on the device: what it catches is the replay's own import of that key.
      onPhase: (phase) => {
        if (phase === 'restore') held = sim().hold({ method: 'PUT', path: new RegExp(`^/api/v1/keys/${raced}(\\?|$)`) });
      },
    });
    const apply = track(applySnapshot(deps, 'alpha', file));
    await eventually(() => held !== undefined, 30_000, 'the restore to start');
    await held!.waitFor(1, 30_000);
    return { hold: held!, apply };
  }

  // Before: the replay ran inside the exclusive hold, so every write of the site waited for restore + replay.
  it('while the replay runs, an import of a new key lands at once; a write to a replayed key waits and lands after it, in log order', async () => {
    const b = lab.site('b');
    const { hold, apply } = await applyWithHeldReplay('raced-1');
    try {
      // The replay is held at the device: the exclusive hold is over, the record still pending.
      expect(b.daemon!.ctx.barrier.held).toBe(false);
      expect(b.daemon!.ctx.raceReplayer!.pending()).toEqual(new Set(['beta']));
      const relabel = track(use(betaAdmin(), (c) => c.setKeyLabel('raced-1', 'after-replay')));
      // A key the replay does not name, a kind it can always re-apply: 201 while the replay is still held.
      expect(await use(betaAdmin(), (c) => c.importKey(ec(), 'fresh-during-replay'))).toBe('fresh-during-replay');
      expect(await use(betaAdmin(), (c) => c.setKeyLabel('other', 'during-replay'))).toBeUndefined();
      expect(hold.held()).toBe(1);
      // Status: a replay running right after its hold is normal operation, not a problem.
      expect((await b.daemon!.status()).replaysPending).toBeNull();
      expect(relabel.settled).toBe(false);
      expect(apply.settled).toBe(false);
      hold.close();
      expect(await apply.done).toBe('ok');
      // Waited for the replay (else it met a device without raced-1: 404), then landed on the re-imported key.
      expect(await relabel.done).toBe('ok');
    } finally {
      hold.close();
    }
    expect(b.daemon!.ctx.raceReplayer!.pending().size).toBe(0);
    expect(await betaKeys()).toEqual(['fresh-during-replay', 'keep', 'other', 'raced-1']);
    expect(await use(b.nsAdmin('beta'), (c) => c.listKeys({ label: 'after-replay' }))).toEqual(['raced-1']);
    expect(await use(b.nsAdmin('beta'), (c) => c.listKeys({ label: 'during-replay' }))).toEqual(['other']);
  });

  it('a move, a key generated inside the NetHSM and a user change of that namespace wait for the replay', async () => {
    const b = lab.site('b');
    const { hold, apply } = await applyWithHeldReplay('raced-2');
    try {
      const waiting = [
        track(use(betaAdmin(), (c) => c.moveKey('other', 'other-moved'))),
        track(use(betaAdmin(), (c) => c.generateKey({ id: 'device-made', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }))),
        track(use(betaAdmin(), (c) => c.createUser({ realName: 'during replay', role: 'Operator', passphrase: 'a passphrase for a user' }, 'beta~duringreplay'))),
      ];
      // A write that passes goes through at once; those three were sent before it and are still waiting.
      expect(await use(betaAdmin(), (c) => c.importKey(ec(), 'fresh-2'))).toBe('fresh-2');
      expect(waiting.map((w) => w.settled)).toEqual([false, false, false]);
      expect(hold.held()).toBe(1);
      hold.close();
      expect(await apply.done).toBe('ok');
      expect(await Promise.all(waiting.map((w) => w.done))).toEqual(['ok', 'ok', 'ok']);
    } finally {
      hold.close();
    }
    expect(await betaKeys()).toEqual(expect.arrayContaining(['device-made', 'fresh-2', 'other-moved', 'raced-2']));
    expect(await betaKeys()).not.toContain('other');
    expect(await use(b.nsAdmin('beta'), (c) => c.listUsers())).toContain('beta~duringreplay');
  });

  it('a daemon stopped mid-replay finishes it at start: nothing lost, the writes admitted during the replay are on the device', async () => {
    const b = lab.site('b');
    const { hold, apply } = await applyWithHeldReplay('raced-3');
    const seqBefore = b.daemon!.ctx.store.changelog.maxSeq('beta');
    try {
      // Admitted during the replay, after the head it reads: logged past it, with own envelopes (a record is pending).
      expect(await use(betaAdmin(), (c) => c.importKey(ec(), 'fresh-3'))).toBe('fresh-3');
      expect(await use(betaAdmin(), (c) => c.setKeyLabel('keep', 'during-crash'))).toBeUndefined();
      expect(b.daemon!.ctx.store.changelog.maxSeq('beta')).toBe(seqBefore + 2);
      // The replay's import never reaches the key store: the NetHSM locks while it is in flight (the simulator cannot
      // drop it and come back with the same TLS identity, so this stands in for a crash at that moment), and the
      // daemon stops with the record pending, as a crash leaves it.
      await use(b.client(), (c) => c.lock());
    } finally {
      hold.close();
    }
    expect(await apply.done).not.toBe('ok');
    await b.stopDaemon();
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    expect(await betaKeys()).not.toContain('raced-3');
    expect(await betaKeys()).toContain('fresh-3');
    await b.startDaemon();
    // start() finishes the record in an exclusive hold before the gateway: from its start to the end its hold fixed
    // (to_seq); the writes admitted during the replay were made on the restored device and are there already.
    await eventually(() => b.daemon!.ctx.raceReplayer!.pending().size === 0, 30_000, 'the pending replay to finish at start');
    expect(await betaKeys()).toEqual(expect.arrayContaining(['fresh-3', 'keep', 'raced-3']));
    expect(await use(b.nsAdmin('beta'), (c) => c.listKeys({ label: 'during-crash' }))).toEqual(['keep']);
    expect((await b.daemon!.status()).replaysPending).toBeNull();
  });

  // Before (to_seq in memory only): the record was finished from its start to the head at the next start, so a write
  // admitted after the hold that cannot be replayed (an import whose own-site envelope could not be sealed: sealing is
  // best effort) made `check` refuse it, and beta stayed refusing writes until an operator acted.
  it('a record finished at start reads only to the end its hold fixed durably: a write admitted after it that replay could not re-apply does not leave it stuck', async () => {
    const b = lab.site('b');
    const { hold, apply } = await applyWithHeldReplay('raced-4');
    const end = b.daemon!.ctx.store.changelog.maxSeq('beta');
    let admitted: number;
    try {
      // The end is durable before the hold let writes in: the head when it restored.
      expect(b.daemon!.ctx.store.raceReplays.all()).toEqual([expect.objectContaining({ namespace: 'beta', toSeq: end })]);
      expect(await use(betaAdmin(), (c) => c.importKey(ec(), 'fresh-4'))).toBe('fresh-4');
      admitted = b.daemon!.ctx.store.changelog.maxSeq('beta');
      expect(admitted).toBe(end + 1);
      await use(b.client(), (c) => c.lock());
    } finally {
      hold.close();
    }
    expect(await apply.done).not.toBe('ok');
    await b.stopDaemon();
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    // The admitted import as if its own-site envelope could not be sealed: a change `check` refuses (a catch-up).
    const store = StateStore.inDir(b.stateDir).open();
    try {
      const r = store.db.prepare("UPDATE change_log SET envelopes = json_remove(envelopes, '$.b') WHERE namespace = 'beta' AND seq = ? AND json_type(envelopes, '$.b') IS NOT NULL").run(admitted);
      expect(r.changes).toBe(1);
      expect(store.raceReplays.all()).toEqual([expect.objectContaining({ namespace: 'beta', toSeq: end })]);
    } finally {
      store.close();
    }
    await b.startDaemon();
    await eventually(() => b.daemon!.ctx.raceReplayer!.pending().size === 0, 30_000, 'the pending replay to finish at start');
    expect(await betaKeys()).toEqual(expect.arrayContaining(['fresh-4', 'raced-4']));
    expect((await b.daemon!.status()).replaysPending).toBeNull();
    expect(await use(betaAdmin(), (c) => c.setKeyLabel('fresh-4', 'writable-again'))).toBeUndefined();
  });
});
