import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { prepare } from './sqlite.js';
import { StateStore } from './store.js';

let dir: string;
let store: StateStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-admin-restores-'));
  store = StateStore.inDir(path.join(dir, 'state'), { now: () => 9_000 }).open();
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('AdminRestoresRepo (admin_restores)', () => {
  it('records a restore owed durably, counts failures with the last error, and forgets it only for its own epoch', () => {
    store.adminRestores.record({ namespace: 'alpha', epoch: 2, kind: 'promote', source: '/s/alpha.snapshot' });
    store.adminRestores.failed('alpha', 2, 'NHR_ERR_NETHSM_NOT_OPERATIONAL: Locked');
    store.adminRestores.failed('alpha', 1, 'an older epoch: ignored');
    store.close();
    store.open();
    expect(store.adminRestores.all()).toEqual([
      { namespace: 'alpha', epoch: 2, kind: 'promote', source: '/s/alpha.snapshot', createdAt: 9_000, attempts: 1, lastError: 'NHR_ERR_NETHSM_NOT_OPERATIONAL: Locked' },
    ]);
    store.adminRestores.done('alpha', 1);
    expect(store.adminRestores.get('alpha')?.epoch).toBe(2);
    // A newer role change replaces the record (attempts start again).
    store.adminRestores.record({ namespace: 'alpha', epoch: 3, kind: 'resume', source: '/q/alpha-fenced.nsbackup' });
    expect(store.adminRestores.get('alpha')).toMatchObject({ epoch: 3, kind: 'resume', attempts: 0, lastError: null });
    store.adminRestores.done('alpha', 2);
    expect(store.adminRestores.get('alpha')).toBeDefined();
    store.adminRestores.done('alpha', 3);
    expect(store.adminRestores.all()).toEqual([]);
  });

  it('refuses a bad record, recording nothing', () => {
    expect(() => store.adminRestores.record({ namespace: 'alpha', epoch: -1, kind: 'promote', source: '/s' })).toThrow(/epoch -1 of namespace alpha is not a non-negative integer/);
    expect(() => store.adminRestores.record({ namespace: 'alpha', epoch: 1, kind: 'promote', source: '' })).toThrow(/names no source file/);
    expect(store.adminRestores.all()).toEqual([]);
  });

  it('names what is wrong with a row edited by hand, keeping it', () => {
    store.adminRestores.record({ namespace: 'alpha', epoch: 2, kind: 'promote', source: '/s' });
    store.adminRestores.record({ namespace: 'beta', epoch: 2, kind: 'promote', source: '/s' });
    prepare(store.db, "UPDATE admin_restores SET epoch = 'two' WHERE namespace = 'alpha'").run();
    prepare(store.db, "UPDATE admin_restores SET kind = 'other' WHERE namespace = 'beta'").run();
    const [alpha, beta] = store.adminRestores.all();
    expect(alpha?.invalid).toBe('its stored epoch "two" is not a non-negative integer');
    expect(beta?.invalid).toBe('its stored kind "other" is neither "promote" nor "resume"');
    expect(store.adminRestores.all()).toHaveLength(2);
  });

  it('forgets the record of one namespace whatever its epoch, a row that is not valid too (`admins restore --forget`)', () => {
    store.adminRestores.record({ namespace: 'alpha', epoch: 2, kind: 'resume', source: '/q/gone' });
    store.adminRestores.record({ namespace: 'beta', epoch: 2, kind: 'promote', source: '/s' });
    prepare(store.db, "UPDATE admin_restores SET epoch = 'two' WHERE namespace = 'alpha'").run();
    store.adminRestores.forget('alpha');
    expect(store.adminRestores.all().map((r) => r.namespace)).toEqual(['beta']);
    store.adminRestores.forget('gamma');
    expect(store.adminRestores.all().map((r) => r.namespace)).toEqual(['beta']);
  });
});
