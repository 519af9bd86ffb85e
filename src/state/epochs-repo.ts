/**
 * The `epochs` table: every (epoch → primary site) this site has learned of, per namespace. Its primary key is the
 * store-level guard of the invariant "one primary per epoch".
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';
import { RoleSplitBrainError } from '../errors.js';

export interface EpochRow {
  readonly namespace: string;
  readonly epoch: number;
  readonly primarySite: string;
  /** 'config', 'local', or the peer's site name. */
  readonly learnedFrom: string;
  readonly learnedAt: number;
}

interface Raw {
  namespace: string;
  epoch: number;
  primary_site: string;
  learned_from: string;
  learned_at: number;
}

const toRow = (r: Raw): EpochRow => ({
  namespace: r.namespace,
  epoch: r.epoch,
  primarySite: r.primary_site,
  learnedFrom: r.learned_from,
  learnedAt: r.learned_at,
});

export class EpochsRepo {
  private readonly sGet: Statement<[string, number], Raw>;
  private readonly sInsert: Statement<[string, number, string, string, number]>;
  private readonly sHighest: Statement<[string], { e: number | null }>;
  private readonly sList: Statement<[string], Raw>;

  constructor(db: Database, private readonly now: () => number) {
    this.sGet = prepare(db, 'SELECT * FROM epochs WHERE namespace = ? AND epoch = ?');
    this.sInsert = prepare(db, 
      'INSERT INTO epochs (namespace, epoch, primary_site, learned_from, learned_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
    );
    this.sHighest = prepare(db, 'SELECT max(epoch) AS e FROM epochs WHERE namespace = ?');
    this.sList = prepare(db, 'SELECT * FROM epochs WHERE namespace = ? ORDER BY epoch');
  }

  get(namespace: string, epoch: number): EpochRow | undefined {
    const r = this.sGet.get(namespace, epoch);
    return r ? toRow(r) : undefined;
  }

  /**
   * Records that `primarySite` is primary at `epoch`. Returns `'new'` or `'known'` (same claim already recorded;
   * idempotent). Throws {@link RoleSplitBrainError} when another primary is recorded for that epoch.
   */
  record(namespace: string, epoch: number, primarySite: string, learnedFrom: string): 'new' | 'known' {
    if (this.sInsert.run(namespace, epoch, primarySite, learnedFrom, this.now()).changes === 1) return 'new';
    const existing = this.get(namespace, epoch);
    if (existing && existing.primarySite !== primarySite) {
      throw new RoleSplitBrainError(
        `namespace ${namespace}: epoch ${epoch} is already recorded with primary ${existing.primarySite} (from ${existing.learnedFrom}); ` +
          `${learnedFrom} claims ${primarySite}`,
        { namespace, epoch, site: primarySite },
      );
    }
    return 'known';
  }

  /** The highest epoch recorded for the namespace, or undefined when none. */
  highest(namespace: string): number | undefined {
    return this.sHighest.get(namespace)?.e ?? undefined;
  }

  list(namespace: string): EpochRow[] {
    return this.sList.all(namespace).map(toRow);
  }
}
