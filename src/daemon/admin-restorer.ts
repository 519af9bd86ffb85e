/**
 * Administrator restores a role change still owes (docs/operations.md, "Promoted without its administrators"): a
 * promote (or resuming leadership) persists the new role, then puts the namespace's administrators back on the NetHSM.
 * When that fails (the NetHSM is Locked, unreachable, refuses the restore), the role stays primary and the record the
 * role change wrote in the same transaction (`admin_restores`, admin-restores-repo.ts) stays. This retries it.
 *
 * Contract:
 * - While a record is there (`isPending`), the namespace's users cannot write (the NetHSM answers them 401): the gateway
 *   answers 503 NHR_ERR_GATEWAY_ADMINS_PENDING, `status` shows a PROBLEM, `/health/ready` fails and
 *   `nethsm_replicator_admin_restore_pending{namespace}` is 1.
 * - Each attempt runs in an exclusive barrier hold carrying the fencing token of the role row the record was written
 *   under (same epoch, primary here): a role superseded meanwhile (demote, fence, a newer epoch) abandons the attempt
 *   before it touches the device, and the record is then forgotten (the device must stay without the administrators).
 *   Each attempt takes a fresh device backup (Failover.rewriteDevice).
 * - Retries back off from 1 s, doubling, up to `recovery.retryInterval`; they never give up (the record stays and says
 *   so). `kick()` (role changes, this site's NetHSM recovered) retries at once. `start()` retries what a previous run left.
 * - A stored row that is not valid is neither retried nor dropped: status names it.
 * - `retryNow(namespace)` (the operator's `admins restore <namespace>`) makes one attempt at once, in the same kind of
 *   hold, and answers what it did; a failure is recorded as any retry's and thrown (RoleAdminsNotRestoredError). The
 *   background retries go on by themselves either way.
 * - A source file that is gone fails the attempt (RoleAdminsSourceMissingError, thrown as is by `retryNow`): the record
 *   stays, counted as failed, and is retried (the file may be put back). `forget(namespace, actor)` (the operator's
 *   `admins restore <namespace> --forget`, once they put the administrators back by hand) drops it without restoring anything.
 */
import { tokenOf, type FencingToken } from '../concurrency/fencing.js';
import { describeError, FenceTokenStaleError, RoleAdminsNotRestoredError, RoleAdminsSourceMissingError } from '../errors.js';
import type { PendingAdminRestore } from '../state/admin-restores-repo.js';
import type { SiteContext } from './context.js';
import type { AdminsPendingView } from './status.js';
import { sleepUnlessWoken } from '../util/wakeable-sleep.js';

const FIRST_RETRY_MS = 1_000;

/** What `retryNow` did (the admin API's answer to `admins restore`). */
export interface AdminRestoreNow {
  readonly namespace: string;
  /**
   * `restored`: this attempt put the users back (`restored` of them); `nothing-pending`: no restore was owed (or another
   * attempt finished it first); `superseded`: the role it was owed under was superseded, so it was dropped unrestored;
   * `forgotten`: the operator dropped it (`forget`), nothing restored.
   */
  readonly outcome: 'restored' | 'nothing-pending' | 'superseded' | 'forgotten';
  readonly epoch?: number;
  readonly restored?: number;
  /** With `restored`: the file the users came back from (0 restored: it holds none). */
  readonly source?: string;
}

/** Rounds of a manual attempt decided again when a role change made its token stale while it waited. */
const MANUAL_STALE_ROUNDS = 3;

/** Puts back what `record` owes, alone at the device with `token`; returns how many users it put back. */
export type RestoreOwed = (record: PendingAdminRestore, token: FencingToken) => Promise<number>;

export class AdminRestorer {
  #pending = new Set<string>();
  #closed = false;
  #running: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  /** Namespaces whose first attempt runs in the role change's own hold (Failover.restoreNow): not retried meanwhile. */
  readonly #first = new Set<string>();

  constructor(
    private readonly ctx: SiteContext,
    private readonly restore: RestoreOwed,
  ) {}

  /** Whether `namespace` is owed its administrators. Cheap (the gateway asks for every write): kept in memory. */
  isPending(namespace: string): boolean {
    return this.#pending.has(namespace);
  }

  /**
   * Reloads the pending set from SQLite after it changed there, and tells the metrics: pending (1 from the role change
   * on, the first attempt included: a restore is owed) and its failed attempts (what the alert waits for, so a first
   * attempt that takes long on a large NetHSM does not page anyone; a record that is not valid counts as failed).
   */
  refresh(): void {
    const { ctx } = this;
    const rows = ctx.store.isOpen ? ctx.store.adminRestores.all() : [];
    this.#pending = new Set(rows.map((r) => r.namespace));
    const failed = new Map(rows.map((r) => [r.namespace, r.invalid !== undefined ? Math.max(1, Number.isSafeInteger(r.attempts) ? r.attempts : 1) : r.attempts]));
    for (const n of ctx.config.namespaces) {
      ctx.metrics.adminRestorePending.set({ namespace: n.name }, this.#pending.has(n.name) ? 1 : 0);
      ctx.metrics.adminRestoreFailedAttempts.set({ namespace: n.name }, failed.get(n.name) ?? 0);
    }
  }

  /** Retries what is recorded (a previous run's leftovers). Idempotent. */
  start(): void {
    this.#closed = false;
    this.refresh();
    this.kick();
  }

  /** Marks the first attempt of `namespace`'s restore as running in the role change's hold (`end`: it ended). */
  firstAttempt(namespace: string, end = false): void {
    if (end) this.#first.delete(namespace);
    else this.#first.add(namespace);
  }

  /** Starts the retries if a record is there and none run; wakes a retry waiting out its backoff. */
  kick(): void {
    if (this.#closed) return;
    this.refresh();
    if (this.#pending.size === 0) return;
    if (this.#running) {
      this.#wake?.();
      return;
    }
    // Often called from inside a promote's hold: the retries take holds of their own, after it.
    this.#running = this.ctx.barrier.detached(() => this.#retry().finally(() => (this.#running = undefined)));
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    await this.#running;
  }

  /**
   * The operator asks for an attempt now (`nethsm-replicator admins restore <namespace>`): one attempt in an exclusive
   * hold with the token of the namespace's role row, as a retry's. Throws NamespaceUnknownError (not replicated here),
   * RoleAdminsNotRestoredError when the attempt failed (recorded, the retries go on) or the stored row is not valid,
   * FenceTokenStaleError when the role kept changing under it.
   */
  async retryNow(namespace: string): Promise<AdminRestoreNow> {
    const { ctx } = this;
    ctx.store.roles.require(namespace);
    for (let round = 1; ; round++) {
      const record = ctx.store.adminRestores.get(namespace);
      if (!record) return { namespace, outcome: 'nothing-pending' };
      if (record.invalid !== undefined) {
        throw new RoleAdminsNotRestoredError(`the pending administrator restore of namespace ${namespace} is not valid: ${record.invalid}; it is neither retried nor dropped`, {
          namespace,
          hint: this.view(namespace)?.try ?? 'Fix or delete the admin_restores row by hand, daemon stopped (docs/state.md).',
        });
      }
      if (this.#superseded(record)) return { namespace, outcome: 'superseded', epoch: record.epoch };
      const r = await this.#attempt(record);
      if (r.outcome === 'restored') return { namespace, outcome: 'restored', epoch: record.epoch, restored: r.restored, source: record.source };
      if (r.outcome === 'gone') return { namespace, outcome: 'nothing-pending', epoch: record.epoch };
      if (r.outcome === 'failed') {
        this.kick();
        // Its own code, path and remedy (put the file back, or restore by hand and forget): not "check the NetHSM".
        if (r.err instanceof RoleAdminsSourceMissingError) throw r.err;
        const now = ctx.store.adminRestores.get(namespace);
        throw new RoleAdminsNotRestoredError(
          `namespace ${namespace}: the administrators were NOT restored on this site's NetHSM (primary at epoch ${record.epoch}): ${now?.lastError ?? describeError(r.err)}; writes by the namespace's users stay refused; the daemon goes on retrying`,
          { namespace, epoch: record.epoch, cause: r.err },
        );
      }
      // Stale: the role changed while the attempt waited for its hold; decide again (it may be superseded now).
      if (round >= MANUAL_STALE_ROUNDS) throw r.err;
    }
  }

  /**
   * The operator's `admins restore <namespace> --forget`: drops the pending record (valid or not) WITHOUT restoring
   * anything, once they put the namespace's administrators back by hand (its source file is gone, or its row is not valid).
   * Logged at warn with who and what, and an `admins-forget` audit row in the same transaction as the drop. Writes are admitted again at once: administrators not put
   * back get 401 from the NetHSM. Throws NamespaceUnknownError (not replicated here); nothing pending answers `nothing-pending`.
   */
  forget(namespace: string, actor: string): AdminRestoreNow {
    const { ctx } = this;
    ctx.store.roles.require(namespace);
    // Read and deleted with no await between: no role change can record a newer restore in between.
    const r = ctx.store.adminRestores.get(namespace);
    if (!r) return { namespace, outcome: 'nothing-pending' };
    const epoch = Number.isSafeInteger(r.epoch) ? r.epoch : undefined;
    // The drop and its audit row commit together: an auditor finds who dropped which restore, of what, after how many
    // attempts (ids, paths and the last error's text only: no secret).
    ctx.store.transaction(() => {
      ctx.store.adminRestores.forget(namespace);
      ctx.store.audit.append({
        actor,
        action: 'admins-forget',
        namespace,
        ...(epoch !== undefined ? { toEpoch: epoch } : {}),
        detail: { kind: r.kind, source: r.source, attempts: r.attempts, lastError: r.lastError ?? null, ...(r.invalid !== undefined ? { invalid: r.invalid } : {}) },
      });
    });
    this.refresh();
    ctx.log.warn(
      { namespace, actor, epoch, kind: r.kind, source: r.source, attempts: r.attempts, lastError: r.lastError, ...(r.invalid !== undefined ? { invalid: r.invalid } : {}) },
      'pending administrator restore forgotten by the operator: nothing was restored by the daemon; its administrators must have been put back by hand',
    );
    return { namespace, outcome: 'forgotten', ...(epoch !== undefined ? { epoch } : {}) };
  }

  /** For status: the record of `namespace` as a problem with its cause and remedy; null when none. */
  view(namespace: string): AdminsPendingView | null {
    const { ctx } = this;
    const r = ctx.store.isOpen ? ctx.store.adminRestores.get(namespace) : undefined;
    return r ? pendingView(namespace, r) : null;
  }

  /** Rounds of attempts until nothing due is left, backing off between failed rounds. */
  async #retry(): Promise<void> {
    const cap = Math.max(FIRST_RETRY_MS, this.ctx.config.recovery.retryIntervalMs);
    let delay = FIRST_RETRY_MS;
    while (!this.#closed) {
      const due = this.#due();
      if (due.length === 0) return;
      let failed = false;
      for (const record of due) {
        if (this.#closed) return;
        if ((await this.#attempt(record)).outcome === 'failed') failed = true;
      }
      if (!failed) {
        delay = FIRST_RETRY_MS;
        continue;
      }
      await sleepUnlessWoken(delay, (wake) => (this.#wake = wake));
      this.#wake = undefined;
      delay = Math.min(cap, delay * 2);
    }
  }

  /** The valid records; those whose role row was superseded are forgotten here (logged), before any device call. */
  #due(): PendingAdminRestore[] {
    const { ctx } = this;
    if (!ctx.store.isOpen) return [];
    const out: PendingAdminRestore[] = [];
    for (const r of ctx.store.adminRestores.all()) {
      if (r.invalid !== undefined || this.#first.has(r.namespace)) continue;
      if (this.#superseded(r)) continue;
      out.push(r);
    }
    return out;
  }

  /** Forgets a record whose role row is no longer the one it was written under; says whether it did. */
  #superseded(r: PendingAdminRestore): boolean {
    const { ctx } = this;
    const row = ctx.store.roles.get(r.namespace);
    if (row && row.role === 'primary' && row.primarySite === ctx.site && row.epoch === r.epoch) return false;
    ctx.store.adminRestores.done(r.namespace, r.epoch);
    this.refresh();
    const now = row ? `${row.role} at epoch ${row.epoch} (primary ${row.primarySite})` : 'no longer replicated here';
    ctx.log.warn({ namespace: r.namespace, epoch: r.epoch, now }, 'administrator restore abandoned: the role it was owed under was superseded; the device keeps no administrators');
    return true;
  }

  /**
   * One attempt, in an exclusive hold with the record's role row's token: `restored` (with how many users), `gone`
   * (another attempt finished it while this one waited), `stale` (the role changed meanwhile) or `failed` (recorded).
   */
  async #attempt(record: PendingAdminRestore): Promise<{ outcome: 'restored'; restored: number } | { outcome: 'gone' } | { outcome: 'stale' | 'failed'; err: unknown }> {
    const { ctx } = this;
    const row = ctx.store.roles.require(record.namespace);
    const token = tokenOf(row, 'administrator restore retry');
    try {
      const restored = await ctx.barrier.exclusive([token], async () => {
        // Another attempt (the promote's own, a previous round) may have finished it while this one waited.
        const now = ctx.store.adminRestores.get(record.namespace);
        if (!now || now.epoch !== record.epoch || now.invalid !== undefined) return undefined;
        return this.restore(now, token);
      }, { scope: record.namespace, purpose: `administrator restore retry ${record.namespace}` });
      if (restored !== undefined) {
        ctx.store.adminRestores.done(record.namespace, record.epoch);
        ctx.log.info({ namespace: record.namespace, epoch: record.epoch, restored, attempts: record.attempts + 1 }, 'administrators restored on retry; the namespace takes writes again');
      }
      this.refresh();
      return restored === undefined ? { outcome: 'gone' } : { outcome: 'restored', restored };
    } catch (err) {
      if (err instanceof FenceTokenStaleError) {
        ctx.log.info({ err, namespace: record.namespace }, 'administrator restore retry abandoned before touching the device: the role changed since it was decided; deciding again');
        return { outcome: 'stale', err };
      }
      if (ctx.store.isOpen) ctx.store.adminRestores.failed(record.namespace, record.epoch, describeError(err));
      this.refresh();
      ctx.log.error({ err, namespace: record.namespace, epoch: record.epoch }, 'administrators still not restored; writes by the namespace\'s users stay refused (retrying)');
      return { outcome: 'failed', err };
    }
  }
}

/**
 * What `status` shows for the pending restore `r` of `namespace`: its cause and remedy. Pure, so every wording is tested
 * (admin-restorer.test.ts); the cause distinguishes a record no attempt has failed for yet (its attempt runs in an
 * exclusive hold: writes wait) from one that failed (writes refused).
 */
export function pendingView(namespace: string, r: PendingAdminRestore): AdminsPendingView {
  const since = new Date(Number.isSafeInteger(r.createdAt) ? r.createdAt : Date.now()).toISOString();
  if (r.invalid !== undefined) {
    return {
      since,
      epoch: null,
      attempts: r.attempts,
      lastError: r.lastError,
      cause: `the pending administrator restore of namespace ${namespace} is not valid: ${r.invalid}; it is neither retried nor dropped, and writes by the namespace's users stay refused`,
      try:
        "The state database was edited or copied by hand: stop the daemon, fix the row (`sqlite3 state.db \"SELECT * FROM admin_restores\"`; docs/state.md) or, once the namespace's administrators are on the NetHSM, delete it, and start it again." +
        ` (Or, once they are on the NetHSM, \`nethsm-replicator admins restore ${namespace} --forget\` drops the row.)`,
    };
  }
  if (r.lastError?.startsWith(`${RoleAdminsSourceMissingError.code}:`)) {
    return {
      since,
      epoch: r.epoch,
      attempts: r.attempts,
      lastError: r.lastError,
      cause: `primary at epoch ${r.epoch} without its users: the file they are to come back from is gone (${r.source}), so no attempt can restore them (${r.attempts} attempt${r.attempts === 1 ? '' : 's'} failed); writes by the namespace's users are refused (401 at the NetHSM, 503 at the gateway)`,
      try: sourceMissingHint(namespace, r.source),
    };
  }
  return {
    since,
    epoch: r.epoch,
    attempts: r.attempts,
    lastError: r.lastError,
    cause:
      r.attempts === 0 && !r.lastError
        ? // No attempt has failed: the role change's own (or, after a restart, the daemon's first) is under way in its
          // exclusive hold, so gateway writes wait for it at the gate rather than being refused.
          `primary at epoch ${r.epoch}, its administrators not restored yet (an attempt is under way; none has failed): writes by the namespace's users wait for it at the gateway (503 if it fails or outlasts gateway.maxHold) and are refused at the NetHSM (401) until then`
        : `primary at epoch ${r.epoch} without its administrators: writes by the namespace's users are refused (401 at the NetHSM, 503 at the gateway) until they are restored` +
          `${r.attempts > 0 ? ` (${r.attempts} attempt${r.attempts === 1 ? '' : 's'} failed; last: ${r.lastError ?? 'unknown'})` : ` (${r.lastError})`}`,
    try:
      "The daemon retries by itself (and at its next start). Check this site's NetHSM (`nethsm-replicator status`: the nethsm member; Locked → unlock it, unreachable → bring it back) " +
      `and fix what the last error names, then retry at once with \`nethsm-replicator admins restore ${namespace}\`. Do not promote again (docs/operations.md, "Promoted without its administrators").`,
  };
}

/** What to do when the file a pending restore of `namespace` comes back from (`source`) is gone. */
export function sourceMissingHint(namespace: string, source: string): string {
  return (
    `Put the file back at ${source} (from a backup of the state directory) and run \`nethsm-replicator admins restore ${namespace}\`; ` +
    `or put the namespace's administrators back by hand with the NetHSM's user API (\`PUT /api/v1/users/${namespace}~<user>\`, role Administrator, as the namespace's replication account, its only administrator now), ` +
    `then \`nethsm-replicator admins restore ${namespace} --forget\` (docs/operations.md §4.1). Do not promote again.`
  );
}
