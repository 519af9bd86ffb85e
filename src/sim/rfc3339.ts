/**
 * Timestamps as the firmware reads them (`provision.systemTime`, `PUT /config/time`, restore `systemTime`;
 * FACTS-system §6.4): non-strict `Ptime.of_rfc3339`, then "offset must be 0".
 * - date/time separator `T`, `t` or a space; zone `Z`, `z`, `+hh:mm`, `+hhmm`, `+hh`; `-00:00` means "unknown" (UTC);
 * - fractional seconds of any length (beyond 12 digits truncated); a seconds value of 60 is the next second;
 * - errors: `Failed to decode timestamp: <ptime error> at position a to b.` and
 *   `Error while parsing timestamp. Offset must be 0.` (neither carries the JSON-schema prefix).
 */
import { err, ok, type Result } from './json-decode.js';

type Ptime = 'Invalid_stamp' | 'Eoi' | 'Trailing_input' | { exp: string[] };

class PtimeError extends Error {
  constructor(
    readonly start: number,
    readonly stop: number,
    readonly kind: Ptime,
  ) {
    super('ptime');
  }
}

const DIGITS = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];
const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';

function digits(s: string, pos: number, count: number): number {
  const max = s.length - 1;
  const stop = pos + count - 1;
  if (stop > max) throw new PtimeError(max, max, 'Eoi');
  let n = 0;
  for (let k = pos; k <= stop; k++) {
    if (!isDigit(s[k])) throw new PtimeError(k, k, { exp: DIGITS });
    n = n * 10 + Number(s[k]);
  }
  return n;
}

function char(s: string, pos: number, chars: string[]): string {
  const max = s.length - 1;
  if (pos > max) throw new PtimeError(max, max, 'Eoi');
  if (!chars.includes(s[pos]!)) throw new PtimeError(pos, pos, { exp: chars });
  return s[pos]!;
}

/** Fractional seconds starting at `pos` (a digit is required); returns picoseconds as a fraction and the stop index. */
function fraction(s: string, pos: number): { frac: number; next: number } {
  const max = s.length - 1;
  if (pos > max) throw new PtimeError(max, max, 'Eoi');
  if (!isDigit(s[pos])) throw new PtimeError(pos, pos, { exp: DIGITS });
  let k = pos;
  while (k <= max && isDigit(s[k])) k++;
  if (k > max) throw new PtimeError(max, max, 'Eoi'); // a zone must follow
  return { frac: Number(`0.${s.slice(pos, Math.min(k, pos + 12))}`), next: k };
}

/** The zone at `pos`: offset seconds (undefined for `-00:00`) and the index of its last character. */
function zone(s: string, pos: number): { offset: number | undefined; last: number } {
  const c = char(s, pos, ['+', '-', 'Z', 'z']);
  if (c === 'Z' || c === 'z') return { offset: 0, last: pos };
  const sign = c === '+' ? 1 : -1;
  const hhPos = pos + 1;
  const hh = digits(s, hhPos, 2);
  const next = hhPos + 2;
  let mm = 0;
  let mmPos = hhPos;
  if (next <= s.length - 1 && (s[next] === ':' || isDigit(s[next]))) {
    mmPos = s[next] === ':' ? hhPos + 3 : hhPos + 2;
    mm = digits(s, mmPos, 2);
  }
  if (hh > 23) throw new PtimeError(hhPos, hhPos + 1, 'Invalid_stamp');
  if (mm > 59) throw new PtimeError(mmPos, mmPos + 1, 'Invalid_stamp');
  const secs = hh * 3600 + mm * 60;
  return { offset: secs === 0 && sign === -1 ? undefined : sign * secs, last: mmPos + 1 };
}

const daysIn = (y: number, m: number): number => [31, y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]!;
function utcMs(y: number, mo: number, d: number, hh: number, mi: number, ss: number): number {
  const dt = new Date(0);
  dt.setUTCFullYear(y, mo - 1, d);
  dt.setUTCHours(hh, mi, ss, 0);
  return dt.getTime();
}
const PTIME_MIN = utcMs(0, 1, 1, 0, 0, 0);
const PTIME_MAX = utcMs(9999, 12, 31, 23, 59, 59) + 999;

/** `Ptime.of_rfc3339` (non-strict): the instant in ms and the offset (undefined = unknown), or the ptime error. */
function ofRfc3339(s: string): { ms: number; offset: number | undefined } {
  if (s.length === 0) throw new PtimeError(0, 0, 'Eoi');
  const y = digits(s, 0, 4);
  char(s, 4, ['-']);
  const mo = digits(s, 5, 2);
  char(s, 7, ['-']);
  const d = digits(s, 8, 2);
  char(s, 10, ['T', 't', ' ']);
  const hh = digits(s, 11, 2);
  char(s, 13, [':']);
  const mi = digits(s, 14, 2);
  char(s, 16, [':']);
  const ss = digits(s, 17, 2);
  const decide = char(s, 19, ['.', '+', '-', 'Z', 'z']);
  let frac = 0;
  let tzPos = 19;
  if (decide === '.') ({ frac, next: tzPos } = fraction(s, 20));
  const { offset, last } = zone(s, tzPos);
  const valid = mo >= 1 && mo <= 12 && d >= 1 && d <= daysIn(y, mo) && hh <= 23 && mi <= 59 && ss <= 60;
  const ms = valid ? utcMs(y, mo, d, hh, mi, 0) + ss * 1000 - (offset ?? 0) * 1000 : Number.NaN;
  if (!valid || ms < PTIME_MIN || ms + frac * 1000 > PTIME_MAX) throw new PtimeError(0, last, 'Invalid_stamp');
  if (last !== s.length - 1) throw new PtimeError(last + 1, last + 1, 'Trailing_input');
  return { ms: ms + Math.floor(frac * 1000), offset };
}

const PREFIX = 'Failed to decode timestamp: ';
const MARGIN = 78;

/** `Ptime.pp_rfc3339_error` inside the firmware's message, laid out as OCaml's Format does at the default margin. */
function describe(kind: Ptime): string {
  if (kind === 'Invalid_stamp') return 'invalid time stamp';
  if (kind === 'Eoi') return 'unexpected end of input';
  if (kind === 'Trailing_input') return 'trailing input';
  // A box opened after the prefix: break hints become spaces, or a newline indented to the box when a line would
  // pass the margin.
  const words = ['expected', 'a', 'character', 'in:', ...kind.exp.map((c) => `'${c}'`)];
  const indent = PREFIX.length;
  let col = indent + words[0]!.length;
  let out = words[0]!;
  for (const w of words.slice(1)) {
    if (col + 1 + w.length > MARGIN) {
      out += '\n' + ' '.repeat(indent) + w;
      col = indent + w.length;
    } else {
      out += ' ' + w;
      col += 1 + w.length;
    }
  }
  return out;
}

/** Decodes a firmware timestamp: the instant, or the firmware's 400 message. */
export function decodeTime(s: string): Result<Date> {
  try {
    const { ms, offset } = ofRfc3339(s);
    if (offset !== undefined && offset !== 0) return err('Error while parsing timestamp. Offset must be 0.');
    return ok(new Date(ms));
  } catch (e) {
    if (!(e instanceof PtimeError)) throw e;
    return err(`${PREFIX}${describe(e.kind)} at position ${e.start} to ${e.stop}.`);
  }
}
