/**
 * A site's transport key: an RSA key generated inside the site's NetHSM (never exported), in the root namespace, that
 * peers wrap envelope keys to (RSA-OAEP-SHA256, `envelope.ts`). The daemon creates it if absent, publishes its public
 * half through the peer API, and unwraps through the NetHSM's decrypt as the root Operator.
 *
 * Size: RSA-3072 by default. It protects every private key that crosses sites for as long as the wrapped copies could
 * be recorded (years), so it should match the ~128-bit strength of AES-256-GCM rather than RSA-2048's ~112 bits
 * (NIST SP 800-57: 2048 is acceptable only until 2030). The cost is one private-key operation per streamed import at the
 * receiving site, about 3× an RSA-2048 decrypt and small next to the import itself; generation happens once.
 */
import { constants, createHash, createPublicKey, publicEncrypt, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { writeTicket, type DeviceBarrier } from '../concurrency/barrier.js';
import { InternalError, NetHsmHttpError, TransportKeyInvalidError } from '../errors.js';
import type { Logger } from '../log.js';
import type { NetHsmClient } from '../nethsm/client.js';
import { asDeviceFault, ROOT_OPERATOR } from '../nethsm/device-fault.js';
import { isValidId } from '../nethsm/ids.js';

export const DEFAULT_TRANSPORT_KEY_ID = 'nhrtransport';
export const TRANSPORT_KEY_MECHANISM = 'RSA_Decryption_OAEP_SHA256';
export const DEFAULT_TRANSPORT_KEY_BITS = 3072;
/** Smallest and largest RSA modulus accepted for a transport key (ours or a peer's). */
export const TRANSPORT_KEY_MIN_BITS = 2048;
export const TRANSPORT_KEY_MAX_BITS = 8192;
/** A SubjectPublicKeyInfo PEM of RSA-8192 is about 1.5 kB; anything far larger is not a transport key. */
const PEM_MAX_CHARS = 4096;

export interface TransportKeyInfo {
  site: string;
  keyId: string;
  publicKeyPem: string;
  /** SHA-256 of the SubjectPublicKeyInfo DER, lowercase hex. */
  fingerprint: string;
}

/** An RSA public key checked for use as a transport key. */
export interface TransportPublicKey {
  key: KeyObject;
  bits: number;
  fingerprint: string;
}

/**
 * Parses a PEM SubjectPublicKeyInfo and checks it is RSA of 2048..8192 bits. Returns the key and its fingerprint.
 * Throws TransportKeyInvalidError naming what is wrong (never the PEM).
 */
export function parseTransportPublicKey(pem: string): TransportPublicKey {
  if (typeof pem !== 'string' || pem.length > PEM_MAX_CHARS || !pem.includes('-----BEGIN PUBLIC KEY-----')) {
    throw new TransportKeyInvalidError('transport public key is not a PEM SubjectPublicKeyInfo of bounded size');
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new TransportKeyInvalidError('transport public key PEM does not parse', { cause: err });
  }
  if (key.asymmetricKeyType !== 'rsa') {
    throw new TransportKeyInvalidError(`transport public key is ${key.asymmetricKeyType ?? 'unknown'}, not RSA`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < TRANSPORT_KEY_MIN_BITS || bits > TRANSPORT_KEY_MAX_BITS) {
    throw new TransportKeyInvalidError(`transport public key has ${bits} bits, outside ${TRANSPORT_KEY_MIN_BITS}..${TRANSPORT_KEY_MAX_BITS}`);
  }
  const der = key.export({ type: 'spki', format: 'der' });
  return { key, bits, fingerprint: createHash('sha256').update(der).digest('hex') };
}

const idField = z.string().max(128).refine(isValidId, 'must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ and be 1..128 characters');

/** Validates a peer's published transport key info: strict, the PEM is RSA ≥ 2048 bits and the fingerprint is its own. */
export const transportKeyInfoSchema: z.ZodType<TransportKeyInfo> = z
  .strictObject({
    site: idField,
    keyId: idField,
    publicKeyPem: z.string().max(PEM_MAX_CHARS),
    fingerprint: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits'),
  })
  .superRefine((info, ctx) => {
    let parsed: TransportPublicKey;
    try {
      parsed = parseTransportPublicKey(info.publicKeyPem);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['publicKeyPem'], message: (err as Error).message });
      return;
    }
    if (parsed.fingerprint !== info.fingerprint) {
      ctx.addIssue({ code: 'custom', path: ['fingerprint'], message: 'does not match the public key' });
    }
  });

export interface TransportKeyOptions {
  site: string;
  keyId?: string;
  /** Root Administrator: reads and (if absent) generates the key. */
  admin: NetHsmClient;
  /** Root Operator: decrypts (unwraps). */
  operator: NetHsmClient;
  logger?: Logger;
  /** Modulus size when the key is created (default 3072; tests may pass 2048 for speed). */
  bits?: 2048 | 3072 | 4096;
}

export class TransportKey {
  readonly site: string;
  readonly keyId: string;
  readonly #admin: NetHsmClient;
  readonly #operator: NetHsmClient;
  readonly #logger: Logger | undefined;
  readonly #bits: number;
  #info: TransportKeyInfo | undefined;

  constructor(o: TransportKeyOptions) {
    const keyId = o.keyId ?? DEFAULT_TRANSPORT_KEY_ID;
    if (!isValidId(keyId)) throw new TransportKeyInvalidError(`transport key id "${keyId}" is not a valid NetHSM key id`, { site: o.site });
    this.site = o.site;
    this.keyId = keyId;
    this.#admin = o.admin;
    this.#operator = o.operator;
    this.#logger = o.logger;
    this.#bits = o.bits ?? DEFAULT_TRANSPORT_KEY_BITS;
  }

  /**
   * Creates the key in the NetHSM if absent (idempotent; a concurrent creator's 400 "already exists" is fine), checks it
   * (RSA ≥ 2048, mechanisms exactly RSA_Decryption_OAEP_SHA256) and reads its public half. Throws
   * TransportKeyInvalidError for an existing key of the wrong kind (never replaced), NetHSM errors otherwise.
   * Resolves true when it asked the NetHSM to create the key (it wrote to the device, or lost the race to a concurrent
   * creator), false when it only read: a merge-restore this call raced need not consider it a write.
   */
  async ensure(): Promise<boolean> {
    if (await this.load()) return false;
    await this.#create();
    if (!(await this.load())) throw new TransportKeyInvalidError(`transport key "${this.keyId}" vanished right after it was created`, this.#ctx());
    return true;
  }

  /**
   * ensure() without the creation: only reads the device. Resolves false when the NetHSM holds no key under this id,
   * true once it checked the key and read its public half as ensure() does (publicInfo() works then). Throws as
   * ensure() does. A caller that must not pass the device barrier as a writer for a mere read asks this first
   * (`ensureTransportKeyAt`).
   */
  async load(): Promise<boolean> {
    const key = await this.#read();
    if (key === undefined) return false;
    if (key.type !== 'RSA' || key.mechanisms.length !== 1 || key.mechanisms[0] !== TRANSPORT_KEY_MECHANISM) {
      throw new TransportKeyInvalidError(
        `root key "${this.keyId}" is not a transport key: type ${key.type}, mechanisms [${key.mechanisms.join(', ')}]` +
          ` (expected RSA with exactly ${TRANSPORT_KEY_MECHANISM})`,
        this.#ctx(),
      );
    }
    const pem = await this.#admin.publicKeyPem(this.keyId);
    let parsed: TransportPublicKey;
    try {
      parsed = parseTransportPublicKey(pem);
    } catch (err) {
      throw new TransportKeyInvalidError(`root key "${this.keyId}": ${(err as Error).message}`, { ...this.#ctx(), cause: err });
    }
    this.#info = { site: this.site, keyId: this.keyId, publicKeyPem: pem, fingerprint: parsed.fingerprint };
    return true;
  }

  /**
   * Replaces a transport key this site inherited: init-replica's full restore copies the primary's root keys, so a
   * bootstrapped replica starts with the primary's transport key. Deletes it (a 404 is fine) and creates this site's
   * own. Envelopes sealed to the old key then fail to open and the namespace catches up by snapshot.
   */
  async replaceInherited(): Promise<void> {
    try {
      await this.#admin.deleteKey(this.keyId);
    } catch (err) {
      if (!(err instanceof NetHsmHttpError && err.status === 404)) throw err;
    }
    this.#info = undefined;
    await this.ensure();
  }

  /** What the peer API publishes. Throws InternalError before a successful ensure(). */
  publicInfo(): TransportKeyInfo {
    if (this.#info === undefined) throw new InternalError('TransportKey.publicInfo() called before ensure()', this.#ctx());
    return { ...this.#info };
  }

  /**
   * Unwraps a wrapped AES key through the NetHSM (decrypt OAEP_SHA256 as the root Operator). The caller zeroes the
   * result. A 404 (the key was deleted or moved under the daemon) is a TransportKeyInvalidError; a 401/403 is a
   * NetHsmCredentialRefusedError naming the root Operator, a 412 a NetHsmNotOperationalError (device-fault.ts); other
   * NetHSM errors propagate (a 400 means the wrapped key is not for this key or was altered).
   */
  async unwrap(wrapped: Buffer): Promise<Buffer> {
    try {
      return await this.#operator.decrypt(this.keyId, 'OAEP_SHA256', wrapped);
    } catch (err) {
      if (err instanceof NetHsmHttpError && err.status === 404) {
        throw new TransportKeyInvalidError(`transport key "${this.keyId}" is no longer in the NetHSM (deleted or moved); ensure() creates a new one`, {
          ...this.#ctx(),
          cause: err,
        });
      }
      throw asDeviceFault(err, ROOT_OPERATOR);
    }
  }

  /**
   * Proves the whole unwrap path once (e.g. at start-up, after ensure()): wraps 32 random bytes to the public half and
   * unwraps them through the NetHSM as the Operator. Throws TransportKeyInvalidError if the result differs, what
   * unwrap() throws otherwise (NetHsmCredentialRefusedError for wrong Operator credentials or role). Counts one operation on the key.
   */
  async check(): Promise<void> {
    const info = this.publicInfo();
    const probe = randomBytes(32);
    let back: Buffer | undefined;
    try {
      const wrapped = publicEncrypt({ key: info.publicKeyPem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, probe);
      back = await this.unwrap(wrapped);
      if (back.length !== probe.length || !timingSafeEqual(back, probe)) {
        throw new TransportKeyInvalidError(`transport key "${this.keyId}" did not unwrap what was wrapped to its public half`, this.#ctx());
      }
    } finally {
      probe.fill(0);
      back?.fill(0);
    }
  }

  async #read(): Promise<{ type: string; mechanisms: readonly string[] } | undefined> {
    try {
      const k = await this.#admin.getKey(this.keyId);
      return { type: k.type, mechanisms: k.mechanisms };
    } catch (err) {
      if (err instanceof NetHsmHttpError && err.status === 404) return undefined;
      throw err;
    }
  }

  async #create(): Promise<void> {
    try {
      await this.#admin.generateKey({ type: 'RSA', mechanisms: [TRANSPORT_KEY_MECHANISM], length: this.#bits, id: this.keyId });
      this.#logger?.info({ site: this.site, keyId: this.keyId, bits: this.#bits }, 'transport key generated in the NetHSM');
    } catch (err) {
      // Another creator won the race: the key exists now, and ensure() checks what it is.
      if (err instanceof NetHsmHttpError && err.status === 400 && /already exists/i.test(err.nethsmMessage ?? '')) return;
      throw err;
    }
  }

  #ctx(): { site: string } {
    return { site: this.site };
  }
}

/**
 * Makes `tk` ready (its public half known) as a writer of the device behind `barrier` must (docs/concurrency.md,
 * "Snapshot sync"). It first only reads, outside any hold: a read changes nothing that a merge-restore could wipe or
 * its verification compare, and a write holder it is not (the barrier counts every non-read-only admission as a write
 * that may have touched what it scopes; unscoped, anything, which makes a restore's verification skip itself). Only
 * when the key is absent does it take a shared write hold to create it (ensure() reads again inside it: a concurrent
 * creator may have won). That hold is unscoped: the key is a root key, `/key/<id>`, outside every namespace, and a
 * verification compares root keys; a racing creation would show as an entry B3 has and the merged file lacks. Its
 * ticket says `none` when the read inside found the key after all, and stays `unknown` when it created it (a
 * transport key exists on this device only: a restore that erased it cannot re-apply it). Throws as ensure() does.
 */
export async function ensureTransportKeyAt(tk: TransportKey, barrier: DeviceBarrier): Promise<void> {
  if (await tk.load()) return;
  const ticket = writeTicket();
  await barrier.shared(
    async () => {
      if (!(await tk.ensure())) ticket.replay = { kind: 'none' };
    },
    { wait: 'unbounded', ticket, purpose: 'transport key creation' },
  );
}
