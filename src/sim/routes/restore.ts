/**
 * `POST /system/restore` (§7): multipart, parts by position — part 1 the JSON arguments (≤ 1024 bytes), part 2 the
 * backup, streamed through busboy into the codec's reader. Unprovisioned: no auth, full restore. Operational: root
 * Administrator, partial restore. One restore at a time.
 */
import type { Readable } from 'node:stream';
import busboy from 'busboy';
import { SimHttpError } from '../http-error.js';
import { NO_CONTENT, mediaType, type RequestContext } from '../http.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import { decodeBody } from '../json-decode.js';
import { checkTime, restoreReq } from '../requests.js';
import { applyFullRestore, applyPartialRestore, stageBackup, TRUNCATED_MESSAGE } from '../restore.js';

const ARGS_LIMIT = 1024;

interface RestoreUpload {
  args: Buffer;
  backup: AsyncIterable<Uint8Array>;
}

/** Resolves once the second part starts (its stream is not yet read). Throws 400 for a bad or incomplete body. */
function receiveUpload(ctx: RequestContext): Promise<RestoreUpload> {
  return new Promise((resolve, reject) => {
    if (mediaType(ctx.req.headers['content-type']) !== 'multipart/form-data') {
      reject(new SimHttpError(400, 'Body cannot be empty.'));
      return;
    }
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: ctx.req.headers, limits: { fieldSize: 64 * 1024 * 1024 } });
    } catch (err) {
      reject(new SimHttpError(400, `Invalid multipart body: ${(err as Error).message}`));
      return;
    }
    let index = 0;
    let args: Buffer | undefined;
    let settled = false;
    const fail = (e: SimHttpError): void => {
      if (!settled) {
        settled = true;
        reject(e);
      }
    };
    const onPart = (data: Buffer | Readable): void => {
      const i = index++;
      if (settled && i > 1) {
        if (!Buffer.isBuffer(data)) data.resume();
        return;
      }
      if (i === 0) {
        if (Buffer.isBuffer(data)) {
          if (data.length > ARGS_LIMIT) fail(new SimHttpError(400, 'Meta data is too large.'));
          args = data;
        } else {
          const chunks: Buffer[] = [];
          let size = 0;
          data.on('data', (c: Buffer) => {
            size += c.length;
            if (size <= ARGS_LIMIT) chunks.push(c);
          });
          data.on('end', () => {
            if (size > ARGS_LIMIT) fail(new SimHttpError(400, 'Meta data is too large.'));
            args = Buffer.concat(chunks);
          });
        }
        return;
      }
      settled = true;
      const backup: AsyncIterable<Uint8Array> = Buffer.isBuffer(data) ? once(data) : (data as AsyncIterable<Uint8Array>);
      // Part 1 has been fully read by the time busboy moves on to part 2.
      resolve({ args: args ?? Buffer.alloc(0), backup });
    };
    bb.on('field', (_name, value) => onPart(Buffer.from(value, 'utf8')));
    bb.on('file', (_name, stream) => onPart(stream));
    bb.on('error', (err) => fail(new SimHttpError(400, `Invalid multipart body: ${(err as Error).message}`)));
    bb.on('close', () => {
      if (index === 0) fail(new SimHttpError(400, 'Body cannot be empty.'));
      else if (index === 1) fail(new SimHttpError(400, 'Backup data cannot be empty.'));
    });
    ctx.req.pipe(bb);
  });
}

async function* once(b: Buffer): AsyncGenerator<Uint8Array> {
  yield b;
}

async function restore(ctx: RequestContext, sim: SimCore): Promise<void> {
  try {
    await restoreUpload(ctx, sim);
  } catch (err) {
    // Stop parsing and drain the rest of the upload so the connection can carry the error answer.
    ctx.req.unpipe();
    ctx.req.resume();
    throw err;
  }
}

async function restoreUpload(ctx: RequestContext, sim: SimCore): Promise<void> {
  const upload = await receiveUpload(ctx);
  const args = decodeBody(upload.args.length === 0 ? Buffer.from('{}') : upload.args, restoreReq);
  const time = args.systemTime === undefined ? undefined : checkTime(args.systemTime);
  const staged = await stageBackup(upload.backup, sim, args.backupPassphrase);
  const state = sim.device.state;
  if (state === 'Unprovisioned') applyFullRestore(sim, staged);
  else if (state === 'Operational') applyPartialRestore(sim, staged);
  else throw new SimHttpError(412, 'Service not available');
  if (time !== undefined) sim.device.setTime(time);
  staged.header.configStoreKey?.fill(0);
  if (staged.truncated) throw new SimHttpError(400, TRUNCATED_MESSAGE);
  sim.restoresApplied++;
}

export function restoreRoute(): Route {
  return {
    method: 'POST',
    path: '/system/restore',
    states: ['Unprovisioned', 'Operational'],
    access: (state) => (state === 'Operational' ? { roles: ['Administrator'], root: true } : 'public'),
    // Without a multipart Content-Type the firmware answers 415 with an empty body (FACTS-system §6.5).
    accepts: ['multipart/form-data'],
    body: 'stream',
    op: 'restore',
    handler: async (ctx, sim) => {
      if (sim.restoreInProgress) throw new SimHttpError(500, 'Another restore is in progress.');
      sim.restoreInProgress = true;
      try {
        await restore(ctx, sim);
        return NO_CONTENT;
      } finally {
        sim.restoreInProgress = false;
      }
    },
  };
}
