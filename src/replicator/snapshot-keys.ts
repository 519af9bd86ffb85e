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
 * Across restarts (issue 11: a primary restarted sealed under a fresh salt, so each replica's first sync after it paid
 * scrypt on its path): with a `GenerationRecord`, the ring records its current generation (salt, scrypt parameters,
 * birth, uses: public values, never the key) at each lease, and its first generation in a daemon's life resumes the
 * recorded one, re-deriving that salt's key, when it is still within its limits (uses < maxUses, age < maxAgeMs,
 * same scrypt parameters, born no later than now); else a fresh salt, as without a record. The AES-GCM bound stays
 * honest because uses are counted across lives: a lease's use is written (synchronously, durably) BEFORE its key is
 * handed out, so a crash at any point leaves a count at least the snapshots sealed, and age counts from the recorded
 * birth (wall clock). A use whose write fails retires the key after that snapshot (the ring stops using a key whose count
 * it could not record), so a key seals at most maxUses + 1 snapshots in all its lives. Only a state directory rolled
 * back to an older copy could undercount, by what was sealed since that copy; with the default 64 snapshots of at most a
 * few million entries each, even several such windows stay two orders of magnitude below 2^32.
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

/** A generation as recorded across the daemon's lives (public values only). */
export interface RecordedGeneration {
  readonly salt: Buffer;
  readonly params: ScryptParams;
  /** When its key was first derived (ms since the epoch, the ring's clock). */
  readonly bornAt: number;
  /** Snapshots leased under it in all lives. */
  readonly uses: number;
}

/**
 * Where the ring records its current generation (the daemon's SQLite: src/daemon/sealing-generation.ts). `load` answers
 * the recorded generation, or undefined when none is usable (it warns about a bad record itself); it may throw (then
 * treated as none). `save` replaces the record, synchronously and durably, or throws.
 */
export interface GenerationRecord {
  load(): RecordedGeneration | undefined;
  save(g: RecordedGeneration): void;
}

interface Generation {
  readonly salt: Buffer;
  readonly key: Promise<Buffer>;
  readonly bornAt: number;
  uses: number;
  leases: number;
  retired: boolean;
  /** A use could not be recorded: no further lease gets this key. */
  unrecorded: boolean;
}

export class SnapshotKeyRing {
  #current: Generation | undefined;
  /** The successor of `#current`, derived ahead of its retirement (see `#prepareNext`). */
  #next: Generation | undefined;
  #closed = false;
  #derivations = 0;
  /** The record was consulted (once per ring: only its first generation may resume one). */
  #recordLoaded = false;
  #resumed = false;

  /**
   * `record`: where generations are recorded across restarts (none: every ring starts with a fresh salt). The default
   * limits are the module comment's.
   */
  constructor(
    private readonly passphrase: string,
    private readonly scrypt: ScryptParams = PRODUCTION_SCRYPT,
    private readonly limits: { maxUses: number; maxAgeMs: number } = { maxUses: 64, maxAgeMs: 3_600_000 },
    private readonly now: () => number = Date.now,
    private readonly record?: GenerationRecord,
  ) {}

  /** The key for one snapshot and a `release` to call when the snapshot is written (or failed). */
  async lease(): Promise<{ key: SnapshotKey; release: () => void }> {
    if (this.#closed) throw new Error('snapshot key ring closed');
    const g = this.#generation();
    g.uses++;
    g.leases++;
    this.#recordUse(g);
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

  /** Whether this ring's first generation resumed the recorded one (its salt kept across a restart). */
  get resumed(): boolean {
    return this.#resumed;
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
    const next = ahead && this.#usable(ahead) ? ahead : (this.#resume() ?? this.#derive());
    if (ahead && ahead !== next) this.#retire(ahead);
    this.#current = next;
    this.#prepareNext(next);
    return next;
  }

  #usable(g: Generation): boolean {
    return !g.retired && !g.unrecorded && g.uses < this.limits.maxUses && this.now() - g.bornAt < this.limits.maxAgeMs;
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

  #derive(from?: RecordedGeneration): Generation {
    const salt = from ? Buffer.from(from.salt) : randomBytes(SALT_LENGTH);
    this.#derivations++;
    const key = deriveBackupKey(this.passphrase, salt, this.scrypt);
    key.catch(() => undefined);
    return { salt, key, bornAt: from?.bornAt ?? this.now(), uses: from?.uses ?? 0, leases: 0, retired: false, unrecorded: false };
  }

  /**
   * The recorded generation, re-derived, when this is the ring's first generation and the record is within the limits
   * (module comment); else undefined (a fresh salt follows). A failing load counts as no record.
   */
  #resume(): Generation | undefined {
    if (this.#recordLoaded || !this.record) return undefined;
    this.#recordLoaded = true;
    let r: RecordedGeneration | undefined;
    try {
      r = this.record.load();
    } catch {
      return undefined;
    }
    if (!r || r.salt.length !== SALT_LENGTH || !Number.isSafeInteger(r.uses) || r.uses < 0) return undefined;
    const { N, r: blocks, p } = this.scrypt;
    if (r.params.N !== N || r.params.r !== blocks || r.params.p !== p) return undefined;
    const age = this.now() - r.bornAt;
    if (age < 0 || age >= this.limits.maxAgeMs || r.uses >= this.limits.maxUses) return undefined;
    this.#resumed = true;
    return this.#derive(r);
  }

  /** Records `g` with its use just counted, before its key is handed out; a failed write retires it after this use. */
  #recordUse(g: Generation): void {
    if (!this.record) return;
    try {
      this.record.save({ salt: g.salt, params: this.scrypt, bornAt: g.bornAt, uses: g.uses });
    } catch {
      g.unrecorded = true;
    }
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
