import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InternalError, NamespaceUnknownError, RoleSplitBrainError, StateOpenFailedError } from '../errors.js';
import { PAGE_CACHE_KIB, StateStore } from './store.js';
import { pragma } from './sqlite.js';

let dir: string;
let store: StateStore;
let clock = 1_000;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-store-'));
  clock = 1_000;
  store = StateStore.inDir(path.join(dir, 'state'), { now: () => clock }).open();
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const ns = (namespace = 'payments') => ({ namespace, role: 'replica' as const, epoch: 1, primarySite: 'berlin' });

describe('StateStore', () => {
  it('opens and closes idempotently and refuses use while closed', () => {
    expect(store.open()).toBe(store);
    expect(store.isOpen).toBe(true);
    store.close();
    store.close();
    expect(store.isOpen).toBe(false);
    expect(() => store.roles).toThrow(InternalError);
    store.open();
    expect(store.roles.list()).toEqual([]);
  });

  it("bounds SQLite's page cache (better-sqlite3 builds it at 16 MB a connection)", () => {
    expect(pragma(store.db, 'cache_size')).toBe(-PAGE_CACHE_KIB);
    expect(PAGE_CACHE_KIB).toBeLessThanOrEqual(4096);
  });

  it('creates the state directory 0700 and the database 0600', () => {
    expect(statSync(path.join(dir, 'state')).mode & 0o777).toBe(0o700);
    expect(statSync(store.file).mode & 0o777).toBe(0o600);
  });

  it('names the file when it is not a database', () => {
    const bad = path.join(dir, 'junk.db');
    writeFileSync(bad, 'this is not sqlite, just text long enough to look like a header...'.repeat(10));
    const s = new StateStore({ file: bad });
    expect(() => s.open()).toThrow(StateOpenFailedError);
    expect(() => s.open()).toThrow(/junk\.db/);
    expect(s.isOpen).toBe(false);
  });

  it('commits a transaction as a whole, or nothing when it throws', () => {
    store.transaction(() => {
      store.roles.insert(ns('a'));
      store.roles.insert(ns('b'));
    });
    expect(store.roles.list().map((r) => r.namespace)).toEqual(['a', 'b']);
    expect(() =>
      store.transaction(() => {
        store.roles.insert(ns('c'));
        throw new Error('abort');
      }),
    ).toThrow('abort');
    expect(store.roles.get('c')).toBeUndefined();
  });

  it('turns a nested transaction into a savepoint', () => {
    store.transaction(() => {
      store.roles.insert(ns('outer'));
      expect(() =>
        store.transaction(() => {
          store.roles.insert(ns('inner'));
          throw new Error('inner fails');
        }),
      ).toThrow('inner fails');
    });
    expect(store.roles.list().map((r) => r.namespace)).toEqual(['outer']);
  });

  it('refuses an async transaction function', () => {
    expect(() => store.transaction((async () => undefined) as unknown as () => void)).toThrow();
  });

  it('keeps data across reopening', () => {
    store.roles.insert(ns());
    store.close();
    store.open();
    expect(store.roles.require('payments')).toMatchObject({ role: 'replica', epoch: 1, primarySite: 'berlin' });
  });
});

describe('RolesRepo', () => {
  it('compares and sets: writes only over the expected state', () => {
    store.roles.insert(ns());
    clock = 2_000;
    expect(store.roles.compareAndSet(ns(), { role: 'primary', epoch: 2, primarySite: 'hamburg' })).toBe(true);
    expect(store.roles.compareAndSet(ns(), { role: 'fenced', epoch: 3, primarySite: 'x' })).toBe(false);
    expect(store.roles.require('payments')).toEqual({
      namespace: 'payments',
      role: 'primary',
      epoch: 2,
      primarySite: 'hamburg',
      paused: false,
      createdAt: 1_000,
      updatedAt: 2_000,
    });
  });

  it('throws NamespaceUnknownError for an unknown namespace', () => {
    expect(() => store.roles.require('nope')).toThrow(NamespaceUnknownError);
    expect(() => store.roles.setPaused('nope', true)).toThrow(NamespaceUnknownError);
  });

  it('pauses and resumes', () => {
    store.roles.insert(ns());
    store.roles.setPaused('payments', true);
    store.roles.setPaused('payments', true);
    expect(store.roles.require('payments').paused).toBe(true);
    store.roles.setPaused('payments', false);
    expect(store.roles.require('payments').paused).toBe(false);
  });

  it('refuses a role outside primary, replica, fenced (schema check)', () => {
    expect(() => store.roles.insert({ ...ns(), role: 'boss' as never })).toThrow(/CHECK constraint/);
  });

  it('removes a namespace with its epochs and positions, keeping the audit log', () => {
    store.roles.insert(ns());
    store.epochs.record('payments', 1, 'berlin', 'config');
    store.positions.recordSyncFailed('payments', 'berlin', { errorCode: 'X', durationMs: 1 });
    store.audit.append({ actor: 'daemon', action: 'init', namespace: 'payments' });
    expect(store.roles.remove('payments')).toBe(true);
    expect(store.epochs.list('payments')).toEqual([]);
    expect(store.positions.forNamespace('payments')).toEqual([]);
    expect(store.audit.list({ namespace: 'payments' })).toHaveLength(1);
  });
});

describe('EpochsRepo', () => {
  beforeEach(() => store.roles.insert(ns()));

  it('records epochs idempotently and reports the highest', () => {
    expect(store.epochs.highest('payments')).toBeUndefined();
    expect(store.epochs.record('payments', 1, 'berlin', 'config')).toBe('new');
    expect(store.epochs.record('payments', 1, 'berlin', 'hamburg')).toBe('known');
    expect(store.epochs.record('payments', 3, 'hamburg', 'hamburg')).toBe('new');
    expect(store.epochs.highest('payments')).toBe(3);
    expect(store.epochs.list('payments').map((e) => [e.epoch, e.primarySite, e.learnedFrom])).toEqual([
      [1, 'berlin', 'config'],
      [3, 'hamburg', 'hamburg'],
    ]);
  });

  it('refuses a second primary for a recorded epoch', () => {
    store.epochs.record('payments', 2, 'berlin', 'local');
    expect(() => store.epochs.record('payments', 2, 'hamburg', 'hamburg')).toThrow(RoleSplitBrainError);
    expect(store.epochs.get('payments', 2)?.primarySite).toBe('berlin');
  });

  it('refuses epochs of an unknown namespace (foreign key)', () => {
    expect(() => store.epochs.record('ghost', 1, 'berlin', 'config')).toThrow(/FOREIGN KEY/);
  });
});

describe('PositionsRepo', () => {
  beforeEach(() => store.roles.insert(ns()));

  it('records a failed first sync without a position, then a successful one, then keeps it on failure', () => {
    store.positions.recordSyncFailed('payments', 'berlin', { errorCode: 'NHR_ERR_PEER_UNREACHABLE', durationMs: 30 });
    expect(store.positions.get('payments', 'berlin')).toMatchObject({ epoch: undefined, lastSyncOutcome: 'failed', lastOkAt: undefined });
    expect(store.positions.lagMs('payments', 'berlin')).toBeUndefined();

    clock = 10_000;
    store.positions.recordSyncOk('payments', 'berlin', { epoch: 1, snapshotId: 's1', snapshotDigest: 'd1', takenAt: 9_000, durationMs: 800 });
    expect(store.positions.get('payments', 'berlin')).toMatchObject({
      epoch: 1,
      seq: 0,
      snapshotId: 's1',
      positionTakenAt: 9_000,
      lastSyncOutcome: 'ok',
      lastErrorCode: undefined,
      lastOkAt: 10_000,
    });

    clock = 70_000;
    store.positions.recordSyncFailed('payments', 'berlin', { errorCode: 'NHR_ERR_BACKUP_CORRUPTED', durationMs: 5 });
    expect(store.positions.get('payments', 'berlin')).toMatchObject({
      epoch: 1,
      snapshotId: 's1',
      lastSyncOutcome: 'failed',
      lastErrorCode: 'NHR_ERR_BACKUP_CORRUPTED',
      lastOkAt: 10_000,
    });
    expect(store.positions.lagMs('payments', 'berlin')).toBe(61_000);
    expect(store.positions.list()).toHaveLength(1);
  });
});

describe('MembersRepo', () => {
  it('saves and restores member health as MemberMonitor reports it', () => {
    const state = {
      name: 'hamburg',
      status: 'unreachable' as const,
      consecutiveFailures: 3,
      attempts: 2,
      gaveUp: false,
      lastErrorCode: 'NHR_ERR_PEER_UNREACHABLE',
      lastError: 'connect ECONNREFUSED',
      lastOkAt: 500,
      nextRetryAt: 61_000,
    };
    store.members.save(state);
    expect(store.members.get('hamburg')).toEqual(state);
    store.members.save({ ...state, status: 'ok', consecutiveFailures: 0, attempts: 0, lastErrorCode: null, lastError: null, nextRetryAt: null });
    expect(store.members.list()).toHaveLength(1);
    expect(store.members.get('hamburg')?.status).toBe('ok');
    expect(store.members.remove('hamburg')).toBe(true);
    expect(store.members.get('hamburg')).toBeUndefined();
  });
});

describe('AuditRepo', () => {
  it('appends entries and lists them in order, by namespace and page', () => {
    const a = store.audit.append({ actor: 'alice@ops1', action: 'promote', namespace: 'payments', fromEpoch: 1, toEpoch: 2, fromRole: 'replica', toRole: 'primary', detail: { force: false } });
    const b = store.audit.append({ actor: 'daemon', action: 'fence', namespace: 'signing', fromEpoch: 4, toEpoch: 5 });
    expect(b).toBeGreaterThan(a);
    expect(store.audit.list()).toHaveLength(2);
    expect(store.audit.list({ namespace: 'payments' })).toEqual([
      { id: a, at: 1_000, actor: 'alice@ops1', action: 'promote', namespace: 'payments', fromEpoch: 1, toEpoch: 2, fromRole: 'replica', toRole: 'primary', detail: { force: false } },
    ]);
    expect(store.audit.list({ afterId: a }).map((e) => e.id)).toEqual([b]);
  });

  it('is append-only', () => {
    store.audit.append({ actor: 'daemon', action: 'init', namespace: 'payments' });
    expect(() => store.db.exec("UPDATE audit_log SET actor = 'mallory'")).toThrow(/append-only/);
    expect(() => store.db.exec('DELETE FROM audit_log')).toThrow(/append-only/);
  });

  it('refuses details with secret-bearing field names', () => {
    expect(() => store.audit.append({ actor: 'daemon', action: 'sync', detail: { nested: { passphrase: 'x' } } })).toThrow(InternalError);
    expect(store.audit.list()).toEqual([]);
  });
});
