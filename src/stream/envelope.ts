/**
 * Envelopes: the only form in which private key material crosses sites (docs/key-material.md). A fresh AES-256-GCM key
 * encrypts the plaintext (a NetHSM import body); that key is wrapped with RSA-OAEP-SHA256 to the recipient site's
 * transport key, which lives in the recipient's NetHSM, so only that NetHSM can open it.
 *
 * The GCM additional data binds the header (version, algorithm, site, transport key id and fingerprint) and the
 * caller's context (`aad`; the stream passes protocol.ts `envelopeContext`: namespace, key id, change kind and ref), so
 * an envelope cannot be replayed for another key or site even by someone who can rewrite the header.
 *
 * Versions: only v2 is sealed and opened. v1 (before the stream's context named the key id) is still recognised by
 * the schema, so a line carrying one parses, and is then refused by openEnvelope (EnvelopeInvalidError): its context
 * did not bind the key id, so it cannot be trusted; the replica takes a snapshot instead (docs/key-material.md).
 */
import { constants, createCipheriv, createDecipheriv, publicEncrypt, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { EnvelopeInvalidError, NetHsmHttpError } from '../errors.js';
import { isValidId } from '../nethsm/ids.js';
import { parseTransportPublicKey, TRANSPORT_KEY_MAX_BITS, TRANSPORT_KEY_MIN_BITS } from './transport-key.js';

export const ENVELOPE_ALG = 'RSA-OAEP-SHA256/A256GCM';
/** The only version sealed and opened; 1 is recognised but never opened (see the module comment). */
export const ENVELOPE_VERSION = 2;
export const AES_KEY_BYTES = 32;
/** Largest plaintext sealed: an RSA-8192 import body is under 2 kB; 64 KiB leaves room for metadata, bounds peers' messages. */
export const ENVELOPE_MAX_PLAINTEXT = 64 * 1024;
const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface Envelope {
  /** 2 when sealed here; 1 only in envelopes sealed by an older release (refused on opening). */
  v: 1 | 2;
  alg: 'RSA-OAEP-SHA256/A256GCM';
  site: string;
  transportKeyId: string;
  transportKeyFingerprint: string;
  /** base64 */
  wrappedKey: string;
  /** base64 */
  iv: string;
  /** base64 */
  ciphertext: string;
  /** base64 */
  tag: string;
}

const CANONICAL_B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** A canonical (padded, no whitespace) base64 string whose decoded length is within [min, max] bytes. */
function b64(min: number, max: number) {
  return z
    .string()
    .max(Math.ceil(max / 3) * 4)
    .regex(CANONICAL_B64, 'must be canonical base64')
    .refine((s) => {
      const n = (s.length / 4) * 3 - (s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0);
      return n >= min && n <= max;
    }, `must decode to ${min}..${max} bytes`);
}

const idField = z.string().max(128).refine(isValidId, 'must be a valid NetHSM id');

/** Validates an envelope from a peer: strict (no other fields), bounded sizes, canonical base64. */
export const envelopeSchema: z.ZodType<Envelope> = z.strictObject({
  v: z.union([z.literal(1), z.literal(ENVELOPE_VERSION)]),
  alg: z.literal(ENVELOPE_ALG),
  site: idField,
  transportKeyId: idField,
  transportKeyFingerprint: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits'),
  wrappedKey: b64(TRANSPORT_KEY_MIN_BITS / 8, TRANSPORT_KEY_MAX_BITS / 8),
  iv: b64(IV_BYTES, IV_BYTES),
  ciphertext: b64(1, ENVELOPE_MAX_PLAINTEXT),
  tag: b64(TAG_BYTES, TAG_BYTES),
});

/**
 * Envelopes that passed `envelopeSchema` as part of a stream line (protocol.ts parseLine), frozen so that they are
 * still what was validated: openEnvelope does not validate those a second time (a schema pass per applied import).
 */
const validated = new WeakSet<Envelope>();

/** Marks `env`, just produced by `envelopeSchema` (inside a line's schema), as validated; freezes it. Returns it. */
export function markEnvelopeValidated(env: Envelope): Envelope {
  validated.add(Object.freeze(env));
  return env;
}

/** `env` validated: as is when marked by markEnvelopeValidated, else through `envelopeSchema` (EnvelopeInvalidError). */
function validEnvelope(env: Envelope): Envelope {
  if (validated.has(env)) return env;
  const parsed = envelopeSchema.safeParse(env);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new EnvelopeInvalidError(`malformed envelope: ${issue ? `${issue.path.join('.') || '(root)'} ${issue.message}` : 'invalid'}`);
}

/** The GCM additional data: the header fields and the caller's context, newline-separated (ids and hex have no newlines). */
function additionalData(h: { site: string; transportKeyId: string; transportKeyFingerprint: string }, aad: string): Buffer {
  return Buffer.from(`nethsm-replicator envelope v${ENVELOPE_VERSION}\n${ENVELOPE_ALG}\n${h.site}\n${h.transportKeyId}\n${h.transportKeyFingerprint}\n${aad}`, 'utf8');
}

/**
 * Encrypts `plaintext` (the NetHSM import body JSON of a private key) for one recipient site: fresh AES-256-GCM key,
 * wrapped with RSA-OAEP-SHA256 to the site's transport public key. `aad` binds it to its context. Zeroes the AES key;
 * the caller owns (and zeroes) `plaintext`. Throws TransportKeyInvalidError for an unusable recipient key,
 * EnvelopeInvalidError for an empty or oversized plaintext or invalid ids.
 */
export function sealEnvelope(plaintext: Buffer, recipient: { site: string; keyId: string; publicKeyPem: string }, aad: string): Envelope {
  const key = randomBytes(AES_KEY_BYTES);
  try {
    const pub = parseTransportPublicKey(recipient.publicKeyPem);
    const wrapped = publicEncrypt({ key: pub.key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, key);
    return sealWithKey(plaintext, recipient, pub.fingerprint, key, wrapped, aad);
  } finally {
    key.fill(0);
  }
}

/**
 * Seals under a given AES key and its wrapped form (see EnvelopeSealer, which reuses one key for a bounded window).
 * Every envelope gets a fresh random IV; `aad` and the header bind it to its context. The key stays the caller's.
 */
export function sealWithKey(
  plaintext: Buffer,
  recipient: { site: string; keyId: string },
  fingerprint: string,
  key: Buffer,
  wrapped: Buffer,
  aad: string,
): Envelope {
  if (plaintext.length === 0 || plaintext.length > ENVELOPE_MAX_PLAINTEXT) {
    throw new EnvelopeInvalidError(`cannot seal ${plaintext.length} bytes: the plaintext must be 1..${ENVELOPE_MAX_PLAINTEXT} bytes`);
  }
  if (!isValidId(recipient.site) || !isValidId(recipient.keyId)) {
    throw new EnvelopeInvalidError('recipient site and transport key id must be valid NetHSM ids');
  }
  const header = { site: recipient.site, transportKeyId: recipient.keyId, transportKeyFingerprint: fingerprint };
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(additionalData(header, aad));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return {
    v: ENVELOPE_VERSION,
    alg: ENVELOPE_ALG,
    ...header,
    wrappedKey: wrapped.toString('base64'),
    iv: iv.toString('base64'),
    ciphertext: ciphertext.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
  };
}

/**
 * Opens an envelope: validates it (`env` may come straight from a peer; one from a line parseLine validated is not
 * validated again), checks it is addressed to `expect`, has `unwrap`
 * turn the wrapped AES key into the raw key (the daemon passes its TransportKey's unwrap: the NetHSM's decrypt), and
 * decrypts. Throws EnvelopeInvalidError when malformed, addressed to another site/key/fingerprint, or not authentic
 * (including a 400 from the NetHSM's decrypt); other unwrap failures (NetHSM unreachable, 5xx) propagate unchanged so
 * the caller can retry. The AES key is zeroed here; the caller zeroes the returned plaintext after use.
 */
export async function openEnvelope(
  env: Envelope,
  expect: { site: string; keyId: string; fingerprint: string },
  aad: string,
  unwrap: (wrapped: Buffer) => Promise<Buffer>,
): Promise<Buffer> {
  const e = validEnvelope(env);
  if (e.v !== ENVELOPE_VERSION) {
    throw new EnvelopeInvalidError(
      `envelope format v${e.v} is not bound to its key id and change (sealed by an older release); it is not opened, a snapshot carries the key instead`,
      { site: expect.site },
    );
  }
  if (e.site !== expect.site) throw new EnvelopeInvalidError(`envelope is addressed to site "${e.site}", not "${expect.site}"`, { site: expect.site });
  if (e.transportKeyId !== expect.keyId || e.transportKeyFingerprint !== expect.fingerprint) {
    throw new EnvelopeInvalidError(
      `envelope is sealed to transport key "${e.transportKeyId}" (${e.transportKeyFingerprint.slice(0, 16)}…), ` +
        `not this site's "${expect.keyId}" (${expect.fingerprint.slice(0, 16)}…)`,
      { site: expect.site },
    );
  }
  const key = await unwrapChecked(unwrap, Buffer.from(e.wrappedKey, 'base64'), expect.site);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(e.iv, 'base64'), { authTagLength: TAG_BYTES });
    decipher.setAAD(additionalData(e, aad));
    decipher.setAuthTag(Buffer.from(e.tag, 'base64'));
    const body = decipher.update(Buffer.from(e.ciphertext, 'base64'));
    try {
      const last = decipher.final();
      const out = Buffer.concat([body, last]);
      last.fill(0);
      return out;
    } catch (err) {
      // GCM refused the tag: the unauthenticated output must not survive.
      throw new EnvelopeInvalidError('envelope failed authentication (altered, or sealed for another context)', { site: expect.site, cause: err });
    } finally {
      body.fill(0);
    }
  } finally {
    key.fill(0);
  }
}

async function unwrapChecked(unwrap: (wrapped: Buffer) => Promise<Buffer>, wrapped: Buffer, site: string): Promise<Buffer> {
  let key: Buffer;
  try {
    key = await unwrap(wrapped);
  } catch (err) {
    if (err instanceof EnvelopeInvalidError) throw err;
    // The NetHSM answers 400 when OAEP decoding fails: the wrapped key is not for this key, or was altered.
    if (err instanceof NetHsmHttpError && err.status === 400) {
      throw new EnvelopeInvalidError('the NetHSM could not unwrap the envelope key (altered, or wrapped to another key)', { site, cause: err });
    }
    throw err;
  }
  if (key.length !== AES_KEY_BYTES) {
    key.fill(0);
    throw new EnvelopeInvalidError(`the unwrapped envelope key has ${key.length} bytes, not ${AES_KEY_BYTES}`, { site });
  }
  return key;
}
