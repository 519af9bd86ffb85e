/**
 * Backup keys of one passphrase, by salt and scrypt parameters, so each file under the same passphrase and salt costs
 * one derivation, not one per open (production scrypt: about a second, and a sync opens its device's backups up to
 * four times, the snapshot twice). One cache serves one passphrase.
 *
 * Derivations go through `derive()`: one scrypt per salt and parameters at a time, however many callers ask at once,
 * so a daemon may start one ahead of need (`warm()`, at start: src/daemon/key-warmup.ts) and the sync that needs the
 * key joins it instead of deriving again. A key derived ahead is not checked against a file: a reader that finds it
 * does not open its file calls `forget()` and derives as it would without the cache.
 *
 * Ownership: the cache holds its own copies; a reader given a cached key never zeroes it. `clear()` zeroes every key
 * (and each key still being derived as it arrives): the owner calls it when the work ends (success or failure).
 */
import { deriveBackupKey } from './crypto.js';
import type { ScryptParams } from './format.js';

export interface KeyCacheOptions {
  /**
   * Called once a key of this cache opened a file that it had to derive a key for (a salt it did not hold): the salt and
   * parameters, both public (every backup's header carries its salt), never the key. The daemon remembers its device's
   * backup salt this way, to derive the key ahead at its next start. Must not throw.
   */
  onLearnt?: (salt: Buffer, params: ScryptParams) => void;
}

export class KeyCache {
  readonly #keys = new Map<string, Buffer>();
  readonly #pending = new Map<string, Promise<void>>();
  #cleared = false;
  #derivations = 0;

  /** `max`: keys kept at most; the oldest is zeroed and forgotten first (a long-lived cache meets new salts). */
  constructor(
    private readonly max = Number.POSITIVE_INFINITY,
    private readonly options: KeyCacheOptions = {},
  ) {}

  /** The key derived for `salt` with `params`, if any (the cache's own buffer: do not zero or keep it). */
  get(salt: Buffer, params: ScryptParams): Buffer | undefined {
    return this.#keys.get(KeyCache.#id(salt, params));
  }

  /** Keeps a copy of `key` (derived for `salt` with `params`); a cleared cache keeps nothing. */
  set(salt: Buffer, params: ScryptParams, key: Buffer): void {
    if (this.#cleared) return;
    const id = KeyCache.#id(salt, params);
    this.#keys.get(id)?.fill(0);
    this.#keys.delete(id);
    this.#keys.set(id, Buffer.from(key));
    while (this.#keys.size > this.max) {
      const [oldest, k] = this.#keys.entries().next().value as [string, Buffer];
      k.fill(0);
      this.#keys.delete(oldest);
    }
  }

  /**
   * The key of `passphrase` for `salt` and `params`, as a copy the caller owns and zeroes: the cached one, or the one a
   * derivation already running gives (joined, not repeated), or a new derivation's (async scrypt, off the event loop),
   * which the cache keeps. Rejects as `deriveBackupKey` does. The key is not checked against any file.
   */
  async derive(passphrase: string | Buffer, salt: Buffer, params: ScryptParams): Promise<Buffer> {
    await this.warm(passphrase, salt, params);
    const k = this.#keys.get(KeyCache.#id(salt, params));
    if (k) return Buffer.from(k);
    // Cleared (or pushed out by newer salts) meanwhile: a key of the caller's own.
    this.#derivations++;
    return deriveBackupKey(passphrase, salt, params);
  }

  /**
   * Derives the key for `salt` and `params` ahead of need (see `derive`; nothing when the cache holds it or was
   * cleared); resolves once it is kept. Rejects as `derive` does: callers warming up log it and go on (the sync then
   * derives as it would have).
   */
  async warm(passphrase: string | Buffer, salt: Buffer, params: ScryptParams): Promise<void> {
    const id = KeyCache.#id(salt, params);
    if (!this.#keys.has(id) && !this.#cleared) await this.#derivation(id, passphrase, salt, params);
  }

  /** Zeroes and forgets the key of `salt` and `params` (one that did not open its file). */
  forget(salt: Buffer, params: ScryptParams): void {
    const id = KeyCache.#id(salt, params);
    this.#keys.get(id)?.fill(0);
    this.#keys.delete(id);
  }

  /** For readers: a key of this cache opened a file it had to be derived for; tells `options.onLearnt`. */
  learnt(salt: Buffer, params: ScryptParams): void {
    this.options.onLearnt?.(Buffer.from(salt), params);
  }

  get size(): number {
    return this.#keys.size;
  }

  /** How many scrypt derivations this cache has run (a test seam: a warm cache's sync adds none). */
  get derivations(): number {
    return this.#derivations;
  }

  /** Zeroes and forgets every key (a derivation still running is zeroed when it ends); later ones keep nothing. Idempotent. */
  clear(): void {
    this.#cleared = true;
    for (const k of this.#keys.values()) k.fill(0);
    this.#keys.clear();
  }

  /** The one derivation of `id` running (joined) or a new one; settles once its key is kept (or dropped: cleared). */
  #derivation(id: string, passphrase: string | Buffer, salt: Buffer, params: ScryptParams): Promise<void> {
    let p = this.#pending.get(id);
    if (!p) {
      this.#derivations++;
      p = deriveBackupKey(passphrase, salt, params).then((key) => {
        this.set(salt, params, key);
        key.fill(0);
      });
      const done = () => void this.#pending.delete(id);
      p.then(done, done);
      this.#pending.set(id, p);
    }
    return p;
  }

  static #id(salt: Buffer, p: ScryptParams): string {
    return `${p.N}/${p.r}/${p.p}/${salt.toString('hex')}`;
  }
}
