/**
 * A small buffered, forward-only byte source over a file or a chunked stream: ask for N bytes, know the offset.
 * Memory: one read buffer (file) or one upstream chunk (stream), plus the bytes a caller asked for.
 *
 * Chunks are never written to once taken (a file read goes into a fresh buffer each time; a stream's chunks are
 * taken as the stream yields them, which must not reuse them), so `takeBuffered` can hand out views of them.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { InputInvalidError, InternalError } from '../errors.js';

const FILE_CHUNK = 64 * 1024;

export type ByteSourceInput = string | NodeJS.ReadableStream | AsyncIterable<Uint8Array>;

const PATH_PROBLEMS = new Set(['ENOENT', 'ENOTDIR', 'EACCES', 'EPERM', 'ELOOP', 'ENAMETOOLONG', 'EISDIR']);

/**
 * Opens a backup file for reading. A directory opens on Linux and fails only at the first read with a bare EISDIR that
 * names no path, so it is refused here, as is a path that does not open, with the path in the error.
 */
async function openFile(path: string): Promise<FileHandle> {
  const hint = 'Give the path of a backup file (a regular file you can read).';
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (cause) {
    // A path problem is the caller's input; anything else (EMFILE, EIO) is the host's and passes through as it is.
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === undefined || !PATH_PROBLEMS.has(code)) throw cause;
    throw new InputInvalidError(`cannot open backup file ${path} (${code})`, { path, cause, hint });
  }
  try {
    if ((await fh.stat()).isDirectory()) throw new InputInvalidError(`${path} is a directory, not a backup file`, { path, hint });
  } catch (err) {
    await fh.close();
    throw err;
  }
  return fh;
}

export class ByteSource {
  /** Bytes consumed so far (= file offset of the next byte `read` returns). */
  offset = 0;
  private chunk: Buffer = Buffer.alloc(0);
  private pos = 0;
  private ended = false;
  private closed = false;

  private constructor(
    private readonly pull: () => Promise<Buffer | null>,
    private readonly release: () => Promise<void>,
  ) {}

  /**
   * Opens a file path (read with a file handle, 64 KiB at a time) or wraps a stream / async iterable.
   * Throws InputInvalidError naming the path when it is a directory or cannot be opened for a reason of the path
   * (missing, not permitted: the fs error as its cause; other fs errors as they are), and for an input that is none of these.
   */
  static async open(input: ByteSourceInput): Promise<ByteSource> {
    if (typeof input === 'string') return ByteSource.fromFile(await openFile(input));
    if (input !== null && typeof input === 'object' && Symbol.asyncIterator in input) {
      return ByteSource.fromIterable(input as AsyncIterable<Uint8Array | string>);
    }
    throw new InputInvalidError('a backup source must be a file path, a readable stream or an async iterable of bytes');
  }

  private static fromFile(fh: FileHandle): ByteSource {
    let position = 0;
    return new ByteSource(
      async () => {
        // A fresh buffer per read: views of the last one (takeBuffered) may still be in use.
        const buf = Buffer.allocUnsafe(FILE_CHUNK);
        const { bytesRead } = await fh.read(buf, 0, buf.length, position);
        position += bytesRead;
        return bytesRead === 0 ? null : buf.subarray(0, bytesRead);
      },
      () => fh.close(),
    );
  }

  private static fromIterable(it: AsyncIterable<Uint8Array | string>): ByteSource {
    const iter = it[Symbol.asyncIterator]();
    return new ByteSource(
      async () => {
        for (;;) {
          const r = await iter.next();
          if (r.done) return null;
          const c = r.value;
          if (typeof c === 'string') throw new InputInvalidError('a backup stream must yield bytes, not text (no setEncoding)');
          if (c.length > 0) return Buffer.from(c.buffer, c.byteOffset, c.byteLength);
        }
      },
      async () => {
        // Ends a stream we stopped reading early (a Readable's iterator destroys the stream).
        await iter.return?.();
      },
    );
  }

  /** Returns the next `n` bytes, fewer only at end of input (then as many as were left). The buffer is the caller's. */
  async read(n: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      if (this.pos >= this.chunk.length && !(await this.fill())) break;
      const take = Math.min(n - got, this.chunk.length - this.pos);
      this.chunk.copy(out, got, this.pos, this.pos + take);
      this.pos += take;
      got += take;
    }
    this.offset += got;
    return got === n ? out : out.subarray(0, got);
  }

  /**
   * The next `n` bytes when the current chunk holds them all, as a view of it (no copy, no wait); otherwise undefined
   * and nothing is consumed (use `read`). The view stays valid: chunks are not reused.
   */
  takeBuffered(n: number): Buffer | undefined {
    const end = this.pos + n;
    if (end > this.chunk.length) return undefined;
    const out = this.chunk.subarray(this.pos, end);
    this.pos = end;
    this.offset += n;
    return out;
  }

  /** The next `n` bytes as a view of the current chunk when it holds them all, without consuming them; else undefined. */
  peekBuffered(n: number): Buffer | undefined {
    const end = this.pos + n;
    return end > this.chunk.length ? undefined : this.chunk.subarray(this.pos, end);
  }

  /** Whether no byte is left. */
  async atEnd(): Promise<boolean> {
    return this.pos >= this.chunk.length && !(await this.fill());
  }

  /** Idempotent; releases the file handle or ends the stream. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.chunk = Buffer.alloc(0);
    this.pos = 0;
    await this.release();
  }

  private async fill(): Promise<boolean> {
    // Reading after close() is a caller bug; failing loudly keeps it from passing for a truncated file.
    if (this.closed) throw new InternalError('read from a closed backup byte source');
    if (this.ended) return false;
    const next = await this.pull();
    if (next === null) {
      this.ended = true;
      return false;
    }
    this.chunk = next;
    this.pos = 0;
    return true;
  }
}
