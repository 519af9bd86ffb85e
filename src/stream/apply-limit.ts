/**
 * How many imports a replica's apply window (apply-window.ts) keeps in flight at its NetHSM, adapted to the device.
 * A fixed window is wrong both ways: too small and the replica falls behind a primary that takes more concurrent
 * writes than the window (the lag grows without bound); too large and the imports only queue at the device (or in the
 * client's pool), where they add latency, slow the applications that use the same NetHSM, and hold the namespace's
 * lock longer, for no gain.
 *
 * The rule (a bandwidth-delay product, as TCP BBR sizes its window): the limit is `gain` (default 2) × `rate` ×
 * `baseline`, where
 * - `rate` is the best delivery rate of the last `history` (default 10) rounds whose window was full. A round is
 *   `max(limit, 8)` finished imports; its delivery rate is the median over its imports of (imports finished while
 *   that one was in flight) / (its latency): what the device delivered to this window, with no clock of its own;
 * - `baseline` is the lowest latency of any import in the last `probeIntervalMs` (default 5 s): the device's own
 *   service time plus the path to it, with no queue in front of it.
 * By Little's law `rate × baseline` imports keep the device as busy as it gets without a queue; `gain` more keeps it
 * busy through the jitter of everything outside the device (a daemon or NetHSM waiting for a CPU, a GC pause), at the
 * price of at most that many again waiting at the device (each import then takes up to `gain` × its unloaded time).
 * - A round with a transient failure (unreachable, timeout, 5xx: the device or the path is overloaded) halves the
 *   limit and forgets the rates: they are learnt again from the smaller window.
 * - A round whose window was never full (less demand than the limit) changes nothing: it proves nothing.
 * - Growth is at most ×2 a round: while the device has capacity left the rate follows the window, so the limit doubles
 *   (slow start) until the rate stops growing, where the device is the bound.
 *
 * Why this backs off from a device that queues and not from a host short of CPU (the AIMD on latency it replaces
 * halved the window when CPU wait made imports slower, down to 1–3 while the device idled): a wait outside the device
 * does not lower the best recent rate, so the limit stays; a device that serves fewer of our imports (slower, or busy
 * with applications' requests) lowers the rate of every round, and within `history` rounds the limit follows it down.
 * Imports beyond the device's slots raise the latency, not the rate, so the limit stays at `gain` × what the device
 * delivers, far below the pool when the device is the bound.
 *
 * Why a probe: with the device kept busy every import waits a little, so the baseline would creep up with the limit as
 * old minima expire. When no import has matched the baseline for `probeIntervalMs`, the limit drops to half of
 * `rate × baseline` (below the device's slots, so their queue drains) until `max(4, that)` imports started since have
 * ended; their lowest latency is the new baseline, even if higher (a device that became slower for good, or a host
 * that stays short of CPU: both belong in the window). It costs about half the device for about two import latencies
 * every `probeIntervalMs` (≈ 1–2 % at appliance latencies).
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
  /** The limit is `gain` × rate × baseline (default 2). */
  gain?: number;
  /** Full rounds the best rate is taken from (default 10). */
  history?: number;
  /** A baseline older than this (ms) is measured again by a probe (default 5000). */
  probeIntervalMs?: number;
  /** Milliseconds, monotonic (default performance.now). */
  now?: () => number;
}

/** Why the limit last changed (for logs and tests). */
export type ApplyLimitChange = 'increase' | 'decrease' | 'probe' | 'failure';

const MIN_ROUND = 8;
const MIN_PROBE = 4;
/** Completion times kept for delivery rates: more than any window has in flight, by far. */
const COMPLETIONS_KEPT = 4096;

export class ApplyLimit {
  readonly #min: number;
  readonly #max: number;
  readonly #gain: number;
  readonly #history: number;
  readonly #probeIntervalMs: number;
  readonly #now: () => number;
  #limit: number;
  #lastChange: ApplyLimitChange | undefined;
  /** Times (ms, ascending) imports ended, for delivery rates. */
  #ends: number[] = [];
  /** The current round: delivery rates of its imports, whether one failed, whether the window was full. */
  #round: number[] = [];
  #samples = 0;
  #roundFailed = false;
  #roundFull = false;
  /** Median delivery rates (imports/s) of the last `history` full rounds. */
  #rates: number[] = [];
  #baseline = Number.POSITIVE_INFINITY;
  #baselineAt: number | undefined;
  /** While probing: when it started, its lowest latency, how many imports started since ended, how many it waits for. */
  #probe: { start: number; lowest: number; seen: number; needs: number; failed: boolean } | undefined;

  /** Throws RangeError for bounds that are not whole numbers with 1 ≤ min ≤ max, or a gain below 1. */
  constructor(o: ApplyLimitOptions) {
    this.#min = o.min ?? 1;
    this.#max = o.max;
    if (!Number.isInteger(this.#min) || !Number.isInteger(this.#max) || this.#min < 1 || this.#max < this.#min) {
      throw new RangeError(`apply limit bounds must be whole numbers with 1 ≤ min ≤ max (min ${this.#min}, max ${this.#max})`);
    }
    this.#gain = o.gain ?? 2;
    if (!(this.#gain >= 1)) throw new RangeError(`apply limit gain must be at least 1 (got ${this.#gain})`);
    this.#history = o.history ?? 10;
    this.#probeIntervalMs = o.probeIntervalMs ?? 5_000;
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

  /** The lowest import latency of the current interval (ms; Infinity before any). */
  get baseline(): number {
    return this.#baseline;
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
    this.#ends.push(now);
    if (this.#ends.length > COMPLETIONS_KEPT) this.#ends.splice(0, this.#ends.length - COMPLETIONS_KEPT / 2);
    const valid = !failed && Number.isFinite(ms) && ms > 0;
    if (valid && ms <= this.#baseline) {
      this.#baseline = ms;
      this.#baselineAt = now;
    }
    this.#baselineAt ??= now;
    if (this.#probe) return this.#probeSample(now, ms, valid, failed);
    this.#samples++;
    if (failed) this.#roundFailed = true;
    else if (valid) this.#round.push((this.#endedSince(now - ms) * 1000) / ms);
    if (this.#samples >= Math.max(this.#limit, MIN_ROUND)) this.#endRound(now);
  }

  #endRound(now: number): void {
    const rates = this.#round;
    const failed = this.#roundFailed || rates.length === 0;
    const full = this.#roundFull;
    this.#round = [];
    this.#samples = 0;
    this.#roundFailed = false;
    this.#roundFull = false;
    if (failed) {
      // Failures of one round (imports in flight together) halve the limit once; the rates are learnt again.
      this.#rates = [];
      return this.#set(Math.floor(this.#limit / 2), 'failure');
    }
    if (now - this.#baselineAt! > this.#probeIntervalMs) return this.#startProbe(now);
    if (!full) return;
    this.#rates.push(median(rates));
    if (this.#rates.length > this.#history) this.#rates.shift();
    this.#set(Math.min(this.#target(), this.#limit * 2), undefined);
  }

  /** gain × the best recent rate × the baseline, rounded up. */
  #target(): number {
    const rate = this.#rates.length > 0 ? Math.max(...this.#rates) : 0;
    if (rate === 0 || !Number.isFinite(this.#baseline)) return this.#limit;
    return Math.ceil((this.#gain * rate * this.#baseline) / 1000);
  }

  #startProbe(now: number): void {
    const rate = this.#rates.length > 0 ? Math.max(...this.#rates) : 0;
    const bdp = rate > 0 && Number.isFinite(this.#baseline) ? (rate * this.#baseline) / 1000 : this.#limit;
    const needs = Math.max(this.#min, Math.ceil(bdp / 2));
    this.#probe = { start: now, lowest: Number.POSITIVE_INFINITY, seen: 0, needs: Math.max(MIN_PROBE, needs), failed: false };
    this.#set(Math.min(needs, this.#limit), 'probe');
  }

  /** Only imports started since the probe began count: they met the drained queue. */
  #probeSample(now: number, ms: number, valid: boolean, failed: boolean): void {
    const p = this.#probe!;
    if (now - ms < p.start) return;
    p.seen++;
    if (failed) p.failed = true;
    else if (valid) p.lowest = Math.min(p.lowest, ms);
    if (p.seen < p.needs) return;
    this.#probe = undefined;
    this.#baselineAt = now;
    if (Number.isFinite(p.lowest)) this.#baseline = p.lowest;
    if (p.failed) {
      this.#rates = [];
      return this.#set(Math.floor(this.#limit / 2), 'failure');
    }
    this.#set(this.#target(), undefined);
  }

  /** Imports that ended after `since` (ms), this one included. */
  #endedSince(since: number): number {
    const ends = this.#ends;
    let lo = 0;
    let hi = ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ends[mid]! > since) hi = mid;
      else lo = mid + 1;
    }
    return ends.length - lo;
  }

  #set(next: number, why: ApplyLimitChange | undefined): void {
    const limit = clamp(next, this.#min, this.#max);
    if (limit !== this.#limit) this.#lastChange = why ?? (limit > this.#limit ? 'increase' : 'decrease');
    this.#limit = limit;
  }
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, n));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
}
