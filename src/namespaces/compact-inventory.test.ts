import { describe, expect, it } from 'vitest';
import type { PublicKey } from '../nethsm/client.js';
import { PackedIds } from '../nethsm/packed-ids.js';
import { CompactInventory } from './compact-inventory.js';
import { inventoryItem, type KeyInventoryItem } from './inventory.js';
import { RangeHasher } from './inventory-ranges.js';

const key = (tag: string): PublicKey => ({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], restrictions: { tags: [tag] }, public: { data: Buffer.alloc(32, 1).toString('base64') }, operations: 0 });
const item = (id: string): KeyInventoryItem => inventoryItem(id, key(`t${id.length}`), null);
const hashOf = (items: KeyInventoryItem[]): string => {
  const h = new RangeHasher();
  for (const i of items) h.add(i.id, i.digest);
  return h.take();
};

describe('CompactInventory', () => {
  const ids = ['a', 'b', 'c0', 'd', 'e'.repeat(128), 'f'];

  it('holds the listed keys read, and drops those deleted during the read (not read) when sealed', () => {
    const read = ids.filter((id) => id !== 'b' && id !== 'f').map(item);
    const inv = new CompactInventory(PackedIds.of(ids));
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
    const inv = new CompactInventory(PackedIds.of(ids));
    for (const id of ids) inv.push(item(id));
    expect(inv.seal().size).toBe(ids.length);
    expect(inv.digestOf(0, ids.length)).toBe(hashOf(ids.map(item)));
  });

  it('refuses an item not in the listing, one out of order, and reads before seal', () => {
    const inv = new CompactInventory(PackedIds.of(ids));
    expect(() => inv.size).toThrow(/read before seal/);
    inv.push(item('c0'));
    expect(() => inv.push(item('b'))).toThrow(/id b is not in the listing after the previous one/);
    expect(() => inv.push(item('c1'))).toThrow(/id c1 is not in the listing/);
    inv.seal();
    expect(() => inv.push(item('d'))).toThrow(/push after seal/);
  });
});
