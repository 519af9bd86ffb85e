/**
 * Envelopes sealed locally and opened through a simulator's NetHSM decrypt (the transport key never leaves it):
 * round trip, every field tampered with, wrong context, wrong recipient, size bounds, and no secret in any error.
 */
import { constants, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EnvelopeInvalidError, NetHsmUnreachableError, TransportKeyInvalidError } from '../errors.js';
import { NetHsmClient } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { ENVELOPE_MAX_PLAINTEXT, envelopeSchema, openEnvelope, sealEnvelope, type Envelope } from './envelope.js';
import { envelopeContext, parseLine, type EnvelopeBinding } from './protocol.js';
import { TransportKey, type TransportKeyInfo } from './transport-key.js';

let sim: ProvisionedSimulator;
let root: NetHsmClient;
let tk: TransportKey;
let other: TransportKey;
let info: TransportKeyInfo;

const AAD = 'payments\nsigning-key-1';
/** Shaped like a real import body, with a recognisable secret inside. */
const PLAINTEXT = Buffer.from(JSON.stringify({ type: 'Generic', mechanisms: ['AES_Encryption_CBC'], private: { data: randomBytes(32).toString('base64') } }));

beforeAll(async () => {
  sim = await startProvisionedSimulator();
  root = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
  const admin = root.withAuth(sim.users.admin.username, sim.users.admin.password);
  const operator = root.withAuth(sim.users.operator.username, sim.users.operator.password);
  tk = new TransportKey({ site: 'beta', keyId: 'tkbeta', admin, operator, bits: 2048 });
  other = new TransportKey({ site: 'beta', keyId: 'tkother', admin, operator, bits: 2048 });
  await Promise.all([tk.ensure(), other.ensure()]);
  info = tk.publicInfo();
});
afterAll(async () => {
  await root?.close();
  await sim?.close();
});

const recipient = () => ({ site: info.site, keyId: info.keyId, publicKeyPem: info.publicKeyPem });
const expectOf = (i: TransportKeyInfo) => ({ site: i.site, keyId: i.keyId, fingerprint: i.fingerprint });
const open = (env: Envelope, aad = AAD, exp = expectOf(info), unwrap = (w: Buffer) => tk.unwrap(w)) => openEnvelope(env, exp, aad, unwrap);

/** Every error an open produced, for the no-secrets check at the end. */
const errors: unknown[] = [];
async function refusal(p: Promise<unknown>): Promise<EnvelopeInvalidError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EnvelopeInvalidError);
  errors.push(err);
  return err as EnvelopeInvalidError;
}

const rsaPublicPem = (modulusLength: number): string =>
  generateKeyPairSync('rsa', { modulusLength, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } }).publicKey;

/** Flips one bit of a base64 field's decoded bytes (the result stays well-formed). */
function flip(b64: string, at = 0): string {
  const b = Buffer.from(b64, 'base64');
  b[at % b.length]! ^= 0x01;
  return b.toString('base64');
}

describe('sealEnvelope / openEnvelope', () => {
  it('round-trips through the NetHSM, and zeroes the unwrapped AES key', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), AAD);
    expect(envelopeSchema.parse(env)).toEqual(env);
    expect(env).toMatchObject({ v: 2, alg: 'RSA-OAEP-SHA256/A256GCM', site: 'beta', transportKeyId: 'tkbeta', transportKeyFingerprint: info.fingerprint });
    expect(Buffer.from(env.wrappedKey, 'base64')).toHaveLength(256);
    expect(JSON.stringify(env)).not.toContain(PLAINTEXT.toString('base64').slice(0, 24));
    let unwrapped: Buffer | undefined;
    const out = await open(env, AAD, expectOf(info), async (w) => (unwrapped = await tk.unwrap(w)));
    expect(out.equals(PLAINTEXT)).toBe(true);
    expect(unwrapped).toHaveLength(32);
    expect(unwrapped!.every((x) => x === 0)).toBe(true);
  });

  it('uses a fresh key and IV per envelope', () => {
    const a = sealEnvelope(PLAINTEXT, recipient(), AAD);
    const b = sealEnvelope(PLAINTEXT, recipient(), AAD);
    expect(a.wrappedKey).not.toBe(b.wrappedKey);
    expect(a.iv).not.toBe(b.iv);
    expect(a.ciphertext).not.toBe(b.ciphertext);
  });

  it('refuses a tampered wrapped key, IV, ciphertext or tag', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), AAD);
    for (const field of ['wrappedKey', 'iv', 'ciphertext', 'tag'] as const) {
      for (const at of [0, 7]) {
        const err = await refusal(open({ ...env, [field]: flip(env[field], at) }));
        expect(err.message, field).toMatch(/failed authentication|could not unwrap/);
      }
    }
    const longer = Buffer.concat([Buffer.from(env.ciphertext, 'base64'), Buffer.from([0])]).toString('base64');
    await refusal(open({ ...env, ciphertext: longer }));
  });

  it('refuses a changed version, algorithm, site, key id or fingerprint', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), AAD);
    expect((await refusal(open({ ...env, v: 3 } as unknown as Envelope))).message).toMatch(/^malformed envelope: v /);
    expect((await refusal(open({ ...env, alg: 'RSA-OAEP-SHA1/A128GCM' } as unknown as Envelope))).message).toMatch(/^malformed envelope: alg /);
    expect((await refusal(open({ ...env, site: 'gamma' }))).message).toBe('envelope is addressed to site "gamma", not "beta"');
    expect((await refusal(open({ ...env, transportKeyId: 'tkother' }))).message).toMatch(/sealed to transport key "tkother"/);
    const otherPrint = env.transportKeyFingerprint.startsWith('0') ? `1${env.transportKeyFingerprint.slice(1)}` : `0${env.transportKeyFingerprint.slice(1)}`;
    expect((await refusal(open({ ...env, transportKeyFingerprint: otherPrint }))).message).toMatch(/sealed to transport key "tkbeta"/);
  });

  it('binds the header: a rewritten header that matches the expectation still fails authentication', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), AAD);
    // Same transport key in the NetHSM, but the envelope claims another site: the unwrap works, GCM must refuse.
    const err = await refusal(open({ ...env, site: 'gamma' }, AAD, { ...expectOf(info), site: 'gamma' }));
    expect(err.message).toMatch(/failed authentication/);
  });

  it('refuses the wrong context (aad)', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), AAD);
    await refusal(open(env, 'payments\nsigning-key-2'));
    await refusal(open(env, ''));
    await refusal(open(env, `${AAD}\n`));
  });

  it('refuses an envelope for another recipient', async () => {
    const toOther = sealEnvelope(PLAINTEXT, { site: 'beta', keyId: 'tkother', publicKeyPem: other.publicInfo().publicKeyPem }, AAD);
    expect((await refusal(open(toOther))).message).toMatch(/not this site's "tkbeta"/);
    // A header forged to name this site's key over a key wrapped to another: the NetHSM cannot unwrap it.
    const forged = { ...toOther, transportKeyId: info.keyId, transportKeyFingerprint: info.fingerprint };
    expect((await refusal(open(forged))).message).toMatch(/could not unwrap/);
    // Sealed to a key this NetHSM does not hold at all.
    const stranger = rsaPublicPem(2048);
    const toStranger = sealEnvelope(PLAINTEXT, { site: 'beta', keyId: 'tkbeta', publicKeyPem: stranger }, AAD);
    expect((await refusal(open(toStranger))).message).toMatch(/sealed to transport key "tkbeta" \([0-9a-f]{16}…\), not this site's/);
  });

  it('refuses an unwrapped key of the wrong length, zeroing it', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), AAD);
    const short = Buffer.alloc(16, 7);
    expect((await refusal(open(env, AAD, expectOf(info), () => Promise.resolve(short)))).message).toMatch(/has 16 bytes, not 32/);
    expect(short.every((x) => x === 0)).toBe(true);
  });

  it('passes on an unwrap failure that is not about the envelope (so the caller retries)', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), AAD);
    const down = new NetHsmUnreachableError('NetHSM unreachable');
    await expect(open(env, AAD, expectOf(info), () => Promise.reject(down))).rejects.toBe(down);
  });
});

describe('the stream context: namespace, key id, change kind and ref', () => {
  const real: EnvelopeBinding = { namespace: 'payments', keyId: 'signing-key-1', kind: 'key-imported', ref: '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b' };

  it('opens an envelope only for the change it was sealed for', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), envelopeContext(real));
    expect((await open(env, envelopeContext(real))).equals(PLAINTEXT)).toBe(true);
    const moved: [string, EnvelopeBinding][] = [
      ['another key id', { ...real, keyId: 'signing-key-2' }],
      ['another namespace', { ...real, namespace: 'billing' }],
      ['another kind', { ...real, kind: 'key-deleted' }],
      ['another ref', { ...real, ref: '1f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b' }],
    ];
    for (const [what, binding] of moved) {
      expect((await refusal(open(env, envelopeContext(binding)))).message, what).toMatch(/failed authentication/);
    }
  });

  it('validates the envelope of a line parseLine validated once, not again when opening it; any other envelope is validated', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), envelopeContext(real));
    const text = JSON.stringify({ type: 'change', epoch: 1, seq: 1, at: 1, ref: real.ref, kind: 'key-imported', keyId: real.keyId, envelope: env });
    const parsed = parseLine(text);
    if (!parsed.ok || parsed.line.type !== 'change' || parsed.line.kind !== 'key-imported') throw new Error('the line did not parse');
    const lineEnvelope = parsed.line.envelope;
    const schemaPasses = vi.spyOn(envelopeSchema, 'safeParse');
    try {
      expect((await open(lineEnvelope, envelopeContext(real))).equals(PLAINTEXT)).toBe(true);
      expect(schemaPasses).not.toHaveBeenCalled();
      // What passed the schema stays as it was: the line's envelope cannot be changed afterwards.
      expect(() => Object.assign(lineEnvelope, { iv: '!!!' })).toThrow(TypeError);
      expect(lineEnvelope.iv).toBe(env.iv);
      // A copy (or any envelope that did not come through parseLine) is validated, and a malformed one refused.
      expect((await open({ ...lineEnvelope }, envelopeContext(real))).equals(PLAINTEXT)).toBe(true);
      expect(schemaPasses).toHaveBeenCalledTimes(1);
      expect((await refusal(open({ ...lineEnvelope, iv: '!!!' }, envelopeContext(real)))).message).toMatch(/malformed envelope: iv/);
    } finally {
      schemaPasses.mockRestore();
    }
  });

  it('keeps the parts apart: no two bindings give the same context', () => {
    expect(envelopeContext({ ...real, namespace: 'ab', keyId: 'c' })).not.toBe(envelopeContext({ ...real, namespace: 'a', keyId: 'bc' }));
    expect(() => envelopeContext({ ...real, keyId: 'k\nkey-imported' })).toThrow(EnvelopeInvalidError);
  });

  it('refuses an envelope of the old format (v1, not bound to its key id) before anything is unwrapped', async () => {
    const env = sealEnvelope(PLAINTEXT, recipient(), envelopeContext(real));
    let unwrapped = 0;
    const err = await refusal(open({ ...env, v: 1 }, envelopeContext(real), expectOf(info), (w) => (unwrapped++, tk.unwrap(w))));
    expect(err.message).toMatch(/format v1 is not bound to its key id/);
    expect(unwrapped).toBe(0);
    expect(envelopeSchema.safeParse({ ...env, v: 1 }).success).toBe(true);
  });
});

describe('bounds', () => {
  const valid = () => sealEnvelope(PLAINTEXT, recipient(), AAD);
  const b64 = (n: number) => Buffer.alloc(n, 1).toString('base64');

  it('refuses sizes outside the bounds, extra fields and non-canonical base64', async () => {
    const env = valid();
    const cases: Record<string, unknown> = {
      'ciphertext over 64 KiB': { ...env, ciphertext: b64(ENVELOPE_MAX_PLAINTEXT + 1) },
      'empty ciphertext': { ...env, ciphertext: '' },
      'short IV': { ...env, iv: b64(8) },
      'long tag': { ...env, tag: b64(32) },
      'short wrapped key': { ...env, wrappedKey: b64(128) },
      'huge wrapped key': { ...env, wrappedKey: b64(2048) },
      'whitespace in base64': { ...env, tag: `${env.tag.slice(0, 4)}\n${env.tag.slice(4)}` },
      'unpadded base64': { ...env, iv: env.iv.replace(/=+$/, '') + 'A' },
      'url-safe base64': { ...env, wrappedKey: env.wrappedKey.replace(/\+/g, '-').replace(/\//g, '_') + (env.wrappedKey.includes('+') || env.wrappedKey.includes('/') ? '' : '-') },
      'extra field': { ...env, plaintext: 'x' },
      'missing field': { ...env, tag: undefined },
      'bad site id': { ...env, site: 'a b' },
      'uppercase fingerprint': { ...env, transportKeyFingerprint: env.transportKeyFingerprint.toUpperCase() + (/[a-f]/.test(env.transportKeyFingerprint) ? '' : 'A') },
      'not an object': 'envelope',
      'array': [env],
    };
    for (const [name, bad] of Object.entries(cases)) {
      expect(envelopeSchema.safeParse(bad).success, name).toBe(false);
      expect((await refusal(open(bad as Envelope))).message, name).toMatch(/^malformed envelope: /);
    }
  });

  it('seals only 1..64 KiB of plaintext, to RSA keys of at least 2048 bits', () => {
    expect(() => sealEnvelope(Buffer.alloc(0), recipient(), AAD)).toThrow(EnvelopeInvalidError);
    expect(() => sealEnvelope(Buffer.alloc(ENVELOPE_MAX_PLAINTEXT + 1), recipient(), AAD)).toThrow(/must be 1\.\.65536 bytes/);
    expect(sealEnvelope(Buffer.alloc(ENVELOPE_MAX_PLAINTEXT, 1), recipient(), AAD).ciphertext.length).toBeGreaterThan(80_000);
    const small = rsaPublicPem(1024);
    expect(() => sealEnvelope(PLAINTEXT, { ...recipient(), publicKeyPem: small }, AAD)).toThrow(TransportKeyInvalidError);
    expect(() => sealEnvelope(PLAINTEXT, { ...recipient(), site: '' }, AAD)).toThrow(EnvelopeInvalidError);
  });

  it('opens the largest plaintext it seals', async () => {
    const big = randomBytes(ENVELOPE_MAX_PLAINTEXT);
    expect((await open(sealEnvelope(big, recipient(), AAD))).equals(big)).toBe(true);
  });
});

describe('secrets in errors', () => {
  it('never quotes the plaintext, the AES key or the envelope content in any refusal', async () => {
    // Capture a real AES key: wrap one ourselves and make an envelope that fails authentication under it.
    const env = sealEnvelope(PLAINTEXT, recipient(), AAD);
    const aesKey = randomBytes(32);
    const wrapped = publicEncrypt({ key: info.publicKeyPem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, aesKey);
    await refusal(open({ ...env, wrappedKey: wrapped.toString('base64') }));
    expect(errors.length).toBeGreaterThan(30);
    const needles = [
      PLAINTEXT.toString('utf8').slice(-40),
      PLAINTEXT.toString('base64').slice(8, 40),
      aesKey.toString('hex').slice(0, 16),
      aesKey.toString('base64').slice(0, 16),
      env.ciphertext.slice(0, 16),
      env.wrappedKey.slice(0, 16),
    ];
    for (const e of errors) {
      let text = '';
      for (let c: unknown = e; c instanceof Error; c = c.cause) text += `${c.message}\n${JSON.stringify(c)}\n${c.stack ?? ''}\n`;
      for (const n of needles) expect(text).not.toContain(n);
    }
  });
});
