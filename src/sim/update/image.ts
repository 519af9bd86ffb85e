/**
 * Update images (`POST /system/update`), read exactly as the firmware reads them (FACTS-system §1.4):
 *
 *   "_NETHSM_UPDATE_\0" ‖ u24 len ‖ signature ‖ u24 len ‖ changelog ‖ u24 len ‖ version ‖ u32 blocks ‖ 512·blocks bytes
 *
 * The signature is RSA PKCS#1 v1.5 with SHA-256 over everything after the signature field. Checks and answers, in
 * the firmware's order: header (400 `Invalid update file`), any short field (400 `Unexpected end of data`), the
 * version text (400 `Failed to parse version: …`), the image length (400 `unexpected end of data`), the signature
 * (400 `Signature check of update image failed.`), then the major version (409 `Software version downgrade not
 * allowed.`). The image is streamed, never held whole.
 */
import { createSign, createVerify, type KeyObject } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { ocamlIntOfString } from './ocaml-int.js';

export const UPDATE_MAGIC = Buffer.from('_NETHSM_UPDATE_\x00', 'latin1');
export const UPDATE_BLOCK = 512;

export interface AcceptedUpdate {
  /** Release notes, as raw bytes (the firmware does not check their encoding). */
  changelog: Buffer;
  version: [bigint, bigint];
}

const endOfData = (): SimHttpError => new SimHttpError(400, 'Unexpected end of data');

/** Pulls exact byte counts off a stream, keeping what is left over for the next read. */
class ByteReader {
  private buf = Buffer.alloc(0);
  private readonly it: AsyncIterator<Uint8Array>;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      const r = await this.it.next();
      if (r.done === true) throw endOfData();
      this.buf = Buffer.concat([this.buf, Buffer.from(r.value)]);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async field(): Promise<{ len: Buffer; value: Buffer }> {
    const len = await this.read(3);
    return { len: Buffer.from(len), value: Buffer.from(await this.read(len.readUIntBE(0, 3))) };
  }

  /** Everything not read yet, chunk by chunk. */
  async *rest(): AsyncGenerator<Buffer> {
    if (this.buf.length > 0) yield this.buf;
    this.buf = Buffer.alloc(0);
    for (;;) {
      const r = await this.it.next();
      if (r.done === true) return;
      yield Buffer.from(r.value);
    }
  }
}

/** `MAJOR.MINOR`, cut at the first `.`, each part an OCaml int. Throws the firmware's 400. */
export function parseUpdateVersion(text: string): [bigint, bigint] {
  const dot = text.indexOf('.');
  if (dot < 0) throw new SimHttpError(400, "Failed to parse version: no separator (.). A valid version would be '4.2'.");
  const major = ocamlIntOfString(text.slice(0, dot));
  const minor = ocamlIntOfString(text.slice(dot + 1));
  if (major === undefined || minor === undefined) throw new SimHttpError(400, "Failed to parse version: Not a number. A valid version would be '4.2'.");
  return [major, minor];
}

/**
 * Reads and checks an uploaded image against `key`, for a device running `currentVersion` (`"5.0"`).
 * Throws SimHttpError (400/409) as the firmware answers; resolves with the release notes when accepted.
 */
export async function readUpdateImage(source: AsyncIterable<Uint8Array>, key: KeyObject, currentVersion: string): Promise<AcceptedUpdate> {
  const r = new ByteReader(source);
  if (!(await r.read(16)).equals(UPDATE_MAGIC)) throw new SimHttpError(400, 'Invalid update file');
  const signature = (await r.field()).value;
  const verifier = createVerify('sha256');
  const changelog = await r.field();
  verifier.update(changelog.len).update(changelog.value);
  const version = await r.field();
  const parsed = parseUpdateVersion(version.value.toString('latin1'));
  verifier.update(version.len).update(version.value);
  const blocks = await r.read(4);
  verifier.update(blocks);
  let left = BigInt(UPDATE_BLOCK) * BigInt(blocks.readUInt32BE(0));
  for await (const chunk of r.rest()) {
    left -= BigInt(chunk.length);
    verifier.update(chunk);
  }
  if (left !== 0n) throw new SimHttpError(400, 'unexpected end of data');
  let valid: boolean;
  try {
    valid = verifier.verify(key, signature);
  } catch {
    valid = false;
  }
  if (!valid) throw new SimHttpError(400, 'Signature check of update image failed.');
  const currentMajor = parseUpdateVersion(currentVersion)[0];
  if (currentMajor > parsed[0]) throw new SimHttpError(409, 'Software version downgrade not allowed.');
  return { changelog: changelog.value, version: parsed };
}

function u24(n: number): Buffer {
  const b = Buffer.alloc(3);
  b.writeUIntBE(n, 0, 3);
  return b;
}

export interface UpdateImageSpec {
  /** PEM or KeyObject of the RSA private key. */
  privateKey: KeyObject | string;
  changelog: string | Buffer;
  version: string;
  /** The system image; zero-padded to whole 512-byte blocks as the firmware's signing tool does. */
  image: Buffer;
}

/**
 * Builds a signed image the way the firmware's `sign_update` tool does; for tests and tooling that need images
 * signed with their own key (the simulator's `updateKeyPem`).
 */
export function signUpdateImage(spec: UpdateImageSpec): Buffer {
  const changelog = Buffer.isBuffer(spec.changelog) ? spec.changelog : Buffer.from(spec.changelog, 'utf8');
  const version = Buffer.from(spec.version, 'latin1');
  const blocks = Math.ceil(spec.image.length / UPDATE_BLOCK);
  const image = Buffer.concat([spec.image, Buffer.alloc(blocks * UPDATE_BLOCK - spec.image.length)]);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(blocks);
  const signed = Buffer.concat([u24(changelog.length), changelog, u24(version.length), version, count, image]);
  const signature = createSign('sha256').update(signed).sign(spec.privateKey);
  return Buffer.concat([UPDATE_MAGIC, u24(signature.length), signature, signed]);
}
