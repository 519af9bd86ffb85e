/**
 * The output side of a merge whose overlay entries are re-sealed off the event loop: entries arrive in output order
 * (base entries copied sealed, overlay entries as read by their path only), overlay fields go out in batches to a
 * worker thread (resealer.ts), and everything reaches the writer in the order it arrived. Bounded memory: at most
 * IN_FLIGHT segments wait, each of at most BATCH overlay entries and SEGMENT_MAX entries in all.
 *
 * Two cores: the thread seals, the event loop reads, orders and writes. A batch that finds the thread still starting
 * (or holding `threadDepth` batches) is re-sealed here (same code), so nothing waits for a start-up. A merge whose
 * overlay never fills a batch never uses the thread (nor starts one).
 */
import { BackupCorruptedError, InternalError, type NhrErrorOptions } from '../errors.js';
import { resealFields, type ResealKeys, type ResealResult } from './reseal-worker.js';
import { Resealer, type ResealBatch } from './resealer.js';
import type { BackupEntry, BackupReader } from './reader.js';
import type { BackupWriter } from './writer.js';

export interface PipelineTuning {
  /** Overlay entries per batch (and the threshold below which no thread starts). */
  batch: number;
  /** Segments waiting for their batch before the caller waits for the oldest. */
  inFlight: number;
  /** Batches the thread may hold before the next is re-sealed in-thread. */
  threadDepth: number;
  /** Every full batch goes to the thread, waiting for its start-up and for it (tests: the thread's path, always). */
  threadOnly?: boolean;
}

/**
 * Measured (docs/benchmarks.md, "The merge on a second core"): every full batch on the thread once it runs beat sharing
 * the sealing with the event loop (threadDepth 1: the event loop sealing a batch is an event loop not reading and
 * writing), by about a fifth of the merge.
 */
export const DEFAULT_TUNING: PipelineTuning = { batch: 256, inFlight: 8, threadDepth: 8 };
/** Entries in one segment at most: base entries between two overlay entries are held only this far. */
const SEGMENT_MAX = 4096;

type Item = { base: BackupEntry } | { overlay: BackupEntry; at: number; len: number };

interface Segment {
  items: Item[];
  overlay: BackupEntry[];
  keyOf: number[];
  bytes: number;
  done?: Promise<{ fields: Buffer; result: ResealResult }>;
}

export class ResealPipeline {
  private current = newSegment();
  private readonly pending: Segment[] = [];
  private readonly thread: Resealer;
  private readonly ownThread: boolean;
  private onThread = 0;

  /**
   * `keys.open[i]` opens overlay `i`'s fields, `keys.seal` is the writer's key; `where[i]` names overlay `i` in errors.
   * `thread`: a running one to use (the daemon's; left running), else one of its own is started when a batch fills.
   * Call close() in a finally.
   */
  constructor(
    private readonly writer: BackupWriter,
    private readonly base: BackupReader,
    private readonly keys: ResealKeys,
    private readonly where: readonly NhrErrorOptions[],
    private readonly tuning: PipelineTuning = DEFAULT_TUNING,
    thread?: Resealer,
  ) {
    this.thread = thread ?? new Resealer();
    this.ownThread = thread === undefined;
  }

  /** A base entry, written sealed as it is (BackupWriter.copyEntry) in its turn. */
  async addBase(e: BackupEntry): Promise<void> {
    if (this.pending.length === 0 && this.current.items.length === 0) return this.writer.copyEntry(e, this.base);
    this.current.items.push({ base: e });
    if (this.current.items.length >= SEGMENT_MAX) await this.submit();
  }

  /** An overlay entry (from overlay `k`; read by its path only or whole), re-sealed under the writer's key in its turn. */
  async addOverlay(e: BackupEntry, k: number): Promise<void> {
    const sealed = e.sealed;
    if (sealed === undefined) throw new InternalError(`merge: overlay entry ${e.path} has no sealed field to re-seal`);
    const s = this.current;
    s.items.push({ overlay: e, at: s.bytes, len: sealed.length });
    s.overlay.push(e);
    s.keyOf.push(k);
    s.bytes += sealed.length;
    if (s.overlay.length >= this.tuning.batch || s.items.length >= SEGMENT_MAX) await this.submit();
  }

  /** Everything still held goes to the writer (call before writer.finish()). */
  async flush(): Promise<void> {
    if (this.current.items.length > 0) await this.submit();
    while (this.pending.length > 0) await this.writeOldest();
  }

  /** Ends its own thread (idempotent; a given one is left running); entries still held are dropped (the caller aborts the writer). */
  async close(): Promise<void> {
    this.pending.length = 0;
    if (this.ownThread) await this.thread.close();
  }

  private async submit(): Promise<void> {
    const s = this.current;
    this.current = newSegment();
    if (s.overlay.length > 0) {
      const batch = packBatch(s);
      const full = s.overlay.length >= this.tuning.batch;
      // The daemon's thread too: after a crash, a new one (the merge that met the crash failed; this one need not wait).
      if (full) this.thread.start();
      const t = this.tuning;
      if (full && (t.threadOnly === true || (this.thread.ready && this.onThread < t.threadDepth))) {
        this.onThread++;
        s.done = this.thread.reseal(this.keys, batch).finally(() => this.onThread--);
        // Rejections are read in writeOldest; this keeps one from being reported unhandled meanwhile.
        s.done.catch(() => undefined);
      } else {
        s.done = Promise.resolve({ fields: batch.fields, result: resealFields(this.keys, batch.fields, batch.lengths, batch.keyOf) });
      }
    }
    this.pending.push(s);
    while (this.pending.length > this.tuning.inFlight) await this.writeOldest();
  }

  private async writeOldest(): Promise<void> {
    const s = this.pending.shift()!;
    const r = s.done ? await s.done : undefined;
    if (r && 'failed' in r.result) throw this.failure(s, r.result);
    let i = 0;
    for (const item of s.items) {
      if ('base' in item) {
        await this.writer.copyEntry(item.base, this.base);
        continue;
      }
      const path = (r!.result as { paths: string[] }).paths[i];
      if (path !== item.overlay.path) throw this.mismatch(item.overlay, s.keyOf[i]!);
      i++;
      await this.writer.writeSealedEntry(r!.fields.subarray(item.at, item.at + item.len));
    }
  }

  private failure(s: Segment, r: { failed: number; reason: 'authentication' | 'path' }): BackupCorruptedError {
    const e = s.overlay[r.failed]!;
    const what = r.reason === 'authentication' ? 'failed authentication' : 'has a path that is not an absolute UTF-8 KV path';
    return new BackupCorruptedError(`entry ${e.index} at offset ${e.offset} ${what}`, this.at(e, s.keyOf[r.failed]!));
  }

  private mismatch(e: BackupEntry, k: number): BackupCorruptedError {
    return new BackupCorruptedError(
      `entry ${e.index} at offset ${e.offset}: its authenticated path differs from the path its keystream gave (${e.path})`,
      this.at(e, k),
    );
  }

  private at(e: BackupEntry, k: number): NhrErrorOptions & { offset: number; entryIndex: number } {
    return { ...this.where[k], offset: e.offset, entryIndex: e.index };
  }
}

function newSegment(): Segment {
  return { items: [], overlay: [], keyOf: [], bytes: 0 };
}

/** The segment's overlay fields in one buffer of their own (transferable to the thread). */
function packBatch(s: Segment): ResealBatch {
  const fields = Buffer.allocUnsafeSlow(s.bytes);
  const lengths = new Uint32Array(s.overlay.length);
  let at = 0;
  s.overlay.forEach((e, i) => {
    at += e.sealed!.copy(fields, at);
    lengths[i] = e.sealed!.length;
  });
  return { fields, lengths, keyOf: Uint8Array.from(s.keyOf) };
}
