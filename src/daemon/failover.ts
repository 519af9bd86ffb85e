/**
 * Role changes that touch the device and the peers: promote, demote (planned handover), fencing a former primary,
 * and learning epochs from peers. Every decision is persisted (`applyRoleChange`) before anything acts on it, and
 * every device step that follows runs inside the device barrier with the fencing token of the row the decision
 * wrote (docs/concurrency.md): a step whose token went stale (a newer decision came in) is abandoned.
 */
import { existsSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import path from 'node:path';
import { listBackupContents } from '../backup/contents.js';
import { extractNamespace } from '../backup/namespace.js';
import { tokenOf, type FencingToken } from '../concurrency/fencing.js';
import { describeError, InputInvalidError, NamespaceUnknownError, NhrError, PeerRefusedError, PeerStaleEpochError, RoleAdminsNotRestoredError, RoleAdminsSourceMissingError, RoleHandoverFailedError, SyncDaemonStoppingError } from '../errors.js';
import { applyRoleChange, decidePromote } from '../roles/apply.js';
import { assertPrimary, completeResync, demote as decideDemote, fenceToExport, observeEpoch, resumeLeadership, type EpochClaim } from '../roles/role-machine.js';
import type { RoleState } from '../roles/role.js';
import type { NamespaceRow } from '../state/roles-repo.js';
import type { AdminRestoreKind, PendingAdminRestore } from '../state/admin-restores-repo.js';
import { AdminRestorer, sourceMissingHint } from './admin-restorer.js';
import { crashPoint } from '../util/crash-point.js';
import { isUserOf, rewriteBackup } from '../replicator/rewrite.js';
import { snapshotMetaOf } from '../replicator/snapshot-meta.js';
import { takeSnapshot } from '../replicator/snapshot-source.js';
import { withDeadline } from '../util/deadline.js';
import { removeFiles } from '../replicator/workdir.js';
import type { SiteContext } from './context.js';
import { fenceExports } from './quarantine.js';
import type { FenceReplay } from './race-replayer.js';
import type { NamespaceSync } from './sync.js';

/** How long a promote under automatic failover waits for each peer's status (it only adds epochs to the guard). */
const PEER_VIEW_TIMEOUT_AUTOMATIC_MS = 2_000;

export interface PromoteResult {
  namespace: string;
  role: 'primary';
  epoch: number;
  previousEpoch: number;
  previousPrimary: string;
  forced: boolean;
  administratorsRestored: number;
  /**
   * Set when the role changed but the administrators could not be put back (NHR_ERR_ROLE_ADMINS_NOT_RESTORED): the
   * daemon retries (admin-restorer.ts); the namespace's users cannot write until then. Absent when they are back.
   */
  administratorsPending?: { code: string; cause: string; retrying: true; hint: string };
  peersTold: string[];
  peersNotTold: string[];
}

/** This site stepped down (demote) and no successor took over yet: a replica of itself. */
export function isSteppedDown(row: RoleState, localSite: string): boolean {
  return row.role === 'replica' && row.primarySite === localSite;
}

/**
 * Automatic failover's hold on promotes (src/failover/leadership.ts): for a namespace with `failover: automatic`, a
 * promote first takes the etcd leader key, and its epoch is the one etcd assigned.
 */
export interface LeaderGate {
  automatic(namespace: string): boolean;
  /**
   * Takes the namespace's leader key for this site. `handoverFrom`: the demoting primary whose key moves here (no gap);
   * otherwise the key must be vacant (throws FailoverLeaderHeldError when another site's live lease holds it).
   * Returns the term's epoch and a `release` that gives the key up again when the promote is then refused.
   */
  acquire(namespace: string, opts: { handoverFrom?: { site: string; epoch: number } }): Promise<{ epoch: number; release: () => Promise<void> }>;
}

export class Failover {
  /** Set by the daemon when an etcd section is configured. */
  leaderGate: LeaderGate | undefined;
  /** Fence procedures in flight, so shutdown can wait for them. */
  private readonly background = new Set<Promise<unknown>>();
  /** The fence running per namespace: a second caller (a recovery, the schedule) joins it instead of exporting twice. */
  private readonly fencing = new Map<string, Promise<{ quarantine: string }>>();
  /** Namespaces whose fence is being continued by {@link retryFenced}: one attempt at a time. */
  private readonly resyncing = new Set<string>();
  /** Retries the administrator restores a promote or resumed leadership still owes. */
  readonly admins: AdminRestorer;

  constructor(
    private readonly ctx: SiteContext,
    private readonly syncer: () => NamespaceSync,
  ) {
    this.admins = new AdminRestorer(ctx, (record, token) => this.restoreOwed(record, token));
    ctx.adminRestorer = this.admins;
  }

  async drain(): Promise<void> {
    await Promise.allSettled([...this.background]);
  }

  /** `promote <ns>` at this site. Throws RolePromoteRefusedError (lag, failed sync, …) unless forced. */
  async promote(namespace: string, opts: { force: boolean; actor: string; handoverFrom?: { site: string; epoch: number } }): Promise<PromoteResult> {
    const { ctx } = this;
    const nsConfig = ctx.config.namespaces.find((n) => n.name === namespace);
    if (!nsConfig) throw new NamespaceUnknownError(`namespace ${namespace} is not replicated by this site (not in its config)`, { namespace });
    const before = ctx.store.roles.require(namespace);
    const gate = this.leaderGate?.automatic(namespace) ? this.leaderGate : undefined;
    // With automatic failover the old primary is usually unreachable (that is why the key is vacant) and etcd, not
    // the peers, numbers the term: a peer that does not answer within a short bound must not delay the promote by a
    // whole connect timeout (the fault suite's isolate-primary runs saw each attempt wait ~10 s on it).
    const peers = await this.peerViews(namespace, gate ? PEER_VIEW_TIMEOUT_AUTOMATIC_MS : undefined);
    // With automatic failover the leader key, not a peer poll, says whether the primary is alive.
    const primaryAlive = !gate && peers.some((v) => v.site === before.primarySite && v.role === 'primary' && v.primarySite === before.primarySite && v.epoch === before.epoch);
    const request = { localSite: ctx.site, force: opts.force, maxLagMs: nsConfig.maxLagForPromoteMs, peerEpochs: peers.map((v) => v.epoch), primaryAlive };
    // Decided, persisted and made writable alone at the device (an exclusive hold): writes admitted after the role
    // change wait until the administrators are back, so none meets a primary without them (a 401 the fault suite saw
    // in the window between the two); writes admitted before it were decided as a replica's and refused.
    // Scoped to the namespace: it changes only its administrators on the device (rewriteDevice), so a restore's
    // verification that it follows leaves that namespace out instead of skipping itself (ExclusiveOptions.scope).
    const { row, restored, pending } = await ctx.barrier.exclusive([], async () => {
      let change = decidePromote(ctx.store, namespace, request);
      const { kind, source } = this.promoteRestoreSource(before);
      let row: NamespaceRow;
      if (gate) {
        // Refusals (lag, failed sync) come before the key is taken; then the term's epoch is etcd's.
        const term = await gate.acquire(namespace, opts.handoverFrom ? { handoverFrom: opts.handoverFrom } : {});
        try {
          change = decidePromote(ctx.store, namespace, { ...request, epoch: term.epoch });
          row = this.changeRoleOwingAdmins(() => applyRoleChange(ctx.store, change, opts.actor), kind, source);
        } catch (err) {
          await term.release();
          throw err;
        }
      } else row = this.changeRoleOwingAdmins(() => applyRoleChange(ctx.store, change, opts.actor), kind, source);
      ctx.roleChanged?.(namespace);
      ctx.metrics.setRole(namespace, 'primary', row.epoch);
      ctx.metrics.promotionsTotal.inc({ namespace });
      ctx.metrics.setReplicaDataTime(namespace, null);
      ctx.log.info({ namespace, epoch: row.epoch, from: before.epoch, actor: opts.actor, force: opts.force }, 'namespace promoted');
      const owed = this.restoreNow(row, 'administrator restore on promote');
      return { row, ...(await owed) };
    }, { scope: namespace, purpose: `promote ${namespace}` });
    // Under automatic failover peers learn the term from etcd too: an unreachable old primary must not hold the
    // promote (and the leadership tick behind it) for a whole connect timeout.
    const told = await this.announce(namespace, row, gate ? PEER_VIEW_TIMEOUT_AUTOMATIC_MS : undefined);
    return {
      namespace,
      role: 'primary',
      epoch: row.epoch,
      previousEpoch: before.epoch,
      previousPrimary: before.primarySite,
      forced: opts.force,
      administratorsRestored: restored,
      ...(pending ? { administratorsPending: pending } : {}),
      peersTold: told.told,
      peersNotTold: told.notTold,
    };
  }

  /**
   * Where a promote of the namespace of `before` (its role row before the promote) takes the administrators back from:
   * taking back a namespace this site stepped down from, the handover's final snapshot; else the last snapshot applied
   * here. A fenced former primary that never applied one (the namespace began here, and its resync has not brought a
   * snapshot yet) has them only in its fence's quarantine file (what the device held just before the fence stripped
   * them): its users come back from there, as when automatic failover resumes leadership. Before, such a promote found
   * no snapshot, restored nothing and owed nothing: a primary whose administrators got 401, and nothing said why.
   */
  private promoteRestoreSource(before: NamespaceRow): { kind: AdminRestoreKind; source: string } {
    const { ctx } = this;
    const ns = before.namespace;
    if (isSteppedDown(before, ctx.site) && existsSync(ctx.work.handoffOf(ns))) return { kind: 'promote', source: ctx.work.handoffOf(ns) };
    const snapshot = ctx.work.snapshotOf(ns);
    const quarantine = before.role === 'fenced' && !existsSync(snapshot) ? this.fenceQuarantineSinceStepDown(ns) : undefined;
    return quarantine !== undefined ? { kind: 'resume', source: quarantine } : { kind: 'promote', source: snapshot };
  }

  /**
   * Automatic failover: a stepped-down primary leads again at `epoch` (the leader key is already its own; no other
   * term began since). Decided and made writable alone at the device, as a promote is: when its administrators were
   * stripped meanwhile (a fence while it was stepped down), they come back from that fence's quarantine file (what the
   * device held just before the strip) before any write is admitted, so no write meets a primary without them.
   * Returns how many users were put back (the administrators among them), and `pending` when that restore failed: the
   * role change stands, the daemon retries, and the namespace's writes are refused until it succeeds.
   */
  async resumeLeadership(namespace: string, epoch: number): Promise<{ row: NamespaceRow; restored: number; pending?: NonNullable<PromoteResult['administratorsPending']> }> {
    const { ctx } = this;
    return ctx.barrier.exclusive([], async () => {
      const before = ctx.store.roles.require(namespace);
      const stripped = this.fenceQuarantineSinceStepDown(namespace);
      const change = () => applyRoleChange(ctx.store, resumeLeadership(before, { localSite: ctx.site, epoch }), 'daemon');
      const row = stripped ? this.changeRoleOwingAdmins(change, 'resume', stripped) : change();
      ctx.roleChanged?.(namespace);
      ctx.metrics.setRole(namespace, row.role, row.epoch);
      // A failure is recorded and retried (admin-restorer.ts), as a promote's: the role change stands.
      const owed = stripped ? await this.restoreNow(row, 'administrator restore on resume') : { restored: 0 };
      return { row, ...owed };
    }, { scope: namespace, purpose: `resume leadership ${namespace}` });
  }

  /**
   * Runs the role change `apply` (this site becomes primary) and records, in the same transaction, the administrator
   * restore it owes (`admin_restores`): a restart or a failed restore never leaves a primary without its administrators
   * and nothing saying so.
   */
  private changeRoleOwingAdmins(apply: () => NamespaceRow, kind: AdminRestoreKind, source: string): NamespaceRow {
    const { ctx } = this;
    const row = ctx.store.transaction(() => {
      const r = apply();
      ctx.store.adminRestores.record({ namespace: r.namespace, epoch: r.epoch, kind, source });
      return r;
    });
    this.admins.refresh();
    return row;
  }

  /**
   * The first attempt of the restore `row`'s role change owes, inside the caller's exclusive hold. A failure does not
   * undo the role change: it is kept in the record, retried by {@link AdminRestorer}, and returned as `pending`.
   */
  private async restoreNow(row: NamespaceRow, purpose: string): Promise<{ restored: number; pending?: NonNullable<PromoteResult['administratorsPending']> }> {
    const { ctx } = this;
    const record = ctx.store.adminRestores.get(row.namespace);
    if (!record || record.invalid !== undefined) return { restored: 0 };
    this.admins.firstAttempt(row.namespace);
    try {
      const restored = await this.restoreOwed(record, tokenOf(row, purpose));
      ctx.store.adminRestores.done(row.namespace, row.epoch);
      this.admins.firstAttempt(row.namespace, true);
      this.admins.refresh();
      return { restored };
    } catch (err) {
      const cause = describeError(err);
      ctx.store.adminRestores.failed(row.namespace, row.epoch, cause);
      this.admins.firstAttempt(row.namespace, true);
      this.admins.kick();
      const e = new RoleAdminsNotRestoredError(
        `namespace ${row.namespace}: this site is primary at epoch ${row.epoch} (the role change is made), but its administrators were NOT restored on its NetHSM: ${cause}; writes by the namespace's users are refused until they are; the daemon retries`,
        { namespace: row.namespace, epoch: row.epoch, cause: err },
      );
      ctx.log.error({ err: e }, 'primary without its administrators: restore failed; retrying');
      // A missing source file needs the operator, not the NetHSM fixed: its own hint.
      return { restored: 0, pending: { code: e.code, cause, retrying: true, hint: err instanceof RoleAdminsSourceMissingError ? err.hint : e.hint } };
    }
  }

  /**
   * Puts back what `record` owes (alone at the device, with `token`). From the handover snapshot, the record is dropped
   * once done and then the file removed (the callers' own drop finds it gone).
   */
  private async restoreOwed(record: PendingAdminRestore, token: FencingToken): Promise<number> {
    const { ctx } = this;
    if (record.kind === 'resume') {
      // Gone (deleted, lost): no attempt can restore the users, and claiming 0 restored would let writes fail with 401
      // while nothing says why. The record stays until the file is back or the operator forgets it.
      if (!existsSync(record.source)) {
        throw new RoleAdminsSourceMissingError(
          `namespace ${record.namespace}: the fence's quarantine file its users (administrators among them) are to come back from is gone: ${record.source}; nothing was restored`,
          { namespace: record.namespace, epoch: record.epoch, path: record.source, hint: sourceMissingHint(record.namespace, record.source) },
        );
      }
      return this.restoreUsersFrom(record.namespace, token, record.source);
    }
    // An earlier attempt failed past this check, so the file was there then: gone now, it was deleted or lost (0 would
    // be a lie). With no attempt before, a missing snapshot means none was ever applied here (restoreAdministrators).
    if (record.attempts > 0 && !existsSync(record.source)) {
      throw new RoleAdminsSourceMissingError(
        `namespace ${record.namespace}: the snapshot its administrators are to come back from is gone since an earlier attempt: ${record.source}; nothing was restored`,
        { namespace: record.namespace, epoch: record.epoch, path: record.source, hint: sourceMissingHint(record.namespace, record.source) },
      );
    }
    const restored = await this.restoreAdministrators(record.namespace, token, record.source);
    if (record.source === ctx.work.handoffOf(record.namespace)) {
      // The record goes before its file: a crash between the two leaves a file nobody owes a restore from (removed at
      // the next start, removeLeftoverHandoffs), never a record whose file is gone while the administrators are back
      // (its retry would report NHR_ERR_ROLE_ADMINS_SOURCE_MISSING, and tell the operator to restore them by hand).
      ctx.store.adminRestores.done(record.namespace, record.epoch);
      crashPoint('admin-restore-forgotten');
      await removeFiles(record.source);
    }
    return restored;
  }

  /**
   * At start, before the administrator restores are retried: removes the handover snapshot of each namespace that
   * needs it no more, i.e. one this site did not step down from (a stepped-down site serves it to its successor, or
   * takes the namespace back from it) and whose pending restore, if any, does not come from it. A crash after a
   * restore from it forgot its record leaves one; a later demote would take a fresh one anyway.
   */
  async removeLeftoverHandoffs(): Promise<void> {
    const { ctx } = this;
    for (const row of ctx.store.roles.list()) {
      const file = ctx.work.handoffOf(row.namespace);
      if (isSteppedDown(row, ctx.site) || !existsSync(file) || ctx.store.adminRestores.get(row.namespace)?.source === file) continue;
      await removeFiles(file);
      ctx.log.info({ namespace: row.namespace, file }, 'leftover handover snapshot removed (no restore is owed from it; this site did not step down)');
    }
  }

  /** The quarantine file of the newest fence since this site last stepped down (it stripped the administrators), present or not. */
  private fenceQuarantineSinceStepDown(namespace: string): string | undefined {
    const entries = this.ctx.store.audit.list({ namespace, limit: 100_000 });
    const steppedDown = entries.findLastIndex((e) => e.toRole === 'fenced' && e.fromRole === 'primary');
    const fence = entries.slice(steppedDown + 1).findLast((e) => e.action === 'fence' && typeof e.detail.quarantine === 'string');
    // Named even when the file is gone: the fence that wrote it strips the administrators, so the restore is owed and
    // recorded; its attempt then fails with NHR_ERR_ROLE_ADMINS_SOURCE_MISSING instead of resuming silently without them.
    return fence?.detail.quarantine as string | undefined;
  }

  /**
   * Puts back the namespace's users as a fence's quarantine file holds them (administrators included; the others are
   * written again as they were, since a fenced site changes none). The replication account is left as it is.
   */
  private async restoreUsersFrom(namespace: string, token: FencingToken, file: string): Promise<number> {
    const { ctx } = this;
    const contents = await listBackupContents(file, { input: ctx.snapshotOpen, collectIds: true });
    const keep = ctx.replicationUserIds.get(namespace);
    const users = (contents.namespaces[namespace]?.userIds ?? []).filter((id) => id !== keep);
    if (users.length === 0) return 0;
    await this.rewriteDevice(token, { overlay: { source: file, select: isUserOf(namespace, users) } });
    // Not read back from the device: that would cost a call per user while writes wait for this hold.
    ctx.log.info({ namespace, users, from: file }, 'namespace users (administrators among them) put back on resuming leadership');
    return users.length;
  }

  /**
   * Planned handover of a primary namespace to `to` (default: the only peer): stop writes (role replica), then, with
   * the device to itself (writes already in flight drained), keep a final snapshot for the successor and strip the
   * device's administrators; ask the successor to sync and promote, then follow it. The snapshot is taken after the
   * role change and the drain, so every write the gateway acknowledged is in it.
   *
   * Run again at a site that stepped down and whose handover failed (no site is primary then), it repeats the handover
   * without a second role change, with the first attempt's snapshot, asking `to` (which may be another site this time). A successor that did
   * take over meanwhile refuses the repeat (its epoch moved on), and this site learns the new epoch from it.
   * Throws RoleHandoverFailedError when the successor cannot be asked or refuses; this site stays stepped down.
   */
  async demote(namespace: string, opts: { to?: string; actor: string }): Promise<{ namespace: string; to: string; epoch: number; previousEpoch: number }> {
    const { ctx } = this;
    const row = ctx.store.roles.require(namespace);
    const retry = isSteppedDown(row, ctx.site);
    if (!retry) assertPrimary(row, ctx.site);
    const to = this.handoffTarget(namespace, opts.to);
    let demoted = row;
    if (retry) {
      ctx.store.audit.append({ actor: opts.actor, action: 'demote', namespace, fromEpoch: row.epoch, toEpoch: row.epoch, fromRole: 'replica', toRole: 'replica', detail: { handoverTo: to, retry: true } });
      ctx.log.info({ namespace, to, epoch: row.epoch, actor: opts.actor }, 'handover of a namespace this site stepped down from: running it again');
    } else {
      demoted = applyRoleChange(ctx.store, decideDemote(row, { localSite: ctx.site, toSite: to }), opts.actor);
      ctx.roleChanged?.(namespace);
      ctx.metrics.setRole(namespace, 'replica', row.epoch);
      ctx.log.info({ namespace, to, epoch: row.epoch, actor: opts.actor }, 'namespace demoted; handing over');
    }
    const token = tokenOf(demoted, 'demote handoff');
    await ctx.barrier.exclusive([token], async () => {
      // Writes a restore erased and a pending replay has not put back yet: re-applied before the hand-off snapshot
      // (the successor takes the namespace from it; dropping them as "no longer primary" lost them).
      await ctx.raceReplayer?.finish(namespace);
      // A repeat keeps the first attempt's snapshot: taken before the strip, it still holds the administrators the
      // successor must get back, and nothing has written to the namespace here since (read-only after the step-down).
      if (!(retry && existsSync(ctx.work.handoffOf(namespace)))) {
        const snap = await takeSnapshot(this.snapshotDeps(), namespace, row.epoch);
        await rename(snap.file, ctx.work.handoffOf(namespace));
      }
      await this.stripAdministrators(namespace, token);
    }, { scope: namespace, purpose: `demote hand-off ${namespace}` });
    const answer = await ctx.peers
      .get(to)!
      .handoff(namespace, row.epoch)
      .catch((cause: unknown) => {
        // The successor is past that epoch (it took over, and its answer was lost): its refusal says so, and this
        // site learns the new epoch from its next status poll. Not "no primary".
        if (cause instanceof PeerRefusedError && cause.remoteCode === 'NHR_ERR_ROLE_STALE_EPOCH') throw cause;
        const why = cause instanceof Error ? cause.message : String(cause);
        throw new RoleHandoverFailedError(
          `namespace ${namespace}: this site stepped down at epoch ${row.epoch} but the handover to ${to} failed: ${why}; no site is primary for ${namespace} now`,
          {
            namespace,
            epoch: row.epoch,
            site: to,
            cause,
            hint: `Run \`nethsm-replicator demote ${namespace} --to ${to}\` again once ${to} answers, or take it back here with \`nethsm-replicator promote ${namespace} --force\` (docs/operations.md §3).`,
          },
        );
      });
    await this.observe(namespace, { from: to, epoch: answer.epoch, primarySite: to });
    await removeFiles(ctx.work.handoffOf(namespace));
    // Follow the successor at once: a first sync from it gives this site a position in its change log, and the stream
    // runs from there (without it the namespace would wait, idle and "never synced", for the next scheduled sync).
    this.inBackground(this.syncer().sync(namespace, { actor: `demote (following ${to})` }), 'the first sync from the new primary after a demote failed; it is retried by the schedule and member recovery');
    return { namespace, to, epoch: answer.epoch, previousEpoch: row.epoch };
  }

  /** The site a demote hands over to: `--to`, or the only peer. Throws InputInvalidError saying what is wrong with it. */
  private handoffTarget(namespace: string, to: string | undefined): string {
    const peers = [...this.ctx.peers.keys()];
    const listed = peers.join(', ') || '(none)';
    if (to === undefined) {
      if (peers.length === 1) return peers[0]!;
      throw new InputInvalidError(`demote needs --to <site>: this site has ${peers.length} peers (${listed})`, { namespace });
    }
    if (to === this.ctx.site) throw new InputInvalidError(`demote --to ${to} names this site itself; name the site to hand over to: ${listed}`, { namespace });
    if (!this.ctx.peers.has(to)) throw new InputInvalidError(`demote --to ${to}: no such peer; this site's peers are ${listed}`, { namespace });
    return to;
  }

  /** Peer handler: the demoting primary `peer` asks this site to take over `namespace` from `fromEpoch`. */
  async acceptHandoff(peer: string, namespace: string, fromEpoch: number): Promise<{ epoch: number }> {
    const row = this.ctx.store.roles.require(namespace);
    if (row.primarySite !== peer || row.epoch !== fromEpoch) {
      throw new PeerStaleEpochError(`handoff of ${namespace} from ${peer} at epoch ${fromEpoch} does not match this site's view (${row.primarySite}, epoch ${row.epoch})`, {
        namespace,
        epoch: row.epoch,
        site: peer,
      });
    }
    await this.syncer().sync(namespace, { actor: `peer:${peer}` });
    const result = await this.promote(namespace, { force: false, actor: `handoff from ${peer}`, handoverFrom: { site: peer, epoch: fromEpoch } });
    return { epoch: result.epoch };
  }

  /**
   * What a peer says about a namespace (status poll, announcement, snapshot header). Persists follow/fence changes
   * and starts the fence procedure; throws PeerStaleEpochError for a claim older than this site's epoch.
   */
  async observe(namespace: string, claim: EpochClaim): Promise<RoleState> {
    const { ctx } = this;
    const row = ctx.store.roles.get(namespace);
    if (!row) return { namespace, role: 'replica', epoch: claim.epoch, primarySite: claim.primarySite };
    const obs = observeEpoch(row, ctx.site, claim);
    if (obs.kind === 'current') return row;
    if (obs.kind === 'split-brain') {
      ctx.log.error({ namespace, err: obs.error }, 'split brain: two primaries claim one epoch; writes stop here until an operator promotes one site');
      if (!obs.change) return row;
    }
    // Stepped down here (a demote whose re-apply of erased writes failed) and another site took over: following would
    // leave those writes only in this site's change log, and the next sync from the new primary would replace the
    // namespace here. Fenced instead, so the fence below exports them first, as it does for a former primary.
    const exportFirst = obs.change!.action === 'follow' && isSteppedDown(row, ctx.site) && claim.primarySite !== ctx.site && this.hasUnexportedReplay(namespace);
    const change = exportFirst ? fenceToExport(row, ctx.site, claim) : obs.change!;
    const next = applyRoleChange(ctx.store, change, `peer:${claim.from}`);
    ctx.roleChanged?.(namespace);
    ctx.metrics.setRole(namespace, next.role, next.epoch);
    // A primary, or one that stepped down when its etcd lease lapsed (fenced, still naming itself): quarantine first.
    const wasPrimary = row.role === 'primary' || (row.role === 'fenced' && row.primarySite === ctx.site && next.primarySite !== ctx.site) || exportFirst;
    if (next.role === 'fenced' && wasPrimary) {
      ctx.metrics.fencingsTotal.inc({ namespace });
      ctx.log.warn(
        { namespace, epoch: next.epoch, primary: next.primarySite, from: claim.from },
        exportFirst ? 'fenced: a newer epoch has another primary while writes a restore erased await their re-apply here; exporting them to quarantine' : 'fenced: a newer epoch has another primary',
      );
      // Requested synchronously (the fence's exclusive hold is queued before this returns): a sync from the new primary
      // that this observation came from waits behind the export.
      this.inBackground(this.fence(namespace, row.epoch));
    } else {
      ctx.log.info({ namespace, epoch: next.epoch, primary: next.primarySite, role: next.role }, 'following a newer epoch');
    }
    return next;
  }

  /**
   * A namespace that moved away from this site without a fence while writes a restore erased await their re-apply
   * here (a follow persisted before observe fenced such a site; any other way a record outlives the role) is fenced
   * now, so its stream stays idle and the schedule and recoveries finish its fence before any resync. `primarySite`: only the namespaces of that primary. Returns those namespaces: pass them to
   * {@link exportFenced}. At start this runs before the peer API and the stream, and the export once the stream has
   * started (the re-apply of an import needs the site's transport key, which the stream's start makes available);
   * later, at each answered status probe of the primary ({@link retryFenced}).
   */
  fenceMovedAway(primarySite?: string): string[] {
    const { ctx } = this;
    const out: string[] = [];
    for (const row of ctx.store.roles.list()) {
      if (row.role !== 'replica' || row.primarySite === ctx.site || !this.hasUnexportedReplay(row.namespace)) continue;
      if (primarySite !== undefined && row.primarySite !== primarySite) continue;
      applyRoleChange(ctx.store, fenceToExport(row, ctx.site), 'daemon');
      ctx.roleChanged?.(row.namespace);
      ctx.metrics.setRole(row.namespace, 'fenced', row.epoch);
      ctx.metrics.fencingsTotal.inc({ namespace: row.namespace });
      ctx.log.warn({ namespace: row.namespace, epoch: row.epoch, primary: row.primarySite }, 'fenced: this namespace moved away from this site while writes a restore erased await their re-apply here; exporting them to quarantine');
      out.push(row.namespace);
    }
    return out;
  }

  /**
   * Starts the fence of each namespace (in the background; its exclusive hold is requested before this returns, so
   * syncs and replays requested after it wait for the export). A failure is logged; the fence is continued by the
   * schedule and the recoveries (resumeFenced), as any fence's.
   */
  exportFenced(namespaces: readonly string[]): void {
    for (const ns of namespaces) this.inBackground(this.resumeFenced(ns));
  }

  /** Whether a pending re-apply of erased writes of `namespace` is one a fence would export (not already exported without). */
  private hasUnexportedReplay(namespace: string): boolean {
    return this.ctx.store.raceReplays.all().some((r) => r.namespace === namespace && r.unexportedIn === null);
  }

  /**
   * A fenced former primary: export what it holds of the namespace to quarantine (never silently dropped), strip
   * the namespace's administrators from the device, then resync from the new primary and become a replica.
   */
  fence(namespace: string, oldEpoch: number): Promise<{ quarantine: string }> {
    const running = this.fencing.get(namespace);
    if (running) return running;
    const p = this.fenceOnce(namespace, oldEpoch).finally(() => this.fencing.delete(namespace));
    this.fencing.set(namespace, p);
    return p;
  }

  private async fenceOnce(namespace: string, oldEpoch: number): Promise<{ quarantine: string }> {
    const { ctx } = this;
    const quarantine = ctx.work.quarantinePath(namespace, oldEpoch);
    const deviceFile = ctx.work.temp('fence-device');
    const token = tokenOf(ctx.store.roles.require(namespace), 'fence export');
    let replay: FenceReplay | undefined;
    try {
      // Exclusive: every write already forwarded to the device finishes first and is in the quarantine backup; writes
      // still waiting see the fenced role once admitted and are refused. Nothing acknowledged can land after it.
      await ctx.barrier.exclusive([token], async () => {
        // Acknowledged writes a restore erased whose re-apply is pending: put back first, so the export holds them (the
        // successor may never have streamed them). A device that refuses them does not stop the export: the record
        // then stays, marked as missing from this file (race-replayer.ts afterFenceExport).
        replay = await ctx.raceReplayer?.beforeFenceExport(namespace);
        await ctx.device.backupTo(deviceFile);
      }, { scope: namespace, purpose: `fence export ${namespace}` });
      const saved = await extractNamespace(deviceFile, namespace, quarantine, {
        input: ctx.deviceOpen,
        passphrase: ctx.replicationPassphrase,
        ...(ctx.snapshotScrypt ? { scrypt: ctx.snapshotScrypt } : {}),
        meta: { reason: 'fenced', epoch: oldEpoch, site: ctx.site, at: Date.now() },
      });
      ctx.metrics.quarantinedEntriesTotal.inc({ namespace, reason: 'fenced' }, saved.keys + saved.users);
    } finally {
      await removeFiles(deviceFile);
    }
    ctx.log.warn({ namespace, quarantine, epoch: oldEpoch }, 'quarantine: what this site held of the namespace when fenced');
    const erased = replay && { epoch: replay.record.epoch, fromSeq: replay.record.fromSeq, reapplied: replay.error === undefined };
    // One transaction: a restart sees either no fence export (and fences again, replay included) or both the audit row
    // and the record's end. Only now, with the file written: a record whose writes are in it is dropped, one whose
    // writes are not is marked with it.
    ctx.store.transaction(() => {
      ctx.store.audit.append({ actor: 'daemon', action: 'fence', namespace, fromEpoch: oldEpoch, detail: { quarantine, ...(erased ? { erasedWrites: erased } : {}) } });
      if (replay) ctx.raceReplayer!.afterFenceExport(replay, path.basename(quarantine));
    });
    await this.stripAdministrators(namespace, token);
    await this.resync(namespace);
    return { quarantine };
  }

  /**
   * Continues a fence that did not finish (daemon restarted, device or primary unreachable): quarantine first if it
   * was not written since the namespace was fenced, then resync. The scheduler calls this for fenced namespaces.
   */
  async resumeFenced(namespace: string): Promise<void> {
    const running = this.fencing.get(namespace);
    if (running) {
      await running;
      return;
    }
    const row = this.ctx.store.roles.get(namespace);
    // Stepped down (automatic failover) with no newer primary known yet: nothing to resync from; etcd names the next.
    if (row?.role === 'fenced' && row.primarySite === this.ctx.site && this.leaderGate?.automatic(namespace)) return;
    const f = fenceExports(this.ctx.store, namespace);
    if (f.fenced && f.files.length === 0) {
      await this.fence(namespace, f.fencedFrom ?? this.ctx.store.roles.require(namespace).epoch);
    } else await this.resync(namespace);
  }

  /**
   * Auto-recovery of fenced namespaces, called after each answered status probe of peer `primarySite` (every
   * `recovery.retryInterval`): each namespace fenced here under that primary, not paused, whose fence or resync is
   * not running, continues it in the background. Without it, a resync that failed (the new primary's NetHSM briefly
   * down, or a newer epoch learnt while fenced) waited for the namespace's cron schedule or for the member to go down
   * and come back: the fault suite saw a site stay fenced for minutes with its primary answering. First, a namespace
   * of that primary that moved away from here with erased writes not exported is fenced ({@link fenceMovedAway}).
   */
  retryFenced(primarySite: string): void {
    if (primarySite !== this.ctx.site) this.exportFenced(this.fenceMovedAway(primarySite));
    for (const row of this.ctx.store.roles.list()) {
      if (row.role !== 'fenced' || row.paused || row.primarySite !== primarySite || primarySite === this.ctx.site) continue;
      if (this.fencing.has(row.namespace) || this.resyncing.has(row.namespace)) continue;
      const ns = row.namespace;
      this.resyncing.add(ns);
      this.inBackground(
        this.resumeFenced(ns).finally(() => this.resyncing.delete(ns)),
        `fenced namespace ${ns}: continuing its fence or resync failed; retried at the next status probe of ${primarySite}`,
      );
    }
  }

  /** A fenced site syncs from its new primary and becomes a replica (retried by the scheduler when it fails). */
  async resync(namespace: string): Promise<void> {
    const { ctx } = this;
    await this.syncer().sync(namespace, { actor: 'daemon' });
    const row = ctx.store.roles.require(namespace);
    if (row.role === 'fenced' && row.primarySite !== ctx.site) {
      const next = applyRoleChange(ctx.store, completeResync(row, ctx.site, { resyncedFrom: row.primarySite }), 'daemon');
      ctx.roleChanged?.(namespace);
      ctx.metrics.setRole(namespace, next.role, next.epoch);
      ctx.log.info({ namespace, epoch: next.epoch, primary: next.primarySite }, 'resynced; now a replica');
    }
  }

  /**
   * The device-side read-only rule: the namespace keeps no Administrator but the replication account. `token`: the
   * role row this strip was decided under (default: the current one).
   */
  async stripAdministrators(namespace: string, token: FencingToken = tokenOf(this.ctx.store.roles.require(namespace), 'administrator strip')): Promise<number> {
    const { ctx } = this;
    const keep = ctx.replicationUserIds.get(namespace);
    const admins = (await ctx.device.namespaceUsers(namespace)).administrators.filter((id) => id !== keep);
    if (admins.length === 0) return 0;
    await this.rewriteDevice(token, { drop: isUserOf(namespace, admins) });
    ctx.log.info({ namespace, administrators: admins }, 'namespace administrators removed from this device (read-only)');
    return admins.length;
  }

  /**
   * On promote: the namespace's administrators come back from `snapshot`, the last snapshot applied here (or, taking
   * back a namespace after a failed handover, the handover's final snapshot).
   */
  private async restoreAdministrators(namespace: string, token: FencingToken, snapshot: string): Promise<number> {
    const { ctx } = this;
    if (!existsSync(snapshot)) {
      ctx.log.warn({ namespace }, 'no snapshot was ever applied here: administrators cannot be restored; only the replication account administers the namespace');
      return 0;
    }
    const contents = await listBackupContents(snapshot, { input: ctx.snapshotOpen });
    const meta = snapshotMetaOf(contents.manifest, namespace);
    const admins = meta.administrators.filter((id) => id !== ctx.replicationUserIds.get(namespace));
    if (admins.length === 0) return 0;
    await this.rewriteDevice(token, { overlay: { source: snapshot, select: isUserOf(namespace, admins) } });
    ctx.log.info({ namespace, administrators: admins }, 'namespace administrators restored on promote');
    return admins.length;
  }

  /**
   * Device backup → rewrite → restore of `token`'s namespace, alone at the device (exclusive barrier hold); the token is
   * checked again right before the restore. The hold is scoped to that namespace: `what` selects only its entries (its
   * administrators), and every other entry is restored as the hold's own backup held it (ExclusiveOptions.scope).
   */
  private async rewriteDevice(token: FencingToken, what: { drop?: (p: string) => boolean; overlay?: { source: string; select: (p: string) => boolean } }): Promise<void> {
    const { ctx } = this;
    const before = ctx.work.temp(`rewrite-${token.namespace}`);
    const out = ctx.work.temp(`rewritten-${token.namespace}`);
    try {
      await ctx.barrier.exclusive([token], async (guard) => {
        await ctx.device.backupTo(before);
        await rewriteBackup({
          base: { source: before, open: ctx.deviceOpen, keep: (p) => !(what.drop?.(p) ?? false) },
          ...(what.overlay ? { overlay: { source: what.overlay.source, open: ctx.snapshotOpen, select: what.overlay.select } } : {}),
          out,
        });
        guard.check();
        await ctx.device.restore(out);
      }, { scope: token.namespace, purpose: `administrator rewrite ${token.namespace}` });
    } finally {
      await removeFiles(before, out);
    }
  }

  /**
   * Tells every peer the namespace's new epoch, each bounded by `timeoutMs` when given; unreachable peers learn it
   * from their status polls.
   */
  private async announce(namespace: string, row: RoleState, timeoutMs?: number): Promise<{ told: string[]; notTold: string[] }> {
    const told: string[] = [];
    const notTold: string[] = [];
    await Promise.all(
      [...this.ctx.peers.values()].map(async (p) => {
        try {
          const sent = p.announceEpoch(namespace, { epoch: row.epoch, primarySite: row.primarySite });
          await (timeoutMs === undefined ? sent : withDeadline(sent, timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`)));
          told.push(p.name);
        } catch (err) {
          notTold.push(p.name);
          this.ctx.log.warn({ namespace, peer: p.name, err }, 'peer not told of the new epoch; it will learn it when it polls');
        }
      }),
    );
    return { told: told.sort(), notTold: notTold.sort() };
  }

  /** What the reachable peers hold for the namespace (promote takes the highest epoch + 1, and asks who is primary). */
  private async peerViews(namespace: string, timeoutMs?: number): Promise<{ site: string; role: string; epoch: number; primarySite: string }[]> {
    const out: { site: string; role: string; epoch: number; primarySite: string }[] = [];
    await Promise.all(
      [...this.ctx.peers.values()].map(async (p) => {
        try {
          const st = await p.status(timeoutMs);
          const v = st.namespaces.find((n) => n.namespace === namespace);
          if (v) out.push({ site: p.name, role: v.role, epoch: v.epoch, primarySite: v.primarySite });
        } catch {
          // An unreachable peer is the usual reason for a promote; its epoch is in our history if we ever saw it.
        }
      }),
    );
    return out;
  }

  snapshotDeps() {
    const { ctx } = this;
    return {
      site: ctx.site,
      device: ctx.device,
      work: ctx.work,
      deviceOpen: ctx.deviceOpen,
      replicationPassphrase: ctx.replicationPassphrase,
      ...(ctx.snapshotScrypt ? { scrypt: ctx.snapshotScrypt } : {}),
      ...(ctx.snapshotKeys ? { snapshotKeys: ctx.snapshotKeys } : {}),
      // The position a snapshot claims: every change up to it is on the device. A change a restore erased and a pending
      // re-apply has not put back yet is not (race-replayer.ts): the position stays before it, so the replica's stream
      // applies it again instead of resuming after it.
      heads: () => {
        const pending = new Map(ctx.store.raceReplays.all().map((p) => [p.namespace, p.fromSeq - 1]));
        return Object.fromEntries(ctx.store.roles.list().map((r) => [r.namespace, Math.min(ctx.store.changelog.head(r.namespace, r.epoch).seq, pending.get(r.namespace) ?? Infinity)]));
      },
      logId: (namespace: string) => ctx.store.changelog.logId(namespace),
    };
  }

  private inBackground(p: Promise<unknown>, failed = 'fence procedure failed; it is retried by the next sync'): void {
    const tracked = p.catch((err: unknown) => {
      // A stop cut the sync this step waited for: nothing failed, the step runs again after the start.
      if (err instanceof SyncDaemonStoppingError) return this.ctx.log.info({ err }, `${failed.replace(/ failed;.*$/, '')} not finished: the daemon is stopping; it runs again after the start`);
      this.ctx.log.error({ err: err instanceof NhrError ? err : { message: String(err) } }, failed);
    });
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }
}
