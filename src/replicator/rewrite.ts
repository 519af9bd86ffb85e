/**
 * The one device-backup rewrite the daemon needs, in three uses: apply a snapshot (device entries outside the
 * namespace + the snapshot's namespace entries less its administrators), strip a namespace's administrators (device
 * entries less those users), and put them back on promote (device entries + the administrators from the last
 * snapshot). A streaming merge-join in firmware order, one entry in memory at a time; the output keeps the base's
 * header and key, so it restores onto the base's device. The manifest entry is never written.
 */
import { compareBackupPaths } from '../backup/format.js';
import { classifyPath } from '../backup/paths.js';
import type { BackupEntry, OpenBackupOptions } from '../backup/reader.js';
import { closeAll, createOutputWriter, openSource, orderedEntries, withSink, type BackupSource } from '../backup/transform.js';
import type { BackupReader } from '../backup/reader.js';

export interface RewriteOptions {
  base: { source: BackupSource; open: OpenBackupOptions; keep: (path: string) => boolean };
  overlay?: { source: BackupSource; open: OpenBackupOptions; select: (path: string) => boolean };
  /** Output file (atomic: temp, fsync, rename; removed on failure). */
  out: string;
  /**
   * Called for every base entry not written, with whether the overlay holds its path (selected or not): a merge learns
   * what its restore removes in the same pass.
   */
  onDropped?: (path: string, inOverlay: boolean) => void;
}

export interface RewriteSummary {
  keptFromBase: number;
  droppedFromBase: number;
  fromOverlay: number;
  entriesWritten: number;
}

/** Throws the readers' errors, BackupOutOfOrderError, OutputExistsError; leaves no output file after a throw. */
export async function rewriteBackup(o: RewriteOptions): Promise<RewriteSummary> {
  let base: BackupReader | undefined;
  let overlay: BackupReader | undefined;
  try {
    base = await openSource(o.base.source, o.base.open);
    if (o.overlay) overlay = await openSource(o.overlay.source, o.overlay.open);
    const [b, ov] = [base, overlay];
    return await withSink(o.out, {}, async (stream) => {
      const writer = await createOutputWriter(stream, b, b, {});
      try {
        const s: RewriteSummary = { keptFromBase: 0, droppedFromBase: 0, fromOverlay: 0, entriesWritten: 0 };
        const baseIt = selected(orderedEntries(b, 'device backup'), () => true);
        // The overlay is walked whole (less its manifest) so a base entry's path is matched even when it is not selected.
        const ovIt = ov && o.overlay ? selected(orderedEntries(ov, 'overlay backup'), () => true) : empty();
        const pick = o.overlay?.select ?? (() => true);
        let x = await baseIt.next();
        let y = await ovIt.next();
        while (!x.done || !y.done) {
          const cmp = x.done ? 1 : y.done ? -1 : compareBackupPaths(x.value.path, y.value.path);
          if (cmp <= 0) {
            const e = x.value!;
            // On equal paths a selected overlay entry replaces the base's; an unselected one leaves it to `keep`.
            const replaced = cmp === 0 && pick(y.value!.path);
            if (!replaced && o.base.keep(e.path)) {
              await writer.writeEntry(e.path, e.value);
              s.keptFromBase++;
            } else {
              s.droppedFromBase++;
              o.onDropped?.(e.path, cmp === 0);
            }
            x = await baseIt.next();
          } else {
            if (pick(y.value!.path)) {
              await writer.writeEntry(y.value!.path, y.value!.value);
              s.fromOverlay++;
            }
            y = await ovIt.next();
          }
        }
        await writer.finish();
        s.entriesWritten = writer.entriesWritten;
        return s;
      } catch (err) {
        writer.abort();
        throw err;
      }
    });
  } finally {
    await closeAll(base, overlay);
  }
}

async function* selected(entries: AsyncIterable<BackupEntry>, select: (path: string) => boolean): AsyncGenerator<BackupEntry> {
  for await (const e of entries) {
    if (classifyPath(e.path).kind === 'manifest') continue;
    if (select(e.path)) yield e;
  }
}

async function* empty(): AsyncGenerator<BackupEntry> {}

/** Predicate: the path is the user `<ns>~<id>` for one of `ids`. */
export function isUserOf(namespace: string, ids: readonly string[]): (path: string) => boolean {
  const set = new Set(ids);
  return (p) => {
    const c = classifyPath(p);
    return c.kind === 'namespace-user' && c.namespace === namespace && set.has(c.userId);
  };
}
