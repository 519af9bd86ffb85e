/**
 * The `audit_log` table: append-only (triggers refuse UPDATE and DELETE) record of role changes and operator actions.
 * `detail` is a JSON object checked to hold no secret-bearing field name (the logger's redaction list).
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';
import { InternalError } from '../errors.js';
import { SECRET_FIELDS } from '../log.js';
import type { Role } from '../roles/role.js';

export const AUDIT_ACTIONS = ['init', 'promote', 'demote', 'fence', 'follow', 'resync', 'split-brain', 'pause', 'resume', 'sync', 'quarantine-ack', 'admins-forget'] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export interface AuditInput {
  /** 'daemon', or the operator (`user@host`, `uid:1000`). */
  actor: string;
  action: AuditAction;
  namespace?: string;
  fromEpoch?: number;
  toEpoch?: number;
  fromRole?: Role;
  toRole?: Role;
  detail?: Record<string, unknown>;
}

export interface AuditEntry extends Readonly<Omit<AuditInput, 'detail'>> {
  readonly id: number;
  readonly at: number;
  readonly detail: Readonly<Record<string, unknown>>;
}

interface Raw {
  id: number;
  at: number;
  actor: string;
  action: AuditAction;
  namespace: string | null;
  from_epoch: number | null;
  to_epoch: number | null;
  from_role: Role | null;
  to_role: Role | null;
  detail: string;
}

const toEntry = (r: Raw): AuditEntry => ({
  id: r.id,
  at: r.at,
  actor: r.actor,
  action: r.action,
  ...(r.namespace !== null ? { namespace: r.namespace } : {}),
  ...(r.from_epoch !== null ? { fromEpoch: r.from_epoch } : {}),
  ...(r.to_epoch !== null ? { toEpoch: r.to_epoch } : {}),
  ...(r.from_role !== null ? { fromRole: r.from_role } : {}),
  ...(r.to_role !== null ? { toRole: r.to_role } : {}),
  detail: JSON.parse(r.detail) as Record<string, unknown>,
});

const SECRET_NAMES = new Set<string>(SECRET_FIELDS.map((f) => f.toLowerCase()));

/** Throws {@link InternalError} when a key anywhere in `value` is a secret-bearing field name. */
function assertNoSecretFields(value: unknown, path: string): void {
  if (value === null || typeof value !== 'object') return;
  for (const [k, v] of Object.entries(value)) {
    if (SECRET_NAMES.has(k.toLowerCase())) throw new InternalError(`audit detail field ${path}${k} may hold a secret; refusing to store it`);
    assertNoSecretFields(v, `${path}${k}.`);
  }
}

export interface AuditQuery {
  namespace?: string;
  /** Only entries with id greater than this (paging forward). */
  afterId?: number;
  /** At most this many (default 1000). */
  limit?: number;
}

export class AuditRepo {
  private readonly sInsert: Statement<Record<string, unknown>>;
  private readonly sAll: Statement<[number, number], Raw>;
  private readonly sNs: Statement<[string, number, number], Raw>;
  private readonly sLast: Statement<[string, string], Raw>;

  constructor(db: Database, private readonly now: () => number) {
    this.sInsert = prepare(db, 
      `INSERT INTO audit_log (at, actor, action, namespace, from_epoch, to_epoch, from_role, to_role, detail)
       VALUES (@at, @actor, @action, @namespace, @fromEpoch, @toEpoch, @fromRole, @toRole, @detail)`,
    );
    this.sAll = prepare(db, 'SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?');
    this.sNs = prepare(db, 'SELECT * FROM audit_log WHERE namespace = ? AND id > ? ORDER BY id LIMIT ?');
    this.sLast = prepare(db, 'SELECT * FROM audit_log WHERE namespace = ? AND action = ? ORDER BY id DESC LIMIT 1');
  }

  /** The namespace's newest entry of `action`, if any. */
  last(namespace: string, action: AuditAction): AuditEntry | undefined {
    const r = this.sLast.get(namespace, action);
    return r ? toEntry(r) : undefined;
  }

  /** Appends one entry; returns its id. Throws {@link InternalError} for a detail with a secret-bearing field name. */
  append(entry: AuditInput): number {
    const detail = entry.detail ?? {};
    assertNoSecretFields(detail, '');
    const info = this.sInsert.run({
      at: this.now(),
      actor: entry.actor,
      action: entry.action,
      namespace: entry.namespace ?? null,
      fromEpoch: entry.fromEpoch ?? null,
      toEpoch: entry.toEpoch ?? null,
      fromRole: entry.fromRole ?? null,
      toRole: entry.toRole ?? null,
      detail: JSON.stringify(detail),
    });
    return Number(info.lastInsertRowid);
  }

  /** Entries in order of id (oldest first). */
  list(query: AuditQuery = {}): AuditEntry[] {
    const after = query.afterId ?? 0;
    const limit = query.limit ?? 1000;
    const rows = query.namespace === undefined ? this.sAll.all(after, limit) : this.sNs.all(query.namespace, after, limit);
    return rows.map(toEntry);
  }
}
