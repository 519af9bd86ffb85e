import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BackupCorruptedError, InputInvalidError } from '../errors.js';
import { deriveBackupKey, gcmKey, gcmOpen, gcmSeal } from './crypto.js';

describe('deriveBackupKey', () => {
  it('matches the RFC 7914 scrypt test vectors (first 32 bytes)', async () => {
    const v1 = await deriveBackupKey('', Buffer.alloc(0), { N: 16, r: 1, p: 1 });
    expect(v1.toString('hex')).toBe('77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442');
    const v2 = await deriveBackupKey(Buffer.from('password'), Buffer.from('NaCl'), { N: 1024, r: 8, p: 16 });
    expect(v2.toString('hex')).toBe('fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162');
  });

  it('refuses unusable parameters', async () => {
    await expect(deriveBackupKey('x', randomBytes(16), { N: 3, r: 1, p: 1 })).rejects.toBeInstanceOf(InputInvalidError);
    await expect(deriveBackupKey('x', randomBytes(16), { N: 2, r: 0, p: 1 })).rejects.toBeInstanceOf(InputInvalidError);
  });
});

describe('gcmSeal / gcmOpen', () => {
  const key = randomBytes(32);

  it('lays out nonce(12) ‖ ciphertext ‖ tag(16) and opens it again', () => {
    const sealed = gcmSeal(key, 'backup', Buffer.from('hello'));
    expect(sealed.length).toBe(12 + 5 + 16);
    expect(gcmOpen(key, 'backup', sealed).toString()).toBe('hello');
    expect(gcmSeal(key, 'backup', Buffer.from('hello')).equals(sealed)).toBe(false); // fresh nonce
  });

  it('interoperates between a raw key and its KeyObject', () => {
    const ko = gcmKey(key);
    expect(gcmOpen(ko, 'backup', gcmSeal(key, 'backup', Buffer.from('x'))).toString()).toBe('x');
    expect(gcmOpen(key, 'backup', gcmSeal(ko, 'backup', Buffer.from('y'))).toString()).toBe('y');
  });

  it('refuses a wrong additional-data string, a wrong key, a flipped byte and a blob of 28 bytes or less', () => {
    const sealed = gcmSeal(key, 'domain-key', randomBytes(60));
    expect(() => gcmOpen(key, 'backup', sealed)).toThrow(BackupCorruptedError);
    expect(() => gcmOpen(randomBytes(32), 'domain-key', sealed)).toThrow(/failed authentication/);
    for (const at of [0, 11, 12, 40, sealed.length - 1]) {
      const bad = Buffer.from(sealed);
      bad[at] = (bad[at] ?? 0) ^ 1;
      expect(() => gcmOpen(key, 'domain-key', bad)).toThrow(BackupCorruptedError);
    }
    expect(() => gcmOpen(key, 'domain-key', sealed.subarray(0, 28))).toThrow(/too short/);
  });
});
