/**
 * A site's own inventory held compactly for a range comparison: the sorted ids of the namespace's listing, packed
 * (PackedIds, the listing's own buffer, not a copy), a presence bitmap while the read runs, and per id read its item
 * digest as 32 raw bytes in an unlinked temporary file.
 *
 * Why a file: at a million keys the digests are 32 MB, the largest part of a pass's memory, and a buffer of them is
 * resident (RSS) once written. In the file they live in the page cache, which the kernel may drop and which does not
 * count in the process's RSS; the process holds one 64 KiB buffer for writing and one for reading. About 17 bytes a key
 * stay resident (the ids) plus 1 bit while the read runs.
 *
 * The file holds digests of public key data (types, mechanisms, tags, public parts, certificates): nothing secret.
 * It is opened in the caller's folder (the state directory's `work/`, 0600) and unlinked at once, so it has no name
 * while it is used and a crash leaves nothing behind; `close()` releases it (call it on every exit path).
 *
 * Access pattern (why the I/O is synchronous, 64 KiB at a time from the page cache): `push()` appends in id order,
 * `digestOf` and `digestAt` are called by the comparison in id order, so each reads the file forward through one
 * window buffer. Record k of the file is the digest of the k-th id read. `seal()` copies nothing: it keeps the listing
 * and the sorted indices of the ids not read (4 bytes each; usually none), and maps an index past them on each access,
 * so keys deleted during the read never cost a second copy of the ids (17 MB at a million keys).
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { closeSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { StateDirUnusableError } from '../errors.js';
import { PackedIds } from '../nethsm/packed-ids.js';
import type { KeyInventoryItem } from './inventory.js';
import type { IdRange } from './inventory-ranges.js';
import { compareIds } from './inventory-reader.js';

const HEX = Buffer.from('0123456789abcdef');
const DIGEST = 32;
/** Bytes of digests buffered for a write and read back at once: 2,048 digests. */
export const DIGEST_IO_BYTES = 64 * 1024;

export class CompactInventory {
  #ids: PackedIds;
  /** Once sealed: the listing's indices of the ids not read, increasing. */
  #gone = new Uint32Array(0);
  /** While the read runs: bit i set when the listing's id i was read (a key deleted meanwhile is not); undefined once sealed. */
  #present: Uint8Array | undefined;
  #cursor = 0;
  /** Digests pushed so far: the file's records. */
  #count = 0;
  #fd: number | undefined;
  readonly #dir: string;
  /** Digests pushed and not yet written: records [#count - #pending, #count). */
  #out: Buffer | undefined = Buffer.allocUnsafe(DIGEST_IO_BYTES);
  #pending = 0;
  /** Read window: records [#winFrom, #winFrom + #winCount) of the file. */
  #win: Buffer | undefined;
  #winFrom = 0;
  #winCount = 0;
  /** `<id> <hex digest>\n` of one key, built here so a range digest makes no string per key. */
  readonly #line = Buffer.allocUnsafe(128 + 1 + 64 + 1);

  /**
   * Over the namespace's listing (sorted, unique): the listing's buffer becomes the inventory's ids, so the ids are held
   * once. Opens the digests' file in `dir` (which must exist) and unlinks it at once. Throws StateDirUnusableError
   * when it cannot (as later when the file cannot be written or read: a full disk, say).
   * Push the items read, in order, then `seal()`; `close()` when done.
   */
  constructor(listing: PackedIds, dir: string) {
    this.#ids = listing;
    this.#present = new Uint8Array((listing.length + 7) >>> 3);
    this.#dir = dir;
    const file = path.join(dir, `ae-digests-${process.pid}-${randomBytes(6).toString('hex')}.bin`);
    this.#io('create', () => (this.#fd = openSync(file, 'wx+', 0o600)));
    try {
      this.#io('create', () => unlinkSync(file));
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** Runs a file operation; its error becomes StateDirUnusableError naming the folder (and fails the pass). */
  #io<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new StateDirUnusableError(`anti-entropy could not ${what} its digests' file in ${this.#dir}: ${why}`, {
        path: this.#dir,
        cause: err,
        hint: 'The pass is retried on its schedule. Free space on the state directory\'s file system, or check that the service user may write its work/ folder.',
      });
    }
  }

  get size(): number {
    return this.#sealed().length - this.#gone.length;
  }

  /** The id at index `i` (0 ≤ i < size). */
  idAt(i: number): string {
    return this.#sealed().at(this.#listed(i))!;
  }

  /**
   * The listing's index of the inventory's id `i`: i plus the ids not read before it. Gone index `r` has
   * `gone[r] − r` ids read before it (non-decreasing in r), and it lies before id `i` exactly when that is ≤ i.
   */
  #listed(i: number): number {
    const gone = this.#gone;
    let lo = 0;
    let hi = gone.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (gone[mid]! - mid <= i) lo = mid + 1;
      else hi = mid;
    }
    return i + lo;
  }

  /**
   * Records an item read; ids must come in strictly increasing order (as readItems yields them) and be in the listing.
   * Throws RangeError otherwise (and after seal or close); throws what writing the file throws.
   */
  push(item: Pick<KeyInventoryItem, 'id' | 'digest'>): void {
    const ids = this.#ids;
    const present = this.#present;
    if (!present) throw new RangeError('compact inventory: push after seal');
    const out = this.#open(this.#out);
    while (this.#cursor < ids.length && compareIds(ids.at(this.#cursor)!, item.id) < 0) this.#cursor++;
    if (ids.at(this.#cursor) !== item.id) throw new RangeError(`compact inventory: id ${item.id} is not in the listing after the previous one`);
    out.write(item.digest, this.#pending * DIGEST, DIGEST, 'hex');
    present[this.#cursor >>> 3]! |= 1 << (this.#cursor & 7);
    this.#cursor++;
    this.#count++;
    if (++this.#pending * DIGEST === out.length) this.#flush();
  }

  /** Ends the read: writes the last digests and drops the listed ids that were not read (deleted meanwhile). */
  seal(): this {
    const present = this.#present;
    if (!present) return this;
    this.#flush();
    this.#present = undefined;
    this.#out = undefined;
    const gone = new Uint32Array(this.#ids.length - this.#count);
    for (let i = 0, g = 0; g < gone.length; i++) if (!(present[i >>> 3]! & (1 << (i & 7)))) gone[g++] = i;
    this.#gone = gone;
    return this;
  }

  /** Releases the file and the buffers; idempotent. Reads after it throw RangeError. */
  close(): void {
    const fd = this.#fd;
    this.#fd = undefined;
    this.#out = undefined;
    this.#win = undefined;
    if (fd !== undefined) closeSync(fd);
  }

  #open<T>(v: T | undefined): T {
    if (this.#fd === undefined || v === undefined) throw new RangeError('compact inventory: used after close');
    return v;
  }

  #flush(): void {
    if (this.#pending === 0) return;
    const out = this.#open(this.#out);
    const bytes = this.#pending * DIGEST;
    const at = (this.#count - this.#pending) * DIGEST;
    for (let done = 0; done < bytes; ) done += this.#io('write', () => writeSync(this.#fd!, out, done, bytes - done, at + done));
    this.#pending = 0;
  }

  #sealed(): PackedIds {
    if (this.#present) throw new RangeError('compact inventory: read before seal');
    return this.#ids;
  }

  /** The offset of record `i` in the read window, reading the window forward from `i` when it does not hold it. */
  #record(i: number): number {
    this.#sealed();
    if (i < 0 || i >= this.#count) throw new RangeError(`compact inventory: index ${i} is outside 0..${this.#count - 1}`);
    if (i >= this.#winFrom && i < this.#winFrom + this.#winCount) return (i - this.#winFrom) * DIGEST;
    this.#open(this.#fd);
    const win = (this.#win ??= Buffer.allocUnsafe(DIGEST_IO_BYTES));
    const bytes = Math.min(win.length, (this.#count - i) * DIGEST);
    let done = 0;
    this.#winCount = 0;
    while (done < bytes) {
      const n = this.#io('read', () => readSync(this.#fd!, win, done, bytes - done, i * DIGEST + done));
      if (n === 0) throw new RangeError(`compact inventory: the digests' file ended at record ${i + done / DIGEST} of ${this.#count}`);
      done += n;
    }
    this.#winFrom = i;
    this.#winCount = bytes / DIGEST;
    return 0;
  }

  digestAt(i: number): string {
    const o = this.#record(i);
    return this.#win!.toString('hex', o, o + DIGEST);
  }

  /** Index of the first id > `id` (size when none); 0 for null. */
  #after(id: string | null): number {
    if (id === null) return 0;
    let lo = 0;
    let hi = this.size;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareIds(this.idAt(mid), id) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The indices `[from, to)` of the ids in `(after, upTo]`. */
  indices(r: IdRange): [number, number] {
    return [this.#after(r.after), r.upTo === null ? this.size : this.#after(r.upTo)];
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
    const d = this.#record(i);
    const w = this.#win!;
    let o = this.#ids.copyInto(this.#listed(i), line, 0);
    line[o++] = 0x20;
    for (let k = d; k < d + DIGEST; k++) {
      const b = w[k]!;
      line[o++] = HEX[b >> 4]!;
      line[o++] = HEX[b & 15]!;
    }
    line[o++] = 0x0a;
    h.update(line.subarray(0, o));
  }
}
