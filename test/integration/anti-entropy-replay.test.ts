/**
 * Anti-entropy against a primary mid-restore (docs/anti-entropy.md, "A primary mid-restore"): while a restore at the
 * primary has erased writes of the namespace that are not re-applied yet, its device lacks acknowledged keys, and a
 * replica's pass comparing against it would delete them as extras. The primary serves no inventory of the namespace
 * while a re-apply is pending, and fails an answer whose reads may have overlapped a restore; the replica's pass then
 * repairs nothing. Both sites run real daemons over the peer API; A's device reads are paused with the simulator's
 * request holds, and the restore's erasure is made behind A's daemon as the restore would.
 */
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AntiEntropySourceReplayingError, PeerRefusedError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { use } from '../helpers/clients.js';
import { caughtUp, eventually, importBody, streamReady } from './stream-helpers.js';

describe('anti-entropy of a namespace whose primary has erased writes to re-apply', () => {
  let lab: Lab;
  const ids = (site: 'a' | 'b') => use(lab.site(site).nsOperator('alpha'), async (c) => (await c.listKeys()).sort());
  const simA = () => lab.site('a').sim as RunningSimulator;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], gateway: true });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
    await use(lab.site('a').gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), async (c) => {
      for (const id of ['k0', 'z']) await c.importKey(importBody('EC_P256', ['ECDSA_Signature']), id);
    });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  /**
   * Imports `id` through A's gateway (acknowledged), sealed to A's own transport key too (as while a merge-restore
   * tracks writes, so a replay can re-import it), and waits until B's stream has applied it. Returns its seq at A.
   */
  async function acknowledgedImport(id: string): Promise<number> {
    const [a, b] = [lab.site('a'), lab.site('b')];
    const tracker = a.daemon!.ctx.barrier.trackWrites();
    try {
      await use(a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), id));
    } finally {
      tracker.close();
    }
    await caughtUp(a, b, 'alpha');
    expect(await ids('b')).toContain(id);
    return a.daemon!.ctx.store.changelog.maxSeq('alpha');
  }

  /** What a merge-restore at A does before its replay: the re-apply recorded (and pending), `id` erased from the device. */
  async function eraseAtA(id: string, fromSeq: number): Promise<void> {
    const a = lab.site('a');
    a.daemon!.ctx.raceReplayer!.prepare({ logs: new Map([['alpha', fromSeq]]), streams: [], writes: 1 });
    await use(a.nsAdmin('alpha'), (c) => c.deleteKey(id));
  }

  async function finishReplayAtA(): Promise<void> {
    const replayer = lab.site('a').daemon!.ctx.raceReplayer!;
    replayer.kick();
    await eventually(() => replayer.pending().size === 0, 60_000, "A's pending replay to finish");
  }

  // Before: B's pass read A's inventory without k (A's replay still pending) and deleted k as an extra written by
  // replication (delete-extra): an acknowledged key gone at the replica until the replay and a later pass.
  it('a pass while the primary has a replay pending fails with NHR_ERR_ANTIENTROPY_SOURCE_REPLAYING and deletes nothing', async () => {
    const b = lab.site('b');
    const seq = await acknowledgedImport('k');
    await eraseAtA('k', seq);
    try {
      expect(await ids('a')).not.toContain('k');
      const err = await b.daemon!.antiEntropy('alpha').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AntiEntropySourceReplayingError);
      expect(err).toMatchObject({ code: 'NHR_ERR_ANTIENTROPY_SOURCE_REPLAYING', namespace: 'alpha', retryable: true });
      expect(await ids('b')).toContain('k');
      // B's status says why, as a warning (transient), not a problem.
      const ns = (await b.daemon!.status()).namespaces.find((n) => n.name === 'alpha');
      expect(ns?.antiEntropyDeferred?.cause).toMatch(/its primary a is re-applying writes a restore erased there.*NHR_ERR_ANTIENTROPY_SOURCE_REPLAYING/);
      expect(ns?.antiEntropyDeferred?.try).toMatch(/Nothing to do/);
      // Every inventory route refuses before it reads: 503 with the code (the one-answer route of older replicas too).
      const toA = b.daemon!.ctx.peers.get('a')!;
      for (const ask of [() => toA.inventory('alpha'), () => toA.inventoryRanges('alpha', 64), () => toA.certificate('alpha', 'k0')]) {
        const refused = await ask().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(refused).toBeInstanceOf(PeerRefusedError);
        expect(refused).toMatchObject({ status: 503, remoteCode: 'NHR_ERR_ANTIENTROPY_SOURCE_REPLAYING' });
      }
    } finally {
      await finishReplayAtA();
    }
    // The replay put k back at A; with nothing pending the pass runs as before and finds nothing.
    expect(await ids('a')).toContain('k');
    const r = await b.daemon!.antiEntropy('alpha');
    expect(r?.diff).toEqual({ missing: [], extra: [], differs: [] });
    expect(await ids('b')).toContain('k');
    expect((await b.daemon!.status()).namespaces.find((n) => n.name === 'alpha')?.antiEntropyDeferred).toBeNull();
  });

  // Before: the items answer began before the restore erased k2 at A and was completed all the same, its listing lacking
  // k2 (read after the restore), even though the replay had put k2 back before its end: B deleted k2 as an extra (and
  // repaired z's tag on the strength of that answer).
  it('an inventory answer during which a replay of the namespace is prepared fails: the replica repairs nothing', async () => {
    const b = lab.site('b');
    const seq = await acknowledgedImport('k2');
    // Drift at B in the same range (a tag added behind the daemon), so B asks A for the range's items.
    await use(b.client('alpha~replicator', LAB_PASSPHRASES.replicator), (c) => c.addKeyTag('z', 'rogue'));
    const listing = simA().hold({ method: 'GET', path: /^\/api\/v1\/keys$/ });
    const readZ = simA().hold({ method: 'GET', path: /^\/api\/v1\/keys\/z$/ });
    let settled = false;
    const pass = b.daemon!.antiEntropy('alpha').then(
      (r) => r,
      (e: unknown) => e,
    ).finally(() => (settled = true));
    try {
      // The ranges answer: its listing and its read of z go through.
      await listing.waitFor(1);
      listing.release();
      await readZ.waitFor(1);
      readZ.release();
      // The items answer has begun (its listing waits at A's device): now a merge-restore at A erases k2.
      await eventually(() => listing.caught() === 2 && listing.held() === 1, 30_000, "the items answer's listing at A");
      await eraseAtA('k2', seq);
      listing.close();
      // Its listing comes without k2. An answer that goes on reads z (held), and is let finish only once the replay has
      // put k2 back at A; the fixed primary has cut it off by then.
      await eventually(() => settled || (readZ.caught() === 2 && readZ.held() === 1), 30_000, "the items answer to end or read z at A");
      await finishReplayAtA();
      expect(await ids('a')).toContain('k2');
    } finally {
      listing.close();
      readZ.close();
    }
    const out = await pass;
    expect(out).toBeInstanceOf(AntiEntropySourceReplayingError);
    expect((out as Error).message).toMatch(/while the answer was being read/);
    // Nothing repaired: k2 stays, and z's rogue tag too (until a pass on a trustworthy answer).
    expect(await ids('b')).toContain('k2');
    expect(await use(b.nsOperator('alpha'), (c) => c.getKey('z'))).toMatchObject({ restrictions: { tags: ['rogue'] } });
    // Nothing pending, no restore since: the pass runs as before and repairs the tag.
    const r = await b.daemon!.antiEntropy('alpha');
    expect(r?.diff).toEqual({ missing: [], extra: [], differs: [{ id: 'z', fields: ['tags'] }] });
    expect(r?.repaired).toBe(1);
    expect(await ids('b')).toEqual(await ids('a'));
  });

  // Before: the warning was cleared only by a pass that completed, and a site that stopped being a replica of that
  // primary runs no pass: B, primary after a demote at A, still said its primary A was re-applying (status and
  // /health/ready warnings) until it restarted.
  it('a deferred pass stops being reported once the site is no longer a replica of that primary', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    const seq = await acknowledgedImport('k3');
    await eraseAtA('k3', seq);
    try {
      await expect(b.daemon!.antiEntropy('alpha')).rejects.toBeInstanceOf(AntiEntropySourceReplayingError);
      expect((await b.daemon!.status()).namespaces.find((n) => n.name === 'alpha')?.antiEntropyDeferred).not.toBeNull();
    } finally {
      await finishReplayAtA();
    }
    await a.daemon!.failover.demote('alpha', { to: 'b', actor: 'test' });
    await eventually(() => b.daemon!.ctx.store.roles.get('alpha')?.role === 'primary', 60_000, 'B primary of alpha');
    expect((await b.daemon!.status()).namespaces.find((n) => n.name === 'alpha')?.antiEntropyDeferred).toBeNull();
    const ready = await request(`http://127.0.0.1:${b.daemon!.ports.health}/health/ready`);
    expect(await ready.body.text()).not.toMatch(/re-applying writes a restore erased/);
  });
});
