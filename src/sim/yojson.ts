/**
 * A JSON reader that accepts and refuses what the firmware's parser does (`Yojson.Safe.from_string`, yojson 3.x;
 * FACTS-system §5), with its error texts. Works on bytes: strings come back as byte strings (one JS char per byte),
 * because Yojson copies raw bytes and never validates UTF-8.
 *
 * Beyond RFC 8259 it accepts unquoted object keys (`[A-Za-z_][A-Za-z0-9_]*`), `//` and `/* *\/` comments wherever
 * whitespace may stand, `NaN`/`Infinity`/`-Infinity`, and raw control bytes inside strings. It refuses single quotes,
 * trailing commas, leading zeros, `+1`, `.5`, `1.`, whitespace other than space/tab/CR/LF, and anything after the value.
 * Objects keep every member in order, duplicates included (the typed decoders decide which one wins).
 */

export type YValue =
  | { t: 'null' }
  | { t: 'bool'; v: boolean }
  /** An integer within OCaml's 63-bit native range. */
  | { t: 'int'; v: bigint }
  /** An integer literal beyond that range (`Intlit`): kept as text. */
  | { t: 'intlit'; v: string }
  | { t: 'float'; v: number }
  /** A byte string (latin1: one char per byte). */
  | { t: 'string'; v: string }
  | { t: 'list'; v: YValue[] }
  /** Members in input order; keys are byte strings. */
  | { t: 'assoc'; v: [string, YValue][] };

/** A parse failure; `message` is Yojson's own text, e.g. `Line 1, bytes 5-6:\nInvalid token ']'`. */
export class YojsonError extends Error {
  override readonly name = 'YojsonError';
}

const OCAML_MAX_INT = (1n << 62n) - 1n;
const OCAML_MIN_INT = -(1n << 62n);
const JUNK_MAX = 32;

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isIdentStart = (c: number): boolean => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f;
const isIdentChar = (c: number): boolean => isIdentStart(c) || isDigit(c);
const isHex = (c: number): boolean => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);

class Reader {
  private pos = 0;
  private lnum = 1;
  private bol = 0;

  constructor(private readonly s: Buffer) {}

  private get len(): number {
    return this.s.length;
  }

  private text(from: number, to: number): string {
    return this.s.toString('latin1', from, to);
  }

  private at(i: number): number {
    return i < this.len ? this.s[i]! : -1;
  }

  private startsWith(lit: string, i = this.pos): boolean {
    if (i + lit.length > this.len) return false;
    for (let k = 0; k < lit.length; k++) if (this.s[i + k] !== lit.charCodeAt(k)) return false;
    return true;
  }

  private fail(descr: string, a: number, b: number): never {
    const where = a === b ? `byte ${a}` : `bytes ${a}-${b}`;
    throw new YojsonError(`Line ${this.lnum}, ${where}:\n${descr}`);
  }

  /** `Unexpected end of input` (Yojson's custom_error at the end of the data). */
  private eoi(): never {
    this.fail('Unexpected end of input', this.len - 1 - this.bol, this.len - this.bol);
  }

  /** Yojson's long_error: the offending token, then up to 32 more bytes of context. */
  private junk(descr: string, tokStart: number, tokEnd: number): never {
    if (tokStart >= this.len) this.fail(`${descr} ''`, this.len - 1 - this.bol, this.len - this.bol);
    const end = Math.min(this.len, tokEnd + JUNK_MAX);
    this.fail(`${descr} '${this.text(tokStart, end)}'`, tokStart - this.bol, end - this.bol);
  }

  private newline(afterIndex: number): void {
    this.lnum++;
    this.bol = afterIndex;
  }

  /** Skips the block comment opened just before `pos`; fails at the end of the data. */
  private finishComment(): void {
    for (;;) {
      if (this.pos >= this.len) this.junk('Unterminated comment', this.len, this.len);
      if (this.startsWith('*/')) {
        this.pos += 2;
        return;
      }
      const c = this.s[this.pos++]!;
      if (c === 0x0a) this.newline(this.pos);
    }
  }

  /** Whitespace and comments between tokens (Yojson's read_space). */
  space(): void {
    for (;;) {
      const c = this.at(this.pos);
      if (c === 0x20 || c === 0x09 || c === 0x0d) this.pos++;
      else if (c === 0x0a) this.newline(++this.pos);
      else if (this.startsWith('//')) {
        while (this.pos < this.len && this.s[this.pos] !== 0x0a) this.pos++;
        if (this.pos < this.len) this.pos++;
        this.newline(this.pos); // Yojson counts a line even when the comment ends the data
      } else if (this.startsWith('/*')) {
        this.pos += 2;
        this.finishComment();
      } else return;
    }
  }

  /** One value (Yojson's read_json), after skipping whitespace and comments the way it does. */
  value(): YValue {
    for (;;) {
      const c = this.at(this.pos);
      if (c === 0x20 || c === 0x09 || c === 0x0d) this.pos++;
      else if (c === 0x0a) this.newline(++this.pos);
      else if (this.startsWith('//')) while (this.pos < this.len && this.s[this.pos] !== 0x0a) this.pos++;
      else if (this.startsWith('/*')) {
        this.pos += 2;
        this.finishComment();
      } else break;
    }
    if (this.pos >= this.len) this.eoi();
    const start = this.pos;
    const c = this.s[start]!;
    const number = this.number(start);
    for (const [lit, v] of [
      ['true', { t: 'bool', v: true }],
      ['false', { t: 'bool', v: false }],
      ['null', { t: 'null' }],
      ['NaN', { t: 'float', v: Number.NaN }],
      ['Infinity', { t: 'float', v: Number.POSITIVE_INFINITY }],
      ['-Infinity', { t: 'float', v: Number.NEGATIVE_INFINITY }],
    ] as const) {
      // Longest match wins, as in ocamllex: `-Infinity` beats `-` followed by nothing numeric.
      if (this.startsWith(lit) && (number === undefined || number.end - start < lit.length)) {
        this.pos += lit.length;
        return v;
      }
    }
    if (number !== undefined) {
      this.pos = number.end;
      return number.value;
    }
    if (c === 0x22) {
      this.pos++;
      return { t: 'string', v: this.stringBody() };
    }
    if (c === 0x7b) {
      this.pos++;
      return this.object();
    }
    if (c === 0x5b) {
      this.pos++;
      return this.list();
    }
    this.junk('Invalid token', start, start + 1);
  }

  /** The longest number token at `i` (Yojson's positive_int | '-' positive_int | float), or undefined. */
  private number(i: number): { end: number; value: YValue } | undefined {
    let k = i;
    if (this.at(k) === 0x2d) k++;
    if (!isDigit(this.at(k))) return undefined;
    // positive_int = digit | nonzero digits: a leading 0 stands alone.
    if (this.at(k) === 0x30) k++;
    else while (isDigit(this.at(k))) k++;
    const intEnd = k;
    let isFloat = false;
    if (this.at(k) === 0x2e && isDigit(this.at(k + 1))) {
      k += 2;
      while (isDigit(this.at(k))) k++;
      isFloat = true;
    }
    const e = this.at(k);
    if (e === 0x65 || e === 0x45) {
      let m = k + 1;
      if (this.at(m) === 0x2b || this.at(m) === 0x2d) m++;
      if (isDigit(this.at(m))) {
        while (isDigit(this.at(m))) m++;
        k = m;
        isFloat = true;
      }
    }
    const lexeme = this.text(i, isFloat ? k : intEnd);
    if (isFloat) return { end: k, value: { t: 'float', v: Number(lexeme) } };
    const n = BigInt(lexeme);
    return { end: intEnd, value: n > OCAML_MAX_INT || n < OCAML_MIN_INT ? { t: 'intlit', v: lexeme } : { t: 'int', v: n } };
  }

  /** The rest of a string after its opening quote (Yojson's finish_string): raw bytes, escapes decoded to UTF-8. */
  private stringBody(): string {
    const parts: Buffer[] = [];
    let run = this.pos;
    for (;;) {
      if (this.pos >= this.len) this.eoi();
      const c = this.s[this.pos]!;
      if (c === 0x22) {
        parts.push(this.s.subarray(run, this.pos));
        this.pos++;
        return Buffer.concat(parts).toString('latin1');
      }
      if (c !== 0x5c) {
        this.pos++; // raw bytes, newlines included, are copied as they are (and do not count as lines)
        continue;
      }
      parts.push(this.s.subarray(run, this.pos));
      this.pos++;
      parts.push(this.escape());
      run = this.pos;
    }
  }

  private escape(): Buffer {
    if (this.pos >= this.len) this.eoi();
    const c = this.s[this.pos]!;
    const simple: Record<number, number> = { 0x22: 0x22, 0x5c: 0x5c, 0x2f: 0x2f, 0x62: 0x08, 0x66: 0x0c, 0x6e: 0x0a, 0x72: 0x0d, 0x74: 0x09 };
    if (simple[c] !== undefined) {
      this.pos++;
      return Buffer.from([simple[c]]);
    }
    if (c === 0x75 && this.hex4(this.pos + 1)) {
      const x = parseInt(this.text(this.pos + 1, this.pos + 5), 16);
      this.pos += 5;
      if (x >= 0xd800 && x <= 0xdbff) return this.surrogate(x);
      return utf8OfCode(x);
    }
    this.junk('Invalid escape sequence', this.pos, this.pos + 1);
  }

  private hex4(i: number): boolean {
    for (let k = 0; k < 4; k++) if (!isHex(this.at(i + k))) return false;
    return true;
  }

  private surrogate(hi: number): Buffer {
    if (this.pos >= this.len) this.eoi();
    if (this.startsWith('\\u') && this.hex4(this.pos + 2)) {
      const start = this.pos;
      const lo = parseInt(this.text(this.pos + 2, this.pos + 6), 16);
      this.pos += 6;
      if (lo >= 0xdc00 && lo <= 0xdfff) return utf8OfCode(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00));
      this.junk('Invalid low surrogate for code point beyond U+FFFF', start, start + 6);
    }
    this.junk('Missing escape sequence representing low surrogate for code point beyond U+FFFF', this.pos, this.pos + 1);
  }

  /** An object key (Yojson's read_ident): a string or an identifier. */
  private key(): string {
    if (this.pos >= this.len) this.eoi();
    const c = this.s[this.pos]!;
    if (c === 0x22) {
      this.pos++;
      return this.stringBody();
    }
    if (isIdentStart(c)) {
      const start = this.pos;
      while (isIdentChar(this.at(this.pos))) this.pos++;
      return this.text(start, this.pos);
    }
    this.junk('Expected string or identifier but found', this.pos, this.pos + 1);
  }

  private expect(ch: number, descr: string): void {
    if (this.pos >= this.len) this.eoi();
    if (this.s[this.pos] !== ch) this.junk(descr, this.pos, this.pos + 1);
    this.pos++;
  }

  /** `,` → true, `close` → false (consumed), else the firmware's error. */
  private separator(close: number, descr: string): boolean {
    if (this.pos >= this.len) this.eoi();
    const c = this.s[this.pos]!;
    if (c === 0x2c || c === close) {
      this.pos++;
      return c === 0x2c;
    }
    this.junk(descr, this.pos, this.pos + 1);
  }

  private object(): YValue {
    const members: [string, YValue][] = [];
    this.space();
    if (this.at(this.pos) === 0x7d) {
      this.pos++;
      return { t: 'assoc', v: members };
    }
    do {
      if (members.length > 0) this.space();
      const k = this.key();
      this.space();
      this.expect(0x3a, "Expected ':' but found");
      this.space();
      members.push([k, this.value()]);
      this.space();
    } while (this.separator(0x7d, "Expected ',' or '}' but found"));
    return { t: 'assoc', v: members };
  }

  private list(): YValue {
    const items: YValue[] = [];
    this.space();
    if (this.at(this.pos) === 0x5d) {
      this.pos++;
      return { t: 'list', v: items };
    }
    do {
      if (items.length > 0) this.space();
      items.push(this.value());
      this.space();
    } while (this.separator(0x5d, "Expected ',' or ']' but found"));
    return { t: 'list', v: items };
  }

  /** The whole input: exactly one value, surrounded by whitespace or comments. */
  document(): YValue {
    this.space();
    if (this.pos >= this.len) throw new YojsonError('Blank input data');
    const v = this.value();
    this.space();
    if (this.pos < this.len) this.junk('Junk after end of JSON value:', this.pos, this.pos);
    return v;
  }
}

function utf8OfCode(x: number): Buffer {
  return Buffer.from(String.fromCodePoint(x), 'utf8');
}

/** Parses `input` as the firmware does. Throws {@link YojsonError} with Yojson's message. */
export function parseYojson(input: Buffer | string): YValue {
  return new Reader(typeof input === 'string' ? Buffer.from(input, 'utf8') : input).document();
}

/**
 * Plain JS value of a parsed document for code that validates plain objects. Byte strings are decoded as UTF-8
 * (`utf8`) or kept one char per byte (`latin1`); duplicate keys: the last wins; integers become numbers.
 */
export function toPlain(v: YValue, strings: 'utf8' | 'latin1' = 'utf8'): unknown {
  const str = (s: string): string => (strings === 'utf8' ? Buffer.from(s, 'latin1').toString('utf8') : s);
  switch (v.t) {
    case 'null':
      return null;
    case 'bool':
    case 'float':
      return v.v;
    case 'int':
      return Number(v.v);
    case 'intlit':
      return Number(v.v);
    case 'string':
      return str(v.v);
    case 'list':
      return v.v.map((x) => toPlain(x, strings));
    case 'assoc': {
      const out: Record<string, unknown> = {};
      for (const [k, x] of v.v) {
        Object.defineProperty(out, str(k), { value: toPlain(x, strings), enumerable: true, writable: true, configurable: true });
      }
      return out;
    }
  }
}
