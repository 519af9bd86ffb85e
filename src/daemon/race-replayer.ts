/**
 * The daemon's RaceReplayer (src/replicator/race-replay.ts; docs/concurrency.md, "Racing writes re-applied"): carries
 * out a merge-restore's plan to make good the writes that raced its backup and merge, and finishes a replay left
 * pending (a crash between the restore and the end of the replay, or a device that failed it).
 *
 * Contract: a namespace with a pending replay takes no gateway write that could meet it until it is done (`isPending`;
 * the gateway answers 503 naming it while no hold runs, and writes arriving during a hold wait at the gate and are
 * decided again): a write admitted in between could be undone by the replay of an earlier change of the same key. A
 * merge-restore's own replay runs right after its hold (`restored`, then `replay`); while it runs (`running`) a write
 * to a key it does not replay, of a kind a replay can always re-apply, passes (`admitsDuring`), and the others wait
 * for its end.
 * `start()` finishes pending replays in an exclusive hold of the barrier, requested before the gateway starts, so no
 * write is admitted ahead of it; it retries (with backoff, status and metrics saying so) until done or `close()`.
 * Each retry's hold carries the fencing tokens of the namespaces it replays. A record is never dropped unreplayed:
 * only its replay (at the epoch it was recorded at), a fence whose quarantine export holds its writes
 * (`beforeFenceExport`/`afterFenceExport`), or the operator's ack of the quarantine file a fence had to write without
 * them ends it.
 */
import { writeTicket, type DeviceBarrier } from '../concurrency/barrier.js';
import { tokenOf, type FencingToken } from '../concurrency/fencing.js';
import type { Logger } from '../log.js';
import type { RaceReplayer, ReplayLeft, ReplayOutcome, ReplayPlan } from '../replicator/race-replay.js';
import type { PendingReplay } from '../state/race-replays-repo.js';
import type { StateStore } from '../state/store.js';
import type { ReplayAt, ReplaySpan } from '../stream/log-replay.js';
import { lockedKeys, planChange } from '../stream/capture.js';
import type { MutationStart } from '../gateway/observer.js';
import type { ReplaysPendingView } from './status.js';
import { describeError, FenceTokenStaleError, StreamReplayRefusedError } from '../errors.js';
import { sleepUnlessWoken } from '../util/wakeable-sleep.js';


/** The change log side (src/stream/log-replay.ts). */
export interface LogReplaySource {
  check(namespace: string, fromSeq: number): string | undefined;
  /** What a replay from `fromSeq` reads: its last seq and the keys it names (`ns/id`); undefined when check refuses. */
  span?(namespace: string, fromSeq: number, at?: ReplayAt): ReplaySpan | undefined;
  /**
   * Re-applies the changes of `at.epoch` (default: the current one) from `fromSeq` to that epoch's head (or `at.toSeq`)
   * onto this site's NetHSM; how many it re-applied. `at.purpose` `fence export` is for a fenced site's fence only.
   */
  replay(namespace: string, fromSeq: number, at?: ReplayAt): Promise<number>;
}

/** The stream side (the stream service's positions). */
export interface StreamRewinder {
  canRewind(namespace: string, source: string, seq: number): boolean;
  rewind(namespace: string, source: string, seq: number): void;
}

export interface DaemonRaceReplayerOptions {
  store: StateStore;
  barrier: DeviceBarrier;
  log: Logger;
  logs: LogReplaySource | undefined;
  streams: StreamRewinder | undefined;
  /**
   * Whether this site is still primary of `namespace`, or stepped down from it with the hand-off not done yet (a
   * demote: the successor takes the namespace from this site's device, so the replay must still run). A namespace that
   * moved away is not written to here.
   */
  isPrimary(namespace: string): boolean;
  /**
   * Drops the envelopes imports were sealed with to this site's own transport key (LogReplay.dropOwnEnvelopes): called
   * by `settle()` once no merge-restore tracks writes and no replay is pending, so they live no longer than needed.
   * It must end early once `stop()` says true (it yields, and a sync may start meanwhile: its plan may need them).
   */
  dropOwnEnvelopes?: (stop: () => boolean) => Promise<number>;
  /** Told how many namespaces have a replay pending whenever that may have changed (the metric). */
  onPending?: (namespaces: number) => void;
}

/**
 * Backoff between attempts of a pending replay (ms): first, cap. Short: writes to the namespaces are refused until a
 * retry succeeds, and each retry costs only a brief hold.
 */
const RETRY_MS = [500, 5_000] as const;

export class DaemonRaceReplayer implements RaceReplayer {
  readonly #o: DaemonRaceReplayerOptions;
  #attempts = 0;
  #pending = new Set<string>();
  #lastError: string | undefined;
  #closed = false;
  #running: Promise<void> | undefined;
  #settling: Promise<void> | undefined;
  #syncs = 0;
  #wake: (() => void) | undefined;
  /**
   * Per namespace, how many replays were prepared for it (`generation`). In memory only: it need not survive a restart,
   * because what it guards (an inventory answer streamed while a restore may erase writes) cannot either: a restart
   * cuts every answer in flight, and a replay left pending is seen through `isPending` at the next start.
   */
  readonly #generations = new Map<string, number>();
  /** Per namespace, the replay fixed inside a merge-restore's hold that runs after it (`restored` .. `replay`). */
  readonly #afterHold = new Map<string, AfterHold>();

  constructor(o: DaemonRaceReplayerOptions) {
    this.#o = o;
  }

  checkLog(namespace: string, fromSeq: number): string | undefined {
    if (!this.#o.logs) return 'this site logs no changes';
    if (!this.#o.isPrimary(namespace)) return 'this site is no longer its primary';
    return this.#o.logs.check(namespace, fromSeq);
  }

  canRewind(namespace: string, source: string, seq: number): boolean {
    return this.#o.streams?.canRewind(namespace, source, seq) ?? false;
  }

  prepare(plan: ReplayPlan): void {
    // Bumped first, before the restore can erase anything: an inventory answer of these namespaces that began before
    // sees a new generation and fails (peer-handlers.ts), even once the replay is done.
    for (const ns of plan.logs.keys()) this.#generations.set(ns, this.generation(ns) + 1);
    // One transaction: a rewind that throws leaves nothing recorded (no namespace refused for a restore never made).
    this.#o.store.transaction(() => {
      // Each with the epoch its writes were logged at: the replay reads that epoch's log, whatever the epoch is then.
      const starts = new Map([...plan.logs].map(([ns, fromSeq]) => [ns, { epoch: this.#o.store.roles.require(ns).epoch, fromSeq }] as const));
      if (starts.size > 0) this.#o.store.raceReplays.record(starts);
      for (const s of plan.streams) this.#o.streams!.rewind(s.namespace, s.source, s.seq);
    });
    this.#refresh();
  }

  /**
   * Inside the merge-restore's hold, right after its restore: fixes each record's end (the log's head now) durably,
   * in one transaction, before the hold lets writes in again; they get higher seqs, were made on the restored device,
   * and are never the record's (see `#at`). Then lets the gateway pass writes that cannot meet the replay (`running`).
   */
  restored(plan: ReplayPlan): void {
    const ends = new Map<string, { epoch: number; fromSeq: number; toSeq: number }>();
    for (const ns of plan.logs.keys()) {
      const record = this.#record(ns);
      const row = this.#o.store.roles.get(ns);
      if (!record || record.invalid !== undefined) continue;
      // Recorded by prepare() in this same hold, at the current epoch. A span `check` refuses is left to replay(),
      // which then fails as before (the namespace refused as a whole meanwhile); its end is still the head now.
      const span = row ? this.#o.logs?.span?.(ns, record.fromSeq, { epoch: record.epoch }) : undefined;
      ends.set(ns, { epoch: record.epoch, fromSeq: record.fromSeq, toSeq: span?.toSeq ?? Math.max(this.#o.store.changelog.lastSeqAt(ns, record.epoch), record.fromSeq - 1) });
      if (!row || !span) continue;
      let end!: () => void;
      const done = new Promise<void>((resolve) => (end = resolve));
      this.#afterHold.set(ns, { epoch: record.epoch, fromSeq: record.fromSeq, toSeq: span.toSeq, keys: span.keys, token: tokenOf(row, 'race replay'), done, end });
    }
    try {
      if (ends.size > 0) this.#o.store.raceReplays.ended(ends);
    } catch (err) {
      // The restore is done and cannot be undone here: the records keep no end and are replayed to the epoch's head,
      // as before migration 010 (which a write admitted meanwhile that cannot be replayed would refuse).
      this.#o.log.warn({ err, namespaces: [...ends.keys()] }, 'could not record where the re-apply of erased writes ends; it reads to the change log\'s head');
    }
    this.#tell();
  }

  /**
   * Right after the merge-restore's hold (contracts in docs/concurrency.md, "Racing writes re-applied"):
   * 1. each namespace's replay reads its log from the record's start to the `toSeq` fixed inside the hold, never a
   *    change admitted since (it may be in flight on a key the replay does not name; one that names a key it does
   *    waited at the gateway: `running`);
   * 2. it runs under ONE shared hold of the barrier per namespace, scoped to it and carrying the token of its role row
   *    as it was inside the hold: a fence, demote or other exclusive hold requested meanwhile waits for it; one that got
   *    in first (queued before the merge-restore's hold ended) either finished the record itself (a demote, a fence:
   *    nothing left to do here) or restored a backup that lacks the same changes (the record still says so);
   * 3. its ticket says what it wrote: the log from the record's start (`log`), so a tracker that saw it (none can: the
   *    apply batch starts no merge-restore before this returns) would re-apply the same changes, not merge again.
   * A failure leaves the record pending and starts the daemon's own retries (exclusive holds, to the record's `to_seq`); a
   * stale token (a role changed since the hold) leaves it to them without failing the sync, whose restore is done.
   */
  async replay(plan: ReplayPlan): Promise<ReplayOutcome> {
    const replayed: string[] = [];
    const left = new Map<string, ReplayLeft>();
    try {
      for (const ns of plan.logs.keys()) {
        const run = this.#afterHold.get(ns);
        try {
          if (run) {
            const why = await this.#replayAfterHold(ns, run);
            if (why === undefined) replayed.push(ns);
            else left.set(ns, { reason: 'record-ended', detail: why });
          } else {
            // No span was fixed (the record is missing or `check` refused it): replayed as before, which refuses.
            const r = this.#record(ns);
            if (r) {
              await this.#o.barrier.shared(() => this.#replayOne(r), { scope: ns, wait: 'unbounded', purpose: `race replay ${ns}` });
              replayed.push(ns);
            } else left.set(ns, { reason: 'record-ended', detail: 'its record was ended by another hold before the restore\'s end was fixed' });
          }
        } finally {
          this.#afterHold.delete(ns);
          this.#tell();
          run?.end();
        }
      }
    } catch (err) {
      for (const ns of plan.logs.keys()) this.#afterHold.get(ns)?.end();
      for (const ns of plan.logs.keys()) this.#afterHold.delete(ns);
      this.#tell();
      if (err instanceof FenceTokenStaleError) {
        // Not re-applied: the records stay pending (status, health and the pending gauge show them once this returns).
        for (const ns of plan.logs.keys()) {
          if (replayed.includes(ns) || left.has(ns)) continue;
          const detail = ns === err.namespace ? err.message : `not tried: the re-apply of namespace ${err.namespace ?? '?'} before it was abandoned (a role changed)`;
          left.set(ns, { reason: 'role-changed', detail });
        }
        this.#o.log.warn({ err, replayed, abandoned: [...left.keys()] }, 'the re-apply of writes a restore erased was abandoned before touching the device: a role changed since the restore; the records stay pending and the daemon decides them again (retries, or a fence\'s export)');
        this.kick();
        return { replayed, left };
      }
      this.#lastError = describeError(err);
      this.kick();
      throw err;
    }
    return { replayed, left };
  }

  /**
   * One namespace's replay after the hold (see `replay`): undefined when it re-applied the writes, else why it did not
   * (its record was ended or changed first by an exclusive hold that got in before it).
   */
  async #replayAfterHold(ns: string, run: AfterHold): Promise<string | undefined> {
    const ticket = writeTicket();
    let notRun: string | undefined;
    const asked = Date.now();
    await this.#o.barrier.shared(
      async () => {
        const admitted = Date.now();
        const r = this.#record(ns);
        // Finished meanwhile by an exclusive hold that got in first (a demote's, a fence's): nothing to do.
        notRun = endedFirst(r, run);
        if (notRun !== undefined) {
          ticket.replay = { kind: 'none' };
          return;
        }
        const n = await this.#o.logs!.replay(ns, r!.fromSeq, { epoch: r!.epoch, toSeq: run.toSeq });
        ticket.replay = { kind: 'log', namespace: ns, seq: r!.fromSeq };
        this.#o.store.raceReplays.done(ns, r!.epoch, r!.fromSeq);
        this.#refresh();
        // Where the time went (docs/benchmarks.md, "Busy site"): the wait for the shared hold, then the replay itself.
        const replayMs = Date.now() - admitted;
        const spanned = run.toSeq - r!.fromSeq + 1;
        this.#o.log.info(
          { namespace: ns, epoch: r!.epoch, fromSeq: r!.fromSeq, toSeq: run.toSeq, changes: n, waitMs: admitted - asked, replayMs, msPerChange: spanned > 0 ? Math.round((replayMs / spanned) * 10) / 10 : 0 },
          'writes a restore erased were re-applied from the change log after the hold',
        );
      },
      { scope: ns, tokens: [run.token], ticket, wait: 'unbounded', purpose: `race replay ${ns}` },
    );
    return notRun;
  }

  /**
   * The replay of `namespace` running after a merge-restore's hold, if any (from `restored` inside the hold to the end
   * of `replay`): the gateway lets a write through at once when `admits` says it cannot meet the replay, and otherwise
   * waits for `done` and decides again (a replay that failed leaves the namespace refused as a whole).
   */
  running(namespace: string): RunningReplay | undefined {
    const run = this.#afterHold.get(namespace);
    if (!run) return undefined;
    return { done: run.done, admits: (m) => admitsDuring(run.keys, m) };
  }

  unfinished(): void {
    for (const run of this.#afterHold.values()) run.end();
    this.#afterHold.clear();
    this.#tell();
    this.kick();
  }

  /** Namespaces with a replay pending (gateway writes to them are refused until it is done). */
  pending(): Set<string> {
    return new Set(this.#pending);
  }

  /**
   * Whether imports are sealed to this site's own transport key too: while a sync runs (from before its snapshot is
   * fetched, so an import already in flight when its merge-restore marks the barrier carries one), while a
   * merge-restore tracks writes, and while a replay is pending (writes admitted meanwhile may be replayed with it).
   */
  get sealOwn(): boolean {
    return this.#syncs > 0 || this.#o.barrier.tracking || this.#pending.size > 0;
  }

  /** A sync starts; call what it returns when it ends (then, with no sync left, own envelopes are dropped). */
  beginSync(): () => void {
    this.#syncs++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.#syncs === 0) void this.settle();
    };
  }

  /**
   * Drops own envelopes when nothing can need them any more (no tracker open, no replay pending). Never throws (a
   * failure is logged; the next settle tries again). Runs one drop at a time.
   */
  settle(): Promise<void> {
    this.#settling ??= this.#drop().finally(() => (this.#settling = undefined));
    return this.#settling;
  }

  async #drop(): Promise<void> {
    if (!this.#o.dropOwnEnvelopes || this.sealOwn || !this.#o.store.isOpen) return;
    try {
      const n = await this.#o.dropOwnEnvelopes(() => this.sealOwn || !this.#o.store.isOpen);
      if (n > 0) this.#o.log.debug({ changes: n }, 'envelopes sealed to this site\'s own transport key dropped (no merge-restore can need them now)');
    } catch (err) {
      this.#o.log.warn({ err }, 'could not drop the envelopes sealed to this site\'s own transport key; the next sync tries again');
    }
  }

  /**
   * How many replays were prepared for `namespace` since this daemon started (0: none). A reader of the namespace's
   * device that sees the same generation before and after, with no replay pending at the start, read no state a
   * restore had erased writes from. O(1).
   */
  generation(namespace: string): number {
    return this.#generations.get(namespace) ?? 0;
  }

  /** Whether `namespace` has a replay pending. Cheap (the gateway asks for every write): kept in memory. */
  isPending(namespace: string): boolean {
    return this.#pending.has(namespace);
  }

  /** Reloads the pending set from SQLite after it changed there, and tells the metric. */
  #refresh(): void {
    this.#pending = new Set(this.#o.store.isOpen ? this.#o.store.raceReplays.all().map((r) => r.namespace) : []);
    this.#tell();
  }

  /** The metric counts the records not being replayed right after their hold (that is normal operation, not stuck). */
  #tell(): void {
    this.#o.onPending?.([...this.#pending].filter((ns) => !this.#afterHold.has(ns)).length);
  }

  /**
   * For status, health and the metric: the pending replays, their cause and remedy; null when none. Each record is in
   * one of four states: retried here (primary), left to a fence (fenced, not exported yet), missing from a fence's
   * quarantine file (the operator's ack ends it), or a stored row that is not valid.
   */
  view(): ReplaysPendingView | null {
    // A record whose replay runs right after its merge-restore's hold is normal operation (it ends in about the time
    // the racing writes take the device), not a problem; only one left after it (failed, or a crash) is shown.
    const rows = this.#o.store.isOpen ? this.#o.store.raceReplays.all().filter((r) => !this.#afterHold.has(r.namespace)) : [];
    if (rows.length === 0) return null;
    const seqs = (r: PendingReplay) => `epoch ${r.epoch}, seqs ${r.fromSeq}–${this.#lastSeq(r)}`;
    const list = (rs: PendingReplay[], f: (r: PendingReplay) => string) => rs.map(f).join('; ');
    const invalid = rows.filter((r) => r.invalid !== undefined);
    const valid = rows.filter((r) => r.invalid === undefined);
    const unexported = valid.filter((r) => r.unexportedIn !== null);
    const waiting = valid.filter((r) => r.unexportedIn === null);
    const here = waiting.filter((r) => this.#o.isPrimary(r.namespace));
    const fence = waiting.filter((r) => this.#stateOf(r) === 'awaiting-fence');
    const away = waiting.filter((r) => this.#stateOf(r) === 'moved-away');
    const err = this.#lastError;
    const causes: string[] = [];
    const tries: string[] = [];
    if (here.length > 0) {
      causes.push(
        `writes to ${list(here, (r) => `namespace ${r.namespace} (${seqs(r)})`)} that raced a merge-restore were erased by its restore and are NOT RE-APPLIED yet from the change log` +
          `${this.#attempts > 0 ? ` (${this.#attempts} attempts${err ? `; last: ${err}` : ''})` : ''}; the gateway refuses writes to ${here.length === 1 ? 'it' : 'them'} until they are`,
      );
      tries.push(
        'Nothing is lost: the changes are in the change log and the daemon retries by itself. Bring the NetHSM back or fix what the last error names ' +
          '(`nethsm-replicator status` shows this site\'s NetHSM and credentials); the replay also runs at the next start, before the gateway takes writes.',
      );
    }
    if (fence.length > 0) {
      causes.push(`writes to ${list(fence, (r) => `namespace ${r.namespace} (${seqs(r)})`)} erased by a restore are not re-applied and this site is fenced: its fence re-applies them before its quarantine export (or, stepped down with no other primary yet, the replay runs here once it leads again)`);
      tries.push('The daemon does it by itself (`nethsm-replicator status` shows the namespace fenced); if it does not finish, bring this site\'s NetHSM back.');
    }
    if (away.length > 0) {
      causes.push(
        `writes to ${list(away, (r) => `namespace ${r.namespace} (${seqs(r)})`)} erased by a restore were not re-applied before this site stopped being primary, and no fence has exported them yet: ` +
          'the daemon fences the namespace to re-apply and export them to quarantine at the next answered status probe of its new primary (failover.ts fenceMovedAway)',
      );
      tries.push(
        'They are in this site\'s change log meanwhile. If this stays, make sure the new primary answers this site\'s status probes and this site\'s NetHSM is up (`nethsm-replicator status`).',
      );
    }
    if (unexported.length > 0) {
      causes.push(
        `writes to ${list(unexported, (r) => `namespace ${r.namespace} (${seqs(r)}) are NOT in quarantine file ${r.unexportedIn}`)}: a restore erased them and this NetHSM refused their re-apply when the site was fenced${err ? ` (last: ${err})` : ''}`,
      );
      tries.push(
        `They are in this site's change log, kept while this shows. See whether the new primary has them (its stream from this site reached that seq: \`nethsm-replicator status\` there), ` +
          `make what it lacks again through its gateway, then \`nethsm-replicator quarantine ack ${unexported[0]!.unexportedIn}\` (which ends this).`,
      );
    }
    if (invalid.length > 0) {
      causes.push(`the pending re-apply of erased writes of ${list(invalid, (r) => `namespace ${r.namespace}: ${r.invalid}`)}; it is neither replayed nor dropped, and writes to it stay refused`);
      tries.push(
        "The state database was edited or copied by hand: stop the daemon, set the row's epoch to the namespace's epoch when the writes were made " +
          '(`sqlite3 state.db "UPDATE race_replays SET epoch = <epoch> WHERE namespace = \'<namespace>\'"`; docs/state.md), or for a bad to-seq clear it ' +
          '(`SET to_seq = NULL`: the replay then reads to the change log\'s head), and start it again.',
      );
    }
    return {
      namespaces: rows.map((r) => r.namespace),
      since: new Date(Math.min(...rows.map((r) => (Number.isSafeInteger(r.createdAt) ? r.createdAt : Date.now())))).toISOString(),
      attempts: this.#attempts,
      lastError: err ?? null,
      records: rows.map((r) => ({
        namespace: r.namespace,
        epoch: r.invalid === undefined ? r.epoch : null,
        fromSeq: r.invalid === undefined ? r.fromSeq : null,
        toSeq: r.invalid === undefined ? this.#lastSeq(r) : null,
        state: this.#stateOf(r),
        quarantine: r.unexportedIn,
      })),
      cause: causes.join('; '),
      try: tries.join(' '),
    };
  }

  /**
   * Finishes pending replays, if any: the exclusive hold is requested synchronously (so writes arriving after this
   * call wait behind it) and retried until done. Idempotent.
   */
  start(): void {
    this.#closed = false;
    this.#refresh();
    this.kick();
  }

  /**
   * Starts the retries if replays are pending and none run; wakes a retry waiting out its backoff (a role change may
   * have made a record replayable, or its token stale).
   */
  kick(): void {
    if (this.#closed || this.#pending.size === 0) return;
    if (this.#running) {
      this.#wake?.();
      return;
    }
    // Often called from inside a merge-restore's hold: the retries must take holds of their own, not re-enter that one.
    this.#running = this.#o.barrier.detached(() => this.#retry().finally(() => (this.#running = undefined)));
  }

  /**
   * Resolves once no retry round runs (its last exclusive hold released) and no drop of envelopes is in flight. A
   * retry started meanwhile is waited for too. For tests: a round finishing after `pending()` emptied still holds the
   * barrier for a moment, and a sync starting then counts it as a racing write.
   */
  async idle(): Promise<void> {
    while (this.#running || this.#settling) {
      await this.#running;
      await this.#settling;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    await this.#running;
    await this.#settling;
  }

  /**
   * Each round decides, from the records and the role rows, which replays can run here now, and takes ONE exclusive
   * hold carrying their fencing tokens: a promote, demote, fence, follow or pause in between makes the barrier abandon
   * the hold before any device call, and the next round decides again (a fenced namespace is then the fence's: see
   * `beforeFenceExport`). Records this site cannot replay (fenced, moved away, already exported without) are kept,
   * never dropped here. Ends when a round has nothing left to run.
   */
  async #retry(): Promise<void> {
    const [first, cap] = RETRY_MS;
    let delay: number = first;
    while (!this.#closed) {
      // Synchronous up to the hold request: start() requests it before the gateway starts.
      const due = this.#due();
      if (due.length === 0) {
        this.#attempts = 0;
        void this.settle();
        return;
      }
      const outcome = await this.#o.barrier.exclusive(
        due.map((d) => d.token),
        () => this.#replayDue(due),
        { scopes: due.map((d) => d.record.namespace), purpose: 'race replay retry' },
      ).then(
        () => 'done' as const,
        (err: unknown) => {
          if (err instanceof FenceTokenStaleError) {
            this.#o.log.info({ err, namespaces: due.map((d) => d.record.namespace) }, 'a retry of erased writes was abandoned before touching the device: a role changed since it was decided; deciding again');
            return 'stale' as const;
          }
          this.#lastError = describeError(err);
          this.#o.log.error({ err, pending: [...this.pending()] }, 'writes a restore erased could not be re-applied yet; writes to those namespaces stay refused until they are (retrying)');
          return 'failed' as const;
        },
      );
      if (outcome === 'stale') continue;
      this.#attempts++;
      if (outcome === 'done') {
        this.#attempts = 0;
        this.#lastError = undefined;
        continue;
      }
      await sleepUnlessWoken(delay, (wake) => (this.#wake = wake));
      this.#wake = undefined;
      delay = Math.min(cap, delay * 2);
    }
  }

  /** The records this site can replay now, each with the token of the role row it is decided under. */
  #due(): { record: PendingReplay; token: FencingToken }[] {
    if (!this.#o.store.isOpen) return [];
    const out: { record: PendingReplay; token: FencingToken }[] = [];
    for (const record of this.#o.store.raceReplays.all()) {
      // A bad row is refused (status names it); one a fence exported without waits for the operator's ack.
      if (record.invalid !== undefined || record.unexportedIn !== null) continue;
      // Fenced or moved away: kept for the fence, whose quarantine export must hold the writes (never dropped here).
      if (!this.#o.isPrimary(record.namespace)) continue;
      const row = this.#o.store.roles.get(record.namespace);
      if (row) out.push({ record, token: tokenOf(row, 'race replay') });
    }
    return out;
  }

  /** Inside the round's hold (its tokens checked): the records as decided, unless finished meanwhile (a demote's). */
  async #replayDue(due: readonly { record: PendingReplay }[]): Promise<void> {
    for (const { record } of due) {
      const now = this.#record(record.namespace);
      if (now && now.epoch === record.epoch && now.invalid === undefined) await this.#replayOne(now);
    }
  }

  /**
   * Inside the caller's exclusive hold: re-applies `namespace`'s pending replay now, if it has one (a demote does, before
   * its hand-off snapshot: the successor takes the namespace from that snapshot, so it must hold the erased changes).
   * Throws what the replay throws; the record then stays.
   */
  async finish(namespace: string): Promise<void> {
    const row = this.#record(namespace);
    if (!row) return;
    if (row.invalid !== undefined) throw new StreamReplayRefusedError(`the pending re-apply of erased writes of ${namespace} is not valid: ${row.invalid}`, { namespace });
    await this.#replayOne(row);
  }

  /**
   * A fence, inside its exclusive hold and BEFORE its backup for the quarantine export: re-applies `namespace`'s pending
   * replay at this fenced site (purpose `fence export`, the record's epoch), so the export holds the erased writes; the
   * successor may never have streamed them. Never throws: a replay the device refuses is answered with its error, and
   * the fence still exports (what the device holds is still worth keeping). Pass the answer to `afterFenceExport` once
   * the quarantine file is written; the record is dropped only then. Undefined when there is nothing to do.
   */
  async beforeFenceExport(namespace: string): Promise<FenceReplay | undefined> {
    const record = this.#record(namespace);
    // Exported without them by an earlier fence: the device has moved on since (resynced), replaying would be wrong.
    if (!record || record.unexportedIn !== null) return undefined;
    if (record.invalid !== undefined) return { record, error: `the stored record is not valid: ${record.invalid}` };
    try {
      const changes = await this.#o.logs!.replay(namespace, record.fromSeq, { ...this.#at(record), purpose: 'fence export' });
      this.#o.log.info({ namespace, epoch: record.epoch, fromSeq: record.fromSeq, changes }, 'writes a restore erased were re-applied before the fence\'s quarantine export');
      return { record };
    } catch (err) {
      return { record, error: describeError(err) };
    }
  }

  /**
   * The fence wrote its quarantine file `file` (a name in the quarantine folder): a record whose writes were re-applied
   * before the export is dropped (they are in it); one whose replay failed is kept, marked as missing from `file`, and
   * shown in status until the operator acknowledges that file (`quarantine ack`).
   */
  afterFenceExport(outcome: FenceReplay, file: string): void {
    const { record, error } = outcome;
    if (error === undefined) this.#o.store.raceReplays.done(record.namespace, record.epoch, record.fromSeq);
    else {
      this.#o.store.raceReplays.unexported(record.namespace, record.epoch, record.fromSeq, file);
      this.#lastError = error;
      this.#o.log.error(
        { namespace: record.namespace, epoch: record.epoch, fromSeq: record.fromSeq, toSeq: this.#lastSeq(record), quarantine: file, error },
        'fenced: writes a restore erased could not be re-applied before the quarantine export and are NOT in its file; they stay in the change log until that file is acknowledged',
      );
    }
    this.#refresh();
  }

  /** The operator acknowledged quarantine file `file`: replays exported without it are forgotten (the caller's transaction). */
  acknowledged(file: string): void {
    const n = this.#o.store.raceReplays.acknowledged(file);
    if (n > 0) this.#o.log.info({ file, replays: n }, 'quarantine file acknowledged: the erased writes it lacks are no longer tracked');
    this.#refresh();
  }

  /** Where a record stands (status): see ReplaysPendingView.records. */
  #stateOf(r: PendingReplay): 'retrying' | 'awaiting-fence' | 'moved-away' | 'not-in-quarantine' | 'invalid' {
    if (r.invalid !== undefined) return 'invalid';
    if (r.unexportedIn !== null) return 'not-in-quarantine';
    if (this.#o.isPrimary(r.namespace)) return 'retrying';
    // Fenced (the fence re-applies before its export); anything else moved away and is not fenced yet (failover.ts fenceMovedAway fences it).
    return this.#o.store.roles.get(r.namespace)?.role === 'fenced' ? 'awaiting-fence' : 'moved-away';
  }

  #record(namespace: string): PendingReplay | undefined {
    return this.#o.store.raceReplays.all().find((r) => r.namespace === namespace);
  }

  /** What the replay goes up to: the record's end, or the last seq of its epoch logged here when it has none. */
  #lastSeq(r: PendingReplay): number {
    const last = this.#o.store.changelog.lastSeqAt(r.namespace, r.epoch);
    return r.toSeq === null ? last : Math.min(last, r.toSeq);
  }

  /**
   * What every replay of record `r` reads (the one after the hold, start() and the retries, a demote's `finish`, a
   * fence's `beforeFenceExport`): its epoch's log from `fromSeq` to `toSeq` when the hold that restored set it. A write
   * admitted after that hold has a higher seq and was made on the restored device itself, so it is already there: in a
   * fence's backup for its quarantine export, in a demote's hand-off snapshot, on the device a retry writes to.
   * Replaying it would be needless, and it may not be replayable (an import whose own-site envelope could not be sealed:
   * `check` would refuse the whole record and leave the namespace refusing writes). `toSeq` null (a record left by a
   * crash inside the hold before its restore finished, or one older than migration 010): to the epoch's head, as
   * before: the restore may or may not have run, and if it did not, the device still holds every change after
   * `fromSeq` (replay is idempotent); if it did, no write was admitted after it (the crash came before the hold ended,
   * and start() replays before the gateway opens), so the head is still the restore's. A pre-010 record may span
   * writes admitted after its hold, as it did before; so may one whose end could not be written (logged in `restored`).
   */
  #at(r: PendingReplay): ReplayAt {
    return r.toSeq === null ? { epoch: r.epoch } : { epoch: r.epoch, toSeq: r.toSeq };
  }

  async #replayOne(r: PendingReplay): Promise<void> {
    const n = await this.#o.logs!.replay(r.namespace, r.fromSeq, this.#at(r));
    this.#o.store.raceReplays.done(r.namespace, r.epoch, r.fromSeq);
    this.#refresh();
    this.#o.log.info({ namespace: r.namespace, epoch: r.epoch, fromSeq: r.fromSeq, changes: n }, 'writes a restore erased were re-applied from the change log');
  }
}

/** What `beforeFenceExport` did: `error` when the writes could not be re-applied (they are then not in the export). */
export interface FenceReplay {
  readonly record: PendingReplay;
  readonly error?: string;
}

/**
 * Why the replay fixed in a hold (`run`) has nothing to do with record `r` as it is now: an exclusive hold that got in
 * first ended it (a demote's finish, a fence's export) or changed it; undefined when it is still the one to replay.
 */
function endedFirst(r: PendingReplay | undefined, run: AfterHold): string | undefined {
  if (!r) return 'its record was ended first by another exclusive hold (a demote re-applied it, or a fence exported the namespace)';
  if (r.invalid !== undefined) return `its record is not valid: ${r.invalid}`;
  if (r.unexportedIn !== null) return `a fence exported the namespace to quarantine file ${r.unexportedIn} WITHOUT these writes (status shows it until that file is acknowledged)`;
  if (r.epoch !== run.epoch) return `its record was replaced by one at epoch ${r.epoch}, which the daemon's retries finish`;
  return undefined;
}

/** A replay fixed inside a merge-restore's hold, running after it. */
interface AfterHold {
  readonly epoch: number;
  readonly fromSeq: number;
  /** The log's head when the hold restored (also the record's durable `to_seq`): the replay reads no further. */
  readonly toSeq: number;
  /** The key ids the replay names (`ns/id`, as the capture's key locks). */
  readonly keys: ReadonlySet<string>;
  readonly token: FencingToken;
  readonly done: Promise<void>;
  readonly end: () => void;
}

/** A replay running after a merge-restore's hold, as the gateway sees it (DaemonRaceReplayer.running). */
export interface RunningReplay {
  /** Whether a write can pass at once, as if no replay were pending (see `admitsDuring`). */
  admits(m: MutationStart): boolean;
  /** Resolves when the replay ended (done or failed). */
  readonly done: Promise<void>;
}

/**
 * Change kinds a log replay can always re-apply once logged (with an import's own envelope: `sealOwn` holds while a
 * record is pending). A crash mid-replay is finished from the record's start to its durable `to_seq`, which such writes
 * (admitted after the hold, seqs past it) are never part of: they are on the restored device already (`#at`).
 * Not moves (check refuses some orders of them), not catch-ups (a key generated inside the NetHSM, user changes).
 */
const PASSING_KINDS: ReadonlySet<string> = new Set(['key-imported', 'key-deleted', 'label-set', 'label-removed', 'tag-added', 'tag-removed', 'cert-set', 'cert-removed']);

/**
 * Whether a gateway write may pass while a replay naming `keys` runs: none of its key locks (its key, a move's new id,
 * a generate's asked id) is among them, and its change is of a kind replay can always re-apply. A write that passes
 * touches only keys the replay never reads (its span ends at the hold's head), so the two commute; the key locks keep
 * such writes in log order among themselves. Pure.
 */
export function admitsDuring(keys: ReadonlySet<string>, m: MutationStart): boolean {
  if (!PASSING_KINDS.has(planChange(m).kind)) return false;
  return lockedKeys(m).every((k) => !keys.has(k));
}
