import { describe, expect, it } from 'vitest';
import { BackupManifestInvalidError } from '../errors.js';
import { decodeManifest, encodeManifest, makeManifest, MANIFEST_MAX_BYTES, PathsDigest, type BackupManifest } from './manifest.js';

const base: Omit<BackupManifest, 'formatVersion'> = {
  kind: 'namespace',
  namespace: 'N',
  keyId: null,
  entryCount: 3,
  pathsDigest: `sha256:${'a'.repeat(64)}`,
  createdAt: '2025-01-02T03:04:05.000Z',
  sourceDeviceId: 'DEV1',
  sourceVersion: 1,
};

function errorOf(fn: () => unknown): BackupManifestInvalidError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BackupManifestInvalidError);
    return err as BackupManifestInvalidError;
  }
  throw new Error('did not throw');
}

describe('backup manifest', () => {
  it('round-trips through its entry value, meta included', () => {
    const m = makeManifest({ ...base, meta: { epoch: 4, position: { epoch: 4, seq: 17 } } });
    expect(decodeManifest(encodeManifest(m))).toEqual(m);
    expect(m.formatVersion).toBe(1);
  });

  it('names the offending field', () => {
    const raw = (o: object): Buffer => Buffer.from(JSON.stringify({ formatVersion: 1, ...base, ...o }));
    expect(errorOf(() => decodeManifest(raw({ entryCount: -1 }))).message).toMatch(/field entryCount/);
    expect(errorOf(() => decodeManifest(raw({ namespace: 'a/b' }))).message).toMatch(/field namespace/);
    expect(errorOf(() => decodeManifest(raw({ pathsDigest: 'md5:x' }))).message).toMatch(/field pathsDigest/);
    expect(errorOf(() => decodeManifest(raw({ kind: 'device' }))).message).toMatch(/field kind/);
    expect(errorOf(() => decodeManifest(raw({ formatVersion: 2 }))).message).toMatch(/field formatVersion/);
    expect(errorOf(() => decodeManifest(raw({ surprise: 1 }))).message).toMatch(/surprise/);
    expect(errorOf(() => decodeManifest(raw({ createdAt: 'yesterday' }))).message).toMatch(/field createdAt/);
  });

  it('checks that the kind and its fields agree', () => {
    expect(() => makeManifest({ ...base, keyId: 'k1' })).toThrow(BackupManifestInvalidError);
    expect(() => makeManifest({ ...base, kind: 'key', keyId: null })).toThrow(BackupManifestInvalidError);
    expect(() => makeManifest({ ...base, kind: 'key', keyId: 'k1', entryCount: 2 })).toThrow(BackupManifestInvalidError);
    expect(makeManifest({ ...base, kind: 'key', namespace: null, keyId: 'k1', entryCount: 1 }).namespace).toBeNull();
  });

  it('refuses non-JSON and oversized values', () => {
    expect(errorOf(() => decodeManifest(Buffer.from('{not json'))).message).toMatch(/not valid UTF-8 JSON/);
    expect(errorOf(() => decodeManifest(Buffer.from([0xff, 0xfe]))).message).toMatch(/UTF-8/);
    expect(errorOf(() => decodeManifest(Buffer.alloc(MANIFEST_MAX_BYTES + 1, 0x20))).message).toMatch(/limit/);
    expect(() => encodeManifest(makeManifest({ ...base, meta: { big: 'x'.repeat(MANIFEST_MAX_BYTES) } }))).toThrow(/limit/);
  });

  it('digests paths and value lengths, never value contents', () => {
    const d = (entries: [string, number][]): string => {
      const p = new PathsDigest();
      for (const [path, len] of entries) p.add(path, len);
      return p.digest();
    };
    const a = d([['/namespace/N', 10], ['/key/.N/k', 2000]]);
    expect(a).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(d([['/namespace/N', 10], ['/key/.N/k', 2000]])).toBe(a);
    expect(d([['/namespace/N', 10], ['/key/.N/k', 2001]])).not.toBe(a);
    expect(d([['/namespace/N', 10], ['/key/.N/j', 2000]])).not.toBe(a);
    // Length prefixes keep path boundaries: "ab"+"c" differs from "a"+"bc".
    expect(d([['/ab', 1], ['/c', 1]])).not.toBe(d([['/a', 1], ['/bc', 1]]));
  });
});
