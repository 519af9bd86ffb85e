/**
 * `race_replays` (migration 007): per namespace this site is primary of, the first change-log seq a merge-restore's
 * re-apply of racing writes must replay (docs/concurrency.md, "Racing writes re-applied"). Written durably inside the
 * exclusive hold BEFORE the restore that erases those writes; deleted once they are back. A row left behind (a crash,
 * a device that failed the replay) is finished by the daemon before that namespace takes writes again. Public values
 * only (namespace names and sequence numbers).
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';

export interface PendingReplay {
  readonly namespace: string;
  readonly fromSeq: number;
  readonly createdAt: number;
}

interface Raw {
  namespace: string;
  from_seq: number;
  created_at: number;
}

export class RaceReplaysRepo {
  private readonly sAll: Statement<[], Raw>;
  private readonly sPut: Statement<Record<string, unknown>>;
  private readonly sDone: Statement<[string, number]>;

  constructor(
    private readonly db: Database,
    private readonly now: () => number,
  ) {
    this.sAll = prepare(db, 'SELECT namespace, from_seq, created_at FROM race_replays ORDER BY namespace');
    // A second plan for a namespace still pending keeps the earlier start: everything from it is replayed.
    this.sPut = prepare(
      db,
      `INSERT INTO race_replays (namespace, from_seq, created_at) VALUES (@namespace, @fromSeq, @at)
       ON CONFLICT (namespace) DO UPDATE SET from_seq = min(from_seq, excluded.from_seq)`,
    );
    this.sDone = prepare(db, 'DELETE FROM race_replays WHERE namespace = ? AND from_seq >= ?');
  }

  /** The replays pending, by namespace. */
  all(): PendingReplay[] {
    return this.sAll.all().map((r) => ({ namespace: r.namespace, fromSeq: r.from_seq, createdAt: r.created_at }));
  }

  /** Records the replays in one durable transaction (RangeError for a seq that is not a positive integer). */
  record(replays: ReadonlyMap<string, number>): void {
    for (const [ns, seq] of replays) if (!Number.isSafeInteger(seq) || seq < 1) throw new RangeError(`change-log seq ${seq} of namespace ${ns} is not a positive integer`);
    const at = this.now();
    const run = this.db.transaction(() => {
      for (const [namespace, fromSeq] of replays) this.sPut.run({ namespace, fromSeq, at });
    });
    if (this.db.inTransaction) run();
    else run.immediate();
  }

  /**
   * Forgets `namespace`'s pending replay once the changes from `fromSeq` on are back; a row an overlapping plan moved
   * to an earlier start stays (its earlier changes are not replayed yet).
   */
  done(namespace: string, fromSeq: number): void {
    this.sDone.run(namespace, fromSeq);
  }
}
