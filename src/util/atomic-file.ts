/**
 * Atomic output files: write to a temporary file in the target's directory (mode 0600), fsync, then move it into place.
 * A reader never sees a partial file at the target path; on any failure the temporary file is removed.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc, createWriteStream, unlinkSync, type WriteStream } from 'node:fs';
import { link, lstat, open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { InputInvalidError, OutputExistsError } from '../errors.js';

export interface AtomicFileOptions {
  /** Replace an existing file at the target path. Default false: an existing target is an {@link OutputExistsError}. */
  overwrite?: boolean;
  /** Mode of the new file. Default 0o600 (backup files hold key blobs). */
  mode?: number;
}

export interface AtomicFile {
  /** The final path. */
  readonly path: string;
  /** The temporary path being written. */
  readonly tempPath: string;
  /** The sink to write into. Whoever writes ends it (the backup writer's `finish()` does); commit() ends it otherwise. */
  readonly stream: WriteStream;
  /**
   * Waits for the stream to flush, fsyncs, and moves the file to {@link path}. Without `overwrite`, fails with
   * {@link OutputExistsError} (and removes the temporary file) if the target appeared meanwhile. Call at most once.
   */
  commit(): Promise<void>;
  /** Destroys the stream and removes the temporary file. Idempotent; never throws. */
  abort(): Promise<void>;
}

/** Temporary files not yet committed or aborted, so a signal handler can remove them (see {@link removePendingFilesSync}). */
const pending = new Set<string>();

/** Removes every uncommitted temporary file, synchronously (for SIGINT/SIGTERM handlers). Never throws. */
export function removePendingFilesSync(): void {
  for (const p of pending) {
    try {
      unlinkSync(p);
    } catch {
      // already gone
    }
  }
  pending.clear();
}

let signalsInstalled = false;

/**
 * On SIGINT/SIGTERM, removes uncommitted temporary files, then exits with 128 + the signal number (as the default
 * action would). Idempotent; for CLI processes (a daemon handles its own signals).
 */
export function installSignalCleanup(): void {
  if (signalsInstalled) return;
  signalsInstalled = true;
  for (const [sig, num] of [['SIGINT', 2], ['SIGTERM', 15]] as const) {
    process.once(sig, () => {
      removePendingFilesSync();
      process.exit(128 + num);
    });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    // Missing (the usual case) or unreadable: the open of the temporary file reports what matters.
    return false;
  }
}

/**
 * Opens an atomic output file. Throws {@link OutputExistsError} when the target exists and `overwrite` is not set,
 * and {@link InputInvalidError} when the target is a directory or its directory is missing or not writable.
 */
export async function openAtomicFile(path: string, options: AtomicFileOptions = {}): Promise<AtomicFile> {
  const overwrite = options.overwrite ?? false;
  // A directory is no file to replace: without this, `overwrite` wrote the whole output and failed at the rename with a
  // bare EISDIR, and without it the refusal said the "file" already exists.
  if (await isDirectory(path)) {
    throw new InputInvalidError(`Output path ${path} is a directory`, { path, hint: 'Give the path of a file to write (in an existing directory).' });
  }
  if (!overwrite && (await exists(path))) {
    throw new OutputExistsError(`Output file ${path} already exists`, { path });
  }
  const tempPath = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  // `flush` fsyncs the descriptor before the stream closes it.
  const stream = createWriteStream(tempPath, { flags: 'wx', mode: options.mode ?? 0o600, flush: true });
  try {
    await new Promise<void>((resolve, reject) => {
      stream.once('ready', () => resolve());
      stream.once('error', reject);
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InputInvalidError(`Cannot create the output file in ${dirname(path)} (${code ?? 'error'})`, {
      path,
      cause: err,
      hint: 'Check that the output directory exists and is writable.',
    });
  }
  pending.add(tempPath);
  // Record a stream error so commit() reports it even when it happened before commit was called.
  let streamError: Error | undefined;
  stream.on('error', (err) => {
    streamError ??= err;
  });
  let done = false;

  const removeTemp = async (): Promise<void> => {
    pending.delete(tempPath);
    await unlink(tempPath).catch(() => undefined);
  };

  const abort = async (): Promise<void> => {
    if (done) return;
    done = true;
    if (!stream.closed) {
      await new Promise<void>((resolve) => {
        stream.once('close', () => resolve());
        stream.destroy();
      });
    }
    await removeTemp();
  };

  const commit = async (): Promise<void> => {
    if (done) throw new Error('atomic file already committed or aborted');
    try {
      await closed(stream);
      if (streamError) throw streamError;
      done = true;
      await moveIntoPlace(tempPath, path, overwrite);
      pending.delete(tempPath);
      await syncDir(dirname(path));
    } catch (err) {
      done = false;
      await abort();
      throw err;
    }
  };

  return { path, tempPath, stream, commit, abort };
}

/** Ends the stream if nobody did and resolves when every byte is written, fsynced and the descriptor closed. */
function closed(stream: WriteStream): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.errored) return reject(stream.errored);
    if (stream.closed) return resolve();
    stream.once('close', () => (stream.errored ? reject(stream.errored) : resolve()));
    if (!stream.writableEnded) stream.end();
  });
}

/** No-clobber move: link() fails with EEXIST atomically; rename() where hard links are not supported. */
async function moveIntoPlace(tempPath: string, path: string, overwrite: boolean): Promise<void> {
  if (overwrite) {
    await rename(tempPath, path);
    return;
  }
  try {
    await link(tempPath, path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new OutputExistsError(`Output file ${path} already exists`, { path, cause: err });
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EXDEV' && code !== 'EOPNOTSUPP') throw err;
    if (await exists(path)) throw new OutputExistsError(`Output file ${path} already exists`, { path });
    await rename(tempPath, path);
    return;
  }
  await unlink(tempPath);
}

async function syncDir(dir: string): Promise<void> {
  // Durability of the rename itself; not every platform lets a directory be opened for fsync.
  try {
    const d = await open(dir, fsc.O_RDONLY);
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // best effort
  }
}

/**
 * Runs `fn` with an atomic output file's stream and commits when it resolves; aborts (removing the partial file) when it
 * throws, and rethrows. The result of `fn` is returned after the commit.
 */
export async function withAtomicFile<T>(
  path: string,
  options: AtomicFileOptions,
  fn: (stream: WriteStream) => Promise<T>,
): Promise<T> {
  const file = await openAtomicFile(path, options);
  try {
    const result = await fn(file.stream);
    await file.commit();
    return result;
  } catch (err) {
    await file.abort();
    throw err;
  }
}
