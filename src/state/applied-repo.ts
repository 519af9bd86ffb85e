/**
 * The replica's side of the stream: `applied_changes` (each change applied or found in effect) together with the
 * stream position in `replica_positions`, written in one transaction. Both are keyed by the change log the change
 * came from (its log id, '' when the primary sends none): (epoch, seq) names a change only within one log. Records
 * never run ahead of the position: a snapshot that moves the position back forgets the records after it
 * (PositionsRepo.recordSyncOk), so the position alone decides what is a replay.
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';

export type AppliedOutcome = 'applied' | 'present' | 'catchup';

export interface AppliedRecord {
  namespace: string;
  sourceSite: string;
  /** The change log the change came from; undefined when the primary sends no log id. */
  logId?: string;
  epoch: number;
  seq: number;
  kind: string;
  keyId?: string;
  outcome: AppliedOutcome;
  /** When the primary committed the change: the position's lag basis. */
  changedAt: number;
}

export class AppliedRepo {
  private readonly sInsert: Statement<Record<string, unknown>>;
  private readonly sPosition: Statement<Record<string, unknown>>;
  private readonly sHas: Statement<[string, string, number, number], { one: number }>;
  private readonly sTouch: Statement<Record<string, unknown>>;
  private readonly sPrune: Statement<[number]>;
  private readonly sCount: Statement<[string], { n: number }>;
  private readonly sKnows: Statement<[string, string], { one: number }>;

  constructor(
    private readonly db: Database,
    private readonly now: () => number,
  ) {
    this.sInsert = prepare(
      db,
      `INSERT INTO applied_changes (namespace, source_site, log_id, epoch, seq, kind, key_id, outcome, applied_at)
       VALUES (@namespace, @source, @log, @epoch, @seq, @kind, @keyId, @outcome, @at)`,
    );
    this.sPosition = prepare(
      db,
      `INSERT INTO replica_positions (namespace, source_site, log_id, epoch, seq, position_taken_at, updated_at)
       VALUES (@namespace, @source, @log, @epoch, @seq, @takenAt, @at)
       ON CONFLICT (namespace, source_site) DO UPDATE SET
         log_id = excluded.log_id, epoch = excluded.epoch, seq = excluded.seq,
         position_taken_at = max(coalesce(replica_positions.position_taken_at, 0), excluded.position_taken_at),
         updated_at = excluded.updated_at`,
    );
    this.sHas = prepare(db, 'SELECT 1 AS one FROM applied_changes WHERE namespace = ? AND log_id = ? AND epoch = ? AND seq = ?');
    this.sTouch = prepare(
      db,
      `UPDATE replica_positions SET position_taken_at = @takenAt, updated_at = @at
       WHERE namespace = @namespace AND source_site = @source AND log_id = @log AND epoch = @epoch AND seq = @seq
         AND coalesce(position_taken_at, 0) < @takenAt`,
    );
    this.sPrune = prepare(db, 'DELETE FROM applied_changes WHERE applied_at < ?');
    this.sCount = prepare(db, 'SELECT count(*) AS n FROM applied_changes WHERE namespace = ?');
    this.sKnows = prepare(db, 'SELECT 1 AS one FROM applied_changes WHERE namespace = ? AND key_id = ? LIMIT 1');
  }

  /**
   * Records the change and moves the position to it, in one transaction (a savepoint inside another). Throws (and
   * records nothing) when the change was recorded before: a replay.
   */
  record(r: AppliedRecord): void {
    const run = this.db.transaction(() => {
      const at = this.now();
      const log = r.logId ?? '';
      this.sInsert.run({ namespace: r.namespace, source: r.sourceSite, log, epoch: r.epoch, seq: r.seq, kind: r.kind, keyId: r.keyId ?? null, outcome: r.outcome, at });
      this.sPosition.run({ namespace: r.namespace, source: r.sourceSite, log, epoch: r.epoch, seq: r.seq, takenAt: r.changedAt, at });
    });
    if (this.db.inTransaction) run();
    else run.immediate();
  }

  /** Whether change (epoch, seq) of change log `logId` (undefined: none) is recorded. */
  has(namespace: string, epoch: number, seq: number, logId?: string): boolean {
    return this.sHas.get(namespace, logId ?? '', epoch, seq) !== undefined;
  }

  /**
   * A heartbeat said the primary's head is the position this replica holds (same log, epoch, seq): the replica
   * reflects the primary as of `at`, so the lag basis moves there. No-op when the position differs or is already newer.
   */
  caughtUp(namespace: string, sourceSite: string, epoch: number, seq: number, at: number, logId?: string): boolean {
    return this.sTouch.run({ namespace, source: sourceSite, log: logId ?? '', epoch, seq, takenAt: at, at: this.now() }).changes > 0;
  }

  count(namespace: string): number {
    return this.sCount.get(namespace)?.n ?? 0;
  }

  /**
   * Whether a change still retained names `keyId` in `namespace`: the stream put (or touched) that key here, so a
   * snapshot that lacks it reflects a delete at the primary, not a foreign write (replicator/foreign.ts).
   */
  knowsKey(namespace: string, keyId: string): boolean {
    return this.sKnows.get(namespace, keyId) !== undefined;
  }

  /** Retention: forgets records older than `maxAgeMs` (the position itself stays). */
  prune(maxAgeMs: number): number {
    return this.sPrune.run(this.now() - maxAgeMs).changes;
  }
}
