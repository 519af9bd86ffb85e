/**
 * Scheduled and manual sync of one namespace at this site. At a replica (or a fenced site resyncing): fetch the
 * primary's snapshot over the peer API and apply it. At the primary: ask every peer to pull now. One sync per
 * namespace at a time; requests made while one runs share one more after it.
 *
 * Bounds (docs/operations.md, "A sync that does not answer"): every step is bounded (the device's state is read first,
 * within 10 s, so a Locked NetHSM refuses the sync before the primary is asked for a snapshot; device calls, the
 * snapshot download and the drain of writes in flight have their own timeouts). An operator's `sync` is answered
 * within a bound however long another sync runs: waiting for a running sync at most `busyWaitMs`, for its own at most
 * `answerWithinMs`, then NHR_ERR_SYNC_BUSY saying what runs (the sync itself goes on and is recorded).
 *
 * Blame (members/blame.ts): only a failure of the snapshot download counts against the primary; this site's NetHSM
 * failing counts against it; a race with direct writers or a drain timeout counts against nobody.
 *
 * Locks (docs/concurrency.md): the snapshot is fetched with no lock held; the apply backs the device up and merges
 * under a shared hold, and restores inside an exclusive hold of the device barrier, then the namespace's lock,
 * carrying the fencing token of the role row the sync was decided under (snapshot-apply.ts). A sync decided before a
 * promote, demote, fence or pause is abandoned before it touches the device. Syncs of several namespaces whose
 * snapshots are fetched together share one merge-restore (apply-batch.ts; docs/concurrency.md, "Coalesced syncs"):
 * the barrier, then their namespaces' locks in sorted order, each token checked inside the hold.
 */
import { existsSync } from 'node:fs';
import { DaemonStoppingError, FenceTokenStaleError, NhrError, SyncBusyError, SyncDaemonStoppingError, SyncFenceExportPendingError, SyncPausedError, SyncStaleSnapshotError, NamespaceUnknownError } from '../errors.js';
import { tokenOf, type FencingToken } from '../concurrency/fencing.js';
import { reportBlame } from '../members/blame.js';
import { syncFailureReason } from '../metrics/metrics.js';
import { FOREIGN_REASON } from '../replicator/foreign.js';
import { assertOperational } from '../nethsm/device-fault.js';
import { applySnapshots, type ApplyPart, type ApplyPhase, type ApplyResult, type PartOutcome, type RestoredSnapshot, type SharedApplyDeps } from '../replicator/snapshot-apply.js';
import { assertTokenCurrent } from '../concurrency/fencing.js';
import { ApplyBatch } from './apply-batch.js';
import { EarlyBackup } from '../replicator/early-backup.js';
import { withDeadline } from '../util/deadline.js';
import { removeFiles } from '../replicator/workdir.js';
import { timedDevice } from '../replicator/device-timing.js';
import type { EpochClaim } from '../roles/role-machine.js';
import { NETHSM_MEMBER, type SiteContext } from './context.js';
import { fenceExports } from './quarantine.js';
import { checkSnapshot } from '../replicator/snapshot-check.js';
import type { BackupContents } from '../backup/contents.js';

/** The progress step shown for each phase of an apply (status, NHR_ERR_SYNC_BUSY). */
const APPLY_STEPS: Record<ApplyPhase, string> = {
  backup: 'backing up this NetHSM (shared: writes go on)',
  merge: 'merging the snapshot (writes go on)',
  hold: 'waiting for device writes in flight to finish',
  restore: 'restoring the merged file into this NetHSM (writes held)',
  replay: 're-applying the writes the restore erased (writes to other keys go on)',
  verify: 'verifying the restore (writes go on)',
};

export interface SyncRequest {
  actor: string;
  /** First sync only: what to do when the device already holds the namespace. */
  onExisting?: 'refuse' | 'remove';
  /** An operator's `sync`: refused while the namespace is paused unless `force`. Others skip a paused namespace. */
  manual?: boolean;
  /** With `manual`: sync a paused namespace all the same. */
  force?: boolean;
}

export type SyncResult =
  | {
      namespace: string;
      outcome: 'applied';
      epoch: number;
      from: string;
      takenAt: string;
      durationSeconds: number;
      remerges: number;
      /** The merge ran inside the exclusive hold: writes kept racing it (docs/concurrency.md, "Snapshot sync"). */
      heldMerge: boolean;
      /**
       * `deferred`: the restore's verification runs after this answer (the next sync of the namespace waits for it; a
       * failure is logged, counted and recorded as this sync's outcome). Never `false` here.
       */
      verified: boolean | 'deferred';
      strippedAdministrators: string[];
      savedExisting?: string;
      /** Foreign writes the restore removed were saved here first (replicator/foreign.ts); ids: the first 100. */
      quarantine?: string;
      quarantinedKeys?: string[];
      quarantinedUsers?: string[];
      /** The change stream's current failure, when it has one (a snapshot needs no root Operator; imports do). */
      streamLastError?: string;
      /** The other namespaces restored in the same merge-restore (due at once here: apply-batch.ts), when any. */
      coalescedWith?: string[];
    }
  | { namespace: string; outcome: 'requested'; peers: { name: string; ok: boolean; error?: string }[] }
  | { namespace: string; outcome: 'skipped'; reason: string };

/** What a running sync is doing: who started it, the step it is at, since when (ms). */
export interface SyncProgress {
  actor: string;
  startedAt: number;
  step: string;
  stepAt: number;
}

/** A sync whose snapshot is fetched, waiting in (or running with) an apply batch. */
interface BatchEntry {
  namespace: string;
  primary: string;
  token: FencingToken;
  file: string;
  started: number;
  req: SyncRequest;
  onExisting: 'refuse' | 'remove' | 'adopt' | undefined;
  fetchSeconds: number;
  bytes: number;
  /** What the paths-only check found as the snapshot downloaded (ApplyPart `opened`). */
  opened: BackupContents;
  /** The change stream's failure when the position was recorded (set inside the hold). */
  streamError?: string;
}

/** Runs `fn` once; every call gets its promise. */
function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => (p ??= fn());
}

export interface SyncBounds {
  /** How long an operator's sync waits for one already running before answering NHR_ERR_SYNC_BUSY (default 30 s). */
  busyWaitMs?: number;
  /** How long an operator's sync waits for its own before answering NHR_ERR_SYNC_BUSY (default 20 min, below the CLI's 30). */
  answerWithinMs?: number;
  /** Bound for reading the device's state before a sync (default 10 s). */
  deviceCheckMs?: number;
}

/** How long after a sync whose attempts outside the hold raced (snapshot-apply.ts, step 3) the next ones merge inside it at once. */
export const RACED_MEMORY_MS = 10 * 60_000;

/** The last sync whose attempts outside the hold raced, while it sends this site's syncs to the held sequence. */
export interface RacedSync {
  /** When it fell back to the held sequence (ms). */
  at: number;
  /** Until when syncs merge inside the hold at once (ms): `at` + RACED_MEMORY_MS. */
  until: number;
  /** The namespaces of its merge-restore (several when coalesced). */
  namespaces: string[];
  /** Its backups and merges outside the hold that writes raced. */
  attempts: number;
  /**
   * Writes outside its namespaces that raced the last of them. Fewer than `attempts` were allowed only while each
   * saw fewer than HOPELESS_RACE_WRITES (snapshot-apply.ts); one that saw more sent the sync to the held sequence.
   */
  writes: number;
}

export class NamespaceSync {
  private readonly running = new Map<string, Promise<SyncResult>>();
  /** The one sync queued behind a running one, shared by every request that arrived meanwhile. */
  private readonly queued = new Map<string, Promise<SyncResult>>();
  private readonly progress = new Map<string, SyncProgress>();
  /**
   * Per running sync, the milliseconds spent in each step so far (keyed by a short name: check, fetch, batch, then the
   * apply's phases), for the "namespace synced" log line: where a sync's time went, at no cost but a clock read.
   */
  private readonly timings = new Map<string, { key: string; at: number; ms: Record<string, number> }>();
  /** The verification of a namespace's last restore, running after its sync answered. */
  private readonly verifying = new Map<string, Promise<void>>();
  /**
   * When a sync here last had writes race the backups and merges it tried outside the hold (ms). For a while after,
   * syncs merge inside the hold at once: under steady local writes the attempts outside it only add backups and
   * merges before the same held sequence (the scale bench's probe writes showed sync time growing past the old path's).
   */
  private raced: RacedSync | undefined;
  private readonly bounds: Required<SyncBounds>;
  /**
   * Gathers the applies of namespaces due at once into one merge-restore, and starts the group's device backup (B1)
   * as its first snapshot download starts (early-backup.ts; docs/concurrency.md, "Snapshot sync").
   */
  private readonly batch = new ApplyBatch<BatchEntry, EarlyBackup>((entries, early) => this.applyBatch(entries, early), undefined, {
    start: () => (this.wantsEarlyBackup() && !this.#stop.signal.aborted ? EarlyBackup.start(this.ctx.device, this.ctx.work, this.ctx.log, this.#stop.signal, () => this.ctx.store.keyCerts.watch()) : undefined),
    // Awaited by drain(): a stop must not leave a B1 writing its file into work/ unheard (stop-fetch).
    discard: (b) => this.#settle(b.discard()),
  });
  /**
   * Aborted by `stop()` (the daemon stopping): cuts snapshot downloads and the device backups read before a restore
   * (early B1, the apply's B1), and no sync starts one after it (stop-fetch, stop-backup).
   */
  readonly #stop = new AbortController();
  /** Early B1s being thrown away (their backup ending, then their file removed): drain() waits for them. */
  readonly #discarding = new Set<Promise<void>>();

  constructor(
    private readonly ctx: SiteContext,
    /** Called when a snapshot reveals an epoch newer than this site's (follow or fence). */
    private readonly observe: (namespace: string, claim: EpochClaim) => Promise<void>,
    bounds: SyncBounds = {},
  ) {
    this.bounds = { busyWaitMs: 30_000, answerWithinMs: 20 * 60_000, deviceCheckMs: 10_000, ...bounds };
  }

  isBusy(namespace: string): boolean {
    return this.running.has(namespace);
  }

  /**
   * While this site's syncs go to the held sequence at once because a recent sync's every attempt raced (status,
   * health and metrics say so): that sync. Null otherwise (and never for `replication.directWriters`, configured).
   */
  racedSync(now = Date.now()): RacedSync | null {
    return this.raced && now < this.raced.until ? { ...this.raced, namespaces: [...this.raced.namespaces] } : null;
  }

  /** What the running sync of `namespace` is doing, or null when none runs. */
  progressOf(namespace: string): SyncProgress | null {
    const p = this.progress.get(namespace);
    return p ? { ...p } : null;
  }

  /**
   * The daemon is stopping (close(), before drain()): cuts every snapshot download in flight, every device backup
   * only read before a restore (an early B1, an apply's B1: NHR_ERR_DAEMON_STOPPING, not a device fault), waiting for
   * its barrier hold or its turn at the device or running, and an apply's wait for its exclusive hold; and a sync that
   * starts from now on (queued, or asked for) does not start one. Such a sync is abandoned, not failed: it
   * answers NHR_ERR_SYNC_DAEMON_STOPPING, records nothing against the namespace, the primary or this site's NetHSM,
   * and removes its partial files. A sync whose restore began (the restore, the log replay after it, the
   * verification's B3) is not touched: drain() waits for it. Idempotent.
   */
  stop(): void {
    this.#stop.abort(new DaemonStoppingError('the daemon is stopping: snapshot downloads, device backups only read and applies still waiting for their exclusive hold are cut'));
  }

  /**
   * Aborted once `stop()` is called, with NHR_ERR_DAEMON_STOPPING: the daemon's stop, for the other device backups
   * only read that it cuts (a primary's backups serving peers: peer-handlers.ts).
   */
  get stopping(): AbortSignal {
    return this.#stop.signal;
  }

  /** Waits for every running and queued sync, and for early B1s being thrown away (shutdown; lab settle). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.running.values(), ...this.queued.values()]);
    while (this.#discarding.size > 0) await Promise.allSettled([...this.#discarding]);
  }

  #settle(p: Promise<void>): void {
    const tracked = p.catch(() => undefined).finally(() => this.#discarding.delete(tracked));
    this.#discarding.add(tracked);
  }

  /**
   * Runs a sync of `namespace`. A request made while one runs does not join it (that sync's snapshot may predate what
   * the caller wants applied, e.g. a write it just made or a change it could not apply): it waits for it and then runs
   * one more, which every request arriving meanwhile shares. Throws NhrErrors; records the outcome either way.
   */
  sync(namespace: string, req: SyncRequest): Promise<SyncResult> {
    return req.manual ? this.manual(namespace, req) : this.enqueue(namespace, req);
  }

  /**
   * An operator's sync, answered within a bound. When one already runs, this site's NetHSM is checked first, so a
   * Locked device is named at once instead of after the running sync; then the request waits for it at most
   * `busyWaitMs`. Past its bound it answers NHR_ERR_SYNC_BUSY naming what runs; the sync itself goes on.
   */
  private async manual(namespace: string, req: SyncRequest): Promise<SyncResult> {
    const busy = this.running.has(namespace);
    const row = this.ctx.store.roles.get(namespace);
    if (busy && row && row.role !== 'primary') await assertOperational(() => this.ctx.device.state(), this.bounds.deviceCheckMs);
    const bound = busy ? this.bounds.busyWaitMs : this.bounds.answerWithinMs;
    // Past the bound the answer is gone but the sync is not: its outcome is recorded (withDeadline swallows it).
    return withDeadline(this.enqueue(namespace, req), bound, () => this.busyError(namespace, bound));
  }

  private busyError(namespace: string, waitedMs: number): SyncBusyError {
    const p = this.progress.get(namespace);
    const now = Date.now();
    const secs = (ms: number) => `${Math.round(ms / 1000)} s`;
    const what = p ? `a sync started by ${p.actor} ${secs(now - p.startedAt)} ago is still running (${p.step}, for ${secs(now - p.stepAt)})` : 'a sync is still running';
    return new SyncBusyError(`namespace ${namespace}: ${what}; waited ${secs(waitedMs)} for it. It goes on, and one more sync runs after it`, { namespace });
  }

  private enqueue(namespace: string, req: SyncRequest): Promise<SyncResult> {
    const current = this.running.get(namespace);
    if (!current) return this.start(namespace, req);
    let next = this.queued.get(namespace);
    if (!next) {
      next = current
        .catch(() => undefined)
        .then(() => {
          this.queued.delete(namespace);
          return this.start(namespace, req);
        });
      this.queued.set(namespace, next);
    }
    return next;
  }

  private start(namespace: string, req: SyncRequest): Promise<SyncResult> {
    const now = Date.now();
    this.progress.set(namespace, { actor: req.actor, startedAt: now, step: 'starting', stepAt: now });
    this.timings.set(namespace, { key: 'start', at: now, ms: {} });
    const answer = this.run(namespace, req);
    // The sync answers once the restore is recorded; it keeps running (busy, single flight) until its verification ends.
    const p = answer
      .catch(() => undefined)
      .then(() => this.verifying.get(namespace))
      .finally(() => {
        this.verifying.delete(namespace);
        this.running.delete(namespace);
        this.progress.delete(namespace);
        this.timings.delete(namespace);
      })
      .then(() => answer);
    // Its failure is the answer's, which the caller hears; waiters on `running` only wait.
    p.catch(() => undefined);
    this.running.set(namespace, p);
    return answer;
  }

  private step(namespace: string, step: string, key: string): void {
    const now = Date.now();
    const p = this.progress.get(namespace);
    if (p) Object.assign(p, { step, stepAt: now });
    this.#lap(namespace, key, now);
  }

  /** Ends the current step's lap at `now` and starts `key`'s. */
  #lap(namespace: string, key: string, now = Date.now()): Record<string, number> | undefined {
    const t = this.timings.get(namespace);
    if (!t) return undefined;
    t.ms[t.key] = (t.ms[t.key] ?? 0) + (now - t.at);
    Object.assign(t, { key, at: now });
    return t.ms;
  }

  private async run(namespace: string, req: SyncRequest): Promise<SyncResult> {
    // Queued behind a sync that ran on through the stop, or asked for after it: this daemon starts no more syncs.
    if (this.#stop.signal.aborted) throw this.abandoned(namespace, undefined, req.actor);
    const row = this.ctx.store.roles.get(namespace);
    if (!row) throw new NamespaceUnknownError(`namespace ${namespace} is not replicated by this site`, { namespace });
    if (row.paused && !(req.manual && req.force)) {
      if (!req.manual) return { namespace, outcome: 'skipped', reason: 'paused' };
      throw new SyncPausedError(`namespace ${namespace} is paused at this site: nothing writes to it here until it is resumed`, { namespace });
    }
    if (row.role === 'primary') return this.requestPeers(namespace);
    if (row.primarySite === this.ctx.site) return { namespace, outcome: 'skipped', reason: 'handing over (demoted, waiting for the new primary)' };
    if (row.role === 'fenced' && !this.fenceExported(namespace)) {
      throw new SyncFenceExportPendingError(
        `namespace ${namespace} is fenced at this site and its fence has not written the quarantine export yet: a sync would erase what this site held as its primary`,
        { namespace },
      );
    }
    // From here to its end a merge-restore may need this site's own envelopes of imports (race-replayer.ts).
    const ended = this.ctx.raceReplayer?.beginSync();
    try {
      return await this.pull(namespace, row.primarySite, tokenOf(row, 'sync'), req);
    } catch (err) {
      if (!(err instanceof FenceTokenStaleError)) throw err;
      this.ctx.log.info({ namespace, reason: err.message }, 'sync abandoned: the role changed since it was decided');
      return { namespace, outcome: 'skipped', reason: err.message };
    } finally {
      ended?.();
    }
  }

  private async requestPeers(namespace: string): Promise<SyncResult> {
    const peers = await Promise.all(
      [...this.ctx.peers.values()].map(async (p) => {
        try {
          await p.requestSync(namespace);
          return { name: p.name, ok: true };
        } catch (err) {
          return { name: p.name, ok: false, error: err instanceof Error ? err.message : String(err) };
        }
      }),
    );
    return { namespace, outcome: 'requested', peers };
  }

  private async pull(namespace: string, primary: string, decided: FencingToken, req: SyncRequest): Promise<SyncResult> {
    const { ctx } = this;
    const peer = ctx.peers.get(primary);
    if (!peer) throw new NamespaceUnknownError(`namespace ${namespace}'s primary ${primary} is not a configured peer`, { namespace, site: primary });
    const started = Date.now();
    const file = ctx.work.temp(`incoming-${namespace}`);
    ctx.metrics.syncInProgress.set({ namespace }, 1);
    const leave = this.batch.fetching(namespace);
    let joined = false;
    try {
      // A device that cannot take the restore (Locked) refuses the sync now, naming why, before the primary is asked
      // for a snapshot (a device backup there).
      this.step(namespace, "checking this site's NetHSM", 'check');
      await assertOperational(() => ctx.device.state(), this.bounds.deviceCheckMs);
      const { signal } = this.#stop;
      signal.throwIfAborted();
      this.step(namespace, `fetching the snapshot from ${primary}`, 'fetch');
      // This site's own backup (B1) runs while the snapshot downloads; a first sync keeps its own (it may read the
      // device's copy of the namespace before merging).
      if (this.syncedBefore(namespace)) this.batch.prefetch(namespace);
      const fetchStarted = performance.now();
      // Checked by its paths as it downloads (the manifest authenticated; the merge authenticates every value before
      // any restore), so a lone apply does not read the file again (snapshot-apply.ts `opened`).
      const fetched = await peer.fetchSnapshot(namespace, file, { check: (bytes) => checkSnapshot(bytes, ctx.snapshotOpen, namespace, { pathsOnly: true }), signal });
      // Downloaded as the stop came: nothing touched the device for it yet, so it does not start a batch now.
      signal.throwIfAborted();
      const fetchSeconds = (performance.now() - fetchStarted) / 1000;
      ctx.monitor.reportSuccess(primary);
      if (fetched.epoch < decided.epoch) {
        throw new SyncStaleSnapshotError(`${primary} served namespace ${namespace} at epoch ${fetched.epoch}; this site holds epoch ${decided.epoch}`, {
          namespace,
          site: primary,
          epoch: decided.epoch,
        });
      }
      let token = decided;
      if (fetched.epoch > decided.epoch) {
        // The snapshot itself carries a newer epoch: follow it (or fence), then apply under the row that produced.
        await this.observe(namespace, { from: primary, epoch: fetched.epoch, primarySite: primary });
        const now = ctx.store.roles.require(namespace);
        token = now.primarySite === primary && now.epoch === fetched.epoch && now.role !== 'primary' ? tokenOf(now, 'sync') : decided;
      }
      // The backup and merge run under a shared hold; only the restore (and the position's record) is exclusive. Until
      // its batch runs (apply-batch.ts), the step says it waits; the batch's phases name each step after that.
      this.step(namespace, 'waiting to apply the snapshot (together with any other namespace due now: one merge-restore)', 'batch');
      const entry: BatchEntry = { namespace, primary, token, file, started, req, onExisting: this.existingPolicy(namespace, req), fetchSeconds, bytes: fetched.bytes, opened: fetched.checked.contents };
      joined = true;
      const r = await this.batch.join(entry, fetchSeconds * 1000);
      const result = this.recordOk(namespace, primary, r, started, req.actor, entry.streamError);
      return result;
    } catch (err) {
      // The stop's own abort: abandoned, not failed (stop-fetch). In the batch it reaches only the backups read before
      // the restore and the wait for the exclusive hold (applyBatch's `signal`, `hold`), so nothing changed on the
      // device either way.
      if (err === this.#stop.signal.reason) {
        if (joined) this.ctx.log.info({ namespace }, "the apply was cut by the stop before its restore (its device backup B1, or its wait for the exclusive hold)");
        throw this.abandoned(namespace, primary, req.actor);
      }
      if (!(err instanceof FenceTokenStaleError)) this.recordFailure(namespace, primary, err, started, req.actor);
      throw err;
    } finally {
      if (!joined) leave();
      ctx.metrics.syncInProgress.set({ namespace }, 0);
      await removeFiles(file);
    }
  }

  /**
   * Applies the snapshots of the syncs that joined one batch (apply-batch.ts) in one merge-restore. One entry: exactly
   * the single-namespace apply (its token checked by the barrier; a stale one abandons it). Several: the hold takes
   * the barrier, then the namespaces' locks in sorted order; each token is checked inside it and a stale one drops its
   * namespace only. Each position is recorded inside the hold, under its namespace's lock. Metrics (docs/metrics.md,
   * "Per namespace or per merge-restore"): a fact about the one merge-restore is counted once; a fact about each
   * namespace's sync, once for each namespace still in the batch (never for one that dropped out).
   */
  private async applyBatch(entries: readonly BatchEntry[], early: EarlyBackup | undefined): Promise<Map<string, PartOutcome>> {
    const { ctx } = this;
    const names = entries.map((e) => e.namespace).sort();
    const single = entries.length === 1;
    // The cost model's figures (replicator/cost-model.ts): the device calls' timings, the apply's and the hold's.
    const timed = timedDevice(ctx.device);
    let holdSeconds = 0;
    const applyStarted = performance.now();
    let deferred: (() => Promise<boolean>) | undefined;
    const racedRecently = this.racedSync() !== null;
    const locked = <T>(ns: readonly string[], fn: () => Promise<T>): Promise<T> => (ns.length === 0 ? fn() : ctx.applyLock(ns[0]!).run(() => locked(ns.slice(1), fn)));
    const shared: SharedApplyDeps = {
      device: timed.device,
      // Cuts the backups before the restore only (snapshot-apply.ts): a restore begun is never cut.
      signal: this.#stop.signal,
      work: ctx.work,
      deviceOpen: ctx.deviceOpen,
      snapshotOpen: ctx.snapshotOpen,
      ...(ctx.resealer ? { resealer: ctx.resealer } : {}),
      // Writers around the daemon are invisible to the barrier: only the held sequence's re-check sees them. After
      // a recent sync whose attempts raced, the attempts outside the hold would most likely race again.
      ...(ctx.config.replication.directWriters || racedRecently ? { maxRemerges: -1 } : {}),
      // Inside the exclusive hold only writers around the daemon can change the device: the re-check is for them.
      directWriters: ctx.config.replication.directWriters,
      hold: (fn, namespaces) => {
        const scopes = [...(namespaces ?? names)].sort();
        return ctx.barrier.exclusive(
          single ? [entries[0]!.token] : [],
          (guard) =>
            locked(scopes, async () => {
              const t0 = performance.now();
              try {
                return await fn(guard);
              } finally {
                holdSeconds += (performance.now() - t0) / 1000;
              }
            }),
          // The stop gives up the wait for the hold (behind another exclusive hold, or draining writes): nothing was
          // written yet, so the sync is abandoned as after a cut B1. Once the hold runs, the stop no longer reaches it.
          { ...(single ? { scope: names[0]! } : { scopes }), purpose: 'snapshot restore', signal: this.#stop.signal },
        );
      },
      onPhase: (phase) => names.forEach((ns) => this.step(ns, APPLY_STEPS[phase], phase)),
      onHeldMerge: (namespaces, attempts, writes) => {
        if (!racedRecently && !ctx.config.replication.directWriters) {
          const at = Date.now();
          this.raced = { at, until: at + RACED_MEMORY_MS, namespaces: [...namespaces], attempts, writes };
        }
        namespaces.forEach((ns) => ctx.metrics.syncHeldMergesTotal.inc({ namespace: ns }));
      },
      // Writers around the daemon are invisible to the barrier, so with them no racing write list is complete.
      ...(ctx.raceReplayer && !ctx.config.replication.directWriters ? { raceReplay: ctx.raceReplayer } : {}),
      // Counted as re-applied only when every log replay ran: one left (abandoned, ended by another hold) is counted as
      // such, and a record it leaves pending shows in status and race_replays_pending until the retries finish it.
      onRaceReplayed: (namespaces, plan, outcome) => {
        outcome.left.forEach((l, ns) => ctx.metrics.raceReplaysNotRunTotal.inc({ namespace: ns, reason: l.reason === 'role-changed' ? 'role_changed' : 'record_ended' }));
        if (outcome.left.size > 0) return;
        namespaces.forEach((ns) => ctx.metrics.syncRaceReplaysTotal.inc({ namespace: ns }));
        ctx.metrics.racingWritesReappliedTotal.inc(plan.writes);
      },
      onVerifySkipped: (namespaces) => namespaces.forEach((ns) => ctx.metrics.syncVerifySkippedTotal.inc({ namespace: ns })),
      deferVerify: (verify) => (deferred = verify),
      logger: ctx.log,
      // The lost entries lie outside every namespace of the merge-restore: one count per restore, not one per namespace.
      // The restore then changed more than the namespaces it forgot in the certificate table: forget everything.
      onForeignLoss: (n, namespaces) => {
        ctx.metrics.restoreForeignEntriesLostTotal.inc({ namespace: namespaces[0]! }, n);
        if (ctx.store.isOpen) ctx.store.keyCerts.forgetAll();
      },
      // The restore forgets in the certificate table only the keys it may change (key-certs-repo.ts forgetRestored) ...
      watchCerts: () => ctx.store.keyCerts.watch(),
      // ... unless its check finds the namespaces not as merged.
      onVerifyMismatch: (namespaces) => {
        if (ctx.store.isOpen) ctx.store.keyCerts.forgetNamespaces(namespaces);
      },
      site: ctx.site,
      quarantineOut: { passphrase: ctx.replicationPassphrase, ...(ctx.snapshotScrypt ? { scrypt: ctx.snapshotScrypt } : {}) },
    };
    const parts = entries.map((e): ApplyPart => ({
      namespace: e.namespace,
      snapshotFile: e.file,
      opened: e.opened,
      options: e.onExisting ? { onExisting: e.onExisting } : {},
      replicationUserId: ctx.replicationUserIds.get(e.namespace) ?? '',
      // Recorded under the namespace's lock, so no stream change is recorded between the restore and the position.
      afterRestore: (restored) => {
        this.recordPosition(e.namespace, e.primary, restored, e.started);
        // Read now: once the position moves the stream reconnects, and its failure shows again only when it recurs.
        e.streamError = this.streamError(e.namespace);
      },
      ...(single ? {} : { check: () => assertTokenCurrent((ns) => ctx.store.roles.get(ns), e.token) }),
      ...this.foreignDeps(e.namespace),
    }));
    // The early B1 ran beside the fetch: the cost model counts it in series (its estimate errs on the high side).
    const out = await applySnapshots({ ...shared, onEarlyBackup: (t) => timed.timings.backups.push(t) }, parts, early);
    const applySeconds = (performance.now() - applyStarted) / 1000;
    const verify = deferred && once(deferred);
    for (const e of entries) {
      const o = out.get(e.namespace);
      if (!o?.ok) continue;
      if (verify) this.verifying.set(e.namespace, this.verifyAfter(e.namespace, e.primary, verify, e.started, e.req.actor));
      // The cost model prices one namespace's merge-restore; a coalesced one is not one namespace's cost.
      if (single) {
        ctx.costModel.observe({ namespace: e.namespace, fetchSeconds: e.fetchSeconds, snapshotBytes: e.bytes, holdSeconds, applySeconds, ...timed.timings, namespaceEntries: o.result.namespaceEntries });
      }
    }
    const restored = [...out].filter(([, o]) => o.ok).map(([ns]) => ns);
    if (restored.length > 1) {
      ctx.metrics.syncCoalescedRestoresTotal.inc();
      ctx.log.info({ namespaces: restored, dropped: names.filter((ns) => !restored.includes(ns)) }, 'coalesced merge-restore of several namespaces done');
    }
    return out;
  }

  /**
   * What snapshot apply needs to tell foreign writes (saved to quarantine and reported) from keys replication put
   * here: this site's stream records, and at a fenced site the fence's quarantine file, which already holds its copy.
   */
  private foreignDeps(namespace: string): Pick<ApplyPart, 'knownKey' | 'savedFiles' | 'onQuarantined'> {
    const { ctx } = this;
    return {
      knownKey: (id) => ctx.store.applied.knowsKey(namespace, id) || ctx.store.changelog.knowsKey(namespace, id),
      savedFiles: this.fenceQuarantine(namespace),
      onQuarantined: (q) => {
        ctx.metrics.quarantinedEntriesTotal.inc({ namespace, reason: 'foreign_writes' }, q.keys + q.users);
        ctx.store.audit.append({
          actor: 'daemon',
          action: 'sync',
          namespace,
          detail: { quarantine: q.path, reason: FOREIGN_REASON, keys: q.keys, users: q.users, keyIds: q.keyIds, userIds: q.userIds },
        });
      },
    };
  }

  /**
   * Whether a fenced namespace's fence wrote its quarantine export since the namespace was fenced (as
   * Failover.resumeFenced decides: no audit row of the fencing means nothing to export). Only asked for fenced rows.
   */
  private fenceExported(namespace: string): boolean {
    const f = fenceExports(this.ctx.store, namespace);
    return !f.fenced || f.files.length > 0;
  }

  /** At a fenced site: the quarantine files its current fence wrote (audit log); none otherwise. */
  private fenceQuarantine(namespace: string): string[] {
    const { store } = this.ctx;
    return store.roles.get(namespace)?.role === 'fenced' ? fenceExports(store, namespace).files : [];
  }

  /**
   * Whether a sync's B1 may start before its snapshot is in: not when every sync here merges inside the hold at once
   * (writers around the daemon, or a recent sync raced), where a B1 outside it would only be thrown away.
   */
  private wantsEarlyBackup(): boolean {
    return !this.ctx.config.replication.directWriters && this.racedSync() === null;
  }

  /** Whether this site synced `namespace` before (then no first-sync check reads the device's copy of it). */
  private syncedBefore(namespace: string): boolean {
    return this.ctx.store.positions.forNamespace(namespace).some((p) => p.lastOkAt !== undefined);
  }

  /**
   * First sync of a namespace this site never held: refuse a copy the device already has (unknown origin), unless
   * init-replica put it there (bootstrap). A site that synced it before, or was its primary, knows where it came from.
   */
  private existingPolicy(namespace: string, req: SyncRequest): 'refuse' | 'remove' | 'adopt' | undefined {
    const { store } = this.ctx;
    const synced = store.positions.forNamespace(namespace).some((p) => p.lastOkAt !== undefined);
    const wasPrimary = store.audit.list({ namespace, limit: 100_000 }).some((e) => e.toRole === 'primary');
    if (synced || wasPrimary || existsSync(this.ctx.work.snapshotOf(namespace))) return undefined;
    // `refuse` (the default) refuses copies of unknown origin only; init-replica's copy is known.
    if (req.onExisting === 'remove') return 'remove';
    return this.ctx.work.isBootstrapped(namespace) ? 'adopt' : 'refuse';
  }

  /** Inside the exclusive hold, right after the restore: the position the device now holds. */
  private recordPosition(namespace: string, primary: string, r: RestoredSnapshot, started: number): void {
    // Also forgets applied records the snapshot's position does not cover (it may be behind the stream, or in a new log).
    this.ctx.store.positions.recordSyncOk(namespace, primary, {
      epoch: r.meta.epoch,
      seq: r.meta.seq,
      ...(r.meta.log !== undefined ? { log: r.meta.log } : {}),
      takenAt: r.meta.takenAt,
      durationMs: Date.now() - started,
    });
    // The stream's connection applied against its own cursor, which the restore and this position just overtook
    // (the snapshot may be behind what it applied): it reconnects from here.
    this.ctx.streamRestored?.(namespace);
  }

  /** After verification: metrics, log and the answer (the position was recorded inside the hold). */
  /**
   * The restore's verification, after the sync answered: a failure is recorded as the sync's outcome (status, metrics,
   * blame on this site's NetHSM), on top of the error log, loss metric and kept backup the verification itself leaves.
   */
  private async verifyAfter(namespace: string, primary: string, verify: () => Promise<boolean>, started: number, actor: string): Promise<void> {
    try {
      // The check backup reads the whole device: taken while a stream rewound by this restore applies again what it
      // erased, it halves that re-apply, and that stream's new changes wait behind it. It waits for it (bounded).
      await this.ctx.streamReapplied?.();
      const ok = await verify();
      this.ctx.log.info({ namespace, verified: ok }, ok ? 'restore verified' : 'restore not verified (writes raced the check)');
    } catch (err) {
      this.recordFailure(namespace, primary, err, started, actor);
    }
  }

  /** The change stream's current failure, when it has one. */
  private streamError(namespace: string): string | undefined {
    const stream = this.ctx.streamStatus?.(namespace);
    return stream?.lastErrorCode ? `${stream.lastErrorCode}: ${stream.lastError ?? ''}` : undefined;
  }

  private recordOk(namespace: string, primary: string, r: ApplyResult, started: number, actor: string, streamError: string | undefined): SyncResult {
    const { ctx } = this;
    const durationMs = Date.now() - started;
    // Until the answer: a deferred verification runs on after it and is not counted here.
    const stepsMs = this.#lap(namespace, 'answered');
    ctx.metrics.observeSync(namespace, 'success', durationMs / 1000);
    ctx.metrics.restoresTotal.inc({ namespace, outcome: 'success' });
    ctx.metrics.setReplicaDataTime(namespace, r.meta.takenAt / 1000);
    ctx.log.info(
      {
        namespace,
        from: primary,
        actor,
        epoch: r.meta.epoch,
        durationMs,
        ...(stepsMs ? { stepsMs: { ...stepsMs } } : {}),
        remerges: r.remerges,
        heldMerge: r.heldMerge,
        verified: r.verified,
        stripped: r.strippedAdministrators.length,
      },
      'namespace synced',
    );
    return {
      namespace,
      outcome: 'applied',
      epoch: r.meta.epoch,
      from: primary,
      takenAt: new Date(r.meta.takenAt).toISOString(),
      durationSeconds: durationMs / 1000,
      remerges: r.remerges,
      heldMerge: r.heldMerge,
      verified: r.verified,
      strippedAdministrators: r.strippedAdministrators,
      ...(r.savedExisting ? { savedExisting: r.savedExisting } : {}),
      ...(r.quarantined ? { quarantine: r.quarantined.path, quarantinedKeys: r.quarantined.keyIds, quarantinedUsers: r.quarantined.userIds } : {}),
      ...(streamError ? { streamLastError: streamError } : {}),
      ...(r.batch.length > 1 ? { coalescedWith: r.batch.filter((ns) => ns !== namespace) } : {}),
    };
  }

  /**
   * A sync the daemon's stop abandoned before its batch: logged at info, nothing recorded (no failed outcome, which
   * would make a promote refuse; no blame, which would mark the primary down; no failure metric).
   */
  private abandoned(namespace: string, primary: string | undefined, actor: string): SyncDaemonStoppingError {
    this.ctx.log.info({ namespace, ...(primary ? { from: primary } : {}), actor }, `sync of ${namespace} abandoned: the daemon is stopping; it runs again after the start`);
    return new SyncDaemonStoppingError(`sync of namespace ${namespace} abandoned: the daemon is stopping (nothing was changed on this NetHSM)`, { namespace });
  }

  private recordFailure(namespace: string, primary: string, cause: unknown, started: number, actor: string): void {
    const { ctx } = this;
    // A sync that failed on a state store write (its disk full) is named as such, not as a bug.
    const err = ctx.store.isOpen ? ctx.store.noteWriteError(cause) : cause;
    const durationMs = Date.now() - started;
    const code = err instanceof NhrError ? err.code : 'NHR_ERR_INTERNAL';
    ctx.store.positions.recordSyncFailed(namespace, primary, { errorCode: code, durationMs });
    ctx.metrics.observeSync(namespace, 'failure', durationMs / 1000, syncFailureReason(err));
    // Only the download from the primary is the primary's doing; a Locked NetHSM here, writers racing the restore on
    // this device or writes that did not drain are this site's (data-safety issue, case 10).
    reportBlame(ctx.monitor, err, { peer: primary, device: NETHSM_MEMBER });
    ctx.log.warn({ namespace, from: primary, actor, err, durationMs }, 'namespace sync failed');
  }
}
