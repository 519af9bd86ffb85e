/**
 * The `namespaces` table: this site's role, epoch and primary for each namespace. Role changes go through
 * {@link RolesRepo.compareAndSet} (see `src/roles/apply.ts`), so a decision made on stale state is never written.
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';
import { NamespaceUnknownError } from '../errors.js';
import type { Role, RoleState } from '../roles/role.js';

export interface NamespaceRow extends RoleState {
  readonly paused: boolean;
  readonly createdAt: number;
  readonly updatedAt: number;
}

interface Raw {
  name: string;
  role: Role;
  epoch: number;
  primary_site: string;
  paused: number;
  created_at: number;
  updated_at: number;
}

const toRow = (r: Raw): NamespaceRow => ({
  namespace: r.name,
  role: r.role,
  epoch: r.epoch,
  primarySite: r.primary_site,
  paused: r.paused === 1,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export class RolesRepo {
  private readonly sGet: Statement<[string], Raw>;
  private readonly sList: Statement<[], Raw>;
  private readonly sInsert: Statement<[string, Role, number, string, number, number]>;
  private readonly sCas: Statement<[Role, number, string, number, string, Role, number, string]>;
  private readonly sPause: Statement<[number, number, string]>;
  private readonly sDelete: Statement<[string]>;

  constructor(db: Database, private readonly now: () => number) {
    this.sGet = prepare(db, 'SELECT * FROM namespaces WHERE name = ?');
    this.sList = prepare(db, 'SELECT * FROM namespaces ORDER BY name');
    this.sInsert = prepare(db, 
      'INSERT INTO namespaces (name, role, epoch, primary_site, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.sCas = prepare(db, 
      `UPDATE namespaces SET role = ?, epoch = ?, primary_site = ?, updated_at = ?
       WHERE name = ? AND role = ? AND epoch = ? AND primary_site = ?`,
    );
    this.sPause = prepare(db, 'UPDATE namespaces SET paused = ?, updated_at = ? WHERE name = ?');
    this.sDelete = prepare(db, 'DELETE FROM namespaces WHERE name = ?');
  }

  get(namespace: string): NamespaceRow | undefined {
    const r = this.sGet.get(namespace);
    return r ? toRow(r) : undefined;
  }

  /** Like {@link get}; throws {@link NamespaceUnknownError} when the namespace has no row. */
  require(namespace: string): NamespaceRow {
    const row = this.get(namespace);
    if (!row) throw new NamespaceUnknownError(`namespace ${namespace} is not known at this site`, { namespace });
    return row;
  }

  list(): NamespaceRow[] {
    return this.sList.all().map(toRow);
  }

  /** Creates the row; throws (SQLite constraint) when it exists. Use through `applyRoleChange` for the audit row. */
  insert(state: RoleState): void {
    const at = this.now();
    this.sInsert.run(state.namespace, state.role, state.epoch, state.primarySite, at, at);
  }

  /** Writes `next` only if the row still equals `expected`; returns whether it did. */
  compareAndSet(expected: RoleState, next: Omit<RoleState, 'namespace'>): boolean {
    const info = this.sCas.run(
      next.role,
      next.epoch,
      next.primarySite,
      this.now(),
      expected.namespace,
      expected.role,
      expected.epoch,
      expected.primarySite,
    );
    return info.changes === 1;
  }

  /** Sets the operator pause flag. Throws {@link NamespaceUnknownError} for an unknown namespace. Idempotent. */
  setPaused(namespace: string, paused: boolean): void {
    if (this.sPause.run(paused ? 1 : 0, this.now(), namespace).changes !== 1) this.require(namespace);
  }

  /** Removes the namespace and (by cascade) its epochs and positions; the audit log keeps its history. */
  remove(namespace: string): boolean {
    return this.sDelete.run(namespace).changes === 1;
  }
}
