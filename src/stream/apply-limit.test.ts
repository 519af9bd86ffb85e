import { describe, expect, it } from 'vitest';
import { ApplyLimit, type ApplyLimitOptions } from './apply-limit.js';

/**
 * A replica's apply window against a model device, on a fake clock: `slots` imports in service at once for
 * `serviceMs(t)` each, the rest queued first come first served; each import also spends `outsideMs(i, t)` outside the
 * device (half before, half after: the daemon, the NetHSM's HTTP and TLS, a wait for a CPU). Demand is unbounded (the
 * replica is behind its primary) unless `demand` gives the changes' arrival times: the window starts an import
 * whenever it has room and a change waits, and tells the limit when a change waits for room (as apply-window.ts does).
 * Deterministic: events in time order, ties in the order they were scheduled.
 */
interface Device {
  slots: number | ((t: number) => number);
  serviceMs: number;
  outsideMs: (i: number, t: number) => number;
  /** When the host, stalled at `t` (no CPU for the daemon and the NetHSM's front end), runs again; default `t`. */
  resumes?: (t: number) => number;
}

/** When changes arrive at the replica (ms, ascending), for a stream that does not keep the window full. */
type Demand = number[];

function model(o: Omit<ApplyLimitOptions, 'now'>, device: Device, demand?: Demand) {
  let t = 0;
  const limit = new ApplyLimit({ ...o, now: () => t });
  const events: { at: number; n: number; fn: () => void }[] = [];
  let order = 0;
  const at = (when: number, fn: () => void) => {
    events.push({ at: when, n: order++, fn });
    events.sort((a, b) => a.at - b.at || a.n - b.n);
  };
  const slots = (now: number) => (typeof device.slots === 'number' ? device.slots : device.slots(now));
  let inService = 0;
  const queue: (() => void)[] = [];
  /** [start, end] of every service, for the device's busy share. */
  const served: [number, number][] = [];
  let started = 0;
  let inFlight = 0;
  const limits: { t: number; limit: number }[] = [];
  const latencies: { t: number; ms: number }[] = [];

  const serve = (then: () => void) => {
    inService++;
    const begin = t;
    at(t + device.serviceMs, () => {
      inService--;
      served.push([begin, t]);
      then();
      while (queue.length > 0 && inService < slots(t)) queue.shift()!();
    });
  };
  const host = (when: number, fn: () => void) => at(device.resumes ? device.resumes(when) : when, fn);
  const start = () => {
    const i = started++;
    const begin = t;
    const outside = device.outsideMs(i, t);
    inFlight++;
    host(t + outside / 2, () => {
      const enter = () =>
        serve(() =>
          host(t + outside / 2, () => {
            inFlight--;
            limit.sample(t - begin);
            latencies.push({ t, ms: t - begin });
            limits.push({ t, limit: limit.current });
            refill();
          }),
        );
      if (inService < slots(t)) enter();
      else queue.push(enter);
    });
  };
  /** Changes arrived and not started (unbounded without `demand`). */
  let waiting = demand ? 0 : Number.POSITIVE_INFINITY;
  const refill = () => {
    while (inFlight < limit.current && waiting > 0) {
      waiting--;
      start();
    }
    if (waiting > 0) limit.full();
  };
  for (const when of demand ?? []) {
    at(when, () => {
      waiting++;
      refill();
    });
  }

  /** Runs until `until` ms. */
  const run = (until: number) => {
    if (started === 0 && !demand) refill();
    while (events.length > 0 && events[0]!.at <= until) {
      const e = events.shift()!;
      t = e.at;
      e.fn();
    }
    t = until;
  };
  /** The device's busy share between `from` and `to` (ms): service time over slots × span. */
  const busy = (from: number, to: number) => {
    let sum = 0;
    for (const [s, e] of served) sum += Math.max(0, Math.min(e, to) - Math.max(s, from));
    return sum / ((to - from) * slots(to));
  };
  const limitsBetween = (from: number, to: number) => limits.filter((x) => x.t >= from && x.t < to).map((x) => x.limit);
  const latencyP50 = (from: number, to: number) => {
    const xs = latencies.filter((x) => x.t >= from && x.t < to).map((x) => x.ms).sort((a, b) => a - b);
    return xs[Math.floor(xs.length / 2)]!;
  };
  /** When the last of the first `n` imports ended (ms). */
  const endOf = (n: number) => latencies.length >= n ? [...latencies].sort((a, b) => a.t - b.t)[n - 1]!.t : Number.POSITIVE_INFINITY;
  return { limit, run, busy, limitsBetween, latencyP50, endOf };
}

/** Arrival times of a stream at `perSecond` changes/s from `from` until `to` (ms). */
const steady = (perSecond: number, from: number, to: number) => Array.from({ length: Math.floor(((to - from) * perSecond) / 1000) }, (_, i) => from + (i * 1000) / perSecond);

/**
 * Noise outside the device between `base` and `base + spread` ms whose lowest value is rarely matched again (i × the
 * golden ratio, mod 1: a new low only at Fibonacci indices), as a host's best latency is a lucky moment, not a floor it
 * keeps touching.
 */
const noise = (base: number, spread: number) => (i: number) => base + spread * ((i * 0.6180339887498949) % 1);

/** A little jitter outside the device, the same every run. */
const jitter = (base: number) => (i: number) => base + ((i * 7919) % 11);

describe('ApplyLimit (bandwidth × baseline, with probes)', () => {
  it('keeps a 4-slot device busy with a few imports queued, far below the pool', () => {
    const m = model({ initial: 8, max: 32 }, { slots: 4, serviceMs: 50, outsideMs: jitter(8) });
    m.run(30_000);
    expect(m.busy(5_000, 30_000)).toBeGreaterThan(0.95);
    const tail = m.limitsBetween(5_000, 30_000);
    expect(Math.max(...tail)).toBeLessThanOrEqual(14);
    expect(Math.min(...tail)).toBeGreaterThanOrEqual(2); // the probes, briefly
    // Queueing the window adds at the device stays within the gain: imports take at most about twice the unloaded time
    // (58–68 ms here). The window settles at 10–11 on this device; how the model's fixed jitter falls then moves the
    // median between 2.1 and 2.4 × 58 (measured), so the bound is twice the slowest unloaded import, with a margin.
    expect(m.latencyP50(5_000, 30_000)).toBeLessThan(2.2 * 68);
  });

  it('grows to the pool against a device with more slots than the pool', () => {
    const m = model({ initial: 8, max: 32 }, { slots: 64, serviceMs: 50, outsideMs: jitter(8) });
    m.run(5_000);
    expect(m.limit.current).toBe(32);
  });

  // A host that stays short of CPU: the wait outside the device belongs in the window (the probe measures it).
  it('keeps the device busy when the host becomes short of CPU (a wait outside the device, not a queue)', () => {
    // 10 ms outside the device for 10 s, then 150 ms (CPU wait at a load average of 12) from 10 s on.
    const m = model({ initial: 8, max: 32 }, { slots: 4, serviceMs: 50, outsideMs: (i, t) => (t < 10_000 ? jitter(10)(i) : jitter(150)(i)) });
    m.run(40_000);
    expect(m.busy(2_000, 10_000)).toBeGreaterThan(0.95);
    expect(m.busy(10_000, 40_000)).toBeGreaterThan(0.9);
    expect(Math.min(...m.limitsBetween(20_000, 40_000))).toBeGreaterThanOrEqual(8);
  });

  // Before (AIMD on latency): each stall of the host read as queueing at the device and halved the window, which
  // then grew back by one a round; in this model the window spent a tenth of the time at 5 or less (down to 3) and the
  // device was busy 0.93 of the time.
  it('does not shrink the window for stalls of the host (100 ms without a CPU every second)', () => {
    const resumes = (t: number) => (t % 1000 < 100 ? t - (t % 1000) + 100 : t);
    const m = model({ initial: 8, max: 32 }, { slots: 4, serviceMs: 50, outsideMs: jitter(10), resumes });
    m.run(40_000);
    const limits = m.limitsBetween(5_000, 40_000).sort((a, b) => a - b);
    expect(limits[Math.floor(limits.length / 10)]).toBeGreaterThanOrEqual(8);
    expect(m.busy(5_000, 40_000)).toBeGreaterThan(0.95);
  });

  it('backs off when the device serves fewer imports at once (the window only queues there)', () => {
    // 12 slots for 15 s, then 4 (a device busy with other work): the same window would triple every import's time.
    const m = model({ initial: 8, max: 64 }, { slots: (t) => (t < 15_000 ? 12 : 4), serviceMs: 50, outsideMs: jitter(8) });
    m.run(40_000);
    const before = Math.max(...m.limitsBetween(10_000, 15_000));
    expect(before).toBeGreaterThanOrEqual(20);
    const after = m.limitsBetween(25_000, 40_000);
    expect(Math.max(...after)).toBeLessThanOrEqual(14);
    expect(m.busy(25_000, 40_000)).toBeGreaterThan(0.95);
    expect(m.latencyP50(25_000, 40_000)).toBeLessThan(2.2 * 68); // as in the first test
  });

  it('halves once per round that saw a transient failure, never below the minimum', () => {
    let t = 0;
    const l = new ApplyLimit({ initial: 16, max: 32, now: () => t });
    const round = (failed: number) => {
      const n = Math.max(l.current, 8);
      l.full();
      for (let i = 0; i < n; i++) {
        t += 5;
        l.sample(50, i < failed);
      }
      return l.current;
    };
    expect(round(16)).toBe(8); // every import of the round failed: one halving
    expect(round(1)).toBe(4);
    expect(l.lastChange).toBe('failure');
    for (let i = 0; i < 5; i++) round(4);
    expect(l.current).toBe(1);
  });

  it('keeps its size while demand is below it (nothing proves more would help)', () => {
    let t = 0;
    const l = new ApplyLimit({ initial: 8, max: 32, now: () => t });
    for (let i = 0; i < 40; i++) {
      t += 60;
      l.sample(50);
    }
    expect(l.current).toBe(8);
  });

  // Streams that do not keep the window full (a primary writing at 50 changes/s), then a backlog: the window may not
  // learn anything from the stream that caps the backlog (docs/benchmarks.md, "The apply limit under a steady stream and
  // after a partition"). Before: the probe every 5 s of a window never full halved the limit for good (8, 4, 2, 1).
  it('keeps its size under a steady stream below capacity (nothing there says anything about the device)', () => {
    const m = model({ initial: 8, max: 32 }, { slots: 4, serviceMs: 50, outsideMs: noise(8, 20) }, steady(50, 0, 60_000));
    m.run(61_000);
    expect(Math.min(...m.limitsBetween(0, 61_000))).toBe(8);
  });

  it('keeps its size under a steady stream below capacity on a host short of CPU now and then', () => {
    // Every fifth import waits 150 ms for a CPU: latencies of 60–220 ms against a best of about 60 ms.
    const cpuWait = (i: number) => noise(10, 20)(i) + (i % 5 === 0 ? 150 : 0);
    const m = model({ initial: 8, max: 32 }, { slots: 64, serviceMs: 50, outsideMs: cpuWait }, steady(50, 0, 60_000));
    m.run(61_000);
    expect(Math.min(...m.limitsBetween(0, 61_000))).toBe(8);
  });

  it('does not learn a stream\'s own rate from the bursts in which it fills the window', () => {
    // 50 changes/s in bursts of 10 every 200 ms: each burst fills the window of 8 for a moment.
    const bursts = Array.from({ length: 300 }, (_, k) => Array<number>(10).fill(k * 200)).flat();
    const cpuWait = (i: number) => noise(10, 20)(i) + (i % 5 === 0 ? 150 : 0);
    const m = model({ initial: 8, max: 32 }, { slots: 64, serviceMs: 50, outsideMs: cpuWait }, bursts);
    m.run(61_000);
    // Only the probes (the window is full for a moment in each burst) go below, briefly.
    const limits = m.limitsBetween(0, 61_000).sort((a, b) => a - b);
    expect(limits[Math.floor(limits.length / 10)]).toBeGreaterThanOrEqual(8);
  });

  // A partition: 60 s of a stream at 50/s, 10 s cut off, then the 500 changes written meanwhile arrive at once, with
  // the stream going on behind them.
  const partitioned = () => [...steady(50, 0, 60_000), ...Array<number>(500).fill(70_000), ...steady(50, 70_000, 90_000)];

  it('drains a backlog after a steady stream at the device\'s rate from the start (device-bound)', () => {
    const m = model({ initial: 8, max: 32 }, { slots: 4, serviceMs: 50, outsideMs: noise(8, 20) }, partitioned());
    m.run(90_000);
    // Before: a probe as the backlog began (the baseline had aged through the partition), down to 3 for 0.3 s.
    expect(Math.min(...m.limitsBetween(70_000, 71_000))).toBeGreaterThanOrEqual(8);
    expect(m.busy(70_100, 72_000)).toBeGreaterThan(0.98);
  });

  it('drains a backlog after a steady stream with the pool from the first rounds (the device has room)', () => {
    const m = model({ initial: 8, max: 32 }, { slots: 64, serviceMs: 50, outsideMs: noise(8, 20) }, partitioned());
    m.run(90_000);
    // Before: the backlog began at 3 (learnt by the stream's probes), and the window reached 32 only after about 1 s.
    expect(Math.min(...m.limitsBetween(70_000, 71_000))).toBeGreaterThanOrEqual(8);
    expect(Math.max(...m.limitsBetween(70_000, 70_800))).toBe(32);
  });

  it('backs off when a backlog after a steady stream meets a device that queues it (latency up with a full window)', () => {
    const m = model({ initial: 8, max: 32 }, { slots: 2, serviceMs: 50, outsideMs: noise(8, 20) }, partitioned());
    m.run(90_000);
    const drain = m.limitsBetween(72_000, 80_000);
    expect(Math.max(...drain)).toBeLessThanOrEqual(7);
    expect(m.busy(70_100, 80_000)).toBeGreaterThan(0.95);
    // Unloaded: 50 ms at the device and 8–28 ms outside it.
    expect(m.latencyP50(72_000, 80_000)).toBeLessThan(2.2 * 68);
  });

  it('starts within its bounds and refuses bounds that are not whole numbers with 1 ≤ min ≤ max, or a gain below 1', () => {
    expect(new ApplyLimit({ initial: 8, max: 4 }).current).toBe(4);
    expect(new ApplyLimit({ initial: 0, max: 4 }).current).toBe(1);
    expect(() => new ApplyLimit({ initial: 8, max: 0 })).toThrow(RangeError);
    expect(() => new ApplyLimit({ initial: 8, max: 4, min: 5 })).toThrow(/1 ≤ min ≤ max/);
    expect(() => new ApplyLimit({ initial: 8, max: 2.5 })).toThrow(RangeError);
    expect(() => new ApplyLimit({ initial: 8, max: 4, gain: 0.5 })).toThrow(/gain/);
  });
});
