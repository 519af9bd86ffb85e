/**
 * How many imports a replica's apply window (apply-window.ts) keeps in flight at its NetHSM, adapted to the device.
 * A fixed window is wrong both ways: too small and the replica falls behind a primary that takes more concurrent
 * writes than the window (the lag grows without bound); too large and the imports only queue at the device (or in the
 * client's pool), where they add latency, slow the applications that use the same NetHSM, and hold the namespace's
 * lock longer, for no gain.
 *
 * The rule (AIMD with a delay signal, as TCP Vegas and Netflix's concurrency-limits do): time is cut into rounds of
 * `max(limit, 8)` finished imports (about one round trip of the window). Per round, `latency` is the lower quartile of
 * its imports' latencies and `rate` the imports finished per second; `baseline` is the lowest round latency of the
 * last `history` rounds. At the end of a round:
 * - an import of the round failed (a transient NetHSM failure: the device or the path is overloaded): halve the limit;
 * - `latency > tolerance × baseline` (default 1.5): the imports wait somewhere. Halve the limit, unless this round's
 *   rate is at least `gain` (default 1.2) × the best rate of the last `history` rounds at half the limit or less: then
 *   more concurrency still gets more done (the device has parallel capacity left; the wait is elsewhere), and the
 *   limit stays; and unless the previous round halved the limit for latency and its imports still take more than
 *   1 / `gain` of what they took before that halving: half the window did not shorten them, so the wait is not this
 *   window's (a daemon or NetHSM short of CPU, a slower network). Then the baseline restarts from this round and the
 *   limit stays (and grows by one when full): shrinking further would only leave the replica behind its primary;
 * - else, if the window was full at some point in the round (imports waited for room): add one (double while no round
 *   has shrunk it yet: slow start);
 * - else keep the limit (demand is below it; growing it would prove nothing).
 * The limit stays within [`min`, `max`]; `max` is the NetHSM client's pool (connections), since more imports than
 * connections only wait in the pool. The baseline is a windowed minimum so it follows a device that becomes slower
 * for good (after `history` rounds) instead of keeping the limit at `min` forever.
 *
 * Why the rate as well as the latency: by Little's law a full window's rate is its size over its latency. At a device
 * with k parallel slots, a window beyond k only makes each import wait longer (the latency grows with the window, the
 * rate stays), and halving loses nothing. A window that gets more done than half of it did, although each import got
 * slower (a NetHSM also busy with applications' requests, a daemon short of CPU), is not queueing at the device, and
 * halving it would leave the replica behind its primary. Comparing with half the size, not with the size just below,
 * is what makes the difference measurable: one more import in flight changes the rate by less than the noise.
 *
 * Why the lower quartile: a device that queues delays every import of the round (each waits for those ahead of it), so
 * the whole distribution moves; a pause of the daemon's own event loop (GC, a burst of other work) or a slow network
 * moment delays a few. The median or the mean would read those few as congestion and shrink the window for nothing.
 *
 * Why halve, not shrink by less: the baseline must keep seeing the device unloaded. The limit oscillates between the
 * size where the latency passes the tolerance and half of it, which is below the size where the device starts to
 * queue (tolerance < 2), so every cycle has rounds that measure the unloaded latency. A gentler decrease would stay
 * above that point, every round would include queueing, and as the old minimum left the history the baseline would
 * creep up with the limit until the limit reached `max`.
 *
 * Pure bookkeeping (no timers, no I/O): the window reports to it and reads `current`.
 */

export interface ApplyLimitOptions {
  /** Imports in flight before anything was measured. */
  initial: number;
  /** Upper bound: the NetHSM client's pool size. */
  max: number;
  /** Lower bound (default 1). */
  min?: number;
  /** A round whose latency exceeds `tolerance` × the baseline may be congestion (default 1.5). */
  tolerance?: number;
  /** … unless its rate is at least `gain` × the best recent rate at half its limit or less (default 1.2). */
  gain?: number;
  /** Rounds the baseline is taken from (default 20). */
  history?: number;
  /** Milliseconds, monotonic (default performance.now). */
  now?: () => number;
}

/** Why the limit last changed (for logs and tests). */
export type ApplyLimitChange = 'slow-start' | 'increase' | 'latency' | 'failure';

const MIN_ROUND = 8;


export class ApplyLimit {
  readonly #min: number;
  readonly #max: number;
  readonly #tolerance: number;
  readonly #gain: number;
  readonly #history: number;
  readonly #now: () => number;
  #limit: number;
  #slowStart = true;
  #round: number[] = [];
  #samples = 0;
  #first: number | undefined;
  #last = 0;
  #roundFailed = false;
  #roundFull = false;
  /** Round latencies of the last `history` rounds. */
  #latencies: number[] = [];
  /** The last rate measured at each limit, with the number of the round it was measured in. */
  readonly #rateAt = new Map<number, { rate: number; round: number }>();
  #roundNo = 0;
  #lastChange: ApplyLimitChange | undefined;
  /** The latency of the round that made the last latency halving, while the rounds after it are still over the tolerance. */
  #halvedAt: number | undefined;

  /** Throws RangeError for bounds that are not whole numbers with 1 ≤ min ≤ max. */
  constructor(o: ApplyLimitOptions) {
    this.#min = o.min ?? 1;
    this.#max = o.max;
    if (!Number.isInteger(this.#min) || !Number.isInteger(this.#max) || this.#min < 1 || this.#max < this.#min) {
      throw new RangeError(`apply limit bounds must be whole numbers with 1 ≤ min ≤ max (min ${this.#min}, max ${this.#max})`);
    }
    this.#tolerance = o.tolerance ?? 1.5;
    this.#gain = o.gain ?? 1.2;
    this.#history = o.history ?? 20;
    this.#now = o.now ?? (() => performance.now());
    this.#limit = clamp(Math.trunc(o.initial), this.#min, this.#max);
  }

  /** Imports the window may have in flight now. */
  get current(): number {
    return this.#limit;
  }

  /** The last change of the limit and its reason, if any. */
  get lastChange(): ApplyLimitChange | undefined {
    return this.#lastChange;
  }

  /** The window is full and an import waits for room: there is more demand than the limit lets through. */
  full(): void {
    this.#roundFull = true;
  }

  /**
   * An import's device effect ended (now) after `ms`; `failed` when it ended with a transient NetHSM failure
   * (unreachable, timeout, 5xx). Other outcomes (present, refused) count as answers.
   */
  sample(ms: number, failed = false): void {
    const now = this.#now();
    this.#first ??= now;
    this.#last = now;
    this.#samples++;
    if (failed) this.#roundFailed = true;
    else if (Number.isFinite(ms) && ms >= 0) this.#round.push(ms);
    if (this.#samples >= Math.max(this.#limit, MIN_ROUND)) this.#endRound();
  }

  #endRound(): void {
    const latencies = this.#round;
    const failed = this.#roundFailed;
    const full = this.#roundFull;
    // Completions per second over the round: n − 1 intervals between the first and the last.
    const span = this.#last - this.#first!;
    const rate = span > 0 ? ((this.#samples - 1) * 1000) / span : Number.POSITIVE_INFINITY;
    this.#round = [];
    this.#samples = 0;
    this.#first = undefined;
    this.#roundFailed = false;
    this.#roundFull = false;
    // Failures of one round (imports in flight together) halve the limit once.
    if (failed || latencies.length === 0) {
      this.#halvedAt = undefined;
      return this.#set(Math.floor(this.#limit / 2), 'failure');
    }
    const roundNo = ++this.#roundNo;
    const latency = lowerQuartile(latencies);
    this.#latencies.push(latency);
    if (this.#latencies.length > this.#history) this.#latencies.shift();
    this.#rateAt.set(this.#limit, { rate, round: roundNo });
    if (latency <= this.#tolerance * Math.min(...this.#latencies)) this.#halvedAt = undefined;
    else if (this.#halvedAt !== undefined && latency * this.#gain > this.#halvedAt) {
      // Halving did not shorten the imports: not a queue this window makes. This round is the new baseline.
      this.#halvedAt = undefined;
      this.#latencies = [latency];
    } else {
      const half = this.#bestRateUpTo(Math.floor(this.#limit / 2), roundNo);
      if (half === undefined || rate < this.#gain * half) {
        this.#halvedAt = latency;
        return this.#set(Math.floor(this.#limit / 2), 'latency');
      }
    }
    if (!full) return;
    if (this.#slowStart) this.#set(this.#limit * 2, 'slow-start');
    else this.#set(this.#limit + 1, 'increase');
  }

  /** The best rate measured within the last `history` rounds at a limit of at most `limit`; undefined when none. */
  #bestRateUpTo(limit: number, roundNo: number): number | undefined {
    let best: number | undefined;
    for (const [at, m] of this.#rateAt) {
      if (at <= limit && roundNo - m.round <= this.#history && (best === undefined || m.rate > best)) best = m.rate;
    }
    return best;
  }

  #set(next: number, why: ApplyLimitChange): void {
    if (why === 'failure' || why === 'latency') this.#slowStart = false;
    const limit = clamp(next, this.#min, this.#max);
    if (limit !== this.#limit) this.#lastChange = why;
    this.#limit = limit;
  }
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, n));
}

/** The 25th percentile (nearest rank). */
function lowerQuartile(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil(s.length / 4) - 1)]!;
}
