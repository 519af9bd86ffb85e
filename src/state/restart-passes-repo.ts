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
  /** Unix ms; null when the stored value is no time (a hand edit). */
  readonly queuedAt: number | null;
}

interface Raw {
  namespace: unknown;
  primary_site: unknown;
  queued_at: unknown;
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

  /**
   * Every queued pass, by namespace. The table is not STRICT: a hand-edited value of another type comes back as text,
   * and a `queued_at` that is no time as null (the pass is queued again all the same: dropping it would lose it).
   */
  list(): QueuedRestartPass[] {
    return this.sList.all().map((r) => ({
      namespace: String(r.namespace),
      primarySite: String(r.primary_site),
      queuedAt: typeof r.queued_at === 'number' && Number.isSafeInteger(r.queued_at) && r.queued_at >= 0 ? r.queued_at : null,
    }));
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
