/**
 * `admin_restores` (migration 011): per namespace this site became primary of, the administrator restore still owed to
 * it (docs/state.md; src/daemon/admin-restorer.ts). Written in the same transaction as the role change that owes it
 * (a promote, or resuming leadership), so a restart never finds a primary whose administrators are missing and
 * nothing saying so; deleted once they are back on the device, or once the role row it was owed under is superseded
 * (a demote, fence or newer epoch: the device must then stay without them). Public values only (namespace, numbers, a
 * file path, an error message).
 *
 * Contract: `all` and `get` validate what they read; a bad row (a hand edit, a copied file) comes back with `invalid`
 * saying why, and is never acted on or dropped by the daemon.
 */
import type { Database, Statement } from 'better-sqlite3';
import { crashPoint } from '../util/crash-point.js';
import { prepare } from './sqlite.js';

/** `promote`: the administrators from a snapshot; `resume`: every user from a fence's quarantine file. */
export type AdminRestoreKind = 'promote' | 'resume';

export interface PendingAdminRestore {
  readonly namespace: string;
  /** The namespace's epoch when the role change was decided: the retry's fencing token is that row's. */
  readonly epoch: number;
  readonly kind: AdminRestoreKind;
  /** The file the users come back from. */
  readonly source: string;
  readonly createdAt: number;
  readonly attempts: number;
  readonly lastError: string | null;
  /** Why the stored row is not valid (then it is neither retried nor dropped); absent for a good row. */
  readonly invalid?: string;
}

interface Raw {
  namespace: unknown;
  epoch: unknown;
  kind: unknown;
  source: unknown;
  created_at: unknown;
  attempts: unknown;
  last_error: unknown;
}

const COLUMNS = 'namespace, epoch, kind, source, created_at, attempts, last_error';

export class AdminRestoresRepo {
  private readonly sAll: Statement<[], Raw>;
  private readonly sGet: Statement<[string], Raw>;
  private readonly sPut: Statement<Record<string, unknown>>;
  private readonly sFailed: Statement<[string, string, number]>;
  private readonly sDone: Statement<[string, number]>;
  private readonly sForget: Statement<[string]>;

  constructor(
    db: Database,
    private readonly now: () => number,
  ) {
    this.sAll = prepare(db, `SELECT ${COLUMNS} FROM admin_restores ORDER BY namespace`);
    this.sGet = prepare(db, `SELECT ${COLUMNS} FROM admin_restores WHERE namespace = ?`);
    // A newer role change of the namespace replaces the record: one restore is owed, under the newest row.
    this.sPut = prepare(
      db,
      `INSERT INTO admin_restores (namespace, epoch, kind, source, created_at, attempts, last_error) VALUES (@namespace, @epoch, @kind, @source, @at, 0, NULL)
       ON CONFLICT (namespace) DO UPDATE SET epoch = excluded.epoch, kind = excluded.kind, source = excluded.source, created_at = excluded.created_at, attempts = 0, last_error = NULL`,
    );
    this.sFailed = prepare(db, 'UPDATE admin_restores SET attempts = attempts + 1, last_error = ? WHERE namespace = ? AND epoch = ?');
    this.sDone = prepare(db, 'DELETE FROM admin_restores WHERE namespace = ? AND epoch = ?');
    this.sForget = prepare(db, 'DELETE FROM admin_restores WHERE namespace = ?');
  }

  /** The restores owed, by namespace; a row that fails validation carries `invalid`. */
  all(): PendingAdminRestore[] {
    return this.sAll.all().map(toPending);
  }

  get(namespace: string): PendingAdminRestore | undefined {
    const r = this.sGet.get(namespace);
    return r ? toPending(r) : undefined;
  }

  /**
   * Records the restore owed to `namespace` at `epoch` (replacing any earlier one). Call it inside the transaction of the
   * role change that owes it. RangeError, nothing recorded, for an epoch that is not a non-negative integer or an empty
   * source.
   */
  record(r: { namespace: string; epoch: number; kind: AdminRestoreKind; source: string }): void {
    if (!Number.isSafeInteger(r.epoch) || r.epoch < 0) throw new RangeError(`epoch ${r.epoch} of namespace ${r.namespace} is not a non-negative integer`);
    if (r.source.length === 0) throw new RangeError(`the administrator restore of namespace ${r.namespace} names no source file`);
    this.sPut.run({ ...r, at: this.now() });
  }

  /** Counts a failed attempt of the record of `epoch` (a replaced record is left alone) and keeps why it failed. */
  failed(namespace: string, epoch: number, error: string): void {
    this.sFailed.run(error, namespace, epoch);
  }

  /** Forgets the record of `epoch` (the administrators are back, or its role row is superseded); a replaced one stays. */
  done(namespace: string, epoch: number): void {
    crashPoint('admin-restore-done');
    this.sDone.run(namespace, epoch);
  }

  /** Forgets the record of `namespace` whatever it holds (the operator's `admins restore --forget`, a bad row too). */
  forget(namespace: string): void {
    this.sForget.run(namespace);
  }
}

function toPending(r: Raw): PendingAdminRestore {
  const out = {
    namespace: String(r.namespace),
    epoch: r.epoch as number,
    kind: r.kind as AdminRestoreKind,
    source: typeof r.source === 'string' ? r.source : '',
    createdAt: r.created_at as number,
    attempts: typeof r.attempts === 'number' ? r.attempts : 0,
    lastError: typeof r.last_error === 'string' ? r.last_error : null,
  };
  const invalid = problemOf(r);
  return invalid ? { ...out, invalid } : out;
}

/** What is wrong with a stored row, or undefined. */
function problemOf(r: Raw): string | undefined {
  const int = (v: unknown, min: number) => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;
  if (!int(r.epoch, 0)) return `its stored epoch ${JSON.stringify(r.epoch)} is not a non-negative integer`;
  if (r.kind !== 'promote' && r.kind !== 'resume') return `its stored kind ${JSON.stringify(r.kind)} is neither "promote" nor "resume"`;
  if (typeof r.source !== 'string' || r.source.length === 0) return 'its stored source file is not a path';
  if (!int(r.created_at, 0)) return `its stored time ${JSON.stringify(r.created_at)} is not a time`;
  if (!int(r.attempts, 0)) return `its stored attempt count ${JSON.stringify(r.attempts)} is not a non-negative integer`;
  if (r.last_error !== null && typeof r.last_error !== 'string') return 'its stored last error is not text';
  return undefined;
}
