import { describe, expect, it } from 'vitest';
import { PackedIds } from './packed-ids.js';

describe('PackedIds', () => {
  it('holds ids in order and gives them back, growing past its first capacity', () => {
    const ids = Array.from({ length: 9000 }, (_, i) => `key-${String(i).padStart(6, '0')}${'x'.repeat(i % 100)}`);
    const p = new PackedIds();
    for (const id of ids) p.push(id);
    expect(p.length).toBe(ids.length);
    expect(p.at(0)).toBe(ids[0]);
    expect(p.at(4096)).toBe(ids[4096]);
    expect(p.at(8999)).toBe(ids[8999]);
    expect(p.at(9000)).toBeUndefined();
    expect(p.at(-1)).toBeUndefined();
    expect(p.trim().toArray()).toEqual(ids);
    p.push('after-trim');
    expect(p.at(9000)).toBe('after-trim');
    expect(p.compareAt(0, 8999)).toBeLessThan(0);
    expect([...p]).toEqual([...ids, 'after-trim']);
    expect(p.byteLength).toBe(ids.join('').length + 'after-trim'.length);
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
