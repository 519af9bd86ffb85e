import { describe, expect, it } from 'vitest';
import { constants, createDecipheriv, createHash, generateKeyPairSync, publicEncrypt, scrypt } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeKeyRecord, encodeKeyRecord, yojsonString } from './record.js';
import { decrypt, publicKeyPem } from './index.js';
import type { KeyRecord } from './types.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const exportJson = path.resolve(repoRoot, '..', 'shared', 'nethsm', 'fixtures', 'backups', 'my_backup.export.json');
const haveFixture = existsSync(exportJson);
if (!haveFixture) console.warn(`record.test.ts: ${exportJson} absent, skipping the firmware key JSON compatibility test`);

/** AES-256-GCM open of nonce(12) ‖ ct ‖ tag(16) — local helper, independent of the codec under src/backup. */
function gcmOpen(key: Buffer, ad: string, sealed: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12));
  d.setAAD(Buffer.from(ad));
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
}

describe.skipIf(!haveFixture)('firmware key JSON (my_backup.bin, FACTS §6.5)', () => {
  it('decodes the real key record and re-encodes it byte for byte', async () => {
    const kv = JSON.parse(readFileSync(exportJson, 'utf8')) as Record<string, string>;
    const b = (k: string): Buffer => Buffer.from(kv[k] ?? '', 'base64');
    const uk = await new Promise<Buffer>((resolve, reject) =>
      scrypt('unlockPassphrase', b('/config/unlock-salt'), 32, { N: 16384, r: 8, p: 16, maxmem: 64 * 1024 * 1024 }, (e, k) => (e ? reject(e) : resolve(k))),
    );
    const dk = gcmOpen(uk, 'passphrase', b('.locked-domain-key'));
    const keyStoreKey = createHash('sha256').update(Buffer.concat([dk, Buffer.from('key_store')])).digest();
    const value = gcmOpen(keyStoreKey, '/key/keyID', b('/key/keyID'));
    [uk, dk, keyStoreKey].forEach((x) => x.fill(0));

    const record = decodeKeyRecord(value);
    expect(record.type).toBe('RSA');
    expect(record.mechanisms).toEqual(['RSA_Decryption_PKCS1']);
    expect(record.cert).toBeNull();
    expect(record.operations).toBe(0);
    expect(record.tags).toEqual([]);
    expect(record.label).toBeUndefined();
    expect(record.privatePem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(encodeKeyRecord(record).equals(value)).toBe(true);

    // And the key works: what is encrypted to its public key decrypts (PKCS1), as the restore test expects.
    const c = publicEncrypt({ key: publicKeyPem(record), padding: constants.RSA_PKCS1_PADDING }, Buffer.from('from the fixture'));
    expect(Buffer.from(decrypt(record, { mode: 'PKCS1', encrypted: c.toString('base64') }).decrypted, 'base64').toString()).toBe('from the fixture');
  });
});

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;

describe('key record codec', () => {
  it('writes strings the way Yojson does: raw high bytes, short escapes, lowercase \\u00xx for other controls', () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('latin1');
    const s = yojsonString(all);
    expect(s.startsWith('"\\u0000\\u0001')).toBe(true);
    expect(s).toContain('\\b\\t\\n\\u000b\\f\\r\\u000e');
    expect(s).toContain(' !\\"#');
    expect(s).toContain('[\\\\]');
    expect(s).toContain('~\\u007f\u0080');
    expect(JSON.parse(s)).toBe(all);
  });

  it('round-trips a certificate of arbitrary bytes, tags, label (UTF-8) and operations', () => {
    const r: KeyRecord = {
      type: 'EC_P256',
      mechanisms: ['ECDSA_Signature'],
      privatePem: ec,
      cert: { contentType: 'application/x-pem-file', data: Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7) % 256)) },
      operations: 42,
      tags: ['frankfurt', 'berlin'],
      label: 'Schlüssel "1"',
    };
    const enc = encodeKeyRecord(r);
    const text = enc.toString('latin1');
    expect(text.startsWith('{"mechanisms":["ECDSA_Signature"],"priv":{"PEM":"-----BEGIN PRIVATE KEY-----\\n')).toBe(true);
    expect(text).toContain('"cert":["application/x-pem-file","\\u0000\\u0007\\u000e\\u0015\\u001c#*18?FMT[bipw~\u0085');
    expect(text).toContain(',"operations":42,"restrictions":{"tags":["berlin","frankfurt"]},"label":"Schl\u00c3\u00bcssel \\"1\\""}');
    const back = decodeKeyRecord(enc);
    expect(back).toEqual({ ...r, tags: ['berlin', 'frankfurt'] });
    expect(encodeKeyRecord(back).equals(enc)).toBe(true);
  });

  it('stores Generic secrets as base64 under "raw", omits an empty label and writes {} without tags', () => {
    const r: KeyRecord = { type: 'Generic', mechanisms: ['AES_Decryption_CBC', 'AES_Encryption_CBC'], raw: Buffer.alloc(16, 0xab), cert: null, operations: 0, tags: [], label: '' };
    const enc = encodeKeyRecord(r).toString('latin1');
    expect(enc).toBe('{"mechanisms":["AES_Encryption_CBC","AES_Decryption_CBC"],"priv":{"raw":"q6urq6urq6urq6urq6urqw=="},"cert":null,"operations":0,"restrictions":{}}');
    const back = decodeKeyRecord(Buffer.from(enc, 'latin1'));
    expect(back.type).toBe('Generic');
    expect(back.raw).toEqual(Buffer.alloc(16, 0xab));
    expect(back.label).toBeUndefined();
  });

  it('refuses malformed records with an Error', () => {
    const bad = [
      'not json',
      '[]',
      '{"mechanisms":["Nope"],"priv":{"raw":""},"cert":null,"operations":0,"restrictions":{}}',
      '{"mechanisms":[],"priv":{"raw":"!!"},"cert":null,"operations":0,"restrictions":{}}',
      '{"mechanisms":[],"priv":{"PEM":"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n"},"cert":null,"operations":0,"restrictions":{}}',
      '{"mechanisms":[],"priv":{"raw":"","PEM":""},"cert":null,"operations":0,"restrictions":{}}',
      '{"mechanisms":[],"priv":{"raw":""},"cert":["x"],"operations":0,"restrictions":{}}',
      '{"mechanisms":[],"priv":{"raw":""},"cert":null,"operations":-1,"restrictions":{}}',
      '{"mechanisms":[],"priv":{"raw":""},"cert":null,"operations":0,"restrictions":{},"extra":1}',
    ];
    for (const s of bad) expect(() => decodeKeyRecord(Buffer.from(s, 'latin1')), s).toThrow(/malformed key record/);
    expect(() => encodeKeyRecord({ type: 'Generic', mechanisms: [], cert: null, operations: 0, tags: [] })).toThrow();
  });
});
