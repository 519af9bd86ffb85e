/**
 * The `quarantine_acks` table (migration 004): which quarantine files an operator has acknowledged, when and by whom.
 * Keyed by the file's name in `<stateDir>/quarantine/` (never a path). A file without a row is "not yet looked at":
 * `status` reports it and `nethsm_replicator_quarantine_files_unacknowledged` counts it.
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';

export interface QuarantineAck {
  readonly file: string;
  /** Unix ms. */
  readonly at: number;
  readonly actor: string;
}

interface Raw {
  file: string;
  acked_at: number;
  actor: string;
}

const toAck = (r: Raw): QuarantineAck => ({ file: r.file, at: r.acked_at, actor: r.actor });

export class QuarantineAcksRepo {
  private readonly sGet: Statement<[string], Raw>;
  private readonly sList: Statement<[], Raw>;
  private readonly sInsert: Statement<[string, number, string]>;

  constructor(db: Database, private readonly now: () => number) {
    this.sGet = prepare(db, 'SELECT * FROM quarantine_acks WHERE file = ?');
    this.sList = prepare(db, 'SELECT * FROM quarantine_acks ORDER BY file');
    this.sInsert = prepare(db, 'INSERT INTO quarantine_acks (file, acked_at, actor) VALUES (?, ?, ?) ON CONFLICT (file) DO NOTHING');
  }

  get(file: string): QuarantineAck | undefined {
    const r = this.sGet.get(file);
    return r ? toAck(r) : undefined;
  }

  /** Acknowledged file names. */
  files(): Set<string> {
    return new Set(this.sList.all().map((r) => r.file));
  }

  /** Records the acknowledgement; the first one stands (returns false when the file was acknowledged already). */
  add(file: string, actor: string): boolean {
    return this.sInsert.run(file, this.now(), actor).changes === 1;
  }
}
