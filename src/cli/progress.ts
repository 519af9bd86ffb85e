/**
 * Progress lines for long backup runs: entries and bytes, at most a few times a second, on stderr when it is a
 * terminal; silent otherwise (pipes, logs, tests), so scripted output stays clean.
 */
import type { Progress } from '../backup/transform.js';

export interface ProgressReporter {
  /** Feed it every entry's progress; it decides when to draw. */
  update(p: Progress): void;
  /** Clears the line (call once at the end, success or not). */
  done(): void;
}

export interface ProgressOptions {
  /** Total input bytes, for a percentage. */
  totalBytes?: number;
  /** Draw even when stderr is not a terminal (tests). */
  force?: boolean;
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Minimum milliseconds between two lines. Default 200. */
  intervalMs?: number;
  now?: () => number;
}

/** Formats one progress line (no newline). */
export function formatProgress(label: string, p: Progress, totalBytes?: number): string {
  const pct = totalBytes && totalBytes > 0 ? ` (${Math.min(100, Math.floor((p.bytesRead / totalBytes) * 100))}%)` : '';
  const total = totalBytes ? ` of ${formatBytes(totalBytes)}` : '';
  return `${label}: ${p.entriesRead} entries, ${formatBytes(p.bytesRead)}${total} read${pct}, ${p.entriesWritten} entries, ${formatBytes(p.bytesWritten)} written`;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** A reporter for `label`; a no-op unless the stream is a terminal (or `force`). */
export function createProgress(label: string, options: ProgressOptions = {}): ProgressReporter {
  const stream = options.stream ?? process.stderr;
  const active = options.force === true || (stream as { isTTY?: boolean }).isTTY === true;
  if (!active) return { update: () => undefined, done: () => undefined };
  const interval = options.intervalMs ?? 200;
  const now = options.now ?? Date.now;
  let last = 0;
  let drawn = false;
  return {
    update(p) {
      const t = now();
      if (t - last < interval) return;
      last = t;
      drawn = true;
      stream.write(`\r\x1b[K${formatProgress(label, p, options.totalBytes)}`);
    },
    done() {
      if (drawn) stream.write('\r\x1b[K');
      drawn = false;
    },
  };
}
