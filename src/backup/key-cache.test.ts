import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TEST_SCRYPT } from './format.js';
import { KeyCache } from './key-cache.js';
import { readBackupBuffer } from './reader.js';
import { compareBackupPaths, createBackupWriter } from './writer.js';
import { PassThrough } from 'node:stream';

const header = { lockedDomainKey: randomBytes(60), deviceId: 'KEYCACHE0001', configStoreKey: createHash('sha256').update('k').digest() };

async function backup(passphrase: string, salt?: Buffer): Promise<Buffer> {
  const sink = new PassThrough();
  const parts: Buffer[] = [];
  sink.on('data', (c: Buffer) => parts.push(c));
  const w = await createBackupWriter(sink, { passphrase, scrypt: TEST_SCRYPT, ...(salt ? { salt } : {}), ...header });
  const entries: [string, Buffer][] = [
    ['/key/.ns/k1', randomBytes(100)],
    ['/namespace/ns', randomBytes(20)],
  ];
  for (const [p, v] of entries.sort((a, b) => compareBackupPaths(a[0], b[0]))) await w.writeEntry(p, v);
  await w.finish();
  return Buffer.concat(parts);
}

describe('KeyCache: one key derivation per salt', () => {
  it('keeps the key a reader derived, and a later open of a file with the same salt uses it without deriving', async () => {
    const salt = randomBytes(16);
    const one = await backup('device-backup-pass', salt);
    const two = await backup('device-backup-pass', salt);
    const cache = new KeyCache();
    await readBackupBuffer(one, { passphrase: 'device-backup-pass', scrypt: TEST_SCRYPT, keyCache: cache });
    expect(cache.size).toBe(1);
    // A wrong passphrase cannot derive the key: the file opens only because the cached key is used.
    const r = await readBackupBuffer(two, { passphrase: 'not-the-passphrase', scrypt: TEST_SCRYPT, keyCache: cache });
    expect(r.entries.map((e) => e.path)).toEqual(['/key/.ns/k1', '/namespace/ns']);
    r.backupKey.fill(0);
  });

  it('does not use a key of another salt, and keeps no key a wrong passphrase derived', async () => {
    const cache = new KeyCache();
    await readBackupBuffer(await backup('first-passphrase'), { passphrase: 'first-passphrase', scrypt: TEST_SCRYPT, keyCache: cache });
    await expect(readBackupBuffer(await backup('first-passphrase'), { passphrase: 'wrong-passphrase', scrypt: TEST_SCRYPT, keyCache: cache })).rejects.toThrow(/does not open/);
    expect(cache.size).toBe(1);
  });

  it('zeroes its keys on clear, and a reader does not zero a cached key on close', async () => {
    const salt = randomBytes(16);
    const file = await backup('device-backup-pass', salt);
    const cache = new KeyCache();
    await readBackupBuffer(file, { passphrase: 'device-backup-pass', scrypt: TEST_SCRYPT, keyCache: cache });
    const key = cache.get(salt, TEST_SCRYPT)!;
    // A second reader closed with the cached key: the cache's key is intact.
    (await readBackupBuffer(file, { passphrase: 'device-backup-pass', scrypt: TEST_SCRYPT, keyCache: cache })).backupKey.fill(0);
    expect(key.some((b) => b !== 0)).toBe(true);
    cache.clear();
    expect(key.every((b) => b === 0)).toBe(true);
    expect(cache.size).toBe(0);
    cache.set(salt, TEST_SCRYPT, randomBytes(32));
    expect(cache.size).toBe(0);
  });

  it('keeps at most `max` keys, zeroing the oldest first', () => {
    const cache = new KeyCache(2);
    const p = TEST_SCRYPT;
    const salts = [1, 2, 3].map((n) => Buffer.alloc(16, n));
    const keys = salts.map((_, n) => Buffer.alloc(32, n + 1));
    for (const [i, salt] of salts.entries()) cache.set(salt, p, keys[i]!);
    expect(cache.size).toBe(2);
    expect(cache.get(salts[0]!, p)).toBeUndefined();
    expect(cache.get(salts[2]!, p)?.equals(keys[2]!)).toBe(true);
  });
});

describe('KeyCache: keys derived ahead (the daemon\'s start-up warm-up)', () => {
  it('a reader joins a derivation already running for its salt instead of deriving again', async () => {
    const salt = randomBytes(16);
    const file = await backup('device-backup-pass', salt);
    const learnt: string[] = [];
    const cache = new KeyCache(Number.POSITIVE_INFINITY, { onLearnt: (s) => learnt.push(s.toString('hex')) });
    const warming = cache.warm('device-backup-pass', salt, TEST_SCRYPT);
    const r = await readBackupBuffer(file, { passphrase: 'device-backup-pass', scrypt: TEST_SCRYPT, keyCache: cache });
    await warming;
    r.backupKey.fill(0);
    expect(cache.derivations).toBe(1);
    expect(learnt, 'the salt is reported (public), once').toEqual([salt.toString('hex')]);
    // Warm already: a second warm-up and a second open derive nothing.
    await cache.warm('device-backup-pass', salt, TEST_SCRYPT);
    (await readBackupBuffer(file, { passphrase: 'device-backup-pass', scrypt: TEST_SCRYPT, keyCache: cache })).backupKey.fill(0);
    expect(cache.derivations).toBe(1);
  });

  it('a key derived for another salt, or for the right salt under another passphrase, is harmless: the reader derives its own', async () => {
    const salt = randomBytes(16);
    const file = await backup('device-backup-pass', salt);
    const cache = new KeyCache();
    await cache.warm('device-backup-pass', randomBytes(16), TEST_SCRYPT);
    await cache.warm('an-older-passphrase', salt, TEST_SCRYPT);
    const r = await readBackupBuffer(file, { passphrase: 'device-backup-pass', scrypt: TEST_SCRYPT, keyCache: cache });
    expect(r.entries).toHaveLength(2);
    r.backupKey.fill(0);
    expect(cache.derivations).toBe(3);
    // The wrong key of the file's salt was replaced by the right one: the next open derives nothing.
    (await readBackupBuffer(file, { passphrase: 'device-backup-pass', scrypt: TEST_SCRYPT, keyCache: cache })).backupKey.fill(0);
    expect(cache.derivations).toBe(3);
  });

  it('a derivation that ends after clear() keeps nothing; warm() after clear() derives nothing', async () => {
    const salt = randomBytes(16);
    const cache = new KeyCache();
    const warming = cache.warm('pw', salt, TEST_SCRYPT);
    cache.clear();
    await warming;
    expect(cache.size).toBe(0);
    await cache.warm('pw', randomBytes(16), TEST_SCRYPT);
    expect(cache.derivations).toBe(1);
    expect(cache.size).toBe(0);
  });

  it('derive() hands out a copy the caller owns', async () => {
    const salt = randomBytes(16);
    const cache = new KeyCache();
    const mine = await cache.derive('pw', salt, TEST_SCRYPT);
    mine.fill(0);
    expect(cache.get(salt, TEST_SCRYPT)?.some((x) => x !== 0)).toBe(true);
    cache.clear();
  });
});
