/**
 * The `change_log` and `stream_heads` tables (streaming): the primary's numbered changes per namespace, and the last
 * sequence number allocated. Rows hold public fields and envelopes only, never key material in the clear.
 *
 * Durable reads: a change appended in a group commit whose WAL sync has not returned yet (group-commit.ts) is in the
 * table but might not survive a power loss, and then its seq would be given to another change. So `head`, `after`
 * and `get` show nothing from the first such change of a namespace on until its group is durable: what leaves this
 * site (the stream to replicas, heartbeats, the heads a snapshot is labelled with, peer status) only ever names
 * changes that are on disk, as a PostgreSQL primary sends replicas only WAL it has flushed. Seq allocation uses the
 * real head.
 */
import { randomUUID } from 'node:crypto';
import type { Database, Statement } from 'better-sqlite3';
import type { GroupEnd } from './group-commit.js';
import { prepare } from './sqlite.js';

export const CHANGE_KINDS = [
  'key-imported',
  'key-deleted',
  'key-moved',
  'cert-set',
  'cert-removed',
  'tag-added',
  'tag-removed',
  'label-set',
  'label-removed',
  'catchup',
] as const;
export type ChangeKind = (typeof CHANGE_KINDS)[number];

/** What a change says, as stored: `detail` holds the kind's public fields, `envelopes` site → envelope (imports). */
export interface ChangeRecord {
  readonly kind: ChangeKind;
  readonly keyId?: string;
  readonly ref: string;
  readonly detail: Readonly<Record<string, unknown>>;
  readonly envelopes?: Readonly<Record<string, unknown>>;
}

export interface LoggedChange extends ChangeRecord {
  readonly namespace: string;
  readonly epoch: number;
  readonly seq: number;
  readonly createdAt: number;
}

export interface StreamHead {
  readonly epoch: number;
  readonly seq: number;
}

interface Raw {
  namespace: string;
  seq: number;
  epoch: number;
  kind: ChangeKind;
  key_id: string | null;
  ref: string;
  detail: string;
  envelopes: string | null;
  created_at: number;
}

const toChange = (r: Raw): LoggedChange => ({
  namespace: r.namespace,
  epoch: r.epoch,
  seq: r.seq,
  kind: r.kind,
  ...(r.key_id !== null ? { keyId: r.key_id } : {}),
  ref: r.ref,
  detail: JSON.parse(r.detail) as Record<string, unknown>,
  ...(r.envelopes !== null ? { envelopes: JSON.parse(r.envelopes) as Record<string, unknown> } : {}),
  createdAt: r.created_at,
});

/** The JSON path of a site's entry in an `envelopes` column (site names are NetHSM ids: never a double quote). */
export const envelopePath = (site: string): string => `$."${site}"`;

/** Removes one site's entry (the path, bound twice) from the `envelopes` column of `table`; NULL when none is left. */
export const DROP_ENVELOPES_SQL = (table: 'change_log' | 'intents'): string =>
  `UPDATE ${table} SET envelopes = nullif(json_remove(envelopes, ?), '{}') WHERE envelopes IS NOT NULL AND json_type(envelopes, ?) IS NOT NULL`;

/** The group commit's view for the log: whether rows written now become durable only when their group's sync returns. */
export interface DeferredDurability {
  readonly deferring: boolean;
  whenEnded(fn: (end: GroupEnd) => void): void;
}

export class ChangeLogRepo {
  private readonly sHead: Statement<[string], { epoch: number; seq: number }>;
  private readonly sFloor: Statement<[string], { seq: number | null }>;
  private readonly sSetHead: Statement<Record<string, unknown>>;
  private readonly sInsert: Statement<Record<string, unknown>>;
  private readonly sAfter: Statement<[string, number, number, number, number], Raw>;
  private readonly sGet: Statement<[string, number], Raw>;
  private readonly sOldest: Statement<[string, number], { seq: number | null }>;
  private readonly sPruneAge: Statement<[number]>;
  private readonly sPruneCount: Statement<[number]>;
  private readonly sCount: Statement<[string], { n: number }>;
  private readonly sLogId: Statement<[string], { log_id: string }>;
  private readonly sNewLog: Statement<Record<string, unknown>>;
  private readonly sKnows: Statement<[string, string, string], { one: number }>;
  private readonly sDropEnvelopes: Statement<[string, string, string, number, number]>;
  private readonly sMaxSeq: Statement<[string], { seq: number | null }>;
  private readonly sMaxSeqAt: Statement<[string, number], { seq: number | null }>;

  /** Per namespace, seqs appended in groups not yet durable (with a count: a rolled-back seq may be appended again). */
  readonly #undurable = new Map<string, Map<number, number>>();

  constructor(
    private readonly db: Database,
    private readonly now: () => number,
    private readonly durability?: DeferredDurability,
  ) {
    this.sHead = prepare(db, 'SELECT epoch, seq FROM stream_heads WHERE namespace = ?');
    this.sFloor = prepare(db, 'SELECT max(seq) AS seq FROM replica_positions WHERE namespace = ?');
    this.sSetHead = prepare(
      db,
      `INSERT INTO stream_heads (namespace, epoch, seq, updated_at) VALUES (@namespace, @epoch, @seq, @at)
       ON CONFLICT (namespace) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq, updated_at = excluded.updated_at`,
    );
    this.sInsert = prepare(
      db,
      `INSERT INTO change_log (namespace, seq, epoch, kind, key_id, ref, detail, envelopes, created_at)
       VALUES (@namespace, @seq, @epoch, @kind, @keyId, @ref, @detail, @envelopes, @at)`,
    );
    this.sAfter = prepare(db, 'SELECT * FROM change_log WHERE namespace = ? AND epoch = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?');
    this.sGet = prepare(db, 'SELECT * FROM change_log WHERE namespace = ? AND seq = ?');
    this.sOldest = prepare(db, 'SELECT min(seq) AS seq FROM change_log WHERE namespace = ? AND epoch = ?');
    // Changes a pending re-apply of racing writes still needs (race_replays) are kept, whatever their age or count.
    const notPending = 'NOT EXISTS (SELECT 1 FROM race_replays r WHERE r.namespace = change_log.namespace AND change_log.seq >= r.from_seq)';
    this.sPruneAge = prepare(db, `DELETE FROM change_log WHERE created_at < ? AND ${notPending}`);
    this.sPruneCount = prepare(
      db,
      `DELETE FROM change_log WHERE (namespace, seq) IN (
         SELECT namespace, seq FROM (
           SELECT namespace, seq, row_number() OVER (PARTITION BY namespace ORDER BY seq DESC) AS rn FROM change_log
         ) WHERE rn > ?) AND ${notPending}`,
    );
    this.sCount = prepare(db, 'SELECT count(*) AS n FROM change_log WHERE namespace = ?');
    this.sLogId = prepare(db, 'SELECT log_id FROM stream_logs WHERE namespace = ?');
    this.sNewLog = prepare(db, 'INSERT INTO stream_logs (namespace, log_id, created_at) VALUES (@namespace, @logId, @at) ON CONFLICT (namespace) DO NOTHING');
    this.sKnows = prepare(
      db,
      "SELECT 1 AS one FROM change_log WHERE namespace = ? AND (key_id = ? OR (kind = 'key-moved' AND json_extract(detail, '$.newId') = ?)) LIMIT 1",
    );
    this.sDropEnvelopes = prepare(db, `${DROP_ENVELOPES_SQL('change_log')} AND namespace = ? AND seq > ? AND seq <= ?`);
    this.sMaxSeq = prepare(db, 'SELECT max(seq) AS seq FROM change_log WHERE namespace = ?');
    this.sMaxSeqAt = prepare(db, 'SELECT max(seq) AS seq FROM change_log WHERE namespace = ? AND epoch = ?');
  }

  /**
   * Removes every envelope addressed to `site` (a change's `envelopes` entry under that name; NULL when none is left)
   * from `namespace`'s changes with `afterSeq < seq <= toSeq` (a primary-key range: callers bound it, so a log of a
   * million imports is not parsed whole). Used for this site's own envelopes (log-replay.ts), which only live while a
   * merge-restore may need them. Returns the rows changed.
   */
  dropEnvelopesOf(site: string, namespace: string, afterSeq: number, toSeq: number): number {
    return this.sDropEnvelopes.run(envelopePath(site), envelopePath(site), namespace, afterSeq, toSeq).changes;
  }

  /** The highest seq logged for `namespace` in any epoch (0 when none): a bound for dropEnvelopesOf. */
  maxSeq(namespace: string): number {
    return this.sMaxSeq.get(namespace)?.seq ?? 0;
  }

  /**
   * The identity of this site's change log of `namespace`: a random UUID made the first time it is asked for and kept
   * for the life of this database. (epoch, seq) numbers a change only within one log; a site whose state was lost
   * starts a new log (numbered from 1 again) under a new id, so a replica can tell its position is not in it
   * (docs/streaming.md, "Change-log identity"). The namespace must exist (foreign key).
   */
  logId(namespace: string): string {
    const have = this.sLogId.get(namespace);
    if (have) return have.log_id;
    this.sNewLog.run({ namespace, logId: randomUUID(), at: this.now() });
    return this.sLogId.get(namespace)!.log_id;
  }

  /**
   * The head of `namespace` as seen at `epoch`: the last seq allocated at that epoch, or, before the epoch's first
   * change (a promote here), the highest seq this site allocated or applied for the namespace, so numbering continues
   * from where the previous primary left off. `{ epoch, seq: 0 }` for a namespace that never had a change.
   */
  head(namespace: string, epoch: number): StreamHead {
    const h = this.#allocated(namespace, epoch);
    return { epoch, seq: Math.min(h.seq, this.#visibleUpTo(namespace)) };
  }

  /** The last seq allocated (durable or not): what the next change follows. */
  #allocated(namespace: string, epoch: number): StreamHead {
    const h = this.sHead.get(namespace);
    if (h && h.epoch === epoch) return { epoch, seq: h.seq };
    const floor = this.sFloor.get(namespace)?.seq ?? 0;
    return { epoch, seq: Math.max(h?.seq ?? 0, floor) };
  }

  /** Appends one change at `epoch` with the next seq, in one transaction. Returns it as stored. */
  append(namespace: string, epoch: number, change: ChangeRecord): LoggedChange {
    const run = this.db.transaction((): LoggedChange => {
      const seq = this.#allocated(namespace, epoch).seq + 1;
      const at = this.now();
      this.sInsert.run({
        namespace,
        seq,
        epoch,
        kind: change.kind,
        keyId: change.keyId ?? null,
        ref: change.ref,
        detail: JSON.stringify(change.detail),
        envelopes: change.envelopes ? JSON.stringify(change.envelopes) : null,
        at,
      });
      this.sSetHead.run({ namespace, epoch, seq, at });
      if (this.durability?.deferring) this.#hideUntilDurable(namespace, seq);
      return { namespace, epoch, seq, createdAt: at, ...change };
    });
    return this.db.inTransaction ? run() : run.immediate();
  }

  /**
   * The last durable seq logged at `epoch` (0 when none is retained): the head of an epoch the namespace has moved past
   * (`head` numbers the current one). A re-apply of racing writes recorded at an earlier epoch replays up to it.
   */
  lastSeqAt(namespace: string, epoch: number): number {
    return Math.min(this.sMaxSeqAt.get(namespace, epoch)?.seq ?? 0, this.#visibleUpTo(namespace));
  }

  /** Up to `limit` durable changes of `epoch` with seq > `afterSeq`, in order. */
  after(namespace: string, epoch: number, afterSeq: number, limit = 100): LoggedChange[] {
    return this.sAfter.all(namespace, epoch, afterSeq, this.#visibleUpTo(namespace), limit).map(toChange);
  }

  /** A durable change by seq. */
  get(namespace: string, seq: number): LoggedChange | undefined {
    const r = seq <= this.#visibleUpTo(namespace) ? this.sGet.get(namespace, seq) : undefined;
    return r ? toChange(r) : undefined;
  }

  /** The highest seq of `namespace` readers may see: below every change whose group is not durable yet. */
  #visibleUpTo(namespace: string): number {
    const pending = this.#undurable.get(namespace);
    return pending && pending.size > 0 ? Math.min(...pending.keys()) - 1 : Number.MAX_SAFE_INTEGER;
  }

  /** Hides `seq` until its group is durable or rolled back; after a failed sync it stays hidden (until a restart). */
  #hideUntilDurable(namespace: string, seq: number): void {
    let pending = this.#undurable.get(namespace);
    if (!pending) this.#undurable.set(namespace, (pending = new Map()));
    const hidden = pending;
    hidden.set(seq, (hidden.get(seq) ?? 0) + 1);
    this.durability!.whenEnded((end) => {
      if (end === 'sync-failed') return;
      const left = (hidden.get(seq) ?? 1) - 1;
      if (left > 0) hidden.set(seq, left);
      else hidden.delete(seq);
    });
  }

  /** The lowest seq of `epoch` still retained, or undefined when none is. */
  oldest(namespace: string, epoch: number): number | undefined {
    return this.sOldest.get(namespace, epoch)?.seq ?? undefined;
  }

  count(namespace: string): number {
    return this.sCount.get(namespace)?.n ?? 0;
  }

  /**
   * Whether a change still retained names `keyId` in `namespace` (as its key, or as the new id of a move): a key this
   * site wrote through its gateway while primary, so not a foreign write (snapshot apply, replicator/foreign.ts).
   */
  knowsKey(namespace: string, keyId: string): boolean {
    return this.sKnows.get(namespace, keyId, keyId) !== undefined;
  }

  /** Retention: drops changes older than `maxAgeMs` and, per namespace, all but the newest `maxChanges`. Returns rows dropped. */
  prune(maxAgeMs: number, maxChanges: number): number {
    const run = this.db.transaction(() => this.sPruneAge.run(this.now() - maxAgeMs).changes + this.sPruneCount.run(maxChanges).changes);
    return run.immediate();
  }
}
