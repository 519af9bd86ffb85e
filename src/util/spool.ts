/**
 * A file that is read while it is still being written: a producer writes into `sink` at its own pace (a snapshot
 * extract riding on a device backup), and readers stream what is on disk so far, waiting for more, until the producer
 * declares the content complete (`done`) or broken (`fail`). The file decouples the two: a slow reader (a peer far
 * away) never holds the producer back, and memory stays one read buffer whatever the size.
 *
 * Contract: a reader ends cleanly only after `done()`, having yielded every byte written; after `fail(err)` it throws
 * `err` (never a clean end), so a consumer can tell a complete copy from a truncated one. The file is created 0600 and
 * must not exist; `close()` removes it (call once the producer settled and the readers are gone). What goes in is the
 * producer's business: callers spool sealed bytes only (snapshots), never anything in clear.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { InternalError } from '../errors.js';

const READ_CHUNK = 256 * 1024;

export class Spool {
  /** Bytes on disk (written and acknowledged by the file system). */
  #written = 0;
  #state: 'open' | 'done' | 'failed' = 'open';
  #error: unknown;
  #waiters = new Set<() => void>();
  #closed = false;
  /** The producer's side: write, then end it (or destroy it on failure and call `fail`). */
  readonly sink: Writable;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
  ) {
    this.sink = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        this.#append(chunk).then(() => cb(), cb);
      },
      final: (cb) => cb(),
    });
    // A sink error is the producer's to report (it sees it on its next write): it must not be an unhandled event here.
    this.sink.on('error', () => undefined);
  }

  /** Creates the file (0600, must not exist). */
  static async create(path: string): Promise<Spool> {
    return new Spool(path, await open(path, 'wx+', 0o600));
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.#written;
  }

  /** The content is complete: readers end once they have read it all. No effect after `fail`. */
  done(): void {
    if (this.#state !== 'open') return;
    this.#state = 'done';
    this.#wake();
  }

  /** The content is broken: every reader throws `err` (at once, whatever it has not read yet). No effect after `done`. */
  fail(err: unknown): void {
    if (this.#state !== 'open') return;
    this.#state = 'failed';
    this.#error = err;
    this.#wake();
  }

  /** The bytes from the start, as they are written; ends after `done()`, throws after `fail()` (see the contract). */
  async *reader(): AsyncGenerator<Buffer> {
    let at = 0;
    for (;;) {
      if (this.#state === 'failed') throw this.#error;
      if (at < this.#written) {
        const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, this.#written - at));
        const { bytesRead } = await this.fh.read(buf, 0, buf.length, at);
        if (bytesRead === 0) throw new InternalError(`spool ${this.path}: file shorter than written (${at} of ${this.#written})`);
        at += bytesRead;
        yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
        continue;
      }
      if (this.#state === 'done') return;
      await new Promise<void>((resolve) => this.#waiters.add(resolve));
    }
  }

  /** Closes and removes the file (fails readers still waiting). Idempotent; never throws. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.fail(new Error(`spool ${this.path} closed`));
    this.sink.destroy();
    await this.fh.close().catch(() => undefined);
    await unlink(this.path).catch(() => undefined);
  }

  async #append(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off, this.#written);
      off += bytesWritten;
      this.#written += bytesWritten;
    }
    this.#wake();
  }

  #wake(): void {
    const ws = [...this.#waiters];
    this.#waiters.clear();
    for (const w of ws) w();
  }
}
