/**
 * A site's own inventory held compactly for a range comparison: the sorted ids of the namespace's listing, packed
 * (PackedIds, the listing's own buffer, not a copy), and per id its item digest as 32 raw bytes in one buffer. About
 * 50 bytes a key at a million keys (~13 bytes of id, 4 of offset, 32 of digest, 1 of presence while the read runs), all
 * of it in buffers outside V8's heap: no object per key, so a pass's live heap does not grow with the namespace.
 */
import { createHash, type Hash } from 'node:crypto';
import { PackedIds } from '../nethsm/packed-ids.js';
import type { KeyInventoryItem } from './inventory.js';
import type { IdRange } from './inventory-ranges.js';
import { compareIds } from './inventory-reader.js';

const HEX = Buffer.from('0123456789abcdef');

export class CompactInventory {
  #ids: PackedIds;
  #digests: Buffer;
  /** While the read runs: which of the listing's ids were read (a key deleted meanwhile is not); undefined once sealed. */
  #present: Uint8Array | undefined;
  #cursor = 0;
  #count = 0;
  /** `<id> <hex digest>\n` of one key, built here so a range digest makes no string per key. */
  readonly #line = Buffer.allocUnsafe(128 + 1 + 64 + 1);

  /**
   * Over the namespace's listing (sorted, unique): the listing's buffer becomes the inventory's ids, so the ids are held
   * once. Push the items read, in order, then `seal()`.
   */
  constructor(listing: PackedIds) {
    this.#ids = listing;
    this.#digests = Buffer.alloc(32 * Math.max(1, listing.length));
    this.#present = new Uint8Array(listing.length);
  }

  get size(): number {
    return this.#sealed().length;
  }

  /** The id at index `i` (0 ≤ i < size). */
  idAt(i: number): string {
    return this.#sealed().at(i)!;
  }

  /**
   * Records an item read; ids must come in strictly increasing order (as readItems yields them) and be in the listing.
   * Throws RangeError otherwise.
   */
  push(item: Pick<KeyInventoryItem, 'id' | 'digest'>): void {
    const ids = this.#ids;
    if (!this.#present) throw new RangeError('compact inventory: push after seal');
    while (this.#cursor < ids.length && compareIds(ids.at(this.#cursor)!, item.id) < 0) this.#cursor++;
    if (ids.at(this.#cursor) !== item.id) throw new RangeError(`compact inventory: id ${item.id} is not in the listing after the previous one`);
    this.#digests.write(item.digest, this.#cursor * 32, 32, 'hex');
    this.#present[this.#cursor++] = 1;
    this.#count++;
  }

  /** Ends the read: drops the listed ids that were not read (deleted meanwhile), in place. */
  seal(): this {
    const present = this.#present;
    if (!present) return this;
    this.#present = undefined;
    if (this.#count === this.#ids.length) return this;
    const ids = new PackedIds();
    for (let i = 0; i < present.length; i++) {
      if (!present[i]) continue;
      this.#digests.copy(this.#digests, ids.length * 32, i * 32, i * 32 + 32);
      ids.pushFrom(this.#ids, i);
    }
    this.#ids = ids;
    return this;
  }

  #sealed(): PackedIds {
    if (this.#present) throw new RangeError('compact inventory: read before seal');
    return this.#ids;
  }

  digestAt(i: number): string {
    return this.#digests.toString('hex', i * 32, i * 32 + 32);
  }

  /** Index of the first id > `id` (size when none); 0 for null. */
  #after(id: string | null): number {
    if (id === null) return 0;
    let lo = 0;
    const ids = this.#sealed();
    let hi = ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareIds(ids.at(mid)!, id) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The indices `[from, to)` of the ids in `(after, upTo]`. */
  indices(r: IdRange): [number, number] {
    return [this.#after(r.after), r.upTo === null ? this.#sealed().length : this.#after(r.upTo)];
  }

  /** Digest of the ids in `[from, to)`, as RangeHasher computes it (SHA-256 over `<id> <hex digest>\n` each). */
  digestOf(from: number, to: number): string {
    this.#sealed();
    const h = createHash('sha256');
    for (let i = from; i < to; i++) this.#hashLine(h, i);
    return h.digest('hex');
  }

  #hashLine(h: Hash, i: number): void {
    const line = this.#line;
    let o = this.#ids.copyInto(i, line, 0);
    line[o++] = 0x20;
    for (let k = i * 32; k < i * 32 + 32; k++) {
      const b = this.#digests[k]!;
      line[o++] = HEX[b >> 4]!;
      line[o++] = HEX[b & 15]!;
    }
    line[o++] = 0x0a;
    h.update(line.subarray(0, o));
  }
}
