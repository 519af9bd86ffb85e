/**
 * Backup keys derived during one piece of work (one snapshot sync), by salt and scrypt parameters, so each file under
 * the same passphrase and salt costs one derivation, not one per open (production scrypt: about a second, and a sync
 * opens its device's backups up to four times, the snapshot twice). One cache serves one passphrase.
 *
 * Ownership: the cache holds its own copies; a reader given a cached key never zeroes it. `clear()` zeroes every key:
 * the owner calls it when the work ends (success or failure).
 */
import type { ScryptParams } from './format.js';

export class KeyCache {
  readonly #keys = new Map<string, Buffer>();
  #cleared = false;

  /** `max`: keys kept at most; the oldest is zeroed and forgotten first (a long-lived cache meets new salts). */
  constructor(private readonly max = Number.POSITIVE_INFINITY) {}

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

  get size(): number {
    return this.#keys.size;
  }

  /** Zeroes and forgets every key; later `set`s keep nothing. Idempotent. */
  clear(): void {
    this.#cleared = true;
    for (const k of this.#keys.values()) k.fill(0);
    this.#keys.clear();
  }

  static #id(salt: Buffer, p: ScryptParams): string {
    return `${p.N}/${p.r}/${p.p}/${salt.toString('hex')}`;
  }
}
