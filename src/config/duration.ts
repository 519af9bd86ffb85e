/**
 * Durations as operators write them in the config and on the command line: `1500ms`, `30s`, `5m`, `1h`, `2d`,
 * or a sequence of those (`1h30m`). A bare number is refused: `60` could mean seconds or milliseconds.
 */
import { InputInvalidError } from '../errors.js';

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const WHOLE = /^(?:\d+(?:ms|s|m|h|d))+$/;
const PART = /(\d+)(ms|s|m|h|d)/g;

/** Milliseconds for `text`, or undefined when it is not a duration. Pure; never throws. */
export function tryParseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (!WHOLE.test(trimmed)) return undefined;
  let total = 0;
  for (const m of trimmed.matchAll(PART)) {
    total += Number(m[1]) * (UNIT_MS[m[2] ?? ''] ?? Number.NaN);
  }
  return Number.isSafeInteger(total) ? total : undefined;
}

/** Milliseconds for `text`; throws {@link InputInvalidError} naming `what` (e.g. `--max-lag`) when it is not a duration. */
export function parseDuration(text: string, what = 'duration'): number {
  const ms = tryParseDuration(text);
  if (ms === undefined) {
    throw new InputInvalidError(`${what} "${text}" is not a duration (use e.g. 1500ms, 30s, 5m, 1h, 1h30m)`);
  }
  return ms;
}

/** The shortest exact spelling of `ms` in the units above (`90000` → `1m30s`); `0` → `0s`. For status output. */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) return `${ms}ms`;
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const unit of ['d', 'h', 'm', 's', 'ms'] as const) {
    const size = UNIT_MS[unit] ?? 1;
    const n = Math.floor(rest / size);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * size;
    }
  }
  return out;
}
