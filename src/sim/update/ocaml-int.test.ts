import { describe, expect, it } from 'vitest';
import { ocamlIntOfString } from './ocaml-int.js';

describe("OCaml int_of_string (update image versions)", () => {
  it('reads decimal, signed, prefixed and underscored numbers', () => {
    expect(ocamlIntOfString('5')).toBe(5n);
    expect(ocamlIntOfString('-1')).toBe(-1n);
    expect(ocamlIntOfString('+5')).toBe(5n);
    expect(ocamlIntOfString('0x1F')).toBe(31n);
    expect(ocamlIntOfString('0o17')).toBe(15n);
    expect(ocamlIntOfString('0b101')).toBe(5n);
    expect(ocamlIntOfString('0u42')).toBe(42n);
    expect(ocamlIntOfString('1_000')).toBe(1000n);
    expect(ocamlIntOfString('007')).toBe(7n);
    expect(ocamlIntOfString('4611686018427387903')).toBe(4611686018427387903n); // max_int
    expect(ocamlIntOfString('-4611686018427387904')).toBe(-4611686018427387904n); // min_int
    expect(ocamlIntOfString('0x7FFFFFFFFFFFFFFF')).toBe(-1n); // unsigned forms wrap to 63 bits
  });

  it('refuses what OCaml refuses', () => {
    for (const s of ['', '-', '+', '_1', 'x', '5 ', ' 5', '5.0', '0x', '0xG', '1e3', '4611686018427387904', '-4611686018427387905', '0x8000000000000000', '١']) {
      expect(ocamlIntOfString(s), JSON.stringify(s)).toBeUndefined();
    }
  });
});
