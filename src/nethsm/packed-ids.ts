/**
 * A list of NetHSM key ids packed into one byte buffer with one end offset per id, instead of one JS string per id.
 * At a million keys that is ~17 MB outside V8's heap (the ids' bytes and 4 bytes an offset) against ~40 MB of strings
 * and pointers inside it that every major GC walks, and it gives the heap no million long-lived objects to promote.
 *
 * Contract: ids are NetHSM ids (ASCII, `[a-zA-Z0-9_.-]`, 1..128 characters; callers validate), so one byte a character
 * and byte order is the code unit order inventories are sorted in (`compareIds`).
 */
import { isValidId } from './ids.js';

export class PackedIds {
  #bytes: Buffer;
  #ends: Uint32Array;
  #n = 0;

  /** `ids` and `bytes`: the expected count and total length, so the buffers are allocated once when known. */
  constructor(ids = 1024, bytes = ids * 16) {
    this.#ends = new Uint32Array(Math.max(1, ids));
    this.#bytes = Buffer.allocUnsafe(Math.max(16, bytes));
  }

  /** A packed copy of `ids`; throws RangeError for an id that is not a NetHSM id. */
  static of(ids: Iterable<string>): PackedIds {
    const p = new PackedIds();
    for (const id of ids) p.push(id);
    return p;
  }

  get length(): number {
    return this.#n;
  }

  /** Bytes used by the ids (for sizing a copy). */
  get byteLength(): number {
    return this.#n === 0 ? 0 : this.#ends[this.#n - 1]!;
  }

  /** Appends `id`; throws RangeError when it is not a NetHSM id (a packed list holds nothing else). */
  push(id: string): void {
    if (!isValidId(id)) throw new RangeError(`not a NetHSM key id: ${JSON.stringify(id.slice(0, 140))}`);
    const start = this.#reserve(id.length);
    this.#bytes.write(id, start, 'latin1');
    this.#ends[this.#n++] = start + id.length;
  }

  /** Appends the id in `src[from, to)`; the caller has checked the bytes are a NetHSM id. */
  pushBytes(src: Uint8Array, from: number, to: number): void {
    const start = this.#reserve(to - from);
    this.#bytes.set(src.subarray(from, to), start);
    this.#ends[this.#n++] = start + (to - from);
  }

  /** Appends id `i` of `other` (no string made). */
  pushFrom(other: PackedIds, i: number): void {
    this.pushBytes(other.#bytes, other.#start(i), other.#ends[i]!);
  }

  /** The id at `i` (a new string), or undefined outside the list, as Array.prototype.at for i ≥ 0. */
  at(i: number): string | undefined {
    if (i < 0 || i >= this.#n) return undefined;
    return this.#bytes.toString('latin1', this.#start(i), this.#ends[i]);
  }

  /** Copies id `i` into `dst` at `offset`; returns the offset after it. */
  copyInto(i: number, dst: Buffer, offset: number): number {
    return offset + this.#bytes.copy(dst, offset, this.#start(i), this.#ends[i]);
  }

  /** Byte comparison of id `i` with id `j` (sign as compareIds), without making strings. */
  compareAt(i: number, j: number): number {
    return Buffer.compare(this.#bytes.subarray(this.#start(i), this.#ends[i]), this.#bytes.subarray(this.#start(j), this.#ends[j]));
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

  /** Gives back unused capacity (call once the list is complete). */
  trim(): this {
    if (this.#ends.length > this.#n + 1024) this.#ends = this.#ends.slice(0, this.#n);
    const used = this.byteLength;
    if (this.#bytes.length > used + 16384) this.#bytes = Buffer.from(this.#bytes.subarray(0, used));
    return this;
  }

  #start(i: number): number {
    return i === 0 ? 0 : this.#ends[i - 1]!;
  }

  /** Room for one more id of `len` bytes; returns where it starts. */
  #reserve(len: number): number {
    if (this.#n === this.#ends.length) {
      const bigger = new Uint32Array(this.#ends.length * 2);
      bigger.set(this.#ends);
      this.#ends = bigger;
    }
    const start = this.byteLength;
    if (start + len > this.#bytes.length) {
      const bigger = Buffer.allocUnsafe(Math.max(this.#bytes.length * 2, start + len));
      this.#bytes.copy(bigger, 0, 0, start);
      this.#bytes = bigger;
    }
    return start;
  }
}
