import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKeyPairSync } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { parseUpdateVersion, readUpdateImage, signUpdateImage, UPDATE_MAGIC } from './image.js';
import { parseUpdateKey, TEST_UPDATE_KEY_PEM } from './key.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const fixture = path.resolve(repoRoot, '..', 'shared', 'nethsm', 'fixtures', 'update');
const present = existsSync(path.join(fixture, 'update.bin'));
if (!present) console.warn(`update fixture absent at ${fixture}: the firmware image test is skipped`);

const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });

async function* chunks(b: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function answer(image: Buffer, key = publicKey, chunk = 7): Promise<{ status: number; message: string } | { changelog: string }> {
  try {
    const r = await readUpdateImage(chunks(image, chunk), key, '5.0');
    return { changelog: r.changelog.toString('latin1') };
  } catch (err) {
    if (err instanceof SimHttpError) return { status: err.status, message: err.body?.message ?? '' };
    throw err;
  }
}

const image = (version = '6.1', extra: Partial<Parameters<typeof signUpdateImage>[0]> = {}): Buffer =>
  signUpdateImage({ privateKey, changelog: 'new things\n', version, image: Buffer.from('FOOBAR\n'.repeat(100)), ...extra });

describe('update images', () => {
  it.skipIf(!present)("accepts the firmware test suite's update.bin with the test key (release notes, version 9.0)", async () => {
    const file = readFileSync(path.join(fixture, 'update.bin'));
    // The key constant in the repository is the fixture's key.
    expect(TEST_UPDATE_KEY_PEM).toBe(readFileSync(path.join(fixture, 'test-update-key.pem'), 'utf8'));
    const r = await readUpdateImage(chunks(file, 100), parseUpdateKey(TEST_UPDATE_KEY_PEM), '5.0');
    expect(r.changelog.toString()).toBe('some cool new features\n');
    expect(r.version).toEqual([9n, 0n]);
    // A single flipped image byte breaks the signature.
    const bad = Buffer.from(file);
    bad[bad.length - 1] = bad[bad.length - 1]! ^ 1;
    expect(await answer(bad, parseUpdateKey(TEST_UPDATE_KEY_PEM))).toEqual({ status: 400, message: 'Signature check of update image failed.' });
  });

  it('accepts an upgrade and an equal major (the minor is ignored), read in any chunk size', async () => {
    expect(await answer(image('6.1'), publicKey, 1)).toEqual({ changelog: 'new things\n' });
    expect(await answer(image('5.0'))).toEqual({ changelog: 'new things\n' });
    expect(await answer(image('5.-3'))).toEqual({ changelog: 'new things\n' });
    expect(await answer(image('0x5.0'))).toEqual({ changelog: 'new things\n' });
  });

  it('answers 409 for a major downgrade, only after the signature has been checked', async () => {
    expect(await answer(image('4.9'))).toEqual({ status: 409, message: 'Software version downgrade not allowed.' });
    expect(await answer(image('-1.5'))).toEqual({ status: 409, message: 'Software version downgrade not allowed.' });
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    expect(await answer(image('4.9'), other)).toEqual({ status: 400, message: 'Signature check of update image failed.' });
  });

  it('answers the firmware texts for a bad header, short fields, bad versions and a wrong image length', async () => {
    const good = image();
    expect(await answer(Buffer.concat([Buffer.from('_NETHSM_UPDATE_\x01'), good.subarray(16)]))).toEqual({ status: 400, message: 'Invalid update file' });
    expect(await answer(good.subarray(0, 10))).toEqual({ status: 400, message: 'Unexpected end of data' });
    expect(await answer(Buffer.alloc(0))).toEqual({ status: 400, message: 'Unexpected end of data' });
    expect(await answer(good.subarray(0, 16 + 3 + 100))).toEqual({ status: 400, message: 'Unexpected end of data' });
    // Cut inside the block count: still the field error, not the image-length one.
    const sigLen = good.readUIntBE(16, 3);
    const afterVersion = 16 + 3 + sigLen + 3 + 11 + 3 + 3;
    expect(await answer(good.subarray(0, afterVersion + 2))).toEqual({ status: 400, message: 'Unexpected end of data' });
    // Image one byte short, one byte long: lower-case "unexpected".
    expect(await answer(good.subarray(0, good.length - 1))).toEqual({ status: 400, message: 'unexpected end of data' });
    expect(await answer(Buffer.concat([good, Buffer.from([0])]))).toEqual({ status: 400, message: 'unexpected end of data' });
    expect(await answer(image('4'))).toEqual({ status: 400, message: "Failed to parse version: no separator (.). A valid version would be '4.2'." });
    expect(await answer(image('4.2.1'))).toEqual({ status: 400, message: "Failed to parse version: Not a number. A valid version would be '4.2'." });
    expect(await answer(image('x.1'))).toEqual({ status: 400, message: "Failed to parse version: Not a number. A valid version would be '4.2'." });
    // A version error comes before the image is read: an image that is also too short still gets the version text.
    expect(await answer(image('v.1').subarray(0, afterVersion))).toEqual({ status: 400, message: "Failed to parse version: Not a number. A valid version would be '4.2'." });
  });

  it('checks the signature over everything after the signature field', async () => {
    const good = image();
    const sigLen = good.readUIntBE(16, 3);
    const changed = Buffer.from(good);
    const at = 16 + 3 + sigLen + 3; // first changelog byte
    changed[at] = changed[at]! ^ 1;
    expect(await answer(changed)).toEqual({ status: 400, message: 'Signature check of update image failed.' });
    const noSig = Buffer.concat([UPDATE_MAGIC, Buffer.from([0, 0, 0]), good.subarray(16 + 3 + sigLen)]);
    expect(await answer(noSig)).toEqual({ status: 400, message: 'Signature check of update image failed.' });
  });

  it('parses versions as the firmware does', () => {
    expect(parseUpdateVersion('4.2')).toEqual([4n, 2n]);
    expect(() => parseUpdateVersion('.5')).toThrow(/Not a number/);
    expect(() => parseUpdateVersion('5.')).toThrow(/Not a number/);
  });

  it('refuses an update key that is not an RSA public key', () => {
    expect(() => parseUpdateKey('not a key')).toThrow(/not a PEM public key/);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    expect(() => parseUpdateKey(ec)).toThrow(/must be an RSA public key, got ec/);
  });
});
