/**
 * Joins a byte stream's small chunks into larger ones before the stages that pay per chunk. A download over TLS
 * arrives in chunks of at most 16 KiB (one TLS record each): a 20k-key snapshot (8.5 MB) is about 500 of them, and
 * each cost a hand-over to the streamed check (util/byte-tap.ts: a promise round trip, a wake-up of its reader), a
 * file write on libuv's thread pool and the stream machinery around both, on the event loop that also serves the
 * gateway (docs/benchmarks.md, "Busy site: daemon B's CPU during a sync").
 *
 * Contract: the bytes out are the bytes in, in order, and nothing else. What arrived in one event-loop turn goes on
 * together at the end of that turn (a chunk already `minBytes` long goes on at once, uncopied; gathered chunks go on
 * as soon as they reach `minBytes`): nothing waits for bytes that have not arrived, so a slow or stalled source's bytes
 * reach the file and the check as before, and the joining happens exactly when the event loop is behind (several
 * records per turn). At most `minBytes` plus one chunk are held. A stream that fails or is destroyed passes on
 * nothing it still held: downstream sees the failure, never a partial tail presented as whole.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** What the snapshot download gathers before each hand-over (16 TLS records). */
export const DOWNLOAD_CHUNK_BYTES = 256 * 1024;

/** A pipeline stage that joins the chunks of one event-loop turn, up to `minBytes` each (see the module's contract). */
export function coalesceChunks(minBytes: number): Transform {
  if (!Number.isSafeInteger(minBytes) || minBytes < 1) throw new RangeError(`minBytes must be a positive integer, got ${minBytes}`);
  let held: Buffer[] = [];
  let heldBytes = 0;
  let turnEnd: NodeJS.Immediate | undefined;
  const take = (): Buffer | undefined => {
    if (turnEnd !== undefined) clearImmediate(turnEnd);
    turnEnd = undefined;
    if (heldBytes === 0) return undefined;
    const out = held.length === 1 ? held[0]! : Buffer.concat(held, heldBytes);
    held = [];
    heldBytes = 0;
    return out;
  };
  const stage = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      if (chunk.length > 0) {
        held.push(chunk);
        heldBytes += chunk.length;
      }
      if (heldBytes >= minBytes) return cb(null, take());
      // The rest goes on at the end of this turn, with whatever else arrives in it.
      turnEnd ??= setImmediate(() => {
        turnEnd = undefined;
        const out = take();
        if (out !== undefined && !stage.destroyed) stage.push(out);
      });
      cb();
    },
    flush(cb: TransformCallback) {
      cb(null, take());
    },
    destroy(err: Error | null, cb: (error: Error | null) => void) {
      take();
      cb(err);
    },
  });
  return stage;
}
