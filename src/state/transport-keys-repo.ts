/**
 * The `peer_transport_keys` table: each peer's transport key as it published it (public half, key id, fingerprint),
 * so a primary can seal imports for a replica that is down. Public data only.
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';

export interface PeerTransportKey {
  readonly site: string;
  readonly keyId: string;
  readonly publicKeyPem: string;
  readonly fingerprint: string;
  readonly fetchedAt: number;
}

interface Raw {
  site: string;
  key_id: string;
  fingerprint: string;
  public_key_pem: string;
  fetched_at: number;
}

export class TransportKeysRepo {
  private readonly sGet: Statement<[string], Raw>;
  private readonly sSave: Statement<Record<string, unknown>>;

  constructor(db: Database, private readonly now: () => number) {
    this.sGet = prepare(db, 'SELECT * FROM peer_transport_keys WHERE site = ?');
    this.sSave = prepare(
      db,
      `INSERT INTO peer_transport_keys (site, key_id, fingerprint, public_key_pem, fetched_at)
       VALUES (@site, @keyId, @fingerprint, @pem, @at)
       ON CONFLICT (site) DO UPDATE SET key_id = excluded.key_id, fingerprint = excluded.fingerprint,
         public_key_pem = excluded.public_key_pem, fetched_at = excluded.fetched_at`,
    );
  }

  get(site: string): PeerTransportKey | undefined {
    const r = this.sGet.get(site);
    return r ? { site: r.site, keyId: r.key_id, publicKeyPem: r.public_key_pem, fingerprint: r.fingerprint, fetchedAt: r.fetched_at } : undefined;
  }

  /** Upsert of a validated key info. */
  save(k: Omit<PeerTransportKey, 'fetchedAt'>): PeerTransportKey {
    const at = this.now();
    this.sSave.run({ site: k.site, keyId: k.keyId, fingerprint: k.fingerprint, pem: k.publicKeyPem, at });
    return { ...k, fetchedAt: at };
  }
}
