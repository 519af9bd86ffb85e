/**
 * The `intents` table (streaming): mutations the gateway forwarded for a namespace primary here whose outcome is not
 * recorded yet. Holds what the change will say (public fields, envelopes), never key material in the clear.
 */
import type { Database, Statement } from 'better-sqlite3';
import { DROP_ENVELOPES_SQL, envelopePath, type ChangeKind, type ChangeRecord } from './changelog-repo.js';
import { prepare } from './sqlite.js';

export interface Intent extends ChangeRecord {
  /** Also the change's `ref`. */
  readonly id: string;
  readonly namespace: string;
  readonly epoch: number;
  readonly createdAt: number;
}

interface Raw {
  id: string;
  namespace: string;
  epoch: number;
  kind: ChangeKind;
  key_id: string | null;
  detail: string;
  envelopes: string | null;
  created_at: number;
}

const toIntent = (r: Raw): Intent => ({
  id: r.id,
  ref: r.id,
  namespace: r.namespace,
  epoch: r.epoch,
  kind: r.kind,
  ...(r.key_id !== null ? { keyId: r.key_id } : {}),
  detail: JSON.parse(r.detail) as Record<string, unknown>,
  ...(r.envelopes !== null ? { envelopes: JSON.parse(r.envelopes) as Record<string, unknown> } : {}),
  createdAt: r.created_at,
});

export class IntentsRepo {
  private readonly sInsert: Statement<Record<string, unknown>>;
  private readonly sGet: Statement<[string], Raw>;
  private readonly sList: Statement<[], Raw>;
  private readonly sDelete: Statement<[string]>;
  private readonly sDropEnvelopes: Statement<[string, string]>;

  constructor(db: Database, private readonly now: () => number) {
    this.sInsert = prepare(
      db,
      `INSERT INTO intents (id, namespace, epoch, kind, key_id, detail, envelopes, created_at)
       VALUES (@id, @namespace, @epoch, @kind, @keyId, @detail, @envelopes, @at)`,
    );
    this.sGet = prepare(db, 'SELECT * FROM intents WHERE id = ?');
    this.sList = prepare(db, 'SELECT * FROM intents ORDER BY created_at, id');
    this.sDelete = prepare(db, 'DELETE FROM intents WHERE id = ?');
    this.sDropEnvelopes = prepare(db, DROP_ENVELOPES_SQL('intents'));
  }

  /** Removes every envelope addressed to `site` from open intents (ChangeLogRepo.dropEnvelopesOf). Returns rows changed. */
  dropEnvelopesOf(site: string): number {
    return this.sDropEnvelopes.run(envelopePath(site), envelopePath(site)).changes;
  }

  /** Records an open intent. Throws on a duplicate id. */
  open(i: Omit<Intent, 'createdAt' | 'ref'>): Intent {
    const at = this.now();
    this.sInsert.run({
      id: i.id,
      namespace: i.namespace,
      epoch: i.epoch,
      kind: i.kind,
      keyId: i.keyId ?? null,
      detail: JSON.stringify(i.detail),
      envelopes: i.envelopes ? JSON.stringify(i.envelopes) : null,
      at,
    });
    return { ...i, ref: i.id, createdAt: at };
  }

  get(id: string): Intent | undefined {
    const r = this.sGet.get(id);
    return r ? toIntent(r) : undefined;
  }

  /** Every open intent, oldest first. */
  list(): Intent[] {
    return this.sList.all().map(toIntent);
  }

  /** Removes it; returns whether it was there. */
  remove(id: string): boolean {
    return this.sDelete.run(id).changes > 0;
  }
}
