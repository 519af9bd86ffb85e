/**
 * Small text formatting helpers for operator output: relative times ("12s ago", "in 48s"), short durations and
 * aligned plain-text tables. Pure functions; no colours (output is read in terminals, mails and log files alike).
 */

/** `90` → `1m30s`, `3600` → `1h`, `0.4` → `0.4s`. Negative values are shown as their absolute value. */
export function shortDuration(seconds: number): string {
  const s = Math.abs(seconds);
  if (s < 10 && !Number.isInteger(s)) return `${Math.round(s * 10) / 10}s`;
  let rest = Math.round(s);
  if (rest < 60) return `${rest}s`;
  const parts: string[] = [];
  const d = Math.floor(rest / 86_400);
  rest -= d * 86_400;
  const h = Math.floor(rest / 3600);
  rest -= h * 3600;
  const m = Math.floor(rest / 60);
  const sec = rest - m * 60;
  if (d) parts.push(`${d}d`);
  if (h) parts.push(`${h}h`);
  if (m && !d) parts.push(`${m}m`);
  if (sec && !d && !h) parts.push(`${sec}s`);
  return parts.join('');
}

/**
 * An ISO time relative to `now`: `12s ago`, `in 48s`, `now` (within a second); `-` for null; the raw text when it
 * is not a date (the daemon's output is shown, not judged).
 */
export function relativeTime(iso: string | null | undefined, now: Date): string {
  if (iso === null || iso === undefined) return '-';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const diff = (t - now.getTime()) / 1000;
  if (Math.abs(diff) < 1) return 'now';
  return diff < 0 ? `${shortDuration(-diff)} ago` : `in ${shortDuration(diff)}`;
}

/**
 * Renders rows as columns separated by two spaces, the first row being the header. Cells are left-aligned; the last
 * column is not padded (no trailing blanks).
 */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** `alpha` → `alpha`; a value with blanks or quotes is JSON-quoted so the line stays parseable by eye and by grep. */
export function scalar(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (typeof value === 'string') return /^[\w.:@/~+-]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}
