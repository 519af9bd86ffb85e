import { describe, expect, it } from 'vitest';
import { compareBackupPaths, frameField, readU24, writeU24 } from './format.js';

/** The firmware's order of a realistic v1 device backup (FACTS §6.3: depth-first, lexicographic by segment). */
const FIRMWARE_ORDER = [
  '/.initialized',
  '/authentication/.version',
  '/authentication/admin',
  '/authentication/backup',
  '/authentication/ns10~admin', // '0' (0x30) sorts before '~' (0x7e)
  '/authentication/ns1~admin',
  '/authentication/ns1~operator',
  '/authentication/ns2~admin',
  '/authentication/operator',
  '/config/backup-key',
  '/config/backup-salt',
  '/config/version',
  '/key/.ns1/k1',
  '/key/.ns1/k2',
  '/key/.ns1-b/k1',
  '/key/.ns10/a',
  '/key/.ns2/a',
  '/key/.version',
  '/key/A',
  '/key/k1',
  '/key/k1-x',
  '/key/k10',
  '/local/DEV01/config/certificate',
  '/local/DEV01/config/unlock-salt',
  '/local/DEV01/domain-key/attended',
  '/local/DEV01/domain-key/unattended',
  '/local/DEV01-b/config/unlock-salt',
  '/namespace/.version',
  '/namespace/ns1',
  '/namespace/ns10',
  '/namespace/ns2',
];

function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('compareBackupPaths', () => {
  it('sorts shuffled realistic paths into the firmware order', () => {
    for (const seed of [1, 2, 3, 42, 1234]) {
      expect(shuffled(FIRMWARE_ORDER, seed).sort(compareBackupPaths)).toEqual(FIRMWARE_ORDER);
    }
  });

  it('puts a directory\'s entries before a sibling that sorts after the directory name (unlike string order)', () => {
    expect(compareBackupPaths('/key/.ns1/k1', '/key/.ns1-b/k1')).toBeLessThan(0);
    expect('/key/.ns1/k1' < '/key/.ns1-b/k1').toBe(false); // plain string order would get this wrong
    expect(compareBackupPaths('/local/DEV01/x', '/local/DEV01-b/x')).toBeLessThan(0);
  });

  it('orders the examples of the firmware: /key/.ns/a < /key/.version < /key/k1', () => {
    expect(compareBackupPaths('/key/.ns/a', '/key/.version')).toBeLessThan(0);
    expect(compareBackupPaths('/key/.version', '/key/k1')).toBeLessThan(0);
    expect(compareBackupPaths('/key/k1', '/key/.ns/a')).toBeGreaterThan(0);
  });

  it('is a consistent total order: antisymmetric, 0 only for equal paths, parent before child', () => {
    for (const a of FIRMWARE_ORDER) {
      for (const b of FIRMWARE_ORDER) {
        const ab = Math.sign(compareBackupPaths(a, b));
        expect(ab + Math.sign(compareBackupPaths(b, a))).toBe(0);
        expect(ab === 0).toBe(a === b);
      }
    }
    expect(compareBackupPaths('/key', '/key/a')).toBeLessThan(0);
  });

  it('compares by code point (UTF-8 byte order), not UTF-16 unit', () => {
    // U+FF5E (fullwidth tilde) < U+1F600 (emoji, a surrogate pair in UTF-16) in UTF-8 byte order.
    expect(compareBackupPaths('/a/\uff5e', '/a/\u{1f600}')).toBeLessThan(0);
    expect(Buffer.compare(Buffer.from('/a/\uff5e'), Buffer.from('/a/\u{1f600}'))).toBe(-1);
  });
});

describe('u24 framing', () => {
  it('writes and reads 3-byte big-endian lengths and refuses out-of-range values', () => {
    const b = Buffer.alloc(3);
    for (const n of [0, 1, 255, 256, 65_536, 0xffffff]) {
      writeU24(b, n);
      expect(readU24(b)).toBe(n);
      expect(b.readUIntBE(0, 3)).toBe(n);
    }
    expect(() => writeU24(b, 0x1000000)).toThrow(RangeError);
    expect(() => writeU24(b, -1)).toThrow(RangeError);
    expect(frameField(Buffer.from('abc')).toString('hex')).toBe('000003616263');
  });
});
