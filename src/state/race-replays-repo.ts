/**
 * `race_replays` (migrations 007, 009, 010): per namespace this site is primary of, the epoch, first change-log seq and
 * (once the restore is done) last seq a merge-restore's re-apply of racing writes must replay (docs/concurrency.md, "Racing writes re-applied"). Written
 * durably inside the exclusive hold BEFORE the restore that erases those writes; deleted once they are back on a device
 * whose namespace is still this site's, or once a fence's quarantine export holds them. A row left behind (a crash, a
 * device that failed the replay) is finished by the daemon before that namespace takes writes again. A row a fence had
 * to export without (`unexportedIn`) stays until the operator acknowledges that quarantine file. Public values only
 * (namespace names, numbers, a file name).
 *
 * Contract: `all` validates what it reads; a bad row (a hand edit, a copied file, a row of a namespace 009 found no
 * epoch for) comes back with `invalid` saying why, and is never replayed or dropped by the daemon.
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';

export interface PendingReplay {
  readonly namespace: string;
  /** The namespace's epoch when the restore erased the writes: the replay reads that epoch's change log. */
  readonly epoch: number;
  readonly fromSeq: number;
  /**
   * The last seq the replay reads: the epoch's head when the hold restored (`ended`, inside that hold). Null: the
   * restore had not finished when the record was left, or it predates migration 010; then the replay reads to the
   * epoch's head.
   */
  readonly toSeq: number | null;
  readonly createdAt: number;
  /** The quarantine file a fence exported the namespace to without these writes (the device refused them), or null. */
  readonly unexportedIn: string | null;
  /** Why the stored row is not valid (then it is neither replayed nor dropped); absent for a good row. */
  readonly invalid?: string;
}

/** What a plan records per namespace. */
export interface ReplayStart {
  readonly epoch: number;
  readonly fromSeq: number;
}

interface Raw {
  namespace: unknown;
  epoch: unknown;
  from_seq: unknown;
  to_seq: unknown;
  created_at: unknown;
  unexported_in: unknown;
}

export class RaceReplaysRepo {
  private readonly sAll: Statement<[], Raw>;
  private readonly sPut: Statement<Record<string, unknown>>;
  private readonly sEpoch: Statement<[string], { epoch: unknown }>;
  private readonly sDone: Statement<[string, number, number]>;
  private readonly sEnded: Statement<[number, string, number, number]>;
  private readonly sUnexported: Statement<[string, string, number, number]>;
  private readonly sAcked: Statement<[string]>;

  constructor(
    private readonly db: Database,
    private readonly now: () => number,
  ) {
    this.sAll = prepare(db, 'SELECT namespace, epoch, from_seq, to_seq, created_at, unexported_in FROM race_replays ORDER BY namespace');
    // A second plan for a namespace still pending keeps the earlier start: everything from it is replayed. `record`
    // refuses one at another epoch before this runs. Its end is cleared: the second restore erases the changes past the
    // first one's end too (they were on the device it backed up over), and its own `ended` sets the new end.
    this.sPut = prepare(
      db,
      `INSERT INTO race_replays (namespace, epoch, from_seq, to_seq, created_at) VALUES (@namespace, @epoch, @fromSeq, NULL, @at)
       ON CONFLICT (namespace) DO UPDATE SET from_seq = min(from_seq, excluded.from_seq), to_seq = NULL`,
    );
    this.sEpoch = prepare(db, 'SELECT epoch FROM race_replays WHERE namespace = ?');
    this.sDone = prepare(db, 'DELETE FROM race_replays WHERE namespace = ? AND epoch = ? AND from_seq >= ?');
    this.sEnded = prepare(db, 'UPDATE race_replays SET to_seq = ? WHERE namespace = ? AND epoch = ? AND from_seq = ?');
    this.sUnexported = prepare(db, 'UPDATE race_replays SET unexported_in = ? WHERE namespace = ? AND epoch = ? AND from_seq = ?');
    this.sAcked = prepare(db, 'DELETE FROM race_replays WHERE unexported_in = ?');
  }

  /** The replays pending, by namespace; a row that fails validation carries `invalid`. */
  all(): PendingReplay[] {
    return this.sAll.all().map(toPending);
  }

  /**
   * Records the replays in one durable transaction. RangeError, nothing recorded, for an epoch that is not a
   * non-negative integer, a seq that is not a positive integer, or a namespace already pending at another epoch (one
   * replay reads one epoch's log).
   */
  record(replays: ReadonlyMap<string, ReplayStart>): void {
    for (const [ns, { epoch, fromSeq }] of replays) {
      if (!Number.isSafeInteger(fromSeq) || fromSeq < 1) throw new RangeError(`change-log seq ${fromSeq} of namespace ${ns} is not a positive integer`);
      if (!Number.isSafeInteger(epoch) || epoch < 0) throw new RangeError(`epoch ${epoch} of namespace ${ns} is not a non-negative integer`);
    }
    const at = this.now();
    const run = this.db.transaction(() => {
      for (const [namespace, { epoch, fromSeq }] of replays) {
        const have = this.sEpoch.get(namespace);
        if (have && have.epoch !== epoch) throw new RangeError(`namespace ${namespace} has a replay pending at epoch ${String(have.epoch)}, not ${epoch}`);
        this.sPut.run({ namespace, epoch, fromSeq, at });
      }
    });
    if (this.db.inTransaction) run();
    else run.immediate();
  }

  /**
   * Sets where the pending replays end, in one durable transaction (the caller's, when inside one): per namespace, the
   * record of that epoch and start gets `toSeq` (a record replaced meanwhile is left alone). Called inside the
   * merge-restore's hold right after its restore, before writes are admitted again (they get higher seqs). RangeError,
   * nothing set, for a `toSeq` that is not an integer ≥ fromSeq − 1 (fromSeq − 1: nothing logged since the start).
   */
  ended(ends: ReadonlyMap<string, ReplayStart & { readonly toSeq: number }>): void {
    for (const [ns, { fromSeq, toSeq }] of ends) {
      if (!Number.isSafeInteger(toSeq) || toSeq < fromSeq - 1) throw new RangeError(`to-seq ${toSeq} of namespace ${ns} is not an integer ≥ its from-seq ${fromSeq} − 1`);
    }
    const run = this.db.transaction(() => {
      for (const [ns, { epoch, fromSeq, toSeq }] of ends) this.sEnded.run(toSeq, ns, epoch, fromSeq);
    });
    if (this.db.inTransaction) run();
    else run.immediate();
  }

  /**
   * Forgets `namespace`'s pending replay once the changes of `epoch` from `fromSeq` on are back (or in a fence's
   * quarantine export); a row an overlapping plan moved to an earlier start stays (its earlier changes are not back).
   */
  done(namespace: string, epoch: number, fromSeq: number): void {
    this.sDone.run(namespace, epoch, fromSeq);
  }

  /** Marks the replay as missing from the fence's quarantine file `file` (a name in the quarantine folder). */
  unexported(namespace: string, epoch: number, fromSeq: number, file: string): void {
    this.sUnexported.run(file, namespace, epoch, fromSeq);
  }

  /** The operator acknowledged quarantine file `file`: the replays it was exported without are forgotten (how many). */
  acknowledged(file: string): number {
    return this.sAcked.run(file).changes;
  }
}

function toPending(r: Raw): PendingReplay {
  const namespace = String(r.namespace);
  const out = {
    namespace,
    epoch: r.epoch as number,
    fromSeq: r.from_seq as number,
    toSeq: r.to_seq === null ? null : (r.to_seq as number),
    createdAt: r.created_at as number,
    unexportedIn: typeof r.unexported_in === 'string' ? r.unexported_in : null,
  };
  const invalid = problemOf(r);
  return invalid ? { ...out, invalid } : out;
}

/** What is wrong with a stored row, or undefined. */
function problemOf(r: Raw): string | undefined {
  const int = (v: unknown, min: number) => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;
  if (!int(r.epoch, 0)) return `its stored epoch ${JSON.stringify(r.epoch)} is not a non-negative integer`;
  if (!int(r.from_seq, 1)) return `its stored from-seq ${JSON.stringify(r.from_seq)} is not a positive integer`;
  // ≥ from_seq − 1: a restore with nothing logged after the start leaves an empty span, never a negative one.
  if (r.to_seq !== null && !(int(r.to_seq, 0) && (r.to_seq as number) >= (r.from_seq as number) - 1)) {
    return `its stored to-seq ${JSON.stringify(r.to_seq)} is not an integer ≥ its from-seq ${String(r.from_seq)} − 1`;
  }
  if (!int(r.created_at, 0)) return `its stored time ${JSON.stringify(r.created_at)} is not a time`;
  if (r.unexported_in !== null && typeof r.unexported_in !== 'string') return 'its stored quarantine file name is not text';
  return undefined;
}
