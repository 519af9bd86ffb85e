/**
 * Streaming comparison of two backups' entries, in constant memory: both files are in the firmware's KV order
 * (compareBackupPaths), so a merge-join walks them side by side. Used to detect writes that raced a sync (device
 * backup before vs. just before restore), and to verify a restore (namespace as merged, everything else as before).
 */
import { InternalError } from '../errors.js';
import { compareBackupPaths } from '../backup/format.js';
import type { BackupEntry } from '../backup/reader.js';

export interface BackupDiff {
  /** Entries in `before` and not in `after`. */
  missing: number;
  /** Entries in `after` and not in `before`. */
  added: number;
  /** Entries in both with different values. */
  changed: number;
  /** Entries compared in scope (on the `before` side). */
  compared: number;
  /** The first few differing paths, for the log (paths carry ids only, no secrets). */
  samples: { path: string; kind: DiffKind }[];
}

const MAX_SAMPLES = 20;

export function isEmptyDiff(d: BackupDiff): boolean {
  return d.missing === 0 && d.added === 0 && d.changed === 0;
}

export type DiffKind = 'missing' | 'added' | 'changed';

/**
 * Compares the in-scope entries of two entry streams. `onDiff`, when given, is called for every difference (not only
 * the sampled ones), in firmware order. Throws InternalError when either stream is not in firmware order (a
 * merge-join over unordered input would report false differences).
 */
export async function diffEntries(
  before: AsyncIterable<BackupEntry>,
  after: AsyncIterable<BackupEntry>,
  inScope: (path: string) => boolean,
  onDiff?: (path: string, kind: DiffKind) => void,
): Promise<BackupDiff> {
  const diff: BackupDiff = { missing: 0, added: 0, changed: 0, compared: 0, samples: [] };
  const a = ordered(filtered(before, inScope), 'first');
  const b = ordered(filtered(after, inScope), 'second');
  let x = await a.next();
  let y = await b.next();
  const note = (path: string, kind: DiffKind) => {
    diff[kind]++;
    onDiff?.(path, kind);
    if (diff.samples.length < MAX_SAMPLES) diff.samples.push({ path, kind });
  };
  while (!x.done || !y.done) {
    if (y.done || (!x.done && compareBackupPaths(x.value.path, y.value.path) < 0)) {
      diff.compared++;
      note(x.value!.path, 'missing');
      x = await a.next();
    } else if (x.done || compareBackupPaths(x.value.path, y.value.path) > 0) {
      note(y.value.path, 'added');
      y = await b.next();
    } else {
      diff.compared++;
      if (!x.value.value.equals(y.value.value)) note(x.value.path, 'changed');
      x = await a.next();
      y = await b.next();
    }
  }
  return diff;
}

async function* filtered(entries: AsyncIterable<BackupEntry>, inScope: (path: string) => boolean): AsyncGenerator<BackupEntry> {
  for await (const e of entries) if (inScope(e.path)) yield e;
}

async function* ordered(entries: AsyncIterable<BackupEntry>, which: string): AsyncGenerator<BackupEntry> {
  let prev: string | undefined;
  for await (const e of entries) {
    if (prev !== undefined && compareBackupPaths(prev, e.path) >= 0) {
      throw new InternalError(`the ${which} backup is not in firmware order at ${e.path} (after ${prev})`);
    }
    prev = e.path;
    yield e;
  }
}
