/**
 * Checking that two sites share the replication passphrase without moving a snapshot (`check-config`).
 *
 * The checking site sends a fresh random challenge; the peer seals it under a key derived from its own replication
 * passphrase exactly as it seals snapshots (scrypt with the snapshots' parameters, a fresh salt; AES-256-GCM with a fresh
 * nonce), bound to both site names, and answers salt and sealed blob. The checking site derives with its passphrase and
 * opens it: it opens, and gives back the challenge, only when the passphrases are equal.
 *
 * Why this is no oracle: the peer never decrypts anything a caller sends, so nothing about its passphrase depends on a
 * caller's input beyond the challenge it seals; what a caller gets is one blob it could brute-force offline at the cost
 * of scrypt per guess, which a configured peer (the only one mutual TLS lets ask) can already do with any snapshot it
 * fetches. The peer API still rate-limits the endpoint per peer, since each answer costs the peer one scrypt.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { deriveBackupKey, gcmOpen, gcmSeal } from '../backup/crypto.js';
import { PRODUCTION_SCRYPT, SALT_LENGTH, TEST_SCRYPT, type ScryptParams } from '../backup/format.js';
import { PeerMessageInvalidError } from '../errors.js';

export const PASSPHRASE_CHECK_ENDPOINT = '/replication-passphrase-check';
const CHALLENGE_BYTES = { min: 16, max: 64 } as const;

/** Bytes of base64 text (standard alphabet, padded); undefined when it is not base64. */
function base64Bytes(s: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return undefined;
  return Buffer.from(s, 'base64');
}

const base64Of = (min: number, max: number) =>
  z.string().max(4 * Math.ceil(max / 3)).refine((s) => {
    const b = base64Bytes(s);
    return b !== undefined && b.length >= min && b.length <= max;
  }, `must be base64 of ${min}..${max} bytes`);

/** `POST /peer/v1/replication-passphrase-check` body. */
export const passphraseCheckRequestSchema = z.strictObject({ challenge: base64Of(CHALLENGE_BYTES.min, CHALLENGE_BYTES.max) });

/** The answer: what the checking site needs to derive the same key and open the sealed challenge. */
export const passphraseProofSchema = z.strictObject({
  kdf: z.strictObject({ name: z.literal('scrypt'), N: z.number().int(), r: z.number().int(), p: z.number().int() }),
  salt: base64Of(SALT_LENGTH, SALT_LENGTH),
  sealed: base64Of(CHALLENGE_BYTES.min + 28, CHALLENGE_BYTES.max + 28),
});
export type PassphraseProof = z.infer<typeof passphraseProofSchema>;

/** Who sealed the challenge for whom: bound into the seal, so an answer is good for one pair of sites only. */
export interface ProofSites {
  /** The site that seals (the peer asked). */
  sealer: string;
  /** The site that asked. */
  asker: string;
}

function additionalData(sites: ProofSites): string {
  return `nethsm-replicator replication-passphrase-check v1 ${sites.sealer}>${sites.asker}`;
}

/** A fresh challenge for one check. */
export function newChallenge(): Buffer {
  return randomBytes(32);
}

/** The peer's side: seals `challenge` under its replication passphrase with the snapshots' KDF parameters. */
export async function sealPassphraseProof(passphrase: string, challenge: Buffer, sites: ProofSites, scrypt: ScryptParams): Promise<PassphraseProof> {
  const salt = randomBytes(SALT_LENGTH);
  const key = await deriveBackupKey(passphrase, salt, scrypt);
  try {
    const sealed = gcmSeal(key, additionalData(sites), challenge);
    return { kdf: { name: 'scrypt', N: scrypt.N, r: scrypt.r, p: scrypt.p }, salt: salt.toString('base64'), sealed: sealed.toString('base64') };
  } finally {
    key.fill(0);
  }
}

/**
 * The checking side: whether `proof` opens with `passphrase` and holds `challenge`. Only the parameter sets snapshots
 * use are derived with (a peer cannot make this site spend arbitrary memory); others throw PeerMessageInvalidError.
 */
export async function openPassphraseProof(passphrase: string, challenge: Buffer, proof: PassphraseProof, sites: ProofSites): Promise<boolean> {
  const params = [PRODUCTION_SCRYPT, TEST_SCRYPT].find((k) => k.N === proof.kdf.N && k.r === proof.kdf.r && k.p === proof.kdf.p);
  if (!params) {
    throw new PeerMessageInvalidError(`${sites.sealer} sealed its passphrase check with scrypt N=${proof.kdf.N},r=${proof.kdf.r},p=${proof.kdf.p}, which snapshots never use`, {
      site: sites.sealer,
    });
  }
  const key = await deriveBackupKey(passphrase, Buffer.from(proof.salt, 'base64'), params);
  let opened: Buffer | undefined;
  try {
    opened = gcmOpen(key, additionalData(sites), Buffer.from(proof.sealed, 'base64'));
    return opened.length === challenge.length && timingSafeEqual(opened, challenge);
  } catch {
    return false;
  } finally {
    key.fill(0);
    opened?.fill(0);
  }
}

/**
 * At most `max` checks per peer in `windowMs`, one at a time: each costs the answering site one scrypt derivation.
 * `take` answers how long to wait (ms) when refused, undefined when allowed; `release` ends the one running.
 */
export class PassphraseCheckLimiter {
  readonly #seen = new Map<string, number[]>();
  readonly #running = new Set<string>();

  constructor(
    private readonly max = 5,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  take(peer: string): number | undefined {
    const t = this.now();
    const recent = (this.#seen.get(peer) ?? []).filter((at) => t - at < this.windowMs);
    if (this.#running.has(peer)) return 1_000;
    if (recent.length >= this.max) return this.windowMs - (t - recent[0]!);
    recent.push(t);
    this.#seen.set(peer, recent);
    this.#running.add(peer);
    return undefined;
  }

  release(peer: string): void {
    this.#running.delete(peer);
  }
}
