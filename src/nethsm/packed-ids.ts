/**
 * A list of NetHSM key ids packed into one byte buffer with one end offset per id, instead of one JS string per id.
 * At a million keys that is ~17 MB outside V8's heap (the ids' bytes and 4 bytes an offset) against ~40 MB of strings
 * and pointers inside it that every major GC walks, and it gives the heap no million long-lived objects to promote.
 *
 * Contract: ids are NetHSM ids (ASCII, `[a-zA-Z0-9_.-]`, 1..128 characters; callers validate), so one byte a character
 * and byte order is the code unit order inventories are sorted in (`compareIds`).
 */
import { isValidId } from './ids.js';

/** Ids per block: each block's bytes are one buffer of their exact size once the block is full. */
const BLOCK = 4096;
const BLOCK_SHIFT = 12;
const FIRST_BYTES = 16 * 1024;

/**
 * Blocks of BLOCK ids, each in its own buffer: a list of millions of ids grows without ever copying itself into a
 * buffer twice as big (which leaves the old ones as garbage outside the heap until a GC: at a million keys ~30 MB more
 * peak RSS for a listing).
 */
export class PackedIds {
  /** Full blocks' bytes (exact size), then the block being filled (grows to at most BLOCK × 128 bytes). */
  #bytes: Buffer[] = [];
  /** Per block, the end of each id relative to the block's start. */
  #ends: Uint32Array[] = [];
  #used = 0;
  #n = 0;
  #byteLength = 0;

  /** A packed copy of `ids`; throws RangeError for an id that is not a NetHSM id. */
  static of(ids: Iterable<string>): PackedIds {
    const p = new PackedIds();
    for (const id of ids) p.push(id);
    return p;
  }

  get length(): number {
    return this.#n;
  }

  /** Bytes used by the ids. */
  get byteLength(): number {
    return this.#byteLength;
  }

  /** Appends `id`; throws RangeError when it is not a NetHSM id (a packed list holds nothing else). */
  push(id: string): void {
    if (!isValidId(id)) throw new RangeError(`not a NetHSM key id: ${JSON.stringify(id.slice(0, 140))}`);
    const buf = this.#reserve(id.length);
    buf.write(id, this.#used, 'latin1');
    this.#commit(id.length);
  }

  /** Appends the id in `src[from, to)`; the caller has checked the bytes are a NetHSM id. */
  pushBytes(src: Uint8Array, from: number, to: number): void {
    const buf = this.#reserve(to - from);
    buf.set(src.subarray(from, to), this.#used);
    this.#commit(to - from);
  }

  /** Appends id `i` of `other` (no string made). */
  pushFrom(other: PackedIds, i: number): void {
    const [buf, start, end] = other.#where(i);
    this.pushBytes(buf, start, end);
  }

  /** The id at `i` (a new string), or undefined outside the list, as Array.prototype.at for i ≥ 0. */
  at(i: number): string | undefined {
    if (i < 0 || i >= this.#n) return undefined;
    const [buf, start, end] = this.#where(i);
    return buf.toString('latin1', start, end);
  }

  /** Copies id `i` into `dst` at `offset`; returns the offset after it. */
  copyInto(i: number, dst: Buffer, offset: number): number {
    const [buf, start, end] = this.#where(i);
    return offset + buf.copy(dst, offset, start, end);
  }

  /** Byte comparison of id `i` with id `j` (sign as compareIds), without making strings. */
  compareAt(i: number, j: number): number {
    const [a, as, ae] = this.#where(i);
    const [b, bs, be] = this.#where(j);
    return Buffer.compare(a.subarray(as, ae), b.subarray(bs, be));
  }

  /** True when every id is after the one before it (sorted, no duplicates). */
  strictlyIncreasing(): boolean {
    for (let i = 1; i < this.#n; i++) if (this.compareAt(i - 1, i) >= 0) return false;
    return true;
  }

  toArray(): string[] {
    return Array.from({ length: this.#n }, (_, i) => this.at(i)!);
  }

  *[Symbol.iterator](): IterableIterator<string> {
    for (let i = 0; i < this.#n; i++) yield this.at(i)!;
  }

  /** Gives back the unused room of the block being filled (call once the list is complete; pushing on still works). */
  trim(): this {
    const last = this.#bytes.length - 1;
    if (last >= 0 && this.#bytes[last]!.length > this.#used) this.#bytes[last] = Buffer.from(this.#bytes[last]!.subarray(0, this.#used));
    return this;
  }

  /** The buffer holding id `i`, and its bounds there. */
  #where(i: number): [Buffer, number, number] {
    const b = i >>> BLOCK_SHIFT;
    const j = i & (BLOCK - 1);
    const ends = this.#ends[b]!;
    return [this.#bytes[b]!, j === 0 ? 0 : ends[j - 1]!, ends[j]!];
  }

  /** The buffer of the block being filled, with room for `len` more bytes at `#used`. */
  #reserve(len: number): Buffer {
    if ((this.#n & (BLOCK - 1)) === 0) {
      this.#seal();
      this.#bytes.push(Buffer.allocUnsafe(FIRST_BYTES));
      this.#ends.push(new Uint32Array(BLOCK));
      this.#used = 0;
    }
    const last = this.#bytes.length - 1;
    const buf = this.#bytes[last]!;
    if (this.#used + len <= buf.length) return buf;
    const bigger = Buffer.allocUnsafe(Math.max(buf.length * 2, this.#used + len));
    buf.copy(bigger, 0, 0, this.#used);
    this.#bytes[last] = bigger;
    return bigger;
  }

  #commit(len: number): void {
    this.#used += len;
    this.#byteLength += len;
    this.#ends[this.#ends.length - 1]![this.#n & (BLOCK - 1)] = this.#used;
    this.#n++;
  }

  /** A full block keeps only its bytes (the room left is given back). */
  #seal(): void {
    if (this.#n > 0) this.trim();
  }
}
