import { describe, expect, it } from 'vitest';
import { decide, fresherCandidate, leaseDeadline, nextTermEpoch, type EtcdView, type TickInput } from './leader-policy.js';

const now = 1_000_000;
const read = (over: Partial<Extract<EtcdView, { kind: 'read' }>> = {}): EtcdView => ({ kind: 'read', leader: undefined, floor: 3, candidates: [], ...over });
const primaryA: TickInput = {
  row: { namespace: 'alpha', role: 'primary', epoch: 3, primarySite: 'a', paused: false },
  localSite: 'a',
  view: read(),
  lease: '42',
  lagMs: undefined,
  lastSyncOk: undefined,
  maxLagMs: 60_000,
  positionTakenAt: null,
};
const replicaB: TickInput = {
  ...primaryA,
  row: { namespace: 'alpha', role: 'replica', epoch: 3, primarySite: 'a', paused: false },
  localSite: 'b',
  lease: '77',
  lagMs: 5_000,
  lastSyncOk: true,
  positionTakenAt: now - 5_000,
};
const keyOfA = { site: 'a', epoch: 3, lease: '42', modRevision: '10' };

describe('lease deadline and term epochs', () => {
  it('stops writes a safety margin before the lease could expire, counted from when the renewal was sent', () => {
    expect(leaseDeadline(500, 10_000, 3_000)).toBe(7_500);
  });

  it('takes a new term above both the floor and every epoch known here', () => {
    expect(nextTermEpoch(3, 2)).toBe(4);
    expect(nextTermEpoch(3, 9)).toBe(10);
  });

  it('finds a reachable candidate with a fresher copy, never this site itself', () => {
    const cands = [
      { site: 'b', positionTakenAt: now },
      { site: 'c', positionTakenAt: now - 1 },
      { site: 'd', positionTakenAt: null },
    ];
    expect(fresherCandidate('c', now - 1, cands)?.site).toBe('b');
    expect(fresherCandidate('b', now, cands)).toBeUndefined();
    expect(fresherCandidate('e', null, cands)?.site).toBe('b');
  });
});

describe('decide at the primary', () => {
  it('holds while its lease is valid and the key is its own', () => {
    expect(decide({ ...primaryA, view: read({ leader: keyOfA }) }, 3)).toEqual({ kind: 'hold' });
  });

  it('steps down without a safely valid lease, even when etcd cannot be asked', () => {
    expect(decide({ ...primaryA, lease: undefined }, 3).kind).toBe('step-down');
    expect(decide({ ...primaryA, lease: undefined, view: { kind: 'unreachable', error: 'x' } }, 3).kind).toBe('step-down');
  });

  it('keeps writes while etcd is briefly unreachable but the lease deadline has not passed', () => {
    expect(decide({ ...primaryA, view: { kind: 'unreachable', error: 'timeout' } }, 3)).toEqual({ kind: 'hold' });
  });

  it('claims a vacant key at its epoch, and its own key left under an old lease (restart)', () => {
    expect(decide(primaryA, 3)).toEqual({ kind: 'claim', expected: undefined });
    const old = { ...keyOfA, lease: '1' };
    expect(decide({ ...primaryA, view: read({ leader: old }) }, 3)).toEqual({ kind: 'claim', expected: old });
  });

  it('steps down when the key names another site or epoch, or etcd records a newer term', () => {
    expect(decide({ ...primaryA, view: read({ leader: { ...keyOfA, site: 'b', epoch: 4 } }) }, 3)).toMatchObject({ kind: 'step-down', reason: 'the leader key names b at epoch 4' });
    expect(decide({ ...primaryA, view: read({ floor: 5 }) }, 3)).toMatchObject({ kind: 'step-down' });
  });
});

describe('decide at a replica', () => {
  it('waits while the primary holds the key', () => {
    expect(decide({ ...replicaB, view: read({ leader: keyOfA }) }, 3)).toMatchObject({ kind: 'wait', reason: 'a holds the leader key at epoch 3' });
  });

  it('campaigns for floor/known + 1 when the key is vacant and its copy is fresh enough', () => {
    expect(decide(replicaB, 3)).toEqual({ kind: 'campaign', epoch: 4 });
    expect(decide({ ...replicaB, view: read({ floor: 7 }) }, 3)).toEqual({ kind: 'campaign', epoch: 8 });
  });

  it('does not campaign when behind, never synced, after a failed sync, paused, without a lease, or when another reachable site is fresher', () => {
    expect(decide({ ...replicaB, lagMs: 120_000 }, 3)).toMatchObject({ kind: 'wait', reason: expect.stringMatching(/120s behind, over maxLagForPromote \(60s\)/) });
    expect(decide({ ...replicaB, lagMs: undefined }, 3)).toMatchObject({ kind: 'wait', reason: 'not promoting: never synced' });
    expect(decide({ ...replicaB, lastSyncOk: false }, 3)).toMatchObject({ kind: 'wait' });
    expect(decide({ ...replicaB, row: { ...replicaB.row, paused: true } }, 3)).toMatchObject({ kind: 'wait', reason: expect.stringMatching(/paused/) });
    expect(decide({ ...replicaB, lease: undefined }, 3)).toMatchObject({ kind: 'wait' });
    expect(decide({ ...replicaB, view: read({ candidates: [{ site: 'c', positionTakenAt: now }] }) }, 3)).toMatchObject({ kind: 'wait', reason: 'not promoting: c has a fresher copy' });
    expect(decide({ ...replicaB, view: { kind: 'unreachable', error: 'no leader' } }, 3)).toMatchObject({ kind: 'wait', reason: 'etcd unreachable: no leader' });
  });

  // Regression (etcd fault run seed 1, isolate-primary): b's promote took the key at epoch 4 and then failed on an etcd
  // read that hung; the key stayed b's under b's live lease, and b waited for a "handover" to itself until the heal.
  it('promotes again over its own key left by a promote that failed after taking it', () => {
    const mine = { site: 'b', epoch: 4, lease: '77', modRevision: '12' };
    expect(decide({ ...replicaB, view: read({ leader: mine, floor: 4 }) }, 3)).toEqual({ kind: 'campaign', epoch: 5, expected: mine });
    // Not while paused or without a valid lease; and the key at its own epoch (a demote's handover) still waits.
    expect(decide({ ...replicaB, row: { ...replicaB.row, paused: true }, view: read({ leader: mine, floor: 4 }) }, 3)).toMatchObject({ kind: 'wait' });
    expect(decide({ ...replicaB, lease: undefined, view: read({ leader: mine, floor: 4 }) }, 3)).toMatchObject({ kind: 'wait' });
    expect(decide({ ...replicaB, view: read({ leader: { ...mine, epoch: 3 } }) }, 3)).toMatchObject({ kind: 'wait' });
  });

  it('follows a newer leader named by etcd', () => {
    const c = { site: 'c', epoch: 5, lease: '9', modRevision: '20' };
    expect(decide({ ...replicaB, view: read({ leader: c }) }, 3)).toEqual({ kind: 'follow', leader: c });
  });
});

describe('decide after a step-down (fenced, naming itself)', () => {
  const stepped: TickInput = { ...primaryA, row: { ...primaryA.row, role: 'fenced' } };

  it('leads again only when no other term began since its own', () => {
    expect(decide(stepped, 3)).toEqual({ kind: 'campaign', epoch: 4 });
    expect(decide({ ...stepped, view: read({ floor: 4 }) }, 4)).toMatchObject({ kind: 'wait' });
  });

  // Regression (etcd fault run, witness lost): a renewal that arrived after the cut-off deadline but before the TTL kept
  // the lease, so the key still named this site; the stepped-down site waited for a "handover" forever and the
  // namespace had no writable primary until the end of the run.
  it('takes its own key back when its lease never expired (the key was never vacant, no other term began)', () => {
    expect(decide({ ...stepped, view: read({ leader: keyOfA }) }, 3)).toEqual({ kind: 'campaign', epoch: 4, expected: keyOfA });
    // Not while paused, nor without a valid lease, nor after another term began.
    expect(decide({ ...stepped, row: { ...stepped.row, paused: true }, view: read({ leader: keyOfA }) }, 3)).toMatchObject({ kind: 'wait' });
    expect(decide({ ...stepped, lease: undefined, view: read({ leader: keyOfA }) }, 3)).toMatchObject({ kind: 'wait' });
    expect(decide({ ...stepped, view: read({ leader: keyOfA, floor: 4 }) }, 4)).toMatchObject({ kind: 'wait' });
    // A demote's handover (replica naming itself) still waits for its successor.
    const demoted: TickInput = { ...stepped, row: { ...stepped.row, role: 'replica' } };
    expect(decide({ ...demoted, view: read({ leader: keyOfA }) }, 3)).toMatchObject({ kind: 'wait', reason: expect.stringMatching(/handover in progress/) });
  });

  // A site fenced on a peer's word naming itself at an epoch it never took (its promote took the key and failed; the
  // other site reported the term first) holds a replica's copy without administrators: resuming would leave a primary
  // that answers writes with 401. It completes a promote instead.
  it('promotes, not resumes, at an epoch it never took itself', () => {
    const learnt: TickInput = { ...stepped, tookEpoch: false };
    expect(decide({ ...learnt, view: read({ leader: keyOfA }) }, 3)).toEqual({ kind: 'campaign', epoch: 4, expected: keyOfA, viaPromote: true });
    expect(decide(learnt, 3)).toEqual({ kind: 'campaign', epoch: 4, viaPromote: true });
    expect(decide({ ...stepped, tookEpoch: true, view: read({ leader: keyOfA }) }, 3)).toEqual({ kind: 'campaign', epoch: 4, expected: keyOfA });
  });

  it('follows the site that took over (the fence procedure then quarantines what it holds)', () => {
    const b = { site: 'b', epoch: 4, lease: '77', modRevision: '30' };
    expect(decide({ ...stepped, view: read({ leader: b, floor: 4 }) }, 3)).toEqual({ kind: 'follow', leader: b });
  });
});
