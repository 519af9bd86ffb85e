import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { PublicKey } from '../nethsm/client.js';
import { StateDirUnusableError } from '../errors.js';
import { PackedIds } from '../nethsm/packed-ids.js';
import { CompactInventory, DIGEST_IO_BYTES } from './compact-inventory.js';
import { inventoryItem, type KeyInventoryItem } from './inventory.js';
import { RangeHasher } from './inventory-ranges.js';
import { openFilesUnder } from '../../test/helpers/open-files.js';

const key = (tag: string): PublicKey => ({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], restrictions: { tags: [tag] }, public: { data: Buffer.alloc(32, 1).toString('base64') }, operations: 0 });
const item = (id: string): KeyInventoryItem => inventoryItem(id, key(`t${id.length}`), null);
const hashOf = (items: KeyInventoryItem[]): string => {
  const h = new RangeHasher();
  for (const i of items) h.add(i.id, i.digest);
  return h.take();
};

function canMountTmpfs(): boolean {
  if (process.getuid?.() !== 0) return false;
  const probe = mkdtempSync(path.join(tmpdir(), 'nhr-mount-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', probe], { stdio: 'ignore' });
    execFileSync('umount', [probe], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}


describe('CompactInventory', () => {
  const ids = ['a', 'b', 'c0', 'd', 'e'.repeat(128), 'f'];
  const dir = mkdtempSync(path.join(tmpdir(), 'nhr-compact-inv-'));
  const made: CompactInventory[] = [];
  const open = (listing: PackedIds): CompactInventory => {
    const inv = new CompactInventory(listing, dir);
    made.push(inv);
    return inv;
  };
  afterEach(() => {
    for (const inv of made.splice(0)) inv.close();
    expect(openFilesUnder(dir)).toEqual([]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('holds the listed keys read, and drops those deleted during the read (not read) when sealed', () => {
    const read = ids.filter((id) => id !== 'b' && id !== 'f').map(item);
    const inv = open(PackedIds.of(ids));
    for (const i of read) inv.push(i);
    inv.seal();
    expect(inv.size).toBe(read.length);
    expect(Array.from({ length: inv.size }, (_, i) => [inv.idAt(i), inv.digestAt(i)])).toEqual(read.map((i) => [i.id, i.digest]));
    expect(inv.indices({ after: 'a', upTo: 'd' })).toEqual([1, 3]);
    expect(inv.indices({ after: 'b', upTo: null })).toEqual([1, 4]);
    expect(inv.digestOf(0, inv.size)).toBe(hashOf(read));
    expect(inv.digestOf(1, 3)).toBe(hashOf(read.slice(1, 3)));
  });

  it('keeps the listing as it is when every key was read', () => {
    const inv = open(PackedIds.of(ids));
    for (const id of ids) inv.push(item(id));
    expect(inv.seal().size).toBe(ids.length);
    expect(inv.digestOf(0, ids.length)).toBe(hashOf(ids.map(item)));
  });

  it('refuses an item not in the listing, one out of order, and reads before seal', () => {
    const inv = open(PackedIds.of(ids));
    expect(() => inv.size).toThrow(/read before seal/);
    inv.push(item('c0'));
    expect(() => inv.push(item('b'))).toThrow(/id b is not in the listing after the previous one/);
    expect(() => inv.push(item('c1'))).toThrow(/id c1 is not in the listing/);
    inv.seal();
    expect(() => inv.push(item('d'))).toThrow(/push after seal/);
  });

  it('agrees with RangeHasher over ranges spanning many 64 KiB windows of the digests\' file, with keys deleted during the read', () => {
    const per = DIGEST_IO_BYTES / 32;
    const all = Array.from({ length: 3 * per + 77 }, (_, i) => `k${String(i).padStart(6, '0')}`);
    // Deleted meanwhile: a run at the start, one at a window's edge, scattered ones and the last keys.
    const gone = new Set([0, 1, 2, per - 1, per, per + 1, 2 * per + 5, ...all.flatMap((_, i) => (i % 997 === 3 ? [i] : [])), all.length - 2, all.length - 1]);
    const read = all.filter((_, i) => !gone.has(i)).map(item);
    const inv = open(PackedIds.of(all));
    for (const i of read) inv.push(i);
    inv.seal();
    expect(inv.size).toBe(read.length);
    for (const [from, to] of [[0, read.length], [0, 1], [per - 10, per + 10], [2 * per - 3, 3 * per + 2], [read.length - 64, read.length], [5, 5]] as const) {
      expect(inv.digestOf(from, to)).toBe(hashOf(read.slice(from, to)));
    }
    // Backwards and random order too (a window is read again), then forwards as the comparison does.
    for (const i of [read.length - 1, 0, 2 * per + 1, per - 1, 1]) expect([inv.idAt(i), inv.digestAt(i)]).toEqual([read[i]!.id, read[i]!.digest]);
    for (let i = 0; i < read.length; i += 61) expect(inv.digestAt(i)).toBe(read[i]!.digest);
    expect(() => inv.digestAt(read.length)).toThrow(/index .* is outside/);
  });

  it('is empty when every listed key was deleted during the read', () => {
    const inv = open(PackedIds.of(ids)).seal();
    expect(inv.size).toBe(0);
    expect(inv.indices({ after: null, upTo: null })).toEqual([0, 0]);
    expect(inv.indices({ after: 'a', upTo: 'd' })).toEqual([0, 0]);
    expect(inv.digestOf(0, 0)).toBe(hashOf([]));
  });

  it('keeps its digests in an unlinked file in the folder given, released by close (idempotent)', () => {
    const inv = open(PackedIds.of(ids));
    expect(readdirSync(dir)).toEqual([]);
    expect(openFilesUnder(dir)).toHaveLength(1);
    expect(openFilesUnder(dir)[0]).toMatch(/\(deleted\)$/);
    for (const id of ids) inv.push(item(id));
    inv.seal().close();
    expect(openFilesUnder(dir)).toEqual([]);
    expect(() => inv.digestAt(0)).toThrow(/used after close/);
    expect(() => inv.digestOf(0, 1)).toThrow(/used after close/);
    inv.close();
    const reading = open(PackedIds.of(ids));
    reading.push(item('a'));
    reading.close();
    expect(() => reading.push(item('b'))).toThrow(/used after close/);
    expect(openFilesUnder(dir)).toEqual([]);
  });

  it('refuses a folder it cannot create its file in with NHR_ERR_STATE_DIR_UNUSABLE naming it, holding nothing open', () => {
    const missing = path.join(dir, 'missing');
    let err: unknown;
    try {
      new CompactInventory(PackedIds.of(ids), missing);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StateDirUnusableError);
    expect((err as StateDirUnusableError).message).toBe(`anti-entropy could not create its digests' file in ${missing}: ENOENT`);
    expect((err as StateDirUnusableError).path).toBe(missing);
    expect(openFilesUnder(dir)).toEqual([]);
  });

  // A full file system: a 64 KiB tmpfs (root only: skipped where mount is not allowed).
  it.runIf(canMountTmpfs())('fails a write to a full file system with NHR_ERR_STATE_DIR_UNUSABLE, and still closes', () => {
    const full = mkdtempSync(path.join(tmpdir(), 'nhr-compact-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', full]);
    try {
      const all = Array.from({ length: 4 * (DIGEST_IO_BYTES / 32) }, (_, i) => `k${String(i).padStart(6, '0')}`);
      const inv = new CompactInventory(PackedIds.of(all), full);
      try {
        const fill = (): void => all.forEach((id) => inv.push({ id, digest: 'ab'.repeat(32) }));
        expect(fill).toThrow(StateDirUnusableError);
        expect(() => inv.seal()).toThrow(`anti-entropy could not write its digests' file in ${full}: ENOSPC`);
      } finally {
        inv.close();
      }
      expect(openFilesUnder(full)).toEqual([]);
    } finally {
      execFileSync('umount', [full]);
      rmSync(full, { recursive: true, force: true });
    }
  });
});
