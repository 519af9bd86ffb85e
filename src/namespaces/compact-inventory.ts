/**
 * A site's own inventory held compactly for a range comparison: sorted ids and, per id, its item digest as 32 raw
 * bytes in one growing buffer. About 80 bytes a key (the id string and 32 bytes), against ~1 KB for an item object,
 * so a million keys fit in well under 200 MB.
 */
import { createHash } from 'node:crypto';
import type { KeyInventoryItem } from './inventory.js';
import type { IdRange } from './inventory-ranges.js';
import { compareIds } from './inventory-reader.js';

export class CompactInventory {
  readonly ids: string[] = [];
  #digests: Buffer;

  /** `capacity`: the number of keys expected (the listing's), so the digest buffer is allocated once. */
  constructor(capacity = 1024) {
    this.#digests = Buffer.alloc(32 * Math.max(1, capacity));
  }

  get size(): number {
    return this.ids.length;
  }

  /** Appends an item; ids must come in strictly increasing order (as readItems yields them). */
  push(item: Pick<KeyInventoryItem, 'id' | 'digest'>): void {
    const last = this.ids.at(-1);
    if (last !== undefined && compareIds(item.id, last) <= 0) throw new RangeError(`compact inventory: id ${item.id} not after ${last}`);
    const n = this.ids.length;
    if ((n + 1) * 32 > this.#digests.length) {
      const bigger = Buffer.alloc(this.#digests.length * 2);
      this.#digests.copy(bigger);
      this.#digests = bigger;
    }
    this.#digests.write(item.digest, n * 32, 32, 'hex');
    this.ids.push(item.id);
  }

  digestAt(i: number): string {
    return this.#digests.toString('hex', i * 32, i * 32 + 32);
  }

  /** Index of the first id > `id` (ids.length when none); 0 for null. */
  #after(id: string | null): number {
    if (id === null) return 0;
    let lo = 0;
    let hi = this.ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareIds(this.ids[mid]!, id) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The indices `[from, to)` of the ids in `(after, upTo]`. */
  indices(r: IdRange): [number, number] {
    return [this.#after(r.after), r.upTo === null ? this.ids.length : this.#after(r.upTo)];
  }

  /** Digest of the ids in `[from, to)`, as RangeHasher computes it. */
  digestOf(from: number, to: number): string {
    const h = createHash('sha256');
    for (let i = from; i < to; i++) h.update(`${this.ids[i]} ${this.digestAt(i)}\n`);
    return h.digest('hex');
  }
}
