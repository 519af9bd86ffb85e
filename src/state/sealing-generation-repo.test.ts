import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TEST_SCRYPT } from '../backup/format.js';
import { StateStore } from './store.js';

let dir: string;
let store: StateStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-sealing-'));
  store = StateStore.inDir(path.join(dir, 'state'), { now: () => 5_000 }).open();
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const gen = (over: Partial<{ salt: Buffer; bornAt: number; uses: number }> = {}) => ({ salt: Buffer.alloc(16, 1), params: TEST_SCRYPT, bornAt: 1_000, uses: 3, ...over });
const row = () => store.db.prepare('SELECT * FROM snapshot_sealing_generation').all() as Record<string, unknown>[];

describe('SealingGenerationRepo (snapshot_sealing_generation)', () => {
  it('records one generation across a reopen, the latest replacing the former; public values only', () => {
    expect(store.sealingGeneration.get()).toBeUndefined();
    store.sealingGeneration.put(gen());
    store.sealingGeneration.put(gen({ salt: Buffer.alloc(16, 2), uses: 4 }));
    store.close();
    store.open();
    expect(store.sealingGeneration.get()).toEqual({ generation: gen({ salt: Buffer.alloc(16, 2), uses: 4 }) });
    expect(row()).toHaveLength(1);
    expect(Object.keys(row()[0]!).sort()).toEqual(['born_at', 'id', 'salt', 'scrypt_n', 'scrypt_p', 'scrypt_r', 'updated_at', 'uses']);
  });

  it('refuses bad values on write and keeps what it had', () => {
    store.sealingGeneration.put(gen());
    expect(() => store.sealingGeneration.put(gen({ salt: Buffer.alloc(15) }))).toThrow(/16/);
    expect(() => store.sealingGeneration.put(gen({ uses: -1 }))).toThrow(/use count -1/);
    expect(() => store.sealingGeneration.put(gen({ bornAt: 1.5 }))).toThrow(/birth time/);
    expect(() => store.sealingGeneration.put({ ...gen(), params: { N: 1, r: 1, p: 1 } })).toThrow(/scrypt/);
    expect(store.sealingGeneration.get()).toEqual({ generation: gen() });
  });

  it('reads a bad stored row as invalid, naming what is wrong, and leaves it for the next write to replace', () => {
    store.sealingGeneration.put(gen());
    store.db.prepare('UPDATE snapshot_sealing_generation SET salt = ?').run(Buffer.alloc(8));
    expect(store.sealingGeneration.get()).toEqual({ invalid: 'the salt has 8 bytes, not 16' });
    store.db.prepare('UPDATE snapshot_sealing_generation SET salt = ?, uses = -2').run(Buffer.alloc(16));
    expect(store.sealingGeneration.get()).toEqual({ invalid: 'the use count -2 is not a count' });
    expect(row()[0]!.uses, 'reading changed nothing').toBe(-2);
    store.sealingGeneration.put(gen({ uses: 1 }));
    expect(store.sealingGeneration.get()).toEqual({ generation: gen({ uses: 1 }) });
  });
});
