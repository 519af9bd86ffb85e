/**
 * A second reader of a byte stream on its way somewhere else: a device backup streamed to its file while a merge or an
 * extract reads the same bytes (docs/benchmarks.md, "Snapshot sync"). Reading as the bytes arrive overlaps the host's
 * work with the device's, instead of reading the file again once the device is done.
 *
 * Contract: the reader's pace holds the stream back (back-pressure: at most one chunk waits for it), so memory stays
 * one chunk whatever the stream's size. A reader that fails fails the stream (its error is the stream's); a stream
 * that fails or ends early fails the reader's iteration; a reader that stops early (without an error) lets the stream
 * go on alone.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** A pass-through stage for a pipeline, and what the reader made of the bytes that went through it. */
export interface ByteTap<T> {
  /** Put it in the pipeline between the source and the sink. */
  readonly stage: Transform;
  /** The reader's result; rejects with its error, or with the stream's when the stream fails first. */
  readonly result: Promise<T>;
  /** For a stream that never started (the request was refused): fails the reader with `err`, emitting no error event. */
  fail(err: unknown): void;
}

/** Starts `read` on the bytes that will pass through the returned stage. */
export function tapBytes<T>(read: (bytes: AsyncIterable<Buffer>) => Promise<T>): ByteTap<T> {
  const channel = new ByteChannel();
  const result = read(channel).then(
    (r) => {
      channel.readerDone();
      return r;
    },
    (err: unknown) => {
      channel.readerFailed(err);
      throw err;
    },
  );
  // The pipeline hears the reader's failure through the stage; nothing may reject unheard meanwhile.
  result.catch(() => undefined);
  const stage = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      channel.push(chunk).then(() => cb(null, chunk), cb);
    },
    flush(cb: TransformCallback) {
      channel.end();
      // A reader that failed after it took the last chunk had no push left to reject: its error is the stream's still.
      cb(channel.readerError());
    },
    destroy(err: Error | null, cb: (error: Error | null) => void) {
      channel.fail(err ?? new Error('the stream was closed before its end'));
      cb(err);
    },
  });
  const fail = (err: unknown): void => {
    channel.fail(err);
    stage.destroy();
  };
  return { stage, result, fail };
}

/** One chunk at a time from a writer to one async reader. */
class ByteChannel implements AsyncIterable<Buffer> {
  #chunk: Buffer | undefined;
  #ended = false;
  #error: unknown;
  #failed = false;
  /** The reader stopped (done or failed): chunks are dropped from now on. */
  #gone = false;
  #readerError: unknown;
  #readerFailed = false;
  #wakeReader: (() => void) | undefined;
  #wakeWriter: (() => void) | undefined;

  /** Hands `chunk` to the reader; resolves once it took it (or is gone). Rejects with the reader's error. */
  async push(chunk: Buffer): Promise<void> {
    if (this.#readerFailed) throw this.#readerError;
    if (this.#gone) return;
    this.#chunk = chunk;
    this.#wake('reader');
    while (this.#chunk !== undefined && !this.#gone) await new Promise<void>((r) => (this.#wakeWriter = r));
    if (this.#readerFailed) throw this.#readerError;
  }

  end(): void {
    this.#ended = true;
    this.#wake('reader');
  }

  fail(err: unknown): void {
    if (this.#ended || this.#failed) return;
    this.#failed = true;
    this.#error = err;
    this.#wake('reader');
  }

  readerDone(): void {
    this.#gone = true;
    this.#wake('writer');
  }

  /** The reader's error when it failed (as an Error for a stream callback), else null. */
  readerError(): Error | null {
    if (!this.#readerFailed) return null;
    const err = this.#readerError;
    return err instanceof Error ? err : new Error(String(err));
  }

  readerFailed(err: unknown): void {
    this.#readerFailed = true;
    this.#readerError = err;
    this.readerDone();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        const c = this.#chunk;
        if (c !== undefined) {
          this.#chunk = undefined;
          this.#wake('writer');
          yield c;
          continue;
        }
        if (this.#failed) throw this.#error;
        if (this.#ended) return;
        await new Promise<void>((r) => (this.#wakeReader = r));
      }
    } finally {
      // Stopping early (a reader closing its source) must not leave the writer waiting for it.
      this.#gone = true;
      this.#wake('writer');
    }
  }

  #wake(who: 'reader' | 'writer'): void {
    const w = who === 'reader' ? this.#wakeReader : this.#wakeWriter;
    if (who === 'reader') this.#wakeReader = undefined;
    else this.#wakeWriter = undefined;
    w?.();
  }
}
