/**
 * `multipart/form-data` parts taken by position (the firmware ignores part names), via busboy.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import busboy from 'busboy';
import { SimHttpError } from './http-error.js';

export interface Part {
  name: string;
  data: Buffer;
}

/** Parses a buffered multipart body into its parts in order. Throws 400 when it is not valid multipart. */
export function parseMultipart(headers: IncomingHttpHeaders, body: Buffer, maxParts = 16): Promise<Part[]> {
  return new Promise((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers, limits: { parts: maxParts, fieldSize: body.length + 1 } });
    } catch (err) {
      reject(new SimHttpError(400, `Invalid multipart body: ${(err as Error).message}`));
      return;
    }
    const parts: (Part | Promise<Part>)[] = [];
    bb.on('field', (name, value) => parts.push({ name, data: Buffer.from(value, 'utf8') }));
    bb.on('file', (name, stream) => {
      parts.push(
        new Promise<Part>((res, rej) => {
          const chunks: Buffer[] = [];
          stream.on('data', (c: Buffer) => chunks.push(c));
          stream.on('end', () => res({ name, data: Buffer.concat(chunks) }));
          stream.on('error', rej);
        }),
      );
    });
    bb.on('error', (err) => reject(new SimHttpError(400, `Invalid multipart body: ${(err as Error).message}`)));
    bb.on('close', () => {
      Promise.all(parts).then(resolve, reject);
    });
    Readable.from([body]).pipe(bb);
  });
}
