/**
 * The one device-backup rewrite the daemon needs, in three uses: apply a snapshot (device entries outside the
 * namespace + the snapshot's namespace entries less its administrators), strip a namespace's administrators (device
 * entries less those users), and put them back on promote (device entries + the administrators from the last
 * snapshot). A streaming merge-join in firmware order; the output keeps the base's header and key, so it restores onto
 * the base's device. The overlay's entries taken are re-sealed under that key on a worker thread in batches
 * (src/backup/reseal-pipeline.ts: a few batches in memory, output order kept). The manifest entry is never written.
 */
import { gcmKey, gcmOpen } from '../backup/crypto.js';
import { AD, compareBackupPaths } from '../backup/format.js';
import { type PipelineTuning, ResealPipeline } from '../backup/reseal-pipeline.js';
import type { ResealKeys } from '../backup/reseal-worker.js';
import type { Resealer } from '../backup/resealer.js';
import { BackupCorruptedError, type NhrErrorOptions } from '../errors.js';
import { classifyPath, MANIFEST_PATH } from '../backup/paths.js';
import { type BackupEntry, type OpenBackupOptions, valueHead, valueLength } from '../backup/reader.js';
import {
  closeAll,
  createOutputWriter,
  type EntryCursor,
  MergedCursor,
  openSource,
  ReaderCursor,
  withSink,
  type BackupSource,
} from '../backup/transform.js';
import type { BackupReader } from '../backup/reader.js';

export interface RewriteOptions {
  /** `source` may be a reader opened already (e.g. while waiting for something else); it is closed here. */
  base: { source: BackupSource | BackupReader; open: OpenBackupOptions; keep: (path: string) => boolean };
  overlay?: { source: BackupSource; open: OpenBackupOptions; select: (path: string) => boolean };
  /**
   * Instead of `overlay`: several, each contributing only the paths `within` it (disjoint, e.g. one namespace each: a
   * coalesced merge of several snapshots), walked together in firmware order; `select` as `overlay`'s within them.
   */
  overlays?: readonly OverlaySpec[];
  /** Output file (atomic: temp, fsync, rename; removed on failure). */
  out: string;
  /**
   * Called for every base entry not written, with whether the overlay holds its path (selected or not): a merge learns
   * what its restore removes in the same pass.
   */
  onDropped?: (path: string, inOverlay: boolean) => void;
  /**
   * Called for every overlay entry written, with what the base held at its path: `same` (the same stored write: equal
   * value heads and lengths, reader.ts valueHead), `changed` (another value, or one whose head was not read: paths over
   * 113 bytes), `none` (nothing). Given, both sides are read with their value heads (BatchOptions.heads).
   */
  onOverlay?: (path: string, base: 'same' | 'changed' | 'none') => void;
  /** How the overlay's entries are re-sealed off the event loop (reseal-pipeline.ts); default DEFAULT_TUNING. */
  reseal?: PipelineTuning;
  /** The thread to re-seal on (the daemon's, started; left running). Absent: the merge starts its own if it fills a batch. */
  resealer?: Resealer;
}

export interface OverlaySpec {
  source: BackupSource;
  open: OpenBackupOptions;
  within: (path: string) => boolean;
  select: (path: string) => boolean;
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
  const many: BackupReader[] = [];
  try {
    base = isReader(o.base.source) ? o.base.source : await openSource(o.base.source, o.base.open);
    if (o.overlay) overlay = await openSource(o.overlay.source, o.overlay.open);
    for (const spec of o.overlays ?? []) many.push(await openSource(spec.source, spec.open));
    const [b, ov] = [base, overlay];
    return await withSink(o.out, {}, async (stream) => {
      const writer = await createOutputWriter(stream, b, b, {});
      const specs: readonly OverlaySpec[] = ov && o.overlay ? [{ ...o.overlay, within: () => true }] : (o.overlays ?? []);
      const readers = ov ? [ov] : many;
      const out = new ResealPipeline(writer, b, resealKeys(b, readers), specs.map((spec) => whereOf(spec.source)), o.reseal, o.resealer);
      try {
        const s = await join(o, b, readers, specs, out);
        await out.flush();
        await writer.finish();
        s.entriesWritten = writer.entriesWritten;
        return s;
      } catch (err) {
        writer.abort();
        throw err;
      } finally {
        await out.close();
      }
    });
  } finally {
    await closeAll(base, overlay, ...many);
  }
}

/**
 * The merge-join in firmware order: base entries kept go out sealed as the device wrote them (the output is under the
 * base's key); selected overlay entries are read by their path only here and re-sealed, authenticated whole, by `out`
 * (off the event loop); every other overlay entry is authenticated here as before.
 */
async function join(o: RewriteOptions, b: BackupReader, readers: readonly BackupReader[], specs: readonly OverlaySpec[], out: ResealPipeline): Promise<RewriteSummary> {
  const s: RewriteSummary = { keptFromBase: 0, droppedFromBase: 0, fromOverlay: 0, entriesWritten: 0 };
  // Cursors, not generators: a whole batch of buffered entries is joined without a wait (one await per batch).
  const notManifest = (e: BackupEntry) => e.path !== MANIFEST_PATH;
  // The base's values are never used: its entries are copied sealed (the output is under its key) or dropped, so
  // they are read by their path only (docs/backup-format.md, "Entries read by their path only").
  const heads = o.onOverlay !== undefined;
  const x = new ReaderCursor(b, 'device backup', notManifest, { wantsValue: () => false, heads });
  // The overlay is walked whole (less its manifest) so a base entry's path is matched even when it is not selected.
  const cursors = specs.map((spec, i) => {
    const taken = (p: string) => p !== MANIFEST_PATH && spec.within(p) && spec.select(p);
    const keep = (e: BackupEntry) => notManifest(e) && spec.within(e.path);
    return new ReaderCursor(readers[i]!, 'overlay backup', keep, { wantsValue: (p) => !taken(p), heads }, vouchFor(readers[i]!, specs[i]!));
  });
  const merged = cursors.length === 1 ? undefined : new MergedCursor(cursors);
  const y: EntryCursor = merged ?? cursors[0]!;
  const pick = (p: string) => specs.some((spec) => spec.within(p) && spec.select(p));
  // The base entry the next overlay entry replaces (same path), for onOverlay.
  let replacedBase: BackupEntry | undefined;
  await x.advance();
  await y.advance();
  for (;;) {
    const xe = x.head;
    const ye = y.head;
    if (xe === undefined && ye === undefined) break;
    const cmp = xe === undefined ? 1 : ye === undefined ? -1 : compareBackupPaths(xe.path, ye.path);
    let wait: Promise<void> | undefined;
    if (cmp <= 0) {
      const e = xe!;
      // On equal paths a selected overlay entry replaces the base's; an unselected one leaves it to `keep`.
      const replaced = cmp === 0 && pick(ye!.path);
      if (!replaced && o.base.keep(e.path)) {
        await out.addBase(e);
        s.keptFromBase++;
      } else {
        s.droppedFromBase++;
        o.onDropped?.(e.path, cmp === 0);
        if (replaced) replacedBase = e;
      }
      wait = x.advance();
    } else {
      if (pick(ye!.path)) {
        if (o.onOverlay) o.onOverlay(ye!.path, baseHeld(replacedBase, ye!));
        await out.addOverlay(ye!, merged ? merged.source : 0);
        s.fromOverlay++;
      }
      replacedBase = undefined;
      wait = y.advance();
    }
    if (wait) await wait;
  }
  return s;
}

/** The re-seal keys: each overlay's (opens its fields) and the base's (the output's). KeyObjects: no raw copy kept. */
/** onOverlay's verdict on overlay entry `y` given the base entry its path replaced (if any). */
function baseHeld(base: BackupEntry | undefined, y: BackupEntry): 'same' | 'changed' | 'none' {
  if (base === undefined || base.path !== y.path) return 'none';
  const a = valueHead(base);
  const b = valueHead(y);
  return a !== undefined && b !== undefined && a.equals(b) && valueLength(base) === valueLength(y) ? 'same' : 'changed';
}

function resealKeys(b: BackupReader, overlays: readonly BackupReader[]): ResealKeys {
  return { ad: AD.entry, open: overlays.map((r) => gcmKey(r.backupKey)), seal: gcmKey(b.backupKey) };
}

function whereOf(source: BackupSource): NhrErrorOptions {
  return typeof source === 'string' ? { path: source } : {};
}

/** An overlay entry read by its path only that breaks the order is authenticated first: a damaged one is reported as such. */
function vouchFor(r: BackupReader, spec: OverlaySpec): (e: BackupEntry) => void {
  return (e) => {
    try {
      gcmOpen(gcmKey(r.backupKey), AD.entry, e.sealed!).fill(0);
    } catch (cause) {
      throw new BackupCorruptedError(`entry ${e.index} at offset ${e.offset} failed authentication`, { ...whereOf(spec.source), offset: e.offset, entryIndex: e.index, cause });
    }
  };
}

function isReader(s: BackupSource | BackupReader): s is BackupReader {
  return typeof s === 'object' && s !== null && 'header' in s && 'entries' in s && typeof (s as BackupReader).entries === 'function';
}

/** Predicate: the path is the user `<ns>~<id>` for one of `ids`. */
export function isUserOf(namespace: string, ids: readonly string[]): (path: string) => boolean {
  const set = new Set(ids);
  // Only these paths can be such a user: the others (a namespace's keys, nearly all its entries) skip classifyPath.
  const prefix = `/authentication/${namespace}~`;
  return (p) => {
    if (!p.startsWith(prefix)) return false;
    const c = classifyPath(p);
    return c.kind === 'namespace-user' && c.namespace === namespace && set.has(c.userId);
  };
}
