import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PRODUCTION_SCRYPT, TEST_SCRYPT } from '../backup/format.js';
import { StateStore } from './store.js';

let dir: string;
let store: StateStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-salt-'));
  store = StateStore.inDir(path.join(dir, 'state'), { now: () => 5_000 }).open();
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('BackupSaltRepo (device_backup_salt)', () => {
  it('remembers one salt and its parameters across a reopen, the latest replacing the former', () => {
    expect(store.backupSalt.get()).toBeUndefined();
    store.backupSalt.remember(Buffer.alloc(16, 1), PRODUCTION_SCRYPT);
    store.backupSalt.remember(Buffer.alloc(16, 2), TEST_SCRYPT);
    store.close();
    store.open();
    expect(store.backupSalt.get()).toEqual({ salt: Buffer.alloc(16, 2), params: TEST_SCRYPT });
    expect((store.db.prepare('SELECT count(*) AS n FROM device_backup_salt').get() as { n: number }).n).toBe(1);
  });

  it('refuses a salt that is not 16 bytes and keeps what it had', () => {
    store.backupSalt.remember(Buffer.alloc(16, 1), TEST_SCRYPT);
    expect(() => store.backupSalt.remember(Buffer.alloc(15), TEST_SCRYPT)).toThrow(/16 bytes, not 15/);
    expect(() => store.backupSalt.remember(Buffer.alloc(16), { N: 1, r: 1, p: 1 })).toThrow(/CHECK/);
    expect(store.backupSalt.get()?.salt).toEqual(Buffer.alloc(16, 1));
  });
});
