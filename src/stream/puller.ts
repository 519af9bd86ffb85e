/**
 * A replica's puller for one namespace: keeps the change stream from the namespace's primary open, applies its
 * changes in order (applyChange, under the namespace's apply lock, which snapshot syncs hold too), and reconnects from
 * the stored position with backoff after any failure. A catch-up, a `snapshot-required` line, or a change that cannot be
 * applied through the API (wrong envelope, NetHSM refusal) makes it take a snapshot (debounced) and resume from the
 * snapshot's position. So does a primary whose change log is not the one the position is in (a line or heartbeat
 * naming another log id: the primary's state was lost or replaced) or whose head is behind the position (its log went
 * back): numbers from such a log may name other changes, and skipping them as replays would lose them. A condition of
 * this site (NetHSM Locked or unreachable, a refused credential) is retried with backoff instead, and counts against
 * this site's NetHSM, never the primary. The cause stays in `status().lastError` (and `stream_failing`) until a change
 * is applied, a heartbeat shows the replica caught up, or the puller goes idle (no stream runs, none fails). Heartbeats keep the primary marked reachable and move the lag
 * basis when caught up.
 * Idle while the namespace is primary here, fenced, paused, never synced (the first sync is the schedule's or the
 * operator's), or its primary is not a peer. Idempotent start()/close().
 */
import type { DeviceBarrier } from '../concurrency/barrier.js';
import { tokenOf, type FencingToken } from '../concurrency/fencing.js';
import {
  EnvelopeInvalidError,
  FenceTokenStaleError,
  NhrError,
  PeerMessageInvalidError,
  StreamApplyFailedError,
  StreamLogChangedError,
  SyncDaemonStoppingError,
} from '../errors.js';
import type { Logger } from '../log.js';
import { blameOf, reportBlame } from '../members/blame.js';
import { syncFailureReason, type ReplicatorMetrics } from '../metrics/metrics.js';
import type { PeerClient } from '../peer/client.js';
import type { StateStore } from '../state/store.js';
import type { Mutex } from '../util/mutex.js';
import { applyChange, type ApplyDeps } from './apply.js';
import { ApplyLimit } from './apply-limit.js';
import { StreamApplyTicket } from './apply-ticket.js';
import { ApplyWindow, CatchupNeeded, ReadAheadDropped, type WindowLimit } from './apply-window.js';
import { catchupDueAt, type CatchupBatchOptions, type PendingCatchup } from './catchup-batch.js';
import { parseLine, type HeartbeatLine } from './protocol.js';
import { RewindTrace } from './rewind-trace.js';

export interface PullerOptions {
  namespace: string;
  site: string;
  store: StateStore;
  peers: ReadonlyMap<string, PeerClient>;
  apply: ApplyDeps;
  /** The namespace's lock (shared with snapshot syncs), taken after the barrier. */
  lock: Mutex;
  /** The site's device barrier: every change is applied under a shared hold carrying the stream's fencing token. */
  barrier: DeviceBarrier;
  /** Takes a snapshot of the namespace from its primary (NamespaceSync.sync). Throws when it fails. */
  snapshot(reason: string): Promise<void>;
  heartbeatIntervalMs: number;
  /** How long a pending catch-up gathers more changes before it runs (catchup-batch.ts). */
  catchupDebounceMs: number;
  /** At most one catch-up starts per this many ms (`stream.catchupWindow`). Default 0: no bound. */
  catchupWindowMs?: number;
  /** A pending catch-up runs once this many changes wait, without gathering longer. Default: no count bound. */
  catchupMaxChanges?: number;
  /** Test seam: the clock and timers every wait of the puller uses (default Date.now and setTimeout). */
  clock?: PullerClock;
  monitor: { reportSuccess(name: string): void; reportFailure(name: string, err: unknown): void };
  /** This site's NetHSM in the member monitor: failures of the device count against it, never against the peer. */
  deviceMember: string;
  metrics: ReplicatorMetrics;
  log: Logger;
  /**
   * A fixed number of imports of distinct keys carried out on the device at once (ApplyWindow; 1 = one change at a
   * time). Default: adaptive (ApplyLimit), from DEFAULT_APPLY_CONCURRENCY up to `maxApplyConcurrency`.
   */
  applyConcurrency?: number;
  /** The adaptive window's bound: the connections of the NetHSM client's pool (default DEFAULT_APPLY_CONCURRENCY). */
  maxApplyConcurrency?: number;
  /** Test seam: the adaptive limit (default an ApplyLimit from DEFAULT_APPLY_CONCURRENCY to `maxApplyConcurrency`). */
  applyLimit?: WindowLimit;
  /** Reconnect backoff bounds (default 250 ms .. 30 s). */
  backoff?: { minMs: number; maxMs: number };
}

export type PullerState = 'idle' | 'connecting' | 'streaming' | 'catching-up' | 'waiting';

/** The time source and timer of a puller; `setTimer` returns a cancel function. */
export interface PullerClock {
  now(): number;
  setTimer(fn: () => void, ms: number): () => void;
}

const REAL_CLOCK: PullerClock = {
  now: () => Date.now(),
  setTimer: (fn, ms) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

export interface PullerStatus {
  state: PullerState;
  /** The primary's head at the last heartbeat. */
  head: { epoch: number; seq: number } | null;
  lastHeartbeatAt: number | null;
  /**
   * Why the stream is failing now: the last failed connection, change or catch-up, until a change is applied or a
   * heartbeat shows the replica caught up. `status` reports a replica with one as needing attention.
   */
  lastError: { code: string; message: string } | null;
  /**
   * A catch-up (snapshot) waiting for its batch (catchup-batch.ts): since when (ms), why, how many changes wait (null:
   * not known yet), and when it is due (ms). Null when none waits.
   */
  pendingCatchup: (PendingCatchup & { dueAt: number }) | null;
  /**
   * The highest change whose effect reached this site's NetHSM (applied or found present) on the current connection,
   * from the stored position it connected from; ahead of that position while effects wait for their in-order records
   * (docs/streaming.md, "Rewind"). Null before the stream connected.
   */
  onDevice: { epoch: number; seq: number } | null;
}

/**
 * Where the adaptive apply window starts (apply-limit.ts); from there it follows the device, within 1 and the NetHSM
 * client's pool size (`nethsm.connections`).
 */
export const DEFAULT_APPLY_CONCURRENCY = 8;

/** `again`: reconnect at once (the window dropped read-ahead changes it had not started; they are read again). */
type Outcome = { kind: 'ended'; again?: boolean } | { kind: 'catchup'; reason: string };

export class NamespacePuller {
  readonly #o: PullerOptions;
  #running: Promise<void> | undefined;
  #closed = false;
  #abort: AbortController | undefined;
  #wake: (() => void) | undefined;
  /** A poke() that came while the loop was not sleeping: the next sleep returns at once. */
  #poked = false;
  /** poke() calls so far: a catch-up's gathering tells a poke from its stream ending by itself. */
  #pokes = 0;
  #state: PullerState = 'idle';
  #head: { epoch: number; seq: number } | null = null;
  #lastHeartbeatAt: number | null = null;
  #lastError: PullerStatus['lastError'] = null;
  /** The apply window's size, learnt across connections (a fixed number when `applyConcurrency` is set). */
  readonly #limit: WindowLimit | number;
  /** The adaptive window's bound (the NetHSM client's pool). */
  readonly #maxWindow: number;
  readonly #clock: PullerClock;
  readonly #batch: CatchupBatchOptions;
  #pending: PendingCatchup | null = null;
  /** When the last catch-up snapshot started (ms); null before the first. */
  #lastCatchupAt: number | null = null;
  /** Since a rewind, until the position is back where it was: where the time goes (rewind-trace.ts). */
  #rewind: RewindTrace | undefined;
  /** The adaptive limit when the position was last moved back (for the rewind's log line). */
  #rewindWindow = 0;
  /** reapplied() callers waiting for the re-apply after a rewind to end. */
  #reapplyWaiters: (() => void)[] = [];

  constructor(o: PullerOptions) {
    this.#o = o;
    const max = Math.max(1, o.maxApplyConcurrency ?? DEFAULT_APPLY_CONCURRENCY);
    this.#maxWindow = max;
    this.#limit = o.applyConcurrency ?? o.applyLimit ?? new ApplyLimit({ initial: Math.min(DEFAULT_APPLY_CONCURRENCY, max), max });
    this.#clock = o.clock ?? REAL_CLOCK;
    this.#batch = { windowMs: o.catchupWindowMs ?? 0, gatherMs: o.catchupDebounceMs, maxChanges: o.catchupMaxChanges ?? Number.POSITIVE_INFINITY };
  }

  /**
   * The highest change whose effect this puller saw reach the device (applied or found present) on this connection:
   * the stored position it connected from, then ahead of it while effects wait for their records (which go in order).
   * Null before the first connection and from a rewind or snapshot until the next.
   */
  #onDevice: { epoch: number; seq: number } | null = null;

  /** Imports the apply window lets be in flight now. */
  get applyWindow(): number {
    return typeof this.#limit === 'number' ? this.#limit : this.#limit.current;
  }

  start(): void {
    if (this.#running || this.#closed) return;
    this.#running = this.#loop().catch((err: unknown) => this.#o.log.error({ namespace: this.#o.namespace, err }, 'stream puller stopped on a bug'));
  }

  /** Stops: cuts the stream, waits for the change being applied. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#abort?.abort();
    this.#wake?.();
    await this.#running;
    this.#endRewind();
  }

  /**
   * Resolves once no re-apply after a rewind is under way: at once when none is, else when the position is back where
   * the rewind took it from, a catch-up snapshot replaces the re-apply, or the puller closes. Unbounded: a stream that
   * cannot reach its primary keeps it pending, so callers bound their wait.
   */
  reapplied(): Promise<void> {
    if (this.#rewind === undefined) return Promise.resolve();
    return new Promise((resolve) => this.#reapplyWaiters.push(resolve));
  }

  #endRewind(): void {
    this.#rewind = undefined;
    for (const w of this.#reapplyWaiters.splice(0)) w();
  }

  /**
   * Wakes the loop if it sleeps (a backoff after a failure), without touching a stream that runs: for a member that
   * answers again, whose live stream (if any) is fine as it is.
   */
  wake(): void {
    if (this.#wake) this.#wake();
    else this.#poked = true;
  }

  /**
   * Re-checks the role now (after a promote, demote, resync) instead of at the next poll: cuts the stream (its window
   * and in-memory cursor go with it, and a change waiting for its device hold is not admitted) and reconnects from
   * the stored position.
   */
  poke(): void {
    this.#pokes++;
    this.#abort?.abort();
    if (this.#wake) this.#wake();
    else this.#poked = true;
  }

  /**
   * The stored position was moved back from `from` to `to` (StreamService.rewind, inside a merge-restore's exclusive
   * hold): reconnects from it as poke() does, and logs where the time went once the position is back at `from`.
   */
  rewound(from: number, to: number): void {
    // A second rewind before the first one's position was regained: the earlier target still has to be reached.
    this.#rewind = new RewindTrace(Math.max(from, this.#rewind?.from ?? from), to, this.#clock.now());
    this.#rewindWindow = this.applyWindow;
    this.#onDevice = null;
    this.poke();
  }

  /**
   * A snapshot sync recorded this namespace's position (NamespaceSync, inside its exclusive hold, right after its
   * restore): the device holds the snapshot, what this connection applied above its position was erased, and the
   * connection's in-memory cursor no longer follows the stored position. Reconnects from the stored position as
   * poke() does, so a change that came during the hold is not admitted against the moved position (it was refused as
   * a gap: a failed change, a warn and a backoff); nothing is known on the device above it until then. A catch-up
   * waiting for its batch is covered by that snapshot (or comes again, if the stream still needs one): none is shown
   * pending, and a gathering one stops (the poke).
   */
  restored(): void {
    this.#onDevice = null;
    this.#setPending(null);
    this.poke();
  }

  status(): PullerStatus {
    const p = this.#pending;
    const pendingCatchup = p ? { ...p, dueAt: catchupDueAt(p, this.#lastCatchupAt, this.#batch) } : null;
    return { state: this.#state, head: this.#head, lastHeartbeatAt: this.#lastHeartbeatAt, lastError: this.#lastError, pendingCatchup, onDevice: this.#onDevice };
  }

  async #loop(): Promise<void> {
    const { namespace: ns, store, site } = this.#o;
    let failures = 0;
    while (!this.#closed) {
      const row = store.isOpen ? store.roles.get(ns) : undefined;
      const primary = row?.primarySite;
      const peer = primary !== undefined ? this.#o.peers.get(primary) : undefined;
      // Before the first snapshot sync there is no position to stream from, and the first sync may need the operator
      // (a namespace of unknown origin on the device): it is left to the schedule or the operator.
      const synced = store.isOpen && store.positions.forNamespace(ns).some((p) => p.epoch !== undefined);
      if (!row || row.paused || row.role !== 'replica' || primary === site || !peer || !synced) {
        this.#state = 'idle';
        this.#head = null;
        this.#setPending(null);
        // No stream runs, so none is failing: a cause kept from before (the primary lost, then promoted here) would
        // keep `stream_failing` at 1 and fire its alert for a stream that no longer exists. A resumed stream that
        // fails again says so at once.
        this.#clearError();
        // Nothing is re-applied while idle (paused, promoted, fenced): a rewind's trace ends here, unlogged.
        if (this.#rewind) this.#endRewind();
        await this.#sleep(1_000);
        continue;
      }
      let outcome: Outcome | undefined;
      try {
        outcome = await this.#stream(peer, tokenOf(row, 'stream apply'));
        failures = 0;
      } catch (err) {
        if (this.#closed) break;
        if (err instanceof FenceTokenStaleError) {
          // Promoted, demoted, fenced, followed a new epoch or paused while streaming: nothing more was applied; the
          // loop decides again from the role row as it is now.
          this.#o.log.info({ namespace: ns, reason: err.message }, 'change stream stopped: the role changed');
          continue;
        }
        failures++;
        outcome = this.#onError(peer.name, err);
      }
      if (this.#closed) break;
      if (outcome?.kind === 'catchup') {
        try {
          await this.#catchup(outcome.reason, peer);
          failures = 0;
        } catch (err) {
          failures++;
          // The daemon's stop abandoned the sync (NamespaceSync.stop): nothing failed, the catch-up runs after the start.
          if (err instanceof SyncDaemonStoppingError) this.#o.log.info({ namespace: ns }, 'stream catch-up snapshot not taken: the daemon is stopping; it runs again after the start');
          else {
            this.#noteError(err);
            this.#o.log.warn({ namespace: ns, err }, 'stream catch-up snapshot failed; retrying');
          }
        }
      }
      if (outcome?.kind === 'ended' && !outcome.again && failures === 0) await this.#sleep(200);
      if (failures > 0) {
        const { minMs, maxMs } = this.#o.backoff ?? { minMs: 250, maxMs: 30_000 };
        this.#state = 'waiting';
        await this.#sleep(Math.min(maxMs, minMs * 2 ** Math.min(failures - 1, 16)));
      }
    }
    this.#state = 'idle';
  }

  /** One connection: apply lines until the stream ends, breaks, or asks for a snapshot. */
  async #stream(peer: PeerClient, token: FencingToken): Promise<Outcome> {
    const { namespace: ns, store, metrics, barrier } = this.#o;
    const epoch = token.epoch;
    const pos = store.positions.get(ns, peer.name);
    const after = pos?.epoch === epoch && pos.seq !== undefined ? { epoch: pos.epoch, seq: pos.seq } : undefined;
    if (after === undefined) return { kind: 'catchup', reason: pos?.epoch === undefined ? 'no position yet' : `position is from epoch ${pos.epoch}` };
    this.#state = 'connecting';
    // Only the stored position is known to be on the device now: effects a cut connection made above it may have been
    // erased since (a restore of another namespace whose hold recorded none of them rewinds nothing here).
    this.#onDevice = after;
    const abort = (this.#abort = new AbortController());
    const pokes = this.#pokes;
    // Lock order: barrier (shared, the token checked once admitted), then the namespace's lock.
    const admission = { tokens: [token], wait: 'unbounded' as const, signal: abort.signal, scope: ns, purpose: `stream apply ${ns}` };
    // The hold's check is once per hold, and the window carries many changes under one: each change checks the token
    // again right before its first device call (apply.ts makeEffect), so none starts after a pause, promote, demote or
    // follow committed (the barrier's own check: one SQLite row read each).
    const fence = () => barrier.checkToken(token);
    // A failed change of the window ends this connection at once: the window keeps its device hold and the
    // namespace's lock until it is drained, and waiting for the next change (heartbeats may be all that comes) would
    // keep every sync and merge-restore of this device waiting with it.
    let windowFailure: { err: unknown } | undefined;
    // The ticket of the window's current device hold (one hold carries many imports): what it wrote, for a
    // merge-restore it races (apply-ticket.ts). Every record and failure of the window comes while that hold is held.
    let held: StreamApplyTicket | undefined;
    const window = new ApplyWindow({
      deps: this.#o.apply,
      namespace: ns,
      source: peer.name,
      lock: this.#o.lock,
      admit: async () => {
        held = new StreamApplyTicket(ns, peer.name);
        const release = await barrier.enter({ ...admission, ticket: held.ticket });
        this.#rewind?.admitted(this.#clock.now());
        return release;
      },
      fence,
      yieldWanted: () => barrier.held,
      size: this.#windowLimit(),
      // While it reads ahead, new changes may use the whole pool beyond the re-applied span's room (a fixed size stays).
      readAheadRoom: typeof this.#limit === 'number' ? this.#limit : this.#maxWindow,
      reached: (line, ms, unwrapMs) => {
        this.#rewind?.reached(line.seq, ms, this.#clock.now(), unwrapMs);
        this.#reached(line);
      },
      recorded: (line, outcome) => {
        held?.recorded(line.seq, outcome);
        this.#recorded(peer.name, line.seq, outcome);
      },
      failed: (err) => {
        windowFailure ??= { err };
        abort.abort();
        // Dropped read-ahead changes, and a change fenced off by a stale token, never started, and every effect that did
        // is above the stored position (no record passed the first of them): the stream applies them again from there,
        // so the hold's ticket stays as its records made it (apply-ticket.ts) and nothing failed.
        if (err instanceof ReadAheadDropped || err instanceof FenceTokenStaleError) return;
        held?.failed();
        if (!(err instanceof CatchupNeeded)) metrics.streamChangesAppliedTotal.inc({ namespace: ns, outcome: 'failed' });
      },
    });
    // The highest change this connection has delivered (its start, before any).
    let received = after.seq;
    try {
      const lines = await peer.changes(ns, after, { signal: abort.signal, idleTimeoutMs: this.#o.heartbeatIntervalMs * 3 + 1_000, log: pos?.logId });
      this.#state = 'streaming';
      this.#rewind?.reconnected(this.#clock.now());
      for await (const text of lines) {
        const parsed = parseLine(text);
        if (!parsed.ok) throw new PeerMessageInvalidError(`change stream of ${ns} from ${peer.name}: ${parsed.problem}`, { site: peer.name, namespace: ns });
        const line = parsed.line;
        this.#lastHeartbeatAt = Date.now();
        metrics.streamLastHeartbeatTimestampSeconds.set({ namespace: ns }, this.#lastHeartbeatAt / 1000);
        this.#o.monitor.reportSuccess(peer.name);
        if (line.type === 'snapshot-required') {
          this.#head = line.head;
          return { kind: 'catchup', reason: line.reason };
        }
        if (line.type === 'heartbeat') {
          this.#head = line.head;
          const now = store.positions.get(ns, peer.name);
          const reset = now && resetSince(now, line);
          if (reset) return { kind: 'catchup', reason: reset };
          if (window.empty && behindHead(now, line.head) && received >= line.head.seq) {
            // This connection delivered everything up to the head, yet the stored position is behind it with nothing
            // in flight: a snapshot sync moved the position back under the stream (its restore put an older copy of
            // the namespace on the device and forgot the records after it). The primary will not send those changes
            // on this connection again: reconnect from the stored position. (Without it the replica sat behind for
            // good, heartbeats showing the head, until the next sync.) Only with the window empty: while changes are
            // in flight the position is behind them by design, and draining here stalled the device once per
            // heartbeat under load (a whole window's latency each second). A snapshot waits for the window to empty,
            // and an idle stream heartbeats every interval, so the check still runs after one. (A daemon's sync also
            // reconnects the stream at once when it records the position: restored(). This stays for any other way.)
            await window.drain();
            const again = store.positions.get(ns, peer.name);
            if (behindHead(again, line.head)) {
              this.#o.log.info({ namespace: ns, from: peer.name, position: `${again.epoch}.${again.seq}`, head: `${line.head.epoch}.${line.head.seq}` }, 'stream position moved back under the stream (a snapshot restored an older copy); reconnecting from it');
              this.#onDevice = null;
              return { kind: 'ended' };
            }
          }
          if (now?.epoch === line.head.epoch && now.seq === line.head.seq) {
            // Group-committed, not awaited: a write of its own commits with an fsync on the event loop, at every
            // heartbeat of every namespace. A record queued after it runs after it, and caughtUp is a no-op once the
            // position moved, so the lag basis never goes back; nothing waits for it (gauges read it when it landed).
            const head = line.head;
            const at = line.at;
            const log = line.log;
            store.groupCommit(() => store.applied.caughtUp(ns, peer.name, head.epoch, head.seq, at, log)).catch((err: unknown) => {
              this.#o.log.debug({ namespace: ns, err }, 'could not store that the replica is caught up (the next heartbeat stores it)');
            });
            this.#clearError();
          }
          this.#updateGauges(peer.name);
          continue;
        }
        if (this.#head === null || line.seq > this.#head.seq) this.#head = { epoch: line.epoch, seq: line.seq };
        if (line.seq > received) received = line.seq;
        if (line.kind === 'key-imported' && window.accepts(line)) {
          // Re-applying what a restore erased (seq up to the rewind's `from`): read ahead, so the new changes after the
          // span reach the device first (apply-window.ts, "Read-ahead"); the position still moves in order.
          const span = this.#rewind !== undefined && line.seq <= this.#rewind.from;
          await (span ? window.queue(line) : window.add(line));
          continue;
        }
        await window.drain();
        const ticket = new StreamApplyTicket(ns, peer.name);
        const apply = async () => {
          this.#rewind?.admitted(this.#clock.now());
          const started = performance.now();
          const r = await this.#o.lock.run(() => applyChange(this.#o.apply, ns, peer.name, line, fence));
          if (r.outcome === 'applied' || r.outcome === 'present') this.#rewind?.reached(line.seq, performance.now() - started, this.#clock.now(), undefined);
          // Set before the hold ends; a catch-up or a throw leaves it `unknown`.
          if (r.outcome !== 'catchup') ticket.recorded(line.seq, r.outcome);
          return r;
        };
        const result = await barrier.shared(apply, { ...admission, ticket: ticket.ticket }).catch((err: unknown) => {
          // A poke (role change, rewind) aborting the wait for the hold is no failed change.
          if (!abort.signal.aborted) metrics.streamChangesAppliedTotal.inc({ namespace: ns, outcome: 'failed' });
          throw err;
        });
        if (result.outcome === 'catchup') return { kind: 'catchup', reason: result.reason };
        if (result.outcome !== 'duplicate') this.#reached(line);
        this.#recorded(peer.name, line.seq, result.outcome);
      }
      await window.drain();
      return { kind: 'ended' };
    } catch (err) {
      // The window's failure is what ended the stream (its abort surfaces here as a broken connection).
      const cause = windowFailure ? windowFailure.err : err;
      if (cause instanceof CatchupNeeded) return { kind: 'catchup', reason: cause.reason };
      if (cause instanceof ReadAheadDropped) return { kind: 'ended', again: true };
      // Our own poke ended it (a role change): the loop decides again; it is nobody's failure, least of all the peer's.
      if (!windowFailure && this.#pokes !== pokes) return { kind: 'ended' };
      throw cause;
    } finally {
      // However the stream ends, no effect of the window may still run (or hold the lock) when the caller reconnects
      // or takes a snapshot; a failure here was already reported or is superseded by what ended the stream.
      // Read-ahead changes not started are dropped, never started (the stream reads them again from the position).
      await window.abandon();
      // Between connections (a backoff, a hold to wait for) only what is recorded is known to stay on the device.
      const left = store.positions.get(ns, peer.name);
      this.#onDevice = left?.epoch === epoch && left.seq !== undefined ? { epoch, seq: left.seq } : null;
      abort.abort();
      if (this.#abort === abort) this.#abort = undefined;
    }
  }

  /**
   * The window's size: the adaptive limit, but while the stream applies again what a restore erased (from a rewind
   * until the position is back where it was) never below DEFAULT_APPLY_CONCURRENCY (within the pool). That backlog is
   * certain and of distinct keys this device took moments before, and the limit may have been learnt small from a
   * stream that never filled it; new changes are started beside it (read-ahead: readAheadRoom) but recorded after it.
   * A fixed `applyConcurrency` is kept as it is.
   */
  #windowLimit(): number | WindowLimit {
    const limit = this.#limit;
    if (typeof limit === 'number') return limit;
    const floor = Math.min(DEFAULT_APPLY_CONCURRENCY, this.#maxWindow);
    const reapplying = () => this.#rewind !== undefined;
    return {
      get current() {
        return reapplying() ? Math.max(limit.current, floor) : limit.current;
      },
      full: () => limit.full(),
      sample: (ms, failed) => limit.sample(ms, failed),
    };
  }

  /** A change's effect is on the device: the connection's high-water mark in its epoch. */
  #reached(at: { epoch: number; seq: number }): void {
    const now = this.#onDevice;
    if (now === null || at.epoch !== now.epoch || at.seq > now.seq) this.#onDevice = { epoch: at.epoch, seq: at.seq };
  }

  #recorded(primary: string, seq: number, outcome: 'applied' | 'present' | 'duplicate'): void {
    const trace = this.#rewind?.recorded(seq, outcome, this.#clock.now());
    if (trace) {
      this.#endRewind();
      this.#o.log.info({ namespace: this.#o.namespace, from: primary, regained: trace.from, rewoundTo: trace.rewoundTo, ms: trace.ms, applied: trace.applied, present: trace.present, applyLimit: { atRewind: this.#rewindWindow, atRegain: this.applyWindow } }, 'stream position back where it was before a restore erased changes; the stream applied them again');
    }
    this.#o.metrics.streamChangesAppliedTotal.inc({ namespace: this.#o.namespace, outcome: outcome === 'duplicate' ? 'duplicate' : 'applied' });
    this.#o.metrics.streamApplyWindow.set({ namespace: this.#o.namespace }, this.applyWindow);
    this.#clearError();
    this.#updateGauges(primary);
  }

  /**
   * What a failed connection or change leads to: a snapshot for changes that cannot be applied, else a retry with
   * backoff. A failure counts against the member it is about (members/blame.ts): the peer for the stream itself, this
   * site's NetHSM for its own failures (Locked, unreachable), nobody for the rest.
   */
  #onError(primary: string, err: unknown): Outcome | undefined {
    const ns = this.#o.namespace;
    this.#noteError(err);
    if (err instanceof EnvelopeInvalidError || err instanceof StreamApplyFailedError || err instanceof StreamLogChangedError) {
      this.#o.log.error({ namespace: ns, from: primary, err }, 'a stream change cannot be applied here; taking a snapshot instead');
      return { kind: 'catchup', reason: err.message };
    }
    reportBlame(this.#o.monitor, err, { peer: primary, device: this.#o.deviceMember });
    const local = blameOf(err) !== 'peer';
    this.#o.log.warn(
      { namespace: ns, from: primary, err },
      local ? 'a stream change could not be applied at this site; retrying from the stored position' : 'change stream interrupted; reconnecting from the stored position',
    );
    return undefined;
  }

  /**
   * Takes the catch-up snapshot once its batch is due (catchup-batch.ts), gathering until then. Returns without one
   * when woken early (close, or a poke: the loop re-checks the role; the catch-up stays pending, with its `since`).
   */
  async #catchup(reason: string, peer: PeerClient): Promise<void> {
    const ns = this.#o.namespace;
    this.#state = 'catching-up';
    const known = this.#behind(peer.name);
    if (this.#pending === null) this.#o.log.info({ namespace: ns, reason }, 'stream catch-up pending: a snapshot will cover it');
    const before = this.#pending?.changes ?? null;
    const changes = known === null && before === null ? null : Math.max(known ?? 0, before ?? 0);
    this.#setPending({ since: this.#pending?.since ?? this.#clock.now(), reason, changes });
    if (!(await this.#gather(peer)) || this.#closed) return;
    const pending = this.#pending ?? { reason, changes: null };
    this.#o.log.info({ namespace: ns, reason: pending.reason, changes: pending.changes }, 'stream catch-up: taking a snapshot');
    this.#lastCatchupAt = this.#clock.now();
    // The snapshot sets the position itself: a rewind's trace ends here, unlogged.
    this.#endRewind();
    this.#onDevice = null;
    await this.#o.snapshot(pending.reason);
    this.#setPending(null);
  }

  /**
   * Waits until the pending catch-up is due, meanwhile reading (never applying) the stream from the stored position to
   * count the changes that wait. True when due; false when woken early.
   */
  async #gather(peer: PeerClient): Promise<boolean> {
    const { namespace: ns, store } = this.#o;
    const due = () => (this.#pending ? catchupDueAt(this.#pending, this.#lastCatchupAt, this.#batch) : 0);
    if (due() <= this.#clock.now()) return true;
    const pos = store.positions.get(ns, peer.name);
    if (pos?.epoch !== undefined && pos.seq !== undefined) {
      const after = { epoch: pos.epoch, seq: pos.seq };
      const abort = (this.#abort = new AbortController());
      const pokes = this.#pokes;
      let timedOut = false;
      const cancel = this.#clock.setTimer(() => {
        timedOut = true;
        abort.abort();
      }, due() - this.#clock.now());
      try {
        const lines = await peer.changes(ns, after, { signal: abort.signal, idleTimeoutMs: this.#o.heartbeatIntervalMs * 3 + 1_000, log: pos.logId });
        for await (const text of lines) {
          const parsed = parseLine(text);
          if (!parsed.ok) break;
          const head = parsed.line.type === 'change' ? { epoch: parsed.line.epoch, seq: parsed.line.seq } : parsed.line.head;
          if (head.epoch === after.epoch && this.#pending) this.#setPending({ ...this.#pending, changes: Math.max(this.#pending.changes ?? 0, head.seq - after.seq) });
          if (due() <= this.#clock.now()) return true;
        }
      } catch {
        // Counting is best effort: the catch-up runs at its time all the same.
      } finally {
        cancel();
        abort.abort();
        if (this.#abort === abort) this.#abort = undefined;
      }
      if (timedOut) return true;
      // Poked or closed: back to the loop, which decides from the role row again. A stream that ended by itself (the
      // primary went away) only stops the counting: the catch-up still waits for its time.
      if (this.#closed || this.#pokes !== pokes) return false;
    }
    const rest = due() - this.#clock.now();
    return rest <= 0 || (await this.#sleep(rest)) === 'timer';
  }

  #behind(primary: string): number | null {
    const pos = this.#o.store.positions.get(this.#o.namespace, primary);
    return this.#head && pos?.epoch === this.#head.epoch && pos.seq !== undefined ? Math.max(0, this.#head.seq - pos.seq) : null;
  }

  #setPending(p: PendingCatchup | null): void {
    this.#pending = p;
    this.#o.metrics.streamCatchupPendingChanges.set({ namespace: this.#o.namespace }, p === null ? 0 : Math.max(1, p.changes ?? 1));
  }

  #updateGauges(primary: string): void {
    const { namespace: ns, store, metrics } = this.#o;
    const pos = store.positions.get(ns, primary);
    if (pos?.seq !== undefined) metrics.streamPositionSeq.set({ namespace: ns }, pos.seq);
    const behind = this.#head && pos?.epoch === this.#head.epoch && pos.seq !== undefined ? Math.max(0, this.#head.seq - pos.seq) : undefined;
    if (behind !== undefined) metrics.streamChangesBehind.set({ namespace: ns }, behind);
    const taken = pos?.positionTakenAt;
    metrics.streamLagSeconds.set({ namespace: ns }, behind === 0 || taken === undefined ? 0 : Math.max(0, (Date.now() - taken) / 1000));
    if (taken !== undefined) metrics.setReplicaDataTime(ns, taken / 1000);
  }

  #noteError(cause: unknown): void {
    // A change whose record the state store could not write (its disk full) is named as such, not as a bug.
    const err = this.#o.store.isOpen ? this.#o.store.noteWriteError(cause) : cause;
    this.#lastError = err instanceof NhrError ? { code: err.code, message: err.message } : { code: 'NHR_ERR_INTERNAL', message: err instanceof Error ? err.message : String(err) };
    this.#o.metrics.setStreamFailing(this.#o.namespace, syncFailureReason(err));
  }

  #clearError(): void {
    if (this.#lastError === null) return;
    this.#lastError = null;
    this.#o.metrics.setStreamFailing(this.#o.namespace, null);
  }

  /** Sleeps `ms` on the clock; 'woken' when a close() or poke() ended it early. */
  #sleep(ms: number): Promise<'timer' | 'woken'> {
    // A close() or poke() that came while the loop was not sleeping must not be missed: the next sleep (a backoff can
    // be 30 s) returns at once. Without this, stopping the daemon could wait out a whole backoff.
    if (this.#closed || this.#poked) {
      this.#poked = false;
      return Promise.resolve('woken');
    }
    return new Promise((resolve) => {
      const done = (how: 'timer' | 'woken') => {
        cancel();
        this.#wake = undefined;
        resolve(how);
      };
      const cancel = this.#clock.setTimer(() => done('timer'), ms);
      this.#wake = () => done('woken');
    });
  }
}

/** Whether the stored position is behind `head` in the head's epoch. */
function behindHead<P extends { epoch?: number; seq?: number }>(pos: P | undefined, head: { epoch: number; seq: number }): pos is P & { epoch: number; seq: number } {
  return pos?.epoch === head.epoch && pos.seq !== undefined && pos.seq < head.seq;
}

/**
 * Why a heartbeat shows the primary's change log is not the one `pos` is in, or undefined when it is: another log id
 * (or none where the position has one, or the reverse), or a head behind the position at its epoch (the log went
 * back, e.g. the primary's state was restored from an older copy).
 */
function resetSince(pos: { epoch: number | undefined; seq: number | undefined; logId: string | undefined }, beat: HeartbeatLine): string | undefined {
  if (pos.epoch === undefined || pos.seq === undefined) return undefined;
  const at = `${pos.epoch}.${pos.seq}`;
  if (beat.log !== pos.logId) return `the primary's change log is ${beat.log ?? '(no id)'}; this replica's position ${at} is in ${pos.logId ?? '(no id)'}`;
  if (beat.head.epoch === pos.epoch && beat.head.seq < pos.seq) return `the primary's head ${beat.head.epoch}.${beat.head.seq} is behind this replica's position ${at}: its change log went back`;
  return undefined;
}
