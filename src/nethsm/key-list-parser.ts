/**
 * Parses a `GET /keys` answer (`[{"id":"k1"},{"id":"k2"},…]`, FACTS c2) as its bytes arrive, keeping only the ids:
 * never the whole body as one string nor an object per key, so a listing of millions of keys costs the ids and no
 * more, and has no body size cap. Each element (`{…}`, at most MAX_ELEMENT_BYTES) is parsed on its own and must be an
 * object with a string `id`; between elements only `,` and JSON whitespace may appear.
 */
export const MAX_ELEMENT_BYTES = 4096;

/** A malformed key list (the client reports it as NetHsmResponseInvalidError). */
export class KeyListFormatError extends Error {}

export class KeyListParser {
  readonly ids: string[] = [];
  #state: 'start' | 'between' | 'element' | 'end' = 'start';
  #element: number[] = [];
  #expectComma = false;

  /** Feeds the next bytes; throws KeyListFormatError naming the problem (the caller wraps it as NetHsmResponseInvalidError). */
  push(chunk: Uint8Array): void {
    for (const b of chunk) this.#byte(b);
  }

  /** Call at the end of the body; returns the ids in the answer's order. */
  end(): string[] {
    if (this.#state !== 'end') throw new KeyListFormatError('the key list ended early');
    return this.ids;
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
          this.#element = [b];
          return;
        }
        throw new KeyListFormatError(`unexpected ${JSON.stringify(String.fromCharCode(b))} between key list elements`);
      case 'element':
        if (this.#element.length >= MAX_ELEMENT_BYTES) throw new KeyListFormatError(`a key list element is over ${MAX_ELEMENT_BYTES} bytes`);
        this.#element.push(b);
        if (b === 0x7d) this.#close();
        return;
      case 'end':
        if (!ws) throw new KeyListFormatError('bytes after the end of the key list');
    }
  }

  #close(): void {
    let v: unknown;
    try {
      v = JSON.parse(Buffer.from(this.#element).toString('utf8'));
    } catch {
      // A `}` inside a string ends the element early: such an answer is refused too (ids never contain one).
      throw new KeyListFormatError(`key list element ${this.ids.length} is not a JSON object`);
    }
    const id = (v as { id?: unknown } | null)?.id;
    if (typeof id !== 'string') throw new KeyListFormatError(`key list element ${this.ids.length} has no string id`);
    this.ids.push(id);
    this.#element = [];
    this.#state = 'between';
    this.#expectComma = true;
  }
}
