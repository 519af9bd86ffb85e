/**
 * How many imports a replica's apply window (apply-window.ts) keeps in flight at its NetHSM, adapted to the device.
 * A fixed window is wrong both ways: too small and the replica falls behind a primary that takes more concurrent
 * writes than the window (the lag grows without bound); too large and the imports only queue at the device (or in the
 * client's pool), where they add latency, slow the applications that use the same NetHSM, and hold the namespace's
 * lock longer, for no gain.
 *
 * The rule (a bandwidth-delay product, as TCP BBR sizes its window: Cardwell et al., "BBR: Congestion-Based
 * Congestion Control", ACM Queue 2016, and draft-cardwell-iccrg-bbr-congestion-control): the limit is `gain`
 * (default 2) × `rate` × `baseline`, where
 * - `rate` is the best delivery rate of the last `history` (default 10) rounds whose window was full (BBR's windowed
 *   max of the bottleneck bandwidth). A round is `max(limit, 8)` finished imports; its delivery rate is the median over
 *   its imports of (imports finished while that one was in flight) / (its latency): what the device delivered to this
 *   window, with no clock of its own;
 * - `baseline` is the lowest latency of any import in the last `probeIntervalMs` (default 5 s; BBR's windowed min of
 *   the round-trip time): the device's own service time plus the path to it, with no queue of ours in front of it.
 * By Little's law `rate × baseline` imports keep the device as busy as it gets without a queue; `gain` more keeps it
 * busy through the jitter of everything outside the device (a daemon or NetHSM waiting for a CPU, a GC pause), at the
 * price of at most that many again waiting at the device (each import then takes up to `gain` × its unloaded time).
 * With the window full, rate ≈ limit / latency, so the target is above the limit exactly while the latency stays
 * within `gain` × baseline: the limit grows (at most ×2 a round, slow start) while the window is full and the latency
 * within bounds. It shrinks only on evidence of a device that queues: a full round whose target is lower AND whose
 * median latency is above `gain` × baseline (TCP Vegas' and Gradient2's signal, latency rising over the unloaded one,
 * required beside BBR's). A lower target with the latency within bounds comes from the rate estimate, not the device:
 * a backlog's first imports start together into an empty window and see few others end during their flight.
 * - A round with a transient failure (unreachable, timeout, 5xx: the device or the path is overloaded) halves the
 *   limit and forgets the rates: they are learnt again from the smaller window.
 * - A round that was not full changes the limit in no way, neither by its rate nor by a probe. Its imports are
 *   "application-limited" (draft-cheng-iccrg-delivery-rate-estimation: app-limited samples must not lower the
 *   bandwidth estimate; Netflix concurrency-limits' Gradient2Limit likewise leaves its limit alone while fewer than
 *   half of it are in flight): a window with room says how fast the primary writes, not what the device can take. An
 *   import counts as window-limited when the window was full (an import waited for room) at some moment of its
 *   flight; a round is full when at least half of its imports are, and its rate is the median of those.
 * - A round that was not full refreshes the baseline instead: nothing of ours queued at the device, so its lowest
 *   latency is what a probe would measure. Once the baseline is older than `probeIntervalMs` it is replaced by that
 *   round's lowest latency, even if higher (the windowed minimum decays: a device or a host that became slower for
 *   good belongs in the window).
 * What these rules replaced: a probe ran in any round, and one without a rate learnt (a window never full) ended at
 * half the limit for good, so a replica following a stream at 50 changes/s sat at 1–4 after a minute; a partition
 * aged the baseline, so the backlog after it began with a probe; and the backlog's first rounds (few imports ending
 * during each one's flight) lowered the target. Each meant a backlog (a reconnect after a partition, a rewind)
 * started one to four imports at a time (docs/benchmarks.md, "The apply limit under a steady stream and after a
 * partition"; tests in apply-limit.test.ts).
 *
 * Why this backs off from a device that queues and not from a host short of CPU (the AIMD on latency it replaced
 * halved the window when CPU wait made imports slower, down to 1–3 while the device idled): a wait outside the device
 * does not lower the best recent rate, so the limit stays; a device that serves fewer of our imports (slower, or busy
 * with applications' requests) lowers the rate of every round, and within `history` rounds the limit follows it down.
 * Imports beyond the device's slots raise the latency, not the rate, so the limit stays at `gain` × what the device
 * delivers, far below the pool when the device is the bound.
 *
 * Why a probe (BBR's ProbeRTT), in full rounds only: with the device kept busy every import waits a little, so the
 * baseline would creep up with the limit as old minima expire. When no import has matched the baseline for
 * `probeIntervalMs` while every round was full (an idle spell or a window with room leaves nothing of ours to hide
 * the baseline, so it does not count), the limit drops to half of `rate × baseline` (below the device's slots, so
 * their queue drains) until `max(4, that)` imports started since have ended; their lowest latency is the new baseline,
 * even if higher, and the limit is set from it (with no rate learnt yet, back to what it was). It costs about half the
 * device for about two import latencies every `probeIntervalMs` (≈ 1–2 % at appliance latencies).
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
/** A full() this long before an import's start still counts as during its flight (the two may share a turn). */
const FULL_SLACK_MS = 1;
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
  /** When the window was last full (ms): an import in flight then was window-limited. */
  #fullAt: number | undefined;
  /**
   * The current round: delivery rates and latencies of its window-limited imports, its imports, its lowest latency,
   * whether one failed.
   */
  #round: number[] = [];
  #roundLatencies: number[] = [];
  #samples = 0;
  #roundLowest = Number.POSITIVE_INFINITY;
  #roundFailed = false;
  /** Median delivery rates (imports/s) of the last `history` full rounds. */
  #rates: number[] = [];
  #baseline = Number.POSITIVE_INFINITY;
  #baselineAt: number | undefined;
  /** Since when every round was full (undefined after one that was not): our own queue may hide the baseline since. */
  #fullSince: number | undefined;
  /**
   * While probing: when it started, its lowest latency, how many imports started since ended, how many it waits for,
   * whether one failed, the limit before it.
   */
  #probe: { start: number; lowest: number; seen: number; needs: number; failed: boolean; before: number } | undefined;

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
    this.#fullAt = this.#now();
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
    else if (valid) {
      this.#roundLowest = Math.min(this.#roundLowest, ms);
      // Window-limited: the window was full at some moment of this import's flight (not app-limited, in draft-cheng).
      if (this.#fullAt !== undefined && this.#fullAt >= now - ms - FULL_SLACK_MS) {
        this.#round.push((this.#endedSince(now - ms) * 1000) / ms);
        this.#roundLatencies.push(ms);
      }
    }
    if (this.#samples >= Math.max(this.#limit, MIN_ROUND)) this.#endRound(now);
  }

  #endRound(now: number): void {
    const rates = this.#round;
    const latency = this.#roundLatencies.length > 0 ? median(this.#roundLatencies) : Number.POSITIVE_INFINITY;
    const failed = this.#roundFailed;
    const full = rates.length > 0 && rates.length * 2 >= this.#samples;
    const lowest = this.#roundLowest;
    this.#round = [];
    this.#roundLatencies = [];
    this.#samples = 0;
    this.#roundLowest = Number.POSITIVE_INFINITY;
    this.#roundFailed = false;
    if (failed) {
      // Failures of one round (imports in flight together) halve the limit once; the rates are learnt again.
      this.#rates = [];
      return this.#set(Math.floor(this.#limit / 2), 'failure');
    }
    if (!full) {
      // Application-limited: the limit stays. Nothing of ours queued at the device, so the round's lowest latency is
      // as good as a probe's: it replaces a stale baseline (the windowed minimum decays, BBR's min_rtt filter).
      this.#fullSince = undefined;
      if (Number.isFinite(lowest) && now - this.#baselineAt! > this.#probeIntervalMs) {
        this.#baseline = lowest;
        this.#baselineAt = now;
      }
      return;
    }
    // The baseline is stale only once our own full window may have hidden it that long (not after an idle spell).
    this.#fullSince ??= now;
    if (now - Math.max(this.#baselineAt!, this.#fullSince) > this.#probeIntervalMs) return this.#startProbe(now);
    this.#rates.push(median(rates));
    if (this.#rates.length > this.#history) this.#rates.shift();
    const target = Math.min(this.#target(), this.#limit * 2);
    // Shrink only on evidence that the device queues: the latency rose beyond `gain` × the baseline with the window
    // full. A lower target with the latency within bounds comes from the rate's estimate (imports that start together
    // into an empty window, as a backlog's first ones do, see few others end during their flight), not from the device.
    if (target < this.#limit && latency <= this.#gain * this.#baseline) return;
    this.#set(target, undefined);
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
    this.#probe = { start: now, lowest: Number.POSITIVE_INFINITY, seen: 0, needs: Math.max(MIN_PROBE, needs), failed: false, before: this.#limit };
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
    // With no rate learnt yet, the limit before the probe stands: the probe measured the baseline, not the device.
    this.#set(this.#rates.length > 0 ? this.#target() : p.before, undefined);
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
