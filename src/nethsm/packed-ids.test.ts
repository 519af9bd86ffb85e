import { describe, expect, it } from 'vitest';
import { PackedIds } from './packed-ids.js';

describe('PackedIds', () => {
  it('holds ids in order and gives them back, growing past its first capacity', () => {
    const ids = Array.from({ length: 5000 }, (_, i) => `key-${String(i).padStart(6, '0')}${'x'.repeat(i % 100)}`);
    const p = new PackedIds(2, 4);
    for (const id of ids) p.push(id);
    expect(p.length).toBe(ids.length);
    expect(p.at(0)).toBe(ids[0]);
    expect(p.at(4999)).toBe(ids[4999]);
    expect(p.at(5000)).toBeUndefined();
    expect(p.at(-1)).toBeUndefined();
    expect(p.trim().toArray()).toEqual(ids);
    expect([...p]).toEqual(ids);
    expect(p.byteLength).toBe(ids.join('').length);
  });

  it('tells sorted lists from unsorted and duplicated ones by byte order', () => {
    expect(PackedIds.of(['A', 'B', 'a', 'a0', 'b']).strictlyIncreasing()).toBe(true);
    expect(PackedIds.of(['a', 'a']).strictlyIncreasing()).toBe(false);
    expect(PackedIds.of(['b', 'a']).strictlyIncreasing()).toBe(false);
    expect(PackedIds.of(['ab', 'a']).strictlyIncreasing()).toBe(false);
    expect(new PackedIds().strictlyIncreasing()).toBe(true);
  });

  it('copies an id of another list without a string', () => {
    const a = PackedIds.of(['one', 'two']);
    const b = new PackedIds();
    b.pushFrom(a, 1);
    expect(b.toArray()).toEqual(['two']);
  });

  it.each([[''], ['a b'], ['.a'], ['é'], ['x'.repeat(129)]])('refuses %j, which is not a NetHSM id', (id) => {
    const p = new PackedIds();
    expect(() => p.push(id)).toThrow(RangeError);
    expect(p.length).toBe(0);
  });
});
