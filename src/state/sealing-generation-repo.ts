/**
 * `snapshot_sealing_generation` (migration 008): the generation a primary's snapshot key ring seals under (its salt,
 * scrypt parameters, birth and count of snapshots sealed), so a restarted daemon resumes it while it is within its
 * limits instead of sealing under a fresh salt its replicas hold no key for (src/replicator/snapshot-keys.ts). Public
 * values only (every snapshot file's header carries its salt in clear): never the key or the passphrase.
 *
 * Contract: `put` validates and throws RangeError on a bad value, leaving the row as it was; `get` validates what it
 * reads and answers `{ invalid }` for a bad row (a hand edit, a copied file) without touching it, so the caller can
 * warn and seal under a fresh salt, whose first `put` replaces the row.
 */
import type { Database, Statement } from 'better-sqlite3';
import { SALT_LENGTH, type ScryptParams } from '../backup/format.js';
import { prepare } from './sqlite.js';

export interface SealingGeneration {
  readonly salt: Buffer;
  readonly params: ScryptParams;
  /** When its key was derived (ms since the epoch). */
  readonly bornAt: number;
  /** Snapshots leased under it, in all the daemon's lives. */
  readonly uses: number;
}

export type SealingGenerationRead = { readonly generation: SealingGeneration } | { readonly invalid: string };

interface Raw {
  salt: Buffer;
  scrypt_n: number;
  scrypt_r: number;
  scrypt_p: number;
  born_at: number;
  uses: number;
}

export class SealingGenerationRepo {
  private readonly sGet: Statement<[], Raw>;
  private readonly sPut: Statement<Record<string, unknown>>;

  constructor(db: Database, private readonly now: () => number) {
    this.sGet = prepare(db, 'SELECT salt, scrypt_n, scrypt_r, scrypt_p, born_at, uses FROM snapshot_sealing_generation WHERE id = 1');
    this.sPut = prepare(
      db,
      `INSERT INTO snapshot_sealing_generation (id, salt, scrypt_n, scrypt_r, scrypt_p, born_at, uses, updated_at)
         VALUES (1, @salt, @n, @r, @p, @bornAt, @uses, @at)
       ON CONFLICT (id) DO UPDATE SET salt = excluded.salt, scrypt_n = excluded.scrypt_n, scrypt_r = excluded.scrypt_r,
         scrypt_p = excluded.scrypt_p, born_at = excluded.born_at, uses = excluded.uses, updated_at = excluded.updated_at`,
    );
  }

  /** The remembered generation, `{ invalid: why }` for a row that fails validation, or undefined when none. */
  get(): SealingGenerationRead | undefined {
    const r = this.sGet.get();
    if (!r) return undefined;
    const g: SealingGeneration = { salt: Buffer.from(r.salt), params: { N: r.scrypt_n, r: r.scrypt_r, p: r.scrypt_p }, bornAt: r.born_at, uses: r.uses };
    const invalid = problemOf(g);
    return invalid ? { invalid } : { generation: g };
  }

  /** Replaces the remembered generation; RangeError (row unchanged) when a value is out of range. */
  put(g: SealingGeneration): void {
    const invalid = problemOf(g);
    if (invalid) throw new RangeError(`snapshot sealing generation not recorded: ${invalid}`);
    this.sPut.run({ salt: g.salt, n: g.params.N, r: g.params.r, p: g.params.p, bornAt: g.bornAt, uses: g.uses, at: this.now() });
  }
}

/** What is wrong with `g`, or undefined. */
function problemOf(g: SealingGeneration): string | undefined {
  if (g.salt.length !== SALT_LENGTH) return `the salt has ${g.salt.length} bytes, not ${SALT_LENGTH}`;
  if (!Number.isSafeInteger(g.uses) || g.uses < 0) return `the use count ${g.uses} is not a count`;
  if (!Number.isSafeInteger(g.bornAt) || g.bornAt < 0) return `the birth time ${g.bornAt} is not a time`;
  const { N, r, p } = g.params;
  if (![N, r, p].every(Number.isSafeInteger) || N <= 1 || r < 1 || p < 1) return `the scrypt parameters N=${N} r=${r} p=${p} are not valid`;
  return undefined;
}
