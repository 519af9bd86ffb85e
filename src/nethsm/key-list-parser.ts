/**
 * Parses a `GET /keys` answer (`[{"id":"k1"},{"id":"k2"},…]`, FACTS c2) as its bytes arrive, keeping only the ids,
 * packed (PackedIds: one byte buffer, no string per id): never the whole body as one string nor an object per key, so a
 * listing of millions of keys costs the ids' bytes and no more, and has no body size cap. Each element (`{…}`, at most
 * MAX_ELEMENT_BYTES) is read on its own and must be an object with a string `id` that is a NetHSM id; between elements
 * only `,` and JSON whitespace may appear. The firmware's exact form `{"id":"…"}` is taken without JSON.parse.
 */
import { isValidId } from './ids.js';
import { PackedIds } from './packed-ids.js';

export const MAX_ELEMENT_BYTES = 4096;

/** A malformed key list (the client reports it as NetHsmResponseInvalidError). */
export class KeyListFormatError extends Error {}

const PREFIX = Buffer.from('{"id":"');
const SUFFIX_LEN = 2; // `"}`

/** Whether byte `b` may appear in a NetHSM id (`[a-zA-Z0-9_.-]`). */
function idByte(b: number): boolean {
  return (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) || b === 0x5f || b === 0x2e || b === 0x2d;
}

export class KeyListParser {
  readonly ids = new PackedIds();
  #state: 'start' | 'between' | 'element' | 'end' = 'start';
  #element = Buffer.allocUnsafe(MAX_ELEMENT_BYTES);
  #len = 0;
  #expectComma = false;

  /** Feeds the next bytes; throws KeyListFormatError naming the problem (the caller wraps it as NetHsmResponseInvalidError). */
  push(chunk: Uint8Array): void {
    for (let i = 0; i < chunk.length; i++) this.#byte(chunk[i]!);
  }

  /** Call at the end of the body; returns the ids in the answer's order. */
  end(): PackedIds {
    if (this.#state !== 'end') throw new KeyListFormatError('the key list ended early');
    return this.ids.trim();
  }

  #byte(b: number): void {
    const ws = b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
    switch (this.#state) {
      case 'start':
        if (ws) return;
        if (b !== 0x5b) throw new KeyListFormatError('the key list is not a JSON list');
        this.#state = 'between';
        return;
      case 'between':
        if (ws) return;
        if (b === 0x5d) {
          this.#state = 'end';
          return;
        }
        if (b === 0x2c && this.#expectComma) {
          this.#expectComma = false;
          return;
        }
        if (b === 0x7b && !this.#expectComma) {
          this.#state = 'element';
          this.#element[0] = b;
          this.#len = 1;
          return;
        }
        throw new KeyListFormatError(`unexpected ${JSON.stringify(String.fromCharCode(b))} between key list elements`);
      case 'element':
        if (this.#len >= MAX_ELEMENT_BYTES) throw new KeyListFormatError(`a key list element is over ${MAX_ELEMENT_BYTES} bytes`);
        this.#element[this.#len++] = b;
        if (b === 0x7d) this.#close();
        return;
      case 'end':
        if (!ws) throw new KeyListFormatError('bytes after the end of the key list');
    }
  }

  #close(): void {
    if (!this.#fastPath()) this.#parsed();
    this.#state = 'between';
    this.#expectComma = true;
  }

  /** `{"id":"<id bytes>"}` exactly, with a valid id: packed straight from the bytes. */
  #fastPath(): boolean {
    const e = this.#element;
    const end = this.#len - SUFFIX_LEN;
    const len = end - PREFIX.length;
    if (len < 1 || len > 128 || e[end] !== 0x22 || e.compare(PREFIX, 0, PREFIX.length, 0, PREFIX.length) !== 0) return false;
    if (!(e[PREFIX.length]! !== 0x5f && e[PREFIX.length]! !== 0x2e && e[PREFIX.length]! !== 0x2d)) return false;
    for (let i = PREFIX.length; i < end; i++) if (!idByte(e[i]!)) return false;
    this.ids.pushBytes(e, PREFIX.length, end);
    return true;
  }

  /** Any other element: parsed as JSON, its `id` checked. */
  #parsed(): void {
    const n = this.ids.length;
    let v: unknown;
    try {
      v = JSON.parse(this.#element.toString('utf8', 0, this.#len));
    } catch {
      // A `}` inside a string ends the element early: such an answer is refused too (ids never contain one).
      throw new KeyListFormatError(`key list element ${n} is not a JSON object`);
    }
    const id = (v as { id?: unknown } | null)?.id;
    if (typeof id !== 'string') throw new KeyListFormatError(`key list element ${n} has no string id`);
    if (!isValidId(id)) throw new KeyListFormatError(`key list element ${n} has id ${JSON.stringify(id.slice(0, 140))}, which is not a NetHSM id`);
    this.ids.push(id);
  }
}
