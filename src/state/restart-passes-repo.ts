/**
 * The `restart_passes` table (migration 013): the anti-entropy passes queued after a primary's daemon restarted
 * (src/daemon/restart-pass.ts) that have not completed, so a stop of this daemon does not forget them. One row per
 * namespace; the first queueing stands.
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';

export interface QueuedRestartPass {
  readonly namespace: string;
  readonly primarySite: string;
  /** Unix ms. */
  readonly queuedAt: number;
}

interface Raw {
  namespace: string;
  primary_site: string;
  queued_at: number;
}

export class RestartPassesRepo {
  private readonly sList: Statement<[], Raw>;
  private readonly sInsert: Statement<[string, string, number]>;
  private readonly sDelete: Statement<[string, string]>;

  constructor(db: Database, private readonly now: () => number) {
    this.sList = prepare(db, 'SELECT * FROM restart_passes ORDER BY namespace');
    this.sInsert = prepare(db, 'INSERT INTO restart_passes (namespace, primary_site, queued_at) VALUES (?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET primary_site = excluded.primary_site, queued_at = excluded.queued_at WHERE primary_site <> excluded.primary_site');
    this.sDelete = prepare(db, 'DELETE FROM restart_passes WHERE namespace = ? AND primary_site = ?');
  }

  /** Every queued pass, by namespace. */
  list(): QueuedRestartPass[] {
    return this.sList.all().map((r) => ({ namespace: r.namespace, primarySite: r.primary_site, queuedAt: r.queued_at }));
  }

  /** Records the pass queued for `namespace` from `primarySite` (one from another primary replaces it). */
  put(namespace: string, primarySite: string): void {
    this.sInsert.run(namespace, primarySite, this.now());
  }

  /** The pass of `namespace` from `primarySite` completed or was dropped. */
  delete(namespace: string, primarySite: string): void {
    this.sDelete.run(namespace, primarySite);
  }
}
