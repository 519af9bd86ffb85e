import { describe, expect, it } from 'vitest';
import { SimHttpError } from '../http-error.js';
import { generateKey, generateKeyAsync } from './generate.js';
import { generateId } from './material.js';
import { publicKeyView } from './view.js';
import { KEY_TYPES, MECHANISMS_BY_TYPE } from './types.js';

function status400(f: () => unknown, message: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SimHttpError);
  expect((err as SimHttpError).status).toBe(400);
  expect((err as SimHttpError).body?.message).toMatch(message);
}

describe('generateKey', () => {
  it('generates every type with all of its mechanisms, in enum order', () => {
    for (const type of KEY_TYPES) {
      const length = type === 'RSA' ? 1024 : type === 'Generic' ? 256 : undefined;
      const mechanisms = [...MECHANISMS_BY_TYPE[type]].reverse();
      const { id, record } = generateKey({ type, mechanisms, ...(length === undefined ? {} : { length }) });
      expect(id).toBeUndefined();
      expect(record.type).toBe(type);
      expect(record.mechanisms).toEqual(MECHANISMS_BY_TYPE[type]);
      expect(record.operations).toBe(0);
      expect(record.cert).toBeNull();
      if (type === 'Generic') expect(record.raw?.length).toBe(32);
      else expect(record.privatePem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    }
  });

  it('keeps id, sorted tags and label; "" id means the caller generates one', () => {
    const { id, record } = generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'my-key_1.x', restrictions: { tags: ['z', 'a', 'z'] }, label: 'hello' });
    expect(id).toBe('my-key_1.x');
    expect(record.tags).toEqual(['a', 'z']);
    expect(record.label).toBe('hello');
    expect(generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: '', label: '' })).not.toHaveProperty('id');
  });

  it('ignores length for EC and Curve25519 and rounds Generic lengths up to bytes', () => {
    expect(generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], length: 99999 }).record.type).toBe('Curve25519');
    expect(generateKey({ type: 'Generic', mechanisms: ['AES_Encryption_CBC'], length: 129 }).record.raw?.length).toBe(17);
  });

  it('generates asynchronously with the same validation', async () => {
    const { record } = await generateKeyAsync({ type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_PKCS1'] });
    expect((publicKeyView(record) as { public: { modulus: string } }).public.modulus).toHaveLength(172);
    await expect(generateKeyAsync({ type: 'RSA', length: 512, mechanisms: ['RSA_Signature_PKCS1'] })).rejects.toThrow(/between 1024 and 8192/);
    expect((await generateKeyAsync({ type: 'Generic', length: 128, mechanisms: ['AES_Encryption_CBC'] })).record.raw?.length).toBe(16);
  });

  it('refuses bodies that break the schema', () => {
    status400(() => generateKey(null), /Invalid data for JSON schema/);
    status400(() => generateKey([]), /Invalid data for JSON schema/);
    status400(() => generateKey({ type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_PKCS1'], color: 'red' }), /Invalid data for JSON schema.*unknown property "color"/);
    status400(() => generateKey({ type: 'RSA', length: 1024 }), /Invalid data for JSON schema.*missing required property "mechanisms"/);
    status400(() => generateKey({ mechanisms: ['RSA_Signature_PKCS1'] }), /Invalid data for JSON schema.*"type"/);
    status400(() => generateKey({ type: 'DSA', mechanisms: [] }), /Invalid data for JSON schema.*unknown value "DSA"/);
    status400(() => generateKey({ type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_MD2'] }), /unknown mechanism/);
    status400(() => generateKey({ type: 'RSA', length: 1024, mechanisms: 'RSA_Signature_PKCS1' }), /expected a list/);
    status400(() => generateKey({ type: 'RSA', length: '1024', mechanisms: ['RSA_Signature_PKCS1'] }), /length: expected an integer/);
    status400(() => generateKey({ type: 'RSA', length: 1024.5, mechanisms: ['RSA_Signature_PKCS1'] }), /length: expected an integer/);
    status400(() => generateKey({ type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_PKCS1'], id: 7 }), /id: expected a string/);
    status400(() => generateKey({ type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_PKCS1'], restrictions: { tags: 'a' } }), /tags: expected a list/);
    status400(() => generateKey({ type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_PKCS1'], restrictions: { tags: [], other: 1 } }), /unknown property "other"/);
    status400(() => generateKey({ type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_PKCS1'], label: 5 }), /label: expected a string/);
  });

  it('applies the firmware rules on lengths, mechanisms, ids, tags and labels', () => {
    status400(() => generateKey({ type: 'RSA', mechanisms: ['RSA_Signature_PKCS1'] }), /^RSA key length must be between 1024 and 8192\.$/);
    status400(() => generateKey({ type: 'RSA', length: 128, mechanisms: ['RSA_Signature_PKCS1'] }), /between 1024 and 8192/);
    status400(() => generateKey({ type: 'RSA', length: 8200, mechanisms: ['RSA_Signature_PKCS1'] }), /between 1024 and 8192/);
    status400(() => generateKey({ type: 'RSA', length: 1024, mechanisms: [] }), /^Empty set of mechanisms$/);
    status400(() => generateKey({ type: 'RSA', length: 1024, mechanisms: ['EdDSA_Signature'] }), /^Mechanism does not match key type$/);
    status400(() => generateKey({ type: 'EC_P256', mechanisms: ['BIP340_Signature'] }), /Mechanism does not match key type/);
    status400(() => generateKey({ type: 'Generic', length: 64, mechanisms: ['AES_Encryption_CBC'] }), /^Length must be between 128 and 8192\.$/);
    status400(() => generateKey({ type: 'Generic', mechanisms: ['AES_Encryption_CBC'] }), /between 128 and 8192/);
    status400(() => generateKey({ type: 'Generic', length: 8193, mechanisms: ['AES_Encryption_CBC'] }), /between 128 and 8192/);
    status400(() => generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: '-bad' }), /ID must match/);
    status400(() => generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'x'.repeat(129) }), /ID must match/);
    status400(() => generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['ok', 'not ok'] } }), /Invalid tag "not ok"/);
    status400(() => generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], label: 'ü'.repeat(17) }), /Label is longer than 32 bytes/);
    expect(generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], label: 'ü'.repeat(16) }).record.label).toBe('ü'.repeat(16));
  });
});

describe('generateId', () => {
  it('makes 20 lowercase hex characters, different each time', () => {
    const ids = new Set(Array.from({ length: 100 }, () => generateId()));
    expect(ids.size).toBe(100);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{20}$/);
  });
});
