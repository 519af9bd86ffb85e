/**
 * Anti-entropy passes a replica queues when a primary's daemon answers again after a restart
 * (`replication.afterPrimaryRestart: stream`, daemon.ts resumeMember). Every change the primary acknowledged is in its
 * change log, so the stream carries those; what no stream carries are writes made straight to its NetHSM (around its
 * daemon) while it was down. One pass of each namespace finds those, at anti-entropy's pace and without holding writes,
 * where a snapshot sync would back up both devices and restore this one with writes held.
 *
 * The pass waits until the stream applied the head the primary announced after the restart: run earlier, keys the
 * stream is about to deliver would show as missing, and a missing key asks for a snapshot (docs/anti-entropy.md).
 * A pass that cannot run or complete (a member down, the primary mid-restore, an error) is retried every
 * `recovery.retryInterval` and shown as the namespace's deferred pass in `status` and `/health/ready` until one
 * completes; it is dropped when this site stops replicating the namespace from that primary.
 *
 * A namespace paused here when the primary came back is queued too, whatever `replication.afterPrimaryRestart` says:
 * once it is resumed, a snapshot sync runs in place of the pass where the daemon says one stands in for it then
 * (`snapshotInstead`: that setting, or no position from the primary), so a paused namespace is not left without either.
 * A pass the primary cannot serve until upgraded (AntiEntropyPrimaryTooOldError) is not retried: it waits, shown in
 * `status`, until the primary's next restart queues it again (its upgrade is one).
 *
 * Durable (`restart_passes`, migration 013): a stop of this daemon before the pass completed does not forget it (at
 * the next start the primary answers as a member that never went down, so no restart would be seen again and the
 * namespace would have neither the pass nor a snapshot); `resume` queues the recorded ones again at the start.
 */
import { AntiEntropyPrimaryTooOldError, AntiEntropySourceReplayingError, DaemonStoppingError, describeError, SyncDaemonStoppingError } from '../errors.js';
import type { AntiEntropyResult } from '../namespaces/antientropy.js';
import type { NamespaceStreamStatus } from '../stream/service.js';
import type { Logger } from '../log.js';
import type { StateStore } from '../state/store.js';

/** How often the wait for the stream looks at its status. */
const POLL_MS = 250;
/**
 * The longest a queued pass waits for the stream: a stream that does not catch up by then (a backlog at a slow device,
 * a catch-up snapshot) does not keep the pass from running; at worst the pass asks for a snapshot.
 */
export const STREAM_WAIT_MAX_MS = 10 * 60_000;
/** Beyond three heartbeat intervals: a stream that sent no heartbeat by then is not streaming; the pass runs. */
const NO_HEARTBEAT_SLACK_MS = 10_000;

export interface RestartPassDeps {
  store: StateStore;
  log: Logger;
  /** `recovery.retryInterval` and `stream.heartbeatInterval` of the running config (read at each use). */
  timing: () => { retryIntervalMs: number; heartbeatIntervalMs: number };
  /** Daemon.antiEntropy: undefined when no pass ran (not a replica, a member unavailable, a pass still running). */
  pass: (namespace: string) => Promise<AntiEntropyResult | undefined>;
  /** Whether a pass of the namespace runs now (a scheduled one). */
  running: (namespace: string) => boolean;
  /**
   * Whether the namespace is in the running config. One removed from it keeps its role row, but is not replicated
   * here: its pass is neither queued nor run (it could only fail, retried and shown as deferred for good).
   */
  configured: (namespace: string) => boolean;
  stream: (namespace: string) => NamespaceStreamStatus | null;
  /** Shows a pass that could not run or complete as the namespace's deferred pass (status, /health/ready). */
  defer: (namespace: string, primary: string, cause: string, tryHint: string) => void;
  /** Why a snapshot sync stands in for the pass of `namespace` from `primary` now (undefined: the pass runs). */
  snapshotInstead: (namespace: string, primary: string) => string | undefined;
  /** A snapshot sync of the namespace: undefined once it applied, else why not (skipped). Throws when it fails. */
  sync: (namespace: string) => Promise<string | undefined>;
}

/** What a queued entry runs. */
export type RestartCheck = 'anti-entropy pass' | 'snapshot sync';

interface Queued {
  primary: string;
  /** Wall-clock time of the queueing (status shows it); the waits are measured on `waitingSince`. */
  queuedAt: number;
  /**
   * `performance.now()` at the queueing: the wait for the stream is measured on the monotonic clock. On the wall clock
   * a step back (NTP correcting a clock that booted wrong) held the pass for as long as the step, heartbeats notwithstanding,
   * and a step forward cut the wait short.
   */
  waitingSince: number;
  /**
   * The stream's `lastHeartbeatAt` at the queueing: a heartbeat after it is one whose time differs (it is the wall
   * clock's reading when the heartbeat came; compared by order, a step back of the clock hid every later heartbeat).
   */
  beatAtQueue: number | null;
  /** The primary's head announced by the first heartbeat after the queueing: what the stream must apply first. */
  target: { epoch: number; seq: number } | null;
  /** When a look first found the stream caught up (undefined: not yet): a pass started since covers this one. */
  caughtUpAt: number | undefined;
  /** This queue's own pass is running (its completion is handled by #step, not `completed`). */
  running: boolean;
  /**
   * The primary restarted again while this queue's own pass ran (that pass may have read it before; one more runs): the
   * wait that restart starts, taken when it was seen, so heartbeats after it and before the pass ended count.
   */
  again: Afresh | undefined;
  /** Why the last attempt did not complete, as last logged at warn (a retry for the same reason is logged at debug). */
  lastCause?: string;
  /** Why no retry can complete it (the primary cannot serve the pass until upgraded): not retried until queued again. */
  parked?: string;
  timer: NodeJS.Timeout | undefined;
}

type Afresh = Pick<Queued, 'queuedAt' | 'waitingSince' | 'beatAtQueue' | 'target' | 'caughtUpAt'>;

/** A restart seen now (`stream`: the stream's status now): the pass waits for the stream's head after it, and no earlier pass covers it. */
function afresh(stream: NamespaceStreamStatus | null): Afresh {
  return { queuedAt: Date.now(), waitingSince: performance.now(), beatAtQueue: stream?.lastHeartbeatAt ?? null, target: null, caughtUpAt: undefined };
}

/**
 * One queued pass per namespace. Queueing again while one waits keeps the one waiting, but it waits afresh (for the
 * stream's head after this restart; a pass started before it no longer covers it); while its own pass runs, one more
 * runs after it: the running one may have read the primary's side before the writes around this restart were made.
 */
export class RestartPasses {
  readonly #queued = new Map<string, Queued>();
  #closed = false;

  constructor(private readonly deps: RestartPassDeps) {}

  /**
   * Queues a pass of `namespace` (replicated from `primary`, whose daemon restarted). Once closed (the daemon stops)
   * it is only recorded, for `resume` at the next start: a recovery seen during a stop (which may wait minutes for a
   * restore) is not seen again after it, the primary then answering as a member that never went down.
   */
  queue(namespace: string, primary: string): void {
    if (!this.deps.configured(namespace)) return;
    if (this.#closed) {
      if (this.deps.store.isOpen) this.deps.store.restartPasses.put(namespace, primary);
      return;
    }
    const had = this.#queued.get(namespace);
    if (had?.primary === primary) {
      if (had.running) had.again = afresh(this.#streamNow(namespace));
      else Object.assign(had, afresh(this.#streamNow(namespace)));
      // Parked (its primary could not serve it): this restart may be the upgrade, so it is worth a try again.
      if (had.parked !== undefined && !had.running) {
        had.parked = undefined;
        this.#later(namespace, had, 0);
      }
      return;
    }
    // From another primary now: the one queued for the old primary would be dropped at its next look anyway.
    if (had) clearTimeout(had.timer);
    if (this.deps.store.isOpen) this.deps.store.restartPasses.put(namespace, primary);
    this.#enqueue(namespace, primary);
  }

  /** At the daemon's start, once the state store is open: queues again the passes a stop left recorded. */
  resume(): void {
    if (this.#closed || !this.deps.store.isOpen) return;
    for (const r of this.deps.store.restartPasses.list()) {
      if (this.#queued.has(r.namespace)) continue;
      this.deps.log.info({ namespace: r.namespace, primary: r.primarySite, queuedAt: r.queuedAt !== null ? new Date(r.queuedAt).toISOString() : null }, 'anti-entropy pass queued after the primary restarted and not completed before this daemon stopped: queued again');
      this.#enqueue(r.namespace, r.primarySite);
    }
  }

  #enqueue(namespace: string, primary: string): void {
    const q: Queued = { primary, ...afresh(this.#streamNow(namespace)), running: false, again: undefined, timer: undefined };
    this.#queued.set(namespace, q);
    this.#later(namespace, q, 0);
  }

  /** The pass is done with (completed, covered or dropped): out of the queue and its record. */
  #forget(namespace: string, q: Queued): void {
    if (this.#queued.get(namespace) === q) this.#queued.delete(namespace);
    if (this.deps.store.isOpen) this.deps.store.restartPasses.delete(namespace, q.primary);
  }

  /**
   * A pass of `namespace` that started at `startedAt` completed (the daemon calls this for every completed pass, a
   * scheduled one included). If it started once the stream had caught up, it compared what this queued pass would
   * compare, so the queued one is dropped instead of reading the whole namespace again.
   */
  completed(namespace: string, startedAt: number): void {
    const q = this.#queued.get(namespace);
    if (!q || q.running || q.caughtUpAt === undefined || startedAt < q.caughtUpAt) return;
    clearTimeout(q.timer);
    this.#forget(namespace, q);
    this.deps.log.info({ namespace, primary: q.primary }, 'anti-entropy pass queued after the primary restarted dropped: a pass that started after the stream caught up completed');
  }

  /**
   * For `status`: the pass queued for `namespace` and what it waits for (undefined: none queued). Not a problem (the
   * namespace streams on); it says that the check for writes made around the primary's daemon has not run yet. A pass
   * that failed also shows as the deferred pass, with its cause.
   */
  view(namespace: string): { primary: string; since: number; action: RestartCheck; state: string } | undefined {
    const q = this.#queued.get(namespace);
    if (!q) return undefined;
    const instead = this.deps.snapshotInstead(namespace, q.primary);
    return { primary: q.primary, since: q.queuedAt, action: instead === undefined ? 'anti-entropy pass' : 'snapshot sync', state: this.#state(namespace, q, instead) };
  }

  #state(namespace: string, q: Queued, instead: string | undefined): string {
    if (q.running) return q.again ? 'running; one more runs after it (the primary restarted again meanwhile)' : 'running';
    if (q.parked !== undefined) return `not retried: ${q.parked}; queued again at the primary's next restart (its upgrade)`;
    if (q.lastCause !== undefined) return `retried every recovery.retryInterval (last: ${q.lastCause})`;
    if (this.deps.store.isOpen && this.deps.store.roles.get(namespace)?.paused) {
      return instead === undefined ? 'waiting: the namespace is paused here' : `waiting: the namespace is paused here; runs once it is resumed (${instead})`;
    }
    if (instead !== undefined) return `due now (${instead})`;
    if (q.caughtUpAt !== undefined) return this.deps.running(namespace) ? 'waiting for the anti-entropy pass running now to end' : 'due now';
    return q.target ? `waiting for the stream to apply ${q.target.epoch}.${q.target.seq}` : "waiting for the primary's first heartbeat after its restart";
  }

  /** Namespaces with a pass queued (waiting for the stream, or retried). */
  pending(): string[] {
    return [...this.#queued.keys()];
  }

  /**
   * The daemon stops: timers cleared; the records stay for `resume` at the next start (and `queue` only records). A
   * pass running now is cut by the daemon's stop and awaited by Daemon.close() (its record stays too).
   */
  close(): void {
    this.#closed = true;
    for (const q of this.#queued.values()) clearTimeout(q.timer);
    this.#queued.clear();
  }

  #later(namespace: string, q: Queued, ms: number): void {
    q.timer = setTimeout(() => void this.#step(namespace, q), ms);
    q.timer.unref();
  }

  /**
   * One look: drop, wait for the stream or a running pass, or run the pass (or the snapshot sync standing in for it;
   * retried on failure). Never throws.
   */
  async #step(namespace: string, q: Queued): Promise<void> {
    const { store, log } = this.deps;
    if (this.#closed || this.#queued.get(namespace) !== q) return;
    const row = store.isOpen ? store.roles.get(namespace) : undefined;
    if (!row || row.role !== 'replica' || row.primarySite !== q.primary || !this.deps.configured(namespace)) {
      // A record left by a stop before the namespace was removed from the config is dropped at the start here too.
      log.info({ namespace, primary: q.primary }, 'anti-entropy pass queued after the primary restarted dropped: this site no longer replicates the namespace from it');
      this.#forget(namespace, q);
      return;
    }
    // Paused by an operator: nothing runs (status says it is paused); it runs once the namespace is resumed.
    if (row.paused) return this.#retry(namespace, q);
    const instead = this.deps.snapshotInstead(namespace, q.primary);
    if (instead === undefined) {
      const caughtUp = this.#streamCaughtUp(namespace, q);
      if (caughtUp) q.caughtUpAt ??= Date.now();
      if (this.deps.running(namespace) || !caughtUp) return this.#later(namespace, q, POLL_MS);
    }
    const what: RestartCheck = instead === undefined ? 'anti-entropy pass' : 'snapshot sync';
    q.running = true;
    // Starts after every restart seen so far: it covers them all.
    q.again = undefined;
    try {
      const notDone = instead === undefined ? await this.#pass(namespace, q.primary) : await this.deps.sync(namespace);
      if (notDone === undefined) {
        if (!q.again) {
          if (instead !== undefined) log.info({ namespace, primary: q.primary, reason: instead }, 'snapshot sync queued after the primary restarted (the namespace was paused) applied');
          return this.#forget(namespace, q);
        }
        // `finally` below makes the next one wait for the stream afresh, from the restart seen while this one ran.
        log.info({ namespace, primary: q.primary }, `${what} queued after the primary restarted completed, but the primary restarted again while it ran: one more queued`);
        return this.#later(namespace, q, 0);
      }
      if (instead === undefined && this.deps.running(namespace)) return this.#later(namespace, q, POLL_MS);
      const tryHint = instead === undefined ? 'check `status` members; the pass runs once both answer' : 'it is retried at recovery.retryInterval; `status` and the daemon log say why the sync did not apply';
      this.#failed(namespace, q, what, notDone, tryHint);
    } catch (err) {
      // A primary mid-restore: antiEntropy already shows the deferral (its own cause and remedy).
      if (err instanceof AntiEntropySourceReplayingError) return this.#retry(namespace, q);
      // No retry can help until the primary is upgraded (antiEntropy shows the deferral and logs it): parked.
      if (err instanceof AntiEntropyPrimaryTooOldError) return void (q.parked = err.message);
      // The daemon stops (the pass, or the sync standing in for it, abandoned): the record stays for the next start.
      if (err instanceof SyncDaemonStoppingError || err instanceof DaemonStoppingError) return;
      this.#failed(namespace, q, what, describeError(err), `see the daemon log for the ${what === 'snapshot sync' ? 'sync' : 'pass'}; it is retried at recovery.retryInterval`);
    } finally {
      q.running = false;
      // A restart seen while it ran: the next pass (one more, or the retry of a failed one) waits for the stream afresh.
      if (q.again) Object.assign(q, q.again, { again: undefined });
    }
  }

  /** The pass: undefined once it completed, else why it did not run. */
  async #pass(namespace: string, primary: string): Promise<string | undefined> {
    const result = await this.deps.pass(namespace);
    return result ? undefined : `the primary ${primary} or this site's NetHSM is not available (member status)`;
  }

  #failed(namespace: string, q: Queued, what: RestartCheck, why: string, tryHint: string): void {
    if (this.#closed) return;
    this.deps.defer(
      namespace,
      q.primary,
      `the ${what} queued after the primary ${q.primary}'s daemon restarted has not completed (${why}): writes made straight to its NetHSM while its daemon was down are not found until it does`,
      tryHint,
    );
    // At warn when it first fails and when the reason changes, not at every retry (a primary down for an hour is one
    // line, as the member monitor's own; status shows the deferral meanwhile).
    const fields = { namespace, primary: q.primary, cause: why };
    const msg = `${what} queued after the primary restarted did not complete; retried at recovery.retryInterval`;
    if (q.lastCause === why) this.deps.log.debug(fields, msg);
    else this.deps.log.warn(fields, msg);
    q.lastCause = why;
    this.#retry(namespace, q);
  }

  /** The stream's status now; null once the store is closed (a queueing as the daemon stops). */
  #streamNow(namespace: string): NamespaceStreamStatus | null {
    return this.deps.store.isOpen ? this.deps.stream(namespace) : null;
  }

  #retry(namespace: string, q: Queued): void {
    if (!this.#closed) this.#later(namespace, q, this.deps.timing().retryIntervalMs);
  }

  /**
   * Whether the stream applied the primary's head as its first heartbeat after the queueing announced it (what the
   * primary acknowledged before and around its restart). Not waited for: a replica with no position yet (its stream
   * starts with a snapshot), a stream that sent no heartbeat within three intervals (not streaming: the pass is what
   * finds the difference then), and any wait beyond STREAM_WAIT_MAX_MS.
   */
  #streamCaughtUp(namespace: string, q: Queued): boolean {
    const waited = performance.now() - q.waitingSince;
    if (waited >= STREAM_WAIT_MAX_MS) return true;
    const s = this.deps.stream(namespace);
    if (!s?.position) return true;
    if (!q.target && s.head && s.lastHeartbeatAt !== null && s.lastHeartbeatAt !== q.beatAtQueue) q.target = { ...s.head };
    const t = q.target;
    if (!t) return waited >= 3 * this.deps.timing().heartbeatIntervalMs + NO_HEARTBEAT_SLACK_MS;
    if (s.state === 'catching-up' || s.pendingCatchup) return false;
    return s.position.epoch > t.epoch || (s.position.epoch === t.epoch && s.position.seq >= t.seq);
  }
}
