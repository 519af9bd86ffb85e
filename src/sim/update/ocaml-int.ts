/**
 * OCaml's `int_of_string` on a 64-bit build, which the firmware uses to read an update image's version
 * (FACTS-system §1.4 step 4): optional `-`/`+`, prefixes `0x` `0o` `0b` (unsigned) and `0u` (unsigned decimal),
 * `_` allowed after the first digit, 63-bit range. So `"+5"`, `"0x9"` and `"1_0"` are numbers; `""`, `"5 "` and
 * `"9999999999999999999"` are not.
 */

const INT_BITS = 63n;

function digit(c: string | undefined): number {
  if (c === undefined) return -1;
  const code = c.charCodeAt(0);
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 65 && code <= 70) return code - 55;
  if (code >= 97 && code <= 102) return code - 87;
  return -1;
}

/** The value as a (63-bit, wrapped) bigint, or undefined where OCaml raises `Failure "int_of_string"`. */
export function ocamlIntOfString(s: string): bigint | undefined {
  let i = 0;
  let negative = false;
  if (s[i] === '-') {
    negative = true;
    i++;
  } else if (s[i] === '+') i++;
  let base = 10;
  let signed = true;
  if (s[i] === '0') {
    const p = s[i + 1];
    const prefixed = p === 'x' || p === 'X' ? 16 : p === 'o' || p === 'O' ? 8 : p === 'b' || p === 'B' ? 2 : p === 'u' || p === 'U' ? 10 : 0;
    if (prefixed !== 0) {
      base = prefixed;
      signed = false;
      i += 2;
    }
  }
  const first = digit(s[i]);
  if (first < 0 || first >= base) return undefined;
  const b = BigInt(base);
  const uintMax = (1n << 64n) - 1n;
  let res = BigInt(first);
  for (i++; i < s.length; i++) {
    if (s[i] === '_') continue;
    const d = digit(s[i]);
    if (d < 0 || d >= base) break;
    if (res > uintMax / b) return undefined;
    res = res * b + BigInt(d);
    if (res > uintMax) return undefined;
  }
  if (i !== s.length) return undefined;
  const limit = 1n << (INT_BITS - 1n);
  if (signed ? (negative ? res > limit : res >= limit) : res >= 1n << INT_BITS) return undefined;
  return BigInt.asIntN(Number(INT_BITS), negative ? -res : res);
}
