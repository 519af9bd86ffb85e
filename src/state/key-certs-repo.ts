/**
 * `key_certs` (migration 005): what this site knows of each key's certificate, per namespace, so an anti-entropy read
 * can ask the device for the key only (docs/anti-entropy.md, "The certificate table"). Ids, digests and content types
 * only: never a certificate's bytes or any key material.
 *
 * Contract (what keeps the table from hiding a change the daemon made):
 * - Rows are written only by `learn`, from a full read of the device (certificate and key), and only when no `forget`
 *   of that key (or `forgetAll`) happened since the reader's `mark()` taken before that read.
 * - Every write of the daemon that can change a key's certificate, or replace the key behind an id, calls `forget`
 *   before the device write and again after it (the second refuses the `learn` of a read that raced the write).
 * - A restore does the same for what it can change (`forgetForRestore`): within the namespaces of a snapshot
 *   merge-restore, the keys its merge found changed and those forgotten since the mark before its base backup
 *   (`forgetRestored`; the namespaces whole without that list), else `forgetAll` (administrator rewrites on promote,
 *   demote and fence; any restore given no namespaces). Before the restore and after it, whatever its outcome.
 * Why the rows of the keys a merge-restore writes back unchanged stay true: `forgetRestored`.
 * Why a merge-restore leaves the rows of every other namespace true (docs/anti-entropy.md, "What a restore forgets"):
 * the merged file holds, outside the restored namespaces, B1's entries byte for byte (sealed blobs passed through),
 * and the restore runs only when no write outside them passed the device barrier since B1 was marked (the held merge:
 * B1 taken inside the exclusive hold, where no write passes the barrier; re-checked by B2 with `directWriters`). So for every other namespace the restore writes back exactly
 * what the device already held: same keys, same certificates, nothing removed (a restore removes only what its file
 * lacks). A restore that fails half-way wrote a subset of the file's entries (a truncated file skips the removal step),
 * so again nothing outside the restored namespaces changed. The one exception is a write made straight to the NetHSM
 * (around the daemon) between B1 and the restore, which the restore undoes (docs/concurrency.md): the table may then
 * hold that write's certificate, found by the scrub like any change around the daemon. A verification that finds
 * entries outside the restored namespaces not as merged breaks the premise: the daemon then calls `forgetAll`.
 * The forget marks live in this process only, which is enough: the daemon is the one process writing through this
 * store, and the marks only matter while a read is in flight (they are kept only then).
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';

export interface KnownCert {
  id: string;
  /** '' when the key has no certificate; else the certificate's digest (inventory.ts certDigest). */
  cert: string;
  certType: string;
}

export class KeyCertsRepo {
  private readonly sPage: Statement<[string, string, number], { id: string; cert: string; certType: string }>;
  private readonly sLearn: Statement<Record<string, unknown>>;
  private readonly sForget: Statement<[string, string]>;
  private readonly sHas: Statement<[string, string], { one: number }>;
  private readonly sForgetAll: Statement<[]>;
  private readonly sForgetNamespace: Statement<[string]>;
  private readonly sReads: Statement<{ namespace: string }, { reads: number }>;
  private readonly sCount: Statement<[string], { n: number }>;
  #seq = 0;
  #allForgottenAt = 0;
  /** Namespace → the mark of its last `forgetNamespaces` (kept for good: one number per namespace). */
  readonly #namespaceForgottenAt = new Map<string, number>();
  #readers = 0;
  readonly #forgotten = new Map<string, number>();

  constructor(
    private readonly db: Database,
    private readonly now: () => number,
  ) {
    this.sPage = prepare(db, 'SELECT key_id AS id, cert, cert_type AS certType FROM key_certs WHERE namespace = ? AND key_id >= ? ORDER BY key_id LIMIT ?');
    // A namespace this store does not know is skipped, not an error: a read must not fail over its cache.
    this.sLearn = prepare(
      db,
      `INSERT INTO key_certs (namespace, key_id, cert, cert_type, learnt_at)
       SELECT @namespace, @id, @cert, @certType, @at WHERE EXISTS (SELECT 1 FROM namespaces WHERE name = @namespace)
       ON CONFLICT (namespace, key_id) DO UPDATE SET cert = excluded.cert, cert_type = excluded.cert_type, learnt_at = excluded.learnt_at`,
    );
    this.sForget = prepare(db, 'DELETE FROM key_certs WHERE namespace = ? AND key_id = ?');
    this.sHas = prepare(db, 'SELECT 1 AS one FROM key_certs WHERE namespace = ? AND key_id = ?');
    this.sForgetAll = prepare(db, 'DELETE FROM key_certs');
    this.sForgetNamespace = prepare(db, 'DELETE FROM key_certs WHERE namespace = ?');
    this.sReads = prepare(
      db,
      `INSERT INTO key_cert_scrub (namespace, reads) SELECT @namespace, 1 WHERE EXISTS (SELECT 1 FROM namespaces WHERE name = @namespace)
       ON CONFLICT (namespace) DO UPDATE SET reads = reads + 1 RETURNING reads - 1 AS reads`,
    );
    this.sCount = prepare(db, 'SELECT count(*) AS n FROM key_certs WHERE namespace = ?');
  }

  /** The moment a reader starts trusting or reading a key; compare with `forgottenSince` and pass to `learn`. */
  mark(): number {
    return this.#seq;
  }

  /** Registers a reader: forgets are remembered until every reader ended. Returns its end. Idempotent end. */
  beginRead(): () => void {
    this.#readers++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.#readers === 0) this.#forgotten.clear();
    };
  }

  /**
   * A registered reader and the mark taken as it registers: every key forgotten from now until `end` is remembered
   * (forgottenSince, forgetRestored). For a merge-restore: opened before the backup its merge starts from.
   */
  watch(): { since: number; end: () => void } {
    const end = this.beginRead();
    return { since: this.mark(), end };
  }

  /** Whether the key was forgotten after `mark` (while a reader was registered). */
  forgottenSince(namespace: string, id: string, mark: number): boolean {
    return (
      this.#allForgottenAt > mark ||
      (this.#namespaceForgottenAt.get(namespace) ?? 0) > mark ||
      (this.#forgotten.get(`${namespace}/${id}`) ?? 0) > mark
    );
  }

  /** Drops what is known of these keys' certificates (before and after a write that may change them). */
  forget(namespace: string, ids: readonly string[]): void {
    const rows = this.forgetInMemory(namespace, ids);
    // One transaction (a savepoint inside a group commit): one fsync for a repair's many keys, not one each.
    if (rows.length > 0) this.db.transaction(() => rows.forEach((id) => this.sForget.run(namespace, id)))();
  }

  /**
   * The in-memory half of `forget`: no read in flight trusts or learns these keys any more. Returns those that have a
   * row, which the caller must then delete with `forget` (in a group commit: most keys a stream applies have none, so
   * they cost no write).
   */
  forgetInMemory(namespace: string, ids: readonly string[]): string[] {
    const withRows: string[] = [];
    for (const id of ids) {
      this.#seq++;
      if (this.#readers > 0) this.#forgotten.set(`${namespace}/${id}`, this.#seq);
      if (this.sHas.get(namespace, id)) withRows.push(id);
    }
    return withRows;
  }

  /**
   * Drops every row of these namespaces, and refuses the `learn` of any read of them marked before (a restore of
   * exactly these namespaces: before it and after it). One transaction.
   */
  forgetNamespaces(namespaces: readonly string[]): void {
    const at = ++this.#seq;
    for (const ns of namespaces) this.#namespaceForgottenAt.set(ns, at);
    this.db.transaction(() => namespaces.forEach((ns) => this.sForgetNamespace.run(ns)))();
  }

  /**
   * What a restore forgets (Device's onRestore, before and after it): everything when it names no namespaces; else its
   * namespaces, each whole or, when the restore vouches for its keys (`certs`, replicator/device.ts RestoredKeys), as
   * forgetRestored says.
   */
  forgetForRestore(namespaces?: readonly string[], certs?: { changed: ReadonlyMap<string, ReadonlySet<string> | 'all'>; since: number }): void {
    if (!namespaces) return this.forgetAll();
    if (!certs) return this.forgetNamespaces(namespaces);
    for (const ns of namespaces) this.forgetRestored(ns, certs.changed.get(ns) ?? 'all', certs.since);
  }

  /**
   * A merge-restore of `namespace` that vouches for its keys (replicator/changed-keys.ts): drops the rows of the keys it
   * may change (`changed`; 'all': the namespace whole, as forgetNamespaces) and of every key of the namespace forgotten
   * since `since` (the mark taken, under a registered reader, before the backup the merge started from), and refuses
   * the `learn` of any read of those marked before. Every other row stays: its key holds the same stored write after
   * the restore as in that backup, and no write of the daemon touched it since the mark, so the row (true when learnt,
   * and never forgotten since) is as true after the restore as it was in the backup. Called before the restore and
   * after it, like forgetNamespaces.
   */
  forgetRestored(namespace: string, changed: ReadonlySet<string> | 'all', since: number): void {
    if (changed === 'all' || this.#allForgottenAt > since || (this.#namespaceForgottenAt.get(namespace) ?? 0) > since) {
      this.forgetNamespaces([namespace]);
      return;
    }
    const ids = new Set(changed);
    const prefix = `${namespace}/`;
    for (const [k, at] of this.#forgotten) if (at > since && k.startsWith(prefix)) ids.add(k.slice(prefix.length));
    this.forget(namespace, [...ids]);
  }

  /** Drops everything (a restore whose effect is not bounded to known namespaces). */
  forgetAll(): void {
    this.#allForgottenAt = ++this.#seq;
    this.sForgetAll.run();
  }

  /** Up to `limit` rows of the namespace with ids from `from` on, in id order. */
  page(namespace: string, from: string, limit: number): KnownCert[] {
    return this.sPage.all(namespace, from, limit);
  }

  /** Records full reads, in one transaction; a key forgotten since its read's mark is skipped. Returns rows written. */
  learn(namespace: string, rows: readonly (KnownCert & { mark: number })[]): number {
    const at = this.now();
    const fresh = rows.filter((r) => !this.forgottenSince(namespace, r.id, r.mark));
    this.db.transaction(() => {
      for (const r of fresh) this.sLearn.run({ namespace, id: r.id, cert: r.cert, certType: r.certType, at });
    })();
    return fresh.length;
  }

  /** Counts an anti-entropy read of the namespace; returns its number (0, 1, …), or 0 for an unknown namespace. */
  nextRead(namespace: string): number {
    return this.sReads.get({ namespace })?.reads ?? 0;
  }

  count(namespace: string): number {
    return this.sCount.get(namespace)!.n;
  }
}
