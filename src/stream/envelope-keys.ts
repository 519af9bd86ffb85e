/**
 * Envelope keys over a window, for throughput: unwrapping an envelope key costs the receiving NetHSM an RSA decrypt,
 * as much as the import itself. So the sender reuses one AES-256 key per recipient for a bounded window (default at
 * most 1,000 envelopes or 60 s; every envelope still has its own random IV and is bound to its own context), and the
 * receiver caches what it unwrapped, keyed by the wrapped key's hash, so one decrypt serves the window. The envelope
 * format does not change: an envelope still carries its wrapped key and opens on its own.
 *
 * Cost, stated plainly: an envelope key lives in the memory of both daemons for up to the window (never on disk),
 * where a per-envelope key lives for one call. Both caches zero keys when they expire, are evicted, or on close().
 */
import { constants, createHash, publicEncrypt, randomBytes } from 'node:crypto';
import { InternalError } from '../errors.js';
import { AES_KEY_BYTES, sealWithKey, type Envelope } from './envelope.js';
import { parseTransportPublicKey } from './transport-key.js';

export interface WindowOptions {
  /** Envelopes per key at most (GCM with random IVs stays far from its limits). Default 1000. */
  maxUses?: number;
  /** Milliseconds a key is used / kept at most. Default 60 000. */
  maxAgeMs?: number;
  now?: () => number;
  /**
   * Told of each fresh window key as it is made, with its wrapped form (the callee copies what it keeps; `key` is
   * zeroed when the window ends). The capture hands this site's OWN window keys to the receiving cache, so the log
   * replay opens its own envelopes without asking the NetHSM to unwrap what this daemon made itself.
   */
  onNewKey?: (site: string, wrapped: Buffer, key: Buffer) => void;
}

interface SealKey {
  fingerprint: string;
  key: Buffer;
  wrapped: Buffer;
  uses: number;
  createdAt: number;
}

/** The sending side: seals for a recipient with that recipient's current window key. */
export class EnvelopeSealer {
  readonly #keys = new Map<string, SealKey>();
  readonly #maxUses: number;
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  readonly #onNewKey: WindowOptions['onNewKey'];

  constructor(o: WindowOptions = {}) {
    this.#maxUses = o.maxUses ?? 1000;
    this.#maxAgeMs = o.maxAgeMs ?? 60_000;
    this.#now = o.now ?? Date.now;
    this.#onNewKey = o.onNewKey;
  }

  /** Seals `plaintext` for `recipient` (throws EnvelopeInvalidError / key parsing errors as sealEnvelope does). */
  seal(plaintext: Buffer, recipient: { site: string; keyId: string; publicKeyPem: string }, aad: string): Envelope {
    const k = this.#current(recipient);
    k.uses++;
    return sealWithKey(plaintext, recipient, k.fingerprint, k.key, k.wrapped, aad);
  }

  /** Zeroes and forgets every key. Idempotent. */
  close(): void {
    for (const k of this.#keys.values()) k.key.fill(0);
    this.#keys.clear();
  }

  #current(recipient: { site: string; keyId: string; publicKeyPem: string }): SealKey {
    const id = `${recipient.site}\n${recipient.keyId}\n${recipient.publicKeyPem}`;
    const now = this.#now();
    const k = this.#keys.get(id);
    if (k && k.uses < this.#maxUses && now - k.createdAt < this.#maxAgeMs) return k;
    if (k) k.key.fill(0);
    const pub = parseTransportPublicKey(recipient.publicKeyPem);
    const key = randomBytes(AES_KEY_BYTES);
    const wrapped = publicEncrypt({ key: pub.key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, key);
    const fresh = { fingerprint: pub.fingerprint, key, wrapped, uses: 0, createdAt: now };
    this.#keys.set(id, fresh);
    this.#onNewKey?.(recipient.site, wrapped, key);
    return fresh;
  }
}

interface CachedKey {
  key: Buffer;
  at: number;
}

/**
 * The receiving side: `unwrap(wrapped, viaNetHsm)` returns a copy of the unwrapped key (the caller zeroes it), asking
 * the NetHSM only for a wrapped key it has not unwrapped within the window. Concurrent requests for one wrapped key
 * share one NetHSM call. A failed unwrap is not cached.
 */
export class UnwrappedKeyCache {
  readonly #keys = new Map<string, CachedKey>();
  readonly #pending = new Map<string, Promise<void>>();
  readonly #maxAgeMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  /** The next expiry sweep while keys are held: an age bound kept only at the next unwrap is no bound. */
  #sweep: NodeJS.Timeout | undefined;

  constructor(o: { maxAgeMs?: number; maxEntries?: number; now?: () => number } = {}) {
    this.#maxAgeMs = o.maxAgeMs ?? 120_000;
    this.#maxEntries = o.maxEntries ?? 64;
    this.#now = o.now ?? Date.now;
  }

  get size(): number {
    return this.#keys.size;
  }

  async unwrap(wrapped: Buffer, viaNetHsm: (wrapped: Buffer) => Promise<Buffer>): Promise<Buffer> {
    const id = cacheId(wrapped);
    for (let attempt = 0; ; attempt++) {
      this.#expire();
      const hit = this.#keys.get(id);
      if (hit) return Buffer.from(hit.key);
      // Evicted between the NetHSM's answer and this read (a burst of other keys): unwrap again, once.
      if (attempt > 1) throw new InternalError('an unwrapped envelope key left the cache before it could be used');
      let p = this.#pending.get(id);
      if (!p) {
        p = viaNetHsm(wrapped).then((key) => {
          this.#store(id, Buffer.from(key));
          key.fill(0);
        });
        this.#pending.set(id, p);
        const done = () => this.#pending.delete(id);
        p.then(done, done);
      }
      await p;
    }
  }

  /**
   * Keeps a copy of `key` as what `wrapped` unwraps to, as if the NetHSM had answered: for an envelope key this daemon
   * made itself (EnvelopeSealer's `onNewKey`, this site's own window), whose unwrap through the NetHSM would only give
   * back what is already known here. Same bounds as an unwrapped key (age, entries, zeroing).
   */
  remember(wrapped: Buffer, key: Buffer): void {
    this.#store(cacheId(wrapped), Buffer.from(key));
  }

  /** Zeroes and forgets every key. Idempotent. */
  clear(): void {
    for (const k of this.#keys.values()) k.key.fill(0);
    this.#keys.clear();
    clearTimeout(this.#sweep);
    this.#sweep = undefined;
  }

  /** Takes ownership of `key` (zeroed on expiry, eviction or clear). */
  #store(id: string, key: Buffer): void {
    this.#keys.get(id)?.key.fill(0);
    this.#keys.set(id, { key, at: this.#now() });
    while (this.#keys.size > this.#maxEntries) {
      const [oldest] = this.#keys.keys();
      this.#keys.get(oldest!)!.key.fill(0);
      this.#keys.delete(oldest!);
    }
    this.#scheduleSweep();
  }

  /**
   * Zeroes each key when its age runs out, whether or not an unwrap comes: a site that seals its own envelopes during
   * a sync (remember) and never replays them would otherwise keep every such key until 64 others evicted it. Unref'd:
   * it never keeps the process alive.
   */
  #scheduleSweep(): void {
    if (this.#sweep !== undefined || this.#keys.size === 0) return;
    let oldest = Number.POSITIVE_INFINITY;
    for (const k of this.#keys.values()) oldest = Math.min(oldest, k.at);
    const delay = Math.max(0, Math.min(this.#maxAgeMs, oldest + this.#maxAgeMs - this.#now()));
    this.#sweep = setTimeout(() => {
      this.#sweep = undefined;
      this.#expire();
      this.#scheduleSweep();
    }, delay);
    this.#sweep.unref();
  }

  #expire(): void {
    const now = this.#now();
    for (const [id, k] of this.#keys) {
      if (now - k.at < this.#maxAgeMs) continue;
      k.key.fill(0);
      this.#keys.delete(id);
    }
  }
}

/** A wrapped key's place in the cache: its SHA-256 (the wrapped bytes are public; what they unwrap to is not). */
function cacheId(wrapped: Buffer): string {
  return createHash('sha256').update(wrapped).digest('hex');
}
