import { describe, expect, it } from 'vitest';
import { InternalError, PeerMessageInvalidError, PeerStaleEpochError, RoleNotPrimaryError, RolePromoteRefusedError, RoleSplitBrainError } from '../errors.js';
import { completeResync, demote, fenceToExport, initialRole, observeEpoch, promote, resumeLeadership, stepDown, type PromoteInput } from './role-machine.js';
import type { RoleState } from './role.js';

const A = 'berlin';
const B = 'hamburg';
const C = 'paris';
const replicaOfA: RoleState = { namespace: 'payments', role: 'replica', epoch: 3, primarySite: A };
const primaryA: RoleState = { namespace: 'payments', role: 'primary', epoch: 3, primarySite: A };
const fencedB: RoleState = { namespace: 'payments', role: 'fenced', epoch: 4, primarySite: A };
const fresh: PromoteInput = { localSite: B, force: false, lagMs: 60_000, maxLagMs: 300_000, lastSyncOk: true, knownEpochs: [] };

function refusal(fn: () => unknown): RolePromoteRefusedError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RolePromoteRefusedError);
    return err as RolePromoteRefusedError;
  }
  throw new Error('expected a refusal');
}

describe('initialRole', () => {
  it('starts the configured primary as primary at epoch 1 and others as its replicas', () => {
    expect(initialRole('payments', A, A).to).toEqual({ namespace: 'payments', role: 'primary', epoch: 1, primarySite: A });
    const r = initialRole('payments', B, A);
    expect(r.to).toEqual({ namespace: 'payments', role: 'replica', epoch: 1, primarySite: A });
    expect(r.claim).toEqual({ epoch: 1, primarySite: A, learnedFrom: 'config' });
    expect(r.from).toBeUndefined();
  });
});

describe('promote', () => {
  it('promotes a fresh replica to primary at the highest known epoch + 1', () => {
    const c = promote(replicaOfA, { ...fresh, knownEpochs: [5, 2] });
    expect(c.action).toBe('promote');
    expect(c.to).toEqual({ namespace: 'payments', role: 'primary', epoch: 6, primarySite: B });
    expect(c.claim).toEqual({ epoch: 6, primarySite: B, learnedFrom: 'local' });
    expect(c.from).toBe(replicaOfA);
    expect(promote(replicaOfA, fresh).to.epoch).toBe(4);
  });

  it('refuses a replica behind by more than the limit', () => {
    const err = refusal(() => promote(replicaOfA, { ...fresh, lagMs: 600_000 }));
    expect(err.reasons).toEqual(['behind']);
    expect(err.message).toMatch(/600s behind, over the limit of 300s/);
    expect(err.namespace).toBe('payments');
  });

  it('refuses after a failed sync, and a replica that never synced', () => {
    expect(refusal(() => promote(replicaOfA, { ...fresh, lastSyncOk: false })).reasons).toEqual(['last-sync-failed']);
    expect(refusal(() => promote(replicaOfA, { ...fresh, lagMs: undefined, lastSyncOk: undefined })).reasons).toEqual(['never-synced']);
  });

  it('reports every reason at once', () => {
    expect(refusal(() => promote(fencedB, { ...fresh, lagMs: 999_999, lastSyncOk: false })).reasons).toEqual(['fenced', 'last-sync-failed', 'behind']);
  });

  it('lets force override lag, failed sync and fencing, and records what was overridden', () => {
    const c = promote(fencedB, { ...fresh, force: true, lagMs: 999_999, lastSyncOk: false });
    expect(c.to).toMatchObject({ role: 'primary', epoch: 5, primarySite: B });
    expect(c.detail).toMatchObject({ force: true, overridden: ['fenced', 'last-sync-failed', 'behind'] });
  });

  it('at a site that stepped down and handed over to nobody: refuses naming that (not "never synced"), unless forced', () => {
    const steppedDown: RoleState = { namespace: 'payments', role: 'replica', epoch: 3, primarySite: A };
    const err = refusal(() => promote(steppedDown, { ...fresh, localSite: A, lagMs: undefined, lastSyncOk: undefined }));
    expect(err.reasons).toEqual(['handover-pending']);
    expect(err.message).toBe('refusing to promote namespace payments: this site stepped down at epoch 3 and its handover did not finish');
    expect(err.hint).toMatch(/demote payments --to <site>` again .* `nethsm-replicator promote payments --force`/);
    const c = promote(steppedDown, { ...fresh, localSite: A, force: true, lagMs: undefined, lastSyncOk: undefined, knownEpochs: [3] });
    expect(c.to).toEqual({ namespace: 'payments', role: 'primary', epoch: 4, primarySite: A });
    expect(c.detail).toMatchObject({ force: true, overridden: ['handover-pending'] });
  });

  it('refuses an already-primary namespace even when forced', () => {
    expect(refusal(() => promote(primaryA, { ...fresh, localSite: A, force: true })).reasons).toEqual(['already-primary']);
  });

  it('accepts a lag exactly at the limit', () => {
    expect(promote(replicaOfA, { ...fresh, lagMs: 300_000 }).to.role).toBe('primary');
  });
});

describe('demote', () => {
  it('steps the primary down to replica at the same epoch, naming the handover site', () => {
    const c = demote(primaryA, { localSite: A, toSite: B });
    expect(c.to).toEqual({ ...primaryA, role: 'replica' });
    expect(c.claim).toBeUndefined();
    expect(c.detail).toEqual({ handoverTo: B });
  });

  it('refuses at a site that is not the primary', () => {
    expect(() => demote(replicaOfA, { localSite: B, toSite: A })).toThrow(RoleNotPrimaryError);
    expect(() => demote(primaryA, { localSite: B, toSite: C })).toThrow(RoleNotPrimaryError);
    expect(() => demote(primaryA, { localSite: A, toSite: A })).toThrow(InternalError);
  });
});

describe('observeEpoch', () => {
  it('does nothing for the same epoch and primary', () => {
    expect(observeEpoch(replicaOfA, B, { from: A, epoch: 3, primarySite: A })).toEqual({ kind: 'current' });
  });

  it('refuses a message from an older epoch', () => {
    expect(() => observeEpoch(replicaOfA, B, { from: A, epoch: 2, primarySite: A })).toThrow(PeerStaleEpochError);
    try {
      observeEpoch(replicaOfA, B, { from: C, epoch: 1, primarySite: C });
      expect.unreachable();
    } catch (err) {
      expect((err as PeerStaleEpochError).epoch).toBe(3);
      expect((err as PeerStaleEpochError).site).toBe(C);
    }
  });

  it('refuses an invalid epoch', () => {
    expect(() => observeEpoch(replicaOfA, B, { from: A, epoch: -1, primarySite: A })).toThrow(PeerMessageInvalidError);
  });

  it('fences a primary that learns of a higher epoch with another primary', () => {
    const o = observeEpoch(primaryA, A, { from: B, epoch: 4, primarySite: B });
    expect(o.kind).toBe('change');
    if (o.kind !== 'change') return;
    expect(o.change.action).toBe('fence');
    expect(o.change.to).toEqual({ namespace: 'payments', role: 'fenced', epoch: 4, primarySite: B });
    expect(o.change.claim).toEqual({ epoch: 4, primarySite: B, learnedFrom: B });
  });

  it('makes a replica follow a higher epoch', () => {
    const o = observeEpoch(replicaOfA, B, { from: C, epoch: 7, primarySite: C });
    expect(o.kind === 'change' && o.change.action).toBe('follow');
    expect(o.kind === 'change' && o.change.to).toEqual({ namespace: 'payments', role: 'replica', epoch: 7, primarySite: C });
  });

  it('keeps a fenced site fenced when the epoch moves on', () => {
    const o = observeEpoch(fencedB, B, { from: C, epoch: 9, primarySite: C });
    expect(o.kind === 'change' && o.change.action).toBe('follow');
    expect(o.kind === 'change' && o.change.to.role).toBe('fenced');
  });

  it('lets a demoted primary follow its successor', () => {
    const demoted = demote(primaryA, { localSite: A, toSite: B }).to;
    expect(observeEpoch(demoted, A, { from: B, epoch: 3, primarySite: A })).toEqual({ kind: 'current' });
    const o = observeEpoch(demoted, A, { from: B, epoch: 4, primarySite: B });
    expect(o.kind === 'change' && o.change.to).toEqual({ namespace: 'payments', role: 'replica', epoch: 4, primarySite: B });
  });

  it('fences rather than becoming primary on a peer’s word for an epoch this site never took', () => {
    const o = observeEpoch(replicaOfA, B, { from: C, epoch: 5, primarySite: B });
    expect(o.kind === 'change' && o.change.action).toBe('fence');
    expect(o.kind === 'change' && o.change.to.role).toBe('fenced');
  });

  it('fences a primary that sees another primary claim the same epoch (split brain: both fence)', () => {
    const o = observeEpoch(primaryA, A, { from: B, epoch: 3, primarySite: B });
    expect(o.kind).toBe('split-brain');
    if (o.kind !== 'split-brain') return;
    expect(o.error).toBeInstanceOf(RoleSplitBrainError);
    expect(o.change?.to).toEqual({ ...primaryA, role: 'fenced' });
    expect(o.change?.action).toBe('split-brain');
    // The other side, seeing A's claim, decides the same: nobody keeps writing.
    const other = observeEpoch({ ...primaryA, primarySite: B }, B, { from: A, epoch: 3, primarySite: A });
    expect(other.kind === 'split-brain' && other.change?.to.role).toBe('fenced');
  });

  it('alerts without a role change at a replica that sees conflicting claims', () => {
    const o = observeEpoch(replicaOfA, C, { from: B, epoch: 3, primarySite: B });
    expect(o.kind).toBe('split-brain');
    expect(o.kind === 'split-brain' && o.change).toBeUndefined();
  });
});

describe('fenceToExport', () => {
  const steppedDownA: RoleState = { ...primaryA, role: 'replica' };
  it('fences a stepped-down site that meets a newer epoch of another primary, recording the claim', () => {
    const c = fenceToExport(steppedDownA, A, { from: B, epoch: 4, primarySite: B });
    expect(c.action).toBe('fence');
    expect(c.to).toEqual({ namespace: 'payments', role: 'fenced', epoch: 4, primarySite: B });
    expect(c.claim).toEqual({ epoch: 4, primarySite: B, learnedFrom: B });
    expect(c.detail).toMatchObject({ unexportedWrites: true, previousEpoch: 3, previousPrimary: A });
  });
  it('fences a replica of another site at its epoch (found at start)', () => {
    const c = fenceToExport(replicaOfA, B);
    expect(c.to).toEqual({ ...replicaOfA, role: 'fenced' });
    expect(c.from).toEqual(replicaOfA);
  });
  it('refuses any other state: a primary, a fenced site, a claim that is not newer or names this site', () => {
    expect(() => fenceToExport(primaryA, A, { from: B, epoch: 4, primarySite: B })).toThrow(InternalError);
    expect(() => fenceToExport(steppedDownA, A, { from: B, epoch: 3, primarySite: B })).toThrow(InternalError);
    expect(() => fenceToExport(steppedDownA, A, { from: B, epoch: 4, primarySite: A })).toThrow(InternalError);
    expect(() => fenceToExport(replicaOfA, B, { from: C, epoch: 4, primarySite: C })).toThrow(InternalError);
    expect(() => fenceToExport(fencedB, B)).toThrow(InternalError);
    expect(() => fenceToExport(steppedDownA, A)).toThrow(InternalError);
  });
});

describe('completeResync', () => {
  it('turns a fenced site into a replica of the known primary', () => {
    const c = completeResync(fencedB, B, { quarantine: '/var/lib/nhr/quarantine/x.bak' });
    expect(c.to).toEqual({ ...fencedB, role: 'replica' });
    expect(c.detail).toEqual({ quarantine: '/var/lib/nhr/quarantine/x.bak' });
  });

  it('refuses unless fenced with another site as primary', () => {
    expect(() => completeResync(replicaOfA, B)).toThrow(InternalError);
    expect(() => completeResync({ ...primaryA, role: 'fenced' }, A)).toThrow(InternalError);
  });
});

describe('automatic failover transitions', () => {
  it('promotes at the etcd-assigned epoch, and refuses one not above the known epochs', () => {
    expect(promote(replicaOfA, { ...fresh, epoch: 9 }).to).toMatchObject({ role: 'primary', epoch: 9 });
    expect(() => promote(replicaOfA, { ...fresh, epoch: 3, knownEpochs: [3] })).toThrow(InternalError);
  });

  it('steps a primary down to fenced at its epoch, still naming itself, and only a primary', () => {
    const c = stepDown(primaryA, { localSite: A, reason: 'lease' });
    expect(c).toMatchObject({ action: 'fence', to: { role: 'fenced', epoch: 3, primarySite: A }, detail: { stepDown: true, reason: 'lease' } });
    expect(() => stepDown(replicaOfA, { localSite: B, reason: 'x' })).toThrow(RoleNotPrimaryError);
  });

  it('resumes a stepped-down primary at a higher epoch only', () => {
    const stepped = { ...primaryA, role: 'fenced' as const };
    expect(resumeLeadership(stepped, { localSite: A, epoch: 4 })).toMatchObject({ action: 'promote', to: { role: 'primary', epoch: 4, primarySite: A }, claim: { epoch: 4, learnedFrom: 'etcd' } });
    expect(() => resumeLeadership(stepped, { localSite: A, epoch: 3 })).toThrow(InternalError);
    expect(() => resumeLeadership(fencedB, { localSite: B, epoch: 9 })).toThrow(InternalError);
  });
});
