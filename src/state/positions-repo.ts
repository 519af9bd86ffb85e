/**
 * The `replica_positions` table: per replica namespace and source site, the position applied (epoch, seq) and the
 * change log it is in, the snapshot it came from, and the outcome of the last sync. A failed sync keeps the previous
 * position.
 */
import type { Database, Statement } from 'better-sqlite3';
import { InternalError } from '../errors.js';
import { prepare } from './sqlite.js';

export interface ReplicaPosition {
  readonly namespace: string;
  readonly sourceSite: string;
  /** The source's change log the position is in; undefined when the source sent no log id (or before migration 003). */
  readonly logId: string | undefined;
  /** undefined until the first successful sync. */
  readonly epoch: number | undefined;
  readonly seq: number | undefined;
  readonly snapshotId: string | undefined;
  readonly snapshotDigest: string | undefined;
  /** When the source took the state this position reflects: the basis of lag. */
  readonly positionTakenAt: number | undefined;
  readonly lastSyncAt: number | undefined;
  readonly lastSyncOutcome: 'ok' | 'failed' | undefined;
  readonly lastSyncDurationMs: number | undefined;
  readonly lastErrorCode: string | undefined;
  readonly lastOkAt: number | undefined;
  readonly updatedAt: number;
}

export interface SyncOk {
  epoch: number;
  /** 0 for a snapshot until the stream numbers changes. */
  seq?: number;
  /** The change log `seq` is in (snapshot meta `log`); undefined when the source sent none. */
  log?: string;
  snapshotId?: string;
  snapshotDigest?: string;
  /** When the source took the snapshot / emitted the change. */
  takenAt: number;
  durationMs: number;
}

export interface SyncFailed {
  errorCode: string;
  durationMs: number;
}

interface Raw {
  namespace: string;
  source_site: string;
  log_id: string;
  epoch: number | null;
  seq: number | null;
  snapshot_id: string | null;
  snapshot_digest: string | null;
  position_taken_at: number | null;
  last_sync_at: number | null;
  last_sync_outcome: 'ok' | 'failed' | null;
  last_sync_duration_ms: number | null;
  last_error_code: string | null;
  last_ok_at: number | null;
  updated_at: number;
}

const u = <T>(v: T | null): T | undefined => (v === null ? undefined : v);

const toPosition = (r: Raw): ReplicaPosition => ({
  namespace: r.namespace,
  sourceSite: r.source_site,
  logId: r.log_id === '' ? undefined : r.log_id,
  epoch: u(r.epoch),
  seq: u(r.seq),
  snapshotId: u(r.snapshot_id),
  snapshotDigest: u(r.snapshot_digest),
  positionTakenAt: u(r.position_taken_at),
  lastSyncAt: u(r.last_sync_at),
  lastSyncOutcome: u(r.last_sync_outcome),
  lastSyncDurationMs: u(r.last_sync_duration_ms),
  lastErrorCode: u(r.last_error_code),
  lastOkAt: u(r.last_ok_at),
  updatedAt: r.updated_at,
});

export class PositionsRepo {
  private readonly sGet: Statement<[string, string], Raw>;
  private readonly sList: Statement<[], Raw>;
  private readonly sForNs: Statement<[string], Raw>;
  private readonly sOk: Statement<Record<string, unknown>>;
  private readonly sFailed: Statement<Record<string, unknown>>;
  private readonly sForget: Statement<Record<string, unknown>>;
  private readonly sApplied: Statement<Record<string, unknown>, { appliedAt: number }>;
  private readonly sRewind: Statement<Record<string, unknown>>;

  constructor(
    private readonly db: Database,
    private readonly now: () => number,
  ) {
    this.sGet = prepare(db, 'SELECT * FROM replica_positions WHERE namespace = ? AND source_site = ?');
    this.sList = prepare(db, 'SELECT * FROM replica_positions ORDER BY namespace, source_site');
    this.sForNs = prepare(db, 'SELECT * FROM replica_positions WHERE namespace = ? ORDER BY last_sync_at DESC');
    this.sOk = prepare(db, 
      `INSERT INTO replica_positions (namespace, source_site, log_id, epoch, seq, snapshot_id, snapshot_digest, position_taken_at,
         last_sync_at, last_sync_outcome, last_sync_duration_ms, last_error_code, last_ok_at, updated_at)
       VALUES (@namespace, @source, @log, @epoch, @seq, @snapshotId, @snapshotDigest, @takenAt, @at, 'ok', @durationMs, NULL, @at, @at)
       ON CONFLICT (namespace, source_site) DO UPDATE SET
         log_id = excluded.log_id, epoch = excluded.epoch, seq = excluded.seq, snapshot_id = excluded.snapshot_id,
         snapshot_digest = excluded.snapshot_digest, position_taken_at = excluded.position_taken_at,
         last_sync_at = excluded.last_sync_at, last_sync_outcome = 'ok', last_sync_duration_ms = excluded.last_sync_duration_ms,
         last_error_code = NULL, last_ok_at = excluded.last_ok_at, updated_at = excluded.updated_at`,
    );
    this.sFailed = prepare(db, 
      `INSERT INTO replica_positions (namespace, source_site, last_sync_at, last_sync_outcome, last_sync_duration_ms,
         last_error_code, updated_at)
       VALUES (@namespace, @source, @at, 'failed', @durationMs, @errorCode, @at)
       ON CONFLICT (namespace, source_site) DO UPDATE SET
         last_sync_at = excluded.last_sync_at, last_sync_outcome = 'failed',
         last_sync_duration_ms = excluded.last_sync_duration_ms, last_error_code = excluded.last_error_code,
         updated_at = excluded.updated_at`,
    );
    // The records a new position does not cover: another log's, or after it in its log.
    this.sForget = prepare(
      db,
      `DELETE FROM applied_changes WHERE namespace = @namespace AND source_site = @source
         AND (log_id <> @log OR epoch > @epoch OR (epoch = @epoch AND seq > @seq))`,
    );

    this.sApplied = prepare(
      db,
      `SELECT applied_at AS appliedAt FROM applied_changes
       WHERE namespace = @namespace AND source_site = @source AND log_id = @log AND epoch = @epoch AND seq = @seq`,
    );
    // Back only, never forward: a second rewind to a later change keeps the earlier one. The lag basis goes no later
    // than when the raced change was applied: the device no longer holds it.
    this.sRewind = prepare(
      db,
      `UPDATE replica_positions SET seq = @seq, updated_at = @at,
         position_taken_at = CASE WHEN position_taken_at IS NULL THEN NULL ELSE min(position_taken_at, @takenAt) END
       WHERE namespace = @namespace AND source_site = @source AND log_id = @log AND epoch = @epoch AND seq > @seq`,
    );
  }

  get(namespace: string, sourceSite: string): ReplicaPosition | undefined {
    const r = this.sGet.get(namespace, sourceSite);
    return r ? toPosition(r) : undefined;
  }

  /** Every source's row for the namespace, most recently synced first. */
  forNamespace(namespace: string): ReplicaPosition[] {
    return this.sForNs.all(namespace).map(toPosition);
  }

  list(): ReplicaPosition[] {
    return this.sList.all().map(toPosition);
  }

  /**
   * Records a successful sync and the position it reached (upsert; the namespace must exist: foreign key). In the same
   * transaction it forgets the applied records the position does not cover: a snapshot's position can be behind
   * changes the stream applied (the snapshot was taken earlier, or the primary's log restarted), the device now
   * reflects the snapshot, and those changes, or the different ones the primary numbers the same, must be applied
   * again when they come, not skipped as replays.
   */
  recordSyncOk(namespace: string, sourceSite: string, ok: SyncOk): void {
    const p = { namespace, source: sourceSite, log: ok.log ?? '', epoch: ok.epoch, seq: ok.seq ?? 0 };
    const run = this.db.transaction(() => {
      this.sOk.run({
        ...p,
        snapshotId: ok.snapshotId ?? null,
        snapshotDigest: ok.snapshotDigest ?? null,
        takenAt: ok.takenAt,
        durationMs: ok.durationMs,
        at: this.now(),
      });
      this.sForget.run(p);
    });
    if (this.db.inTransaction) run();
    else run.immediate();
  }

  /**
   * Whether the stream change `seq` from `sourceSite` can be applied again by moving the position back before it
   * (`rewind`): the position is set (epoch and seq), at or past `seq`, and the change is recorded as applied in the
   * position's own epoch and change log. (seq numbers a change within one log across epochs, so a record in the
   * position's epoch and log is that change; a position moved to another epoch or log since has no such record.)
   * A record pruned by retention answers false: nothing left proves which change `seq` was.
   */
  canRewind(namespace: string, sourceSite: string, seq: number): boolean {
    return this.#rewindFrom(namespace, sourceSite, seq) !== undefined;
  }

  /**
   * Moves the position of (namespace, sourceSite) back to just before change `seq` (so `seq` and every later change
   * are applied again) and forgets the applied records at and after it, in one durable transaction (a savepoint
   * inside the caller's). Never moves a position forward. Throws InternalError, changing nothing, when `canRewind`
   * does not hold: the caller must ask first (for every change it rewinds for, before any rewind, since a rewind
   * forgets the records later questions rely on).
   */
  rewind(namespace: string, sourceSite: string, seq: number): void {
    const run = this.db.transaction(() => {
      const from = this.#rewindFrom(namespace, sourceSite, seq);
      if (from === undefined) throw new InternalError(`stream position of ${namespace} from ${sourceSite} cannot be moved back before change ${seq}`, { namespace, site: sourceSite });
      const p = { namespace, source: sourceSite, log: from.log, epoch: from.epoch, seq: seq - 1 };
      this.sRewind.run({ ...p, takenAt: from.appliedAt, at: this.now() });
      this.sForget.run(p);
    });
    if (this.db.inTransaction) run();
    else run.immediate();
  }

  #rewindFrom(namespace: string, sourceSite: string, seq: number): { log: string; epoch: number; appliedAt: number } | undefined {
    if (!Number.isSafeInteger(seq) || seq < 1) return undefined;
    const r = this.sGet.get(namespace, sourceSite);
    if (!r || r.epoch === null || r.seq === null || r.seq < seq) return undefined;
    const applied = this.sApplied.get({ namespace, source: sourceSite, log: r.log_id, epoch: r.epoch, seq });
    return applied ? { log: r.log_id, epoch: r.epoch, appliedAt: applied.appliedAt } : undefined;
  }

  /** Records a failed sync; the previous position stays. Upsert. */
  recordSyncFailed(namespace: string, sourceSite: string, failed: SyncFailed): void {
    this.sFailed.run({ namespace, source: sourceSite, errorCode: failed.errorCode, durationMs: failed.durationMs, at: this.now() });
  }

  /** How far behind the source the applied position is at `at` (ms), or undefined when never synced. */
  lagMs(namespace: string, sourceSite: string, at: number = this.now()): number | undefined {
    const taken = this.get(namespace, sourceSite)?.positionTakenAt;
    return taken === undefined ? undefined : Math.max(0, at - taken);
  }
}
