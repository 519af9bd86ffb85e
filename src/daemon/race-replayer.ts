/**
 * The daemon's RaceReplayer (src/replicator/race-replay.ts; docs/concurrency.md, "Racing writes re-applied"): carries
 * out a merge-restore's plan to make good the writes that raced its backup and merge, and finishes a replay left
 * pending (a crash between the restore and the end of the replay, or a device that failed it).
 *
 * Contract: a namespace with a pending replay takes no gateway write until it is done (`isPending`; the gateway answers
 * 503 naming it while no hold runs, and writes arriving during a hold wait at the gate and are decided again): a write
 * admitted in between could be undone by the replay of an earlier change of the same key.
 * `start()` finishes pending replays in an exclusive hold of the barrier, requested before the gateway starts, so no
 * write is admitted ahead of it; it retries (with backoff, status and metrics saying so) until done or `close()`.
 */
import type { DeviceBarrier } from '../concurrency/barrier.js';
import type { Logger } from '../log.js';
import type { RaceReplayer, ReplayPlan } from '../replicator/race-replay.js';
import type { StateStore } from '../state/store.js';
import type { ReplaysPendingView } from './status.js';
import { NhrError } from '../errors.js';

const describeError = (err: unknown): string => (err instanceof NhrError ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err));

/** The change log side (src/stream/log-replay.ts). */
export interface LogReplaySource {
  check(namespace: string, fromSeq: number): string | undefined;
  /** Re-applies the changes from `fromSeq` to the head onto this site's NetHSM; how many it re-applied. */
  replay(namespace: string, fromSeq: number): Promise<number>;
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
      if (plan.logs.size > 0) this.#o.store.raceReplays.record(plan.logs);
      for (const s of plan.streams) this.#o.streams!.rewind(s.namespace, s.source, s.seq);
    });
    this.#refresh();
  }

  /** Inside the merge-restore's hold. A failure leaves the rows pending and starts the daemon's own retries. */
  async replay(plan: ReplayPlan): Promise<void> {
    try {
      for (const [ns, from] of plan.logs) await this.#replayOne(ns, from);
    } catch (err) {
      this.#lastError = describeError(err);
      this.kick();
      throw err;
    }
  }

  unfinished(): void {
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
    this.#o.onPending?.(this.#pending.size);
  }

  /** For status, health and the metric: the pending replays, their cause and remedy; null when none. */
  view(): ReplaysPendingView | null {
    const rows = this.#o.store.isOpen ? this.#o.store.raceReplays.all() : [];
    if (rows.length === 0) return null;
    const namespaces = rows.map((r) => r.namespace);
    const which = namespaces.length === 1 ? `namespace ${namespaces[0]}` : `namespaces ${namespaces.join(', ')}`;
    const err = this.#lastError;
    return {
      namespaces,
      since: new Date(Math.min(...rows.map((r) => r.createdAt))).toISOString(),
      attempts: this.#attempts,
      lastError: err ?? null,
      cause:
        `writes to ${which} that raced a merge-restore were erased by its restore and are NOT RE-APPLIED yet from the change log` +
        `${this.#attempts > 0 ? ` (${this.#attempts} attempts${err ? `; last: ${err}` : ''})` : ''}; the gateway refuses writes to ${namespaces.length === 1 ? 'it' : 'them'} until they are`,
      try:
        'Nothing is lost: the changes are in the change log and the daemon retries by itself. Bring the NetHSM back or fix what the last error names ' +
        '(`nethsm-replicator status` shows this site\'s NetHSM and credentials); the replay also runs at the next start, before the gateway takes writes.',
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

  /** Starts the retries if replays are pending and none run. */
  kick(): void {
    if (this.#closed || this.#running || this.#pending.size === 0) return;
    // Often called from inside a merge-restore's hold: the retries must take holds of their own, not re-enter that one.
    this.#running = this.#o.barrier.detached(() => this.#retry().finally(() => (this.#running = undefined)));
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    await this.#running;
    await this.#settling;
  }

  async #retry(): Promise<void> {
    const [first, cap] = RETRY_MS;
    let delay: number = first;
    while (!this.#closed) {
      const ok = await this.#o.barrier.exclusive([], () => this.#replayPending()).then(
        () => true,
        (err: unknown) => {
          this.#lastError = describeError(err);
          this.#o.log.error({ err, pending: [...this.pending()] }, 'writes a restore erased could not be re-applied yet; writes to those namespaces stay refused until they are (retrying)');
          return false;
        },
      );
      this.#attempts++;
      if (ok) {
        this.#attempts = 0;
        this.#lastError = undefined;
        void this.settle();
        return;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      delay = Math.min(cap, delay * 2);
    }
  }

  /**
   * Inside the caller's exclusive hold: re-applies `namespace`'s pending replay now, if it has one (a demote does, before
   * its hand-off snapshot: the successor takes the namespace from that snapshot, so it must hold the erased changes).
   * Throws what the replay throws; the record then stays.
   */
  async finish(namespace: string): Promise<void> {
    const row = this.#o.store.raceReplays.all().find((r) => r.namespace === namespace);
    if (row) await this.#replayOne(namespace, row.fromSeq);
  }

  async #replayPending(): Promise<void> {
    for (const r of this.#o.store.raceReplays.all()) {
      if (!this.#o.isPrimary(r.namespace)) {
        this.#o.log.warn({ namespace: r.namespace, fromSeq: r.fromSeq }, 'a pending re-apply of racing writes is dropped: this site is no longer the namespace primary');
        this.#o.store.raceReplays.done(r.namespace, r.fromSeq);
        this.#refresh();
        continue;
      }
      await this.#replayOne(r.namespace, r.fromSeq);
    }
  }

  async #replayOne(namespace: string, fromSeq: number): Promise<void> {
    const n = await this.#o.logs!.replay(namespace, fromSeq);
    this.#o.store.raceReplays.done(namespace, fromSeq);
    this.#refresh();
    this.#o.log.info({ namespace, fromSeq, changes: n }, 'writes a restore erased were re-applied from the change log');
  }
}
