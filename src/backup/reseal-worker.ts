/**
 * Re-sealing of backup entry fields under another key, run on a worker thread (resealer.ts) so that a merge's
 * AES-GCM work uses a second core; also called in-thread for small batches. This module imports Node built-ins only:
 * it is the worker's entry point, loaded as compiled JavaScript (dist/) or, under the tests, as TypeScript by Node's
 * type stripping, where imports of our `.js` modules would not resolve.
 *
 * Contract of a batch: `fields` holds sealed entry fields (nonce ‖ ciphertext ‖ tag, as in the file) back to back,
 * `lengths` their sizes, `keys[i]` which of `open` opens field i. Each field is authenticated WHOLE (path and value)
 * under its open key and sealed again IN PLACE under `seal` with a fresh random nonce (same plaintext, so same size).
 * The plaintext exists only between the two and is zeroed. The result names the authenticated paths (the caller
 * checks them against the ones it ordered by) or the first field that failed; never key material or plaintext.
 */
import { createCipheriv, createDecipheriv, type KeyObject, randomBytes } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';

const NONCE = 12;
const TAG = 16;

export interface ResealKeys {
  /** Additional data of entry fields (format.ts AD.entry). */
  ad: string;
  /** One key per overlay file: the keys that open the fields. */
  open: readonly KeyObject[];
  /** The output file's key. */
  seal: KeyObject;
}

export type ResealResult = { paths: string[] } | { failed: number; reason: 'authentication' | 'path' };

/** Marks the worker this module starts as (workerData), so importing it in any other thread installs nothing. */
export const RESEAL_WORKER_ROLE = 'nethsm-replicator-reseal';

const pathDecoder = new TextDecoder('utf-8', { fatal: true });
let nonces = Buffer.alloc(0);
let noncePos = 0;

/** 96 fresh random bits per field, drawn in blocks (as crypto.ts's nextNonce; nonces are public). */
function nextNonce(): Buffer {
  if (noncePos >= nonces.length) {
    nonces = randomBytes(NONCE * 4096);
    noncePos = 0;
  }
  const n = nonces.subarray(noncePos, noncePos + NONCE);
  noncePos += NONCE;
  return n;
}

/** Re-seals each field of `fields` in place (see the module's contract); stops at the first field that fails. */
export function resealFields(keys: ResealKeys, fields: Buffer, lengths: ArrayLike<number>, keyOf: ArrayLike<number>): ResealResult {
  const ad = Buffer.from(keys.ad, 'ascii');
  const paths: string[] = [];
  let at = 0;
  for (let i = 0; i < lengths.length; i++) {
    const len = lengths[i]!;
    const field = fields.subarray(at, at + len);
    at += len;
    const openKey = keys.open[keyOf[i]!];
    if (openKey === undefined || len <= NONCE + TAG) return { failed: i, reason: 'authentication' };
    const pt = open(openKey, ad, field);
    if (pt === undefined) return { failed: i, reason: 'authentication' };
    try {
      const path = pathOf(pt);
      if (path === undefined) return { failed: i, reason: 'path' };
      sealInto(keys.seal, ad, pt, field);
      paths.push(path);
    } finally {
      pt.fill(0);
    }
  }
  return { paths };
}

function open(key: KeyObject, ad: Buffer, field: Buffer): Buffer | undefined {
  const d = createDecipheriv('aes-256-gcm', key, field.subarray(0, NONCE), { authTagLength: TAG });
  d.setAAD(ad);
  d.setAuthTag(field.subarray(field.length - TAG));
  const pt = d.update(field.subarray(NONCE, field.length - TAG));
  try {
    d.final();
    return pt;
  } catch {
    pt.fill(0);
    return undefined;
  }
}

function sealInto(key: KeyObject, ad: Buffer, pt: Buffer, field: Buffer): void {
  const nonce = nextNonce();
  const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG });
  c.setAAD(ad);
  nonce.copy(field, 0);
  let pos = NONCE + c.update(pt).copy(field, NONCE);
  pos += c.final().copy(field, pos);
  c.getAuthTag().copy(field, pos);
}

/** `u24 pathLen ‖ path ‖ value`: the path if it is an absolute UTF-8 KV path, else undefined. */
function pathOf(pt: Buffer): string | undefined {
  if (pt.length < 3) return undefined;
  const n = (pt[0]! << 16) | (pt[1]! << 8) | pt[2]!;
  if (n < 1 || 3 + n > pt.length) return undefined;
  try {
    const p = pathDecoder.decode(pt.subarray(3, 3 + n));
    return p.startsWith('/') ? p : undefined;
  } catch {
    return undefined;
  }
}

/** A batch for the worker, with its keys (KeyObjects, cloned in-process: one thread serves merges under any keys). */
export interface ResealRequest {
  id: number;
  keys: ResealKeys;
  fields: Uint8Array;
  lengths: Uint32Array;
  keyOf: Uint8Array;
}
export interface ResealReply {
  id: number;
  fields: Uint8Array;
  result: ResealResult;
}

const port = parentPort;
if (port !== null && (workerData as { role?: unknown } | null)?.role === RESEAL_WORKER_ROLE) {
  port.on('message', (m: ResealRequest) => {
    const fields = Buffer.from(m.fields.buffer, m.fields.byteOffset, m.fields.byteLength);
    const result = resealFields(m.keys, fields, m.lengths, m.keyOf);
    const reply: ResealReply = { id: m.id, fields: m.fields, result };
    port.postMessage(reply, [m.fields.buffer as ArrayBuffer]);
  });
}
