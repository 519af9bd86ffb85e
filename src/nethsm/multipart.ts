/**
 * `multipart/form-data` bodies for the two NetHSM operations that take them (key import from PEM, restore).
 * The NetHSM takes parts by position: first the JSON arguments, then the payload.
 * The restore body is produced as an async generator so a backup of any size is never held in memory.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

export interface PartHead {
  name: string;
  filename?: string;
  contentType: string;
}

/** A boundary that cannot plausibly occur in the content (24 random bytes). */
export function newBoundary(): string {
  return `----nethsm-replicator-${randomBytes(24).toString('hex')}`;
}

export function contentTypeFor(boundary: string): string {
  return `multipart/form-data; boundary=${boundary}`;
}

function partHeader(boundary: string, head: PartHead, first: boolean): Buffer {
  const disposition = `form-data; name="${head.name}"${head.filename ? `; filename="${head.filename}"` : ''}`;
  return Buffer.from(
    `${first ? '' : '\r\n'}--${boundary}\r\nContent-Disposition: ${disposition}\r\nContent-Type: ${head.contentType}\r\n\r\n`,
  );
}

function closing(boundary: string): Buffer {
  return Buffer.from(`\r\n--${boundary}--\r\n`);
}

/** A small two-part body built in memory (key import). The caller zeroes it after the request (it holds key material). */
export function twoPartBuffer(boundary: string, first: PartHead, firstBody: Buffer, second: PartHead, secondBody: Buffer): Buffer {
  return Buffer.concat([partHeader(boundary, first, true), firstBody, partHeader(boundary, second, false), secondBody, closing(boundary)]);
}

export interface StreamedBody {
  body: AsyncIterable<Uint8Array>;
  /** Total length when known (file source), so the request can carry Content-Length. */
  length: number | undefined;
}

/**
 * Restore body: JSON arguments part, then the backup streamed from a file path or an async iterable.
 * The file is opened only when the body is consumed, so a request that fails before sending leaves no open file.
 */
export async function restoreBody(boundary: string, argsJson: Buffer, source: string | AsyncIterable<Uint8Array>): Promise<StreamedBody> {
  const head = Buffer.concat([
    partHeader(boundary, { name: 'arguments', contentType: 'application/json' }, true),
    argsJson,
    partHeader(boundary, { name: 'backup_file', filename: 'backup.bin', contentType: 'application/octet-stream' }, false),
  ]);
  const tail = closing(boundary);
  const fileSize = typeof source === 'string' ? (await stat(source)).size : undefined;
  async function* generate(): AsyncGenerator<Uint8Array> {
    yield head;
    const payload = typeof source === 'string' ? createReadStream(source, { highWaterMark: 256 * 1024 }) : source;
    for await (const chunk of payload) {
      yield typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    }
    yield tail;
  }
  return { body: generate(), length: fileSize === undefined ? undefined : head.length + fileSize + tail.length };
}
