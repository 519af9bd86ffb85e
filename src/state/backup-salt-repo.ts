/**
 * `device_backup_salt` (migration 006): the salt of this site's device backups and the scrypt parameters that opened
 * one, so the daemon can derive the device's backup key in the background at start (src/daemon/key-warmup.ts) instead
 * of on its first sync's path. Public values only (every backup's header carries its salt in clear): never the key.
 */
import type { Database, Statement } from 'better-sqlite3';
import { SALT_LENGTH, type ScryptParams } from '../backup/format.js';
import { prepare } from './sqlite.js';

export interface RememberedSalt {
  readonly salt: Buffer;
  readonly params: ScryptParams;
}

interface Raw {
  salt: Buffer;
  scrypt_n: number;
  scrypt_r: number;
  scrypt_p: number;
}

export class BackupSaltRepo {
  private readonly sGet: Statement<[], Raw>;
  private readonly sPut: Statement<Record<string, unknown>>;

  constructor(db: Database, private readonly now: () => number) {
    this.sGet = prepare(db, 'SELECT salt, scrypt_n, scrypt_r, scrypt_p FROM device_backup_salt WHERE id = 1');
    this.sPut = prepare(
      db,
      `INSERT INTO device_backup_salt (id, salt, scrypt_n, scrypt_r, scrypt_p, learnt_at) VALUES (1, @salt, @n, @r, @p, @at)
       ON CONFLICT (id) DO UPDATE SET salt = excluded.salt, scrypt_n = excluded.scrypt_n, scrypt_r = excluded.scrypt_r,
         scrypt_p = excluded.scrypt_p, learnt_at = excluded.learnt_at`,
    );
  }

  /** The remembered salt, if any. */
  get(): RememberedSalt | undefined {
    const r = this.sGet.get();
    return r ? { salt: Buffer.from(r.salt), params: { N: r.scrypt_n, r: r.scrypt_r, p: r.scrypt_p } } : undefined;
  }

  /** Remembers `salt` (16 bytes; else RangeError) and `params`, replacing what was remembered. */
  remember(salt: Buffer, params: ScryptParams): void {
    if (salt.length !== SALT_LENGTH) throw new RangeError(`a backup salt has ${SALT_LENGTH} bytes, not ${salt.length}`);
    this.sPut.run({ salt, n: params.N, r: params.r, p: params.p, at: this.now() });
  }
}
