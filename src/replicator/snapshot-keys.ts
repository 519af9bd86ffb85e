/**
 * The key snapshot files are sealed with at a primary: derived from the replication passphrase with a salt, and kept
 * for a bounded number of snapshots and time instead of derived afresh for each (the firmware's scrypt costs about a
 * second per derivation, at the primary for writing and again at each replica for opening: most of what a sync of a
 * small device cost beyond the raw backups and restore). The NetHSM does the same for its own backups: one backup salt
 * per device, the key derived once.
 *
 * Bounds: every entry is sealed with AES-256-GCM under a fresh random 96-bit nonce, so one key may seal at most about
 * 2^32 entries (NIST SP 800-38D). A key is retired after `maxUses` snapshots or `maxAgeMs`, whichever comes first
 * (defaults 64 and one hour: far below 2^32 entries even for million-key namespaces). Replicas keep the keys of the
 * few latest salts (their snapshot KeyCache is bounded). The successor of a key is derived in the background once the
 * key nears retirement, and a daemon's first key at its start (`prepare()`), so no snapshot waits for scrypt.
 *
 * Ownership: `lease()` hands out the key and its salt for one snapshot; the caller must not zero or keep them. `close()`
 * zeroes every key; a ring closed while a snapshot holds its lease zeroes that key when the lease is given back.
 */
import { randomBytes } from 'node:crypto';
import { deriveBackupKey } from '../backup/crypto.js';
import { PRODUCTION_SCRYPT, SALT_LENGTH, type ScryptParams } from '../backup/format.js';

export interface SnapshotKey {
  readonly backupKey: Buffer;
  readonly salt: Buffer;
}

interface Generation {
  readonly salt: Buffer;
  readonly key: Promise<Buffer>;
  readonly bornAt: number;
  uses: number;
  leases: number;
  retired: boolean;
}

export class SnapshotKeyRing {
  #current: Generation | undefined;
  /** The successor of `#current`, derived ahead of its retirement (see `#prepareNext`). */
  #next: Generation | undefined;
  #closed = false;
  #derivations = 0;

  constructor(
    private readonly passphrase: string,
    private readonly scrypt: ScryptParams = PRODUCTION_SCRYPT,
    private readonly limits: { maxUses: number; maxAgeMs: number } = { maxUses: 64, maxAgeMs: 3_600_000 },
    private readonly now: () => number = Date.now,
  ) {}

  /** The key for one snapshot and a `release` to call when the snapshot is written (or failed). */
  async lease(): Promise<{ key: SnapshotKey; release: () => void }> {
    if (this.#closed) throw new Error('snapshot key ring closed');
    const g = this.#generation();
    g.uses++;
    g.leases++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      g.leases--;
      this.#zeroIfDone(g);
    };
    try {
      return { key: { backupKey: await g.key, salt: g.salt }, release };
    } catch (err) {
      release();
      if (this.#current === g) this.#retire(g); // a failed derivation is not kept
      throw err;
    }
  }

  /**
   * Derives the current key ahead of the first snapshot (a primary's daemon at start, src/daemon/key-warmup.ts), so that
   * snapshot does not wait for scrypt; counts no use. Resolves once the key is derived; rejects as the derivation does
   * (the key is then not kept: the next lease derives anew). Does nothing on a closed ring.
   */
  async prepare(): Promise<void> {
    if (this.#closed) return;
    const g = this.#generation();
    try {
      await g.key;
    } catch (err) {
      if (this.#current === g) this.#retire(g);
      throw err;
    }
  }

  /** How many keys this ring has derived (a test seam: a prepared ring's first snapshot adds none). */
  get derivations(): number {
    return this.#derivations;
  }

  /** Zeroes every key. Idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#current) this.#retire(this.#current);
    if (this.#next) this.#retire(this.#next);
    this.#next = undefined;
  }

  #generation(): Generation {
    const g = this.#current;
    if (g && this.#usable(g)) {
      this.#prepareNext(g);
      return g;
    }
    if (g) this.#retire(g);
    // The successor derived ahead (its age counts from its derivation), else a new one on this snapshot's path.
    const ahead = this.#next;
    this.#next = undefined;
    const next = ahead && this.#usable(ahead) ? ahead : this.#derive();
    if (ahead && ahead !== next) this.#retire(ahead);
    this.#current = next;
    this.#prepareNext(next);
    return next;
  }

  #usable(g: Generation): boolean {
    return !g.retired && g.uses < this.limits.maxUses && this.now() - g.bornAt < this.limits.maxAgeMs;
  }

  /**
   * Starts deriving the successor of `g` in the background once `g` nears retirement (its last use, or three quarters
   * of its age), so the snapshot after a rotation does not wait for scrypt either. One successor at a time.
   */
  #prepareNext(g: Generation): void {
    if (this.#next || this.#closed) return;
    if (g.uses + 1 < this.limits.maxUses && this.now() - g.bornAt < this.limits.maxAgeMs * 0.75) return;
    this.#next = this.#derive();
  }

  #derive(): Generation {
    const salt = randomBytes(SALT_LENGTH);
    this.#derivations++;
    const key = deriveBackupKey(this.passphrase, salt, this.scrypt);
    key.catch(() => undefined);
    return { salt, key, bornAt: this.now(), uses: 0, leases: 0, retired: false };
  }

  #retire(g: Generation): void {
    g.retired = true;
    if (this.#current === g) this.#current = undefined;
    this.#zeroIfDone(g);
  }

  #zeroIfDone(g: Generation): void {
    if (g.retired && g.leases === 0) void g.key.then((k) => k.fill(0), () => undefined);
  }
}
