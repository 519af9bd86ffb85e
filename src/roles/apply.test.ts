import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NamespaceUnknownError, RolePromoteRefusedError, RoleSplitBrainError, RoleStateChangedError } from '../errors.js';
import { StateStore } from '../state/store.js';
import { applyRoleChange, decidePromote, ensureNamespace } from './apply.js';
import { demote, observeEpoch, promote } from './role-machine.js';

let dir: string;
let store: StateStore;
let clock: number;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-roles-'));
  clock = 1_000_000;
  store = StateStore.inDir(dir, { now: () => clock }).open();
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('ensureNamespace', () => {
  it('creates the configured role once, with its epoch and an audit row', () => {
    const row = ensureNamespace(store, 'payments', 'hamburg', 'berlin');
    expect(row).toMatchObject({ role: 'replica', epoch: 1, primarySite: 'berlin' });
    ensureNamespace(store, 'payments', 'hamburg', 'hamburg'); // config changed later: the stored role wins
    expect(store.roles.require('payments')).toMatchObject({ role: 'replica', primarySite: 'berlin' });
    expect(store.epochs.list('payments').map((e) => [e.epoch, e.primarySite, e.learnedFrom])).toEqual([[1, 'berlin', 'config']]);
    expect(store.audit.list().map((a) => a.action)).toEqual(['init']);
  });
});

describe('applyRoleChange', () => {
  it('writes role, epoch history and audit row together', () => {
    ensureNamespace(store, 'payments', 'hamburg', 'berlin');
    clock += 5;
    const change = promote(store.roles.require('payments'), {
      localSite: 'hamburg',
      force: true,
      lagMs: undefined,
      maxLagMs: 1,
      lastSyncOk: undefined,
      knownEpochs: [],
    });
    const row = applyRoleChange(store, change, 'alice@ops1');
    expect(row).toMatchObject({ role: 'primary', epoch: 2, primarySite: 'hamburg', updatedAt: clock });
    expect(store.epochs.get('payments', 2)).toMatchObject({ primarySite: 'hamburg', learnedFrom: 'local' });
    const audit = store.audit.list({ namespace: 'payments' }).at(-1)!;
    expect(audit).toMatchObject({
      actor: 'alice@ops1',
      action: 'promote',
      fromEpoch: 1,
      toEpoch: 2,
      fromRole: 'replica',
      toRole: 'primary',
      at: clock,
    });
    expect(audit.detail).toMatchObject({ force: true, overridden: ['never-synced'], primarySite: 'hamburg' });
  });

  it('refuses a change decided on stale state, writing nothing', () => {
    ensureNamespace(store, 'payments', 'berlin', 'berlin');
    const state = store.roles.require('payments');
    const first = demote(state, { localSite: 'berlin', toSite: 'hamburg' });
    const second = observeEpoch(state, 'berlin', { from: 'hamburg', epoch: 2, primarySite: 'hamburg' });
    applyRoleChange(store, first, 'daemon');
    const auditBefore = store.audit.list().length;
    expect(second.kind).toBe('change');
    if (second.kind !== 'change') return;
    expect(() => applyRoleChange(store, second.change, 'daemon')).toThrow(RoleStateChangedError);
    expect(store.roles.require('payments')).toMatchObject({ role: 'replica', epoch: 1, primarySite: 'berlin' });
    expect(store.epochs.get('payments', 2)).toBeUndefined();
    expect(store.audit.list()).toHaveLength(auditBefore);
  });

  it('refuses to initialise a namespace twice', () => {
    ensureNamespace(store, 'payments', 'berlin', 'berlin');
    const again = { action: 'init' as const, namespace: 'payments', from: undefined, to: store.roles.require('payments'), detail: {} };
    expect(() => applyRoleChange(store, again, 'daemon')).toThrow(RoleStateChangedError);
  });

  it('rolls back a change whose epoch is already recorded with another primary', () => {
    ensureNamespace(store, 'payments', 'paris', 'berlin');
    store.epochs.record('payments', 2, 'hamburg', 'hamburg'); // learned, e.g., from a status answer
    const state = store.roles.require('payments');
    // A promote that ignored the history (knownEpochs empty) would reuse epoch 2.
    const change = promote(state, { localSite: 'paris', force: true, lagMs: 0, maxLagMs: 1, lastSyncOk: true, knownEpochs: [] });
    expect(change.to.epoch).toBe(2);
    expect(() => applyRoleChange(store, change, 'daemon')).toThrow(RoleSplitBrainError);
    expect(store.roles.require('payments')).toMatchObject({ role: 'replica', epoch: 1 });
    expect(store.audit.list().map((a) => a.action)).toEqual(['init']);
  });

  it('records the fencing of a former primary', () => {
    ensureNamespace(store, 'payments', 'berlin', 'berlin');
    const o = observeEpoch(store.roles.require('payments'), 'berlin', { from: 'hamburg', epoch: 2, primarySite: 'hamburg' });
    if (o.kind !== 'change') throw new Error('expected a change');
    applyRoleChange(store, o.change, 'daemon');
    expect(store.roles.require('payments')).toMatchObject({ role: 'fenced', epoch: 2, primarySite: 'hamburg' });
    expect(store.audit.list().at(-1)).toMatchObject({ action: 'fence', fromRole: 'primary', toRole: 'fenced', fromEpoch: 1, toEpoch: 2 });
  });
});

describe('decidePromote', () => {
  beforeEach(() => ensureNamespace(store, 'payments', 'hamburg', 'berlin'));

  it('uses the lag and outcome of syncs from the current primary and the epoch history', () => {
    store.positions.recordSyncOk('payments', 'berlin', { epoch: 1, takenAt: clock - 60_000, durationMs: 10 });
    store.epochs.record('payments', 4, 'paris', 'paris');
    const c = decidePromote(store, 'payments', { localSite: 'hamburg', force: false, maxLagMs: 120_000, peerEpochs: [3], now: clock });
    expect(c.to).toMatchObject({ role: 'primary', epoch: 5 });
    expect(c.detail).toMatchObject({ lagMs: 60_000 });
  });

  it('refuses when behind, and after a failed sync', () => {
    store.positions.recordSyncOk('payments', 'berlin', { epoch: 1, takenAt: clock - 600_000, durationMs: 10 });
    expect(() => decidePromote(store, 'payments', { localSite: 'hamburg', force: false, maxLagMs: 120_000, now: clock })).toThrow(
      RolePromoteRefusedError,
    );
    // A primary that could not be reached: the lag alone decides (the copy is as of the last applied sync).
    store.positions.recordSyncFailed('payments', 'berlin', { errorCode: 'NHR_ERR_PEER_UNREACHABLE', durationMs: 1 });
    expect(decidePromote(store, 'payments', { localSite: 'hamburg', force: false, maxLagMs: 10_000_000, now: clock }).to.role).toBe('primary');
    // A snapshot that did not apply here counts.
    store.positions.recordSyncFailed('payments', 'berlin', { errorCode: 'NHR_ERR_SYNC_VERIFY_FAILED', durationMs: 1 });
    try {
      decidePromote(store, 'payments', { localSite: 'hamburg', force: false, maxLagMs: 10_000_000, now: clock });
      expect.unreachable();
    } catch (err) {
      expect((err as RolePromoteRefusedError).reasons).toEqual(['last-sync-failed']);
    }
  });

  it('refuses a replica that never synced, and an unknown namespace', () => {
    expect(() => decidePromote(store, 'payments', { localSite: 'hamburg', force: false, maxLagMs: 1, now: clock })).toThrow(/never synced/);
    expect(() => decidePromote(store, 'ghost', { localSite: 'hamburg', force: false, maxLagMs: 1 })).toThrow(NamespaceUnknownError);
  });
});
