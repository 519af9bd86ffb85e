import { describe, expect, it } from 'vitest';
import { DEFAULT_SITE_FIGURES, SyncCostModel, estimateSync, figuresOf, syncCostWarnings, type SyncTimings } from './cost-model.js';

const MB = 1_000_000;
/** A sync on a 100 MB device: a 2 s backup and 4 s of merge (no hold), then a 1 s restore (the hold); 10 s fetch. */
const timings = (over: Partial<SyncTimings> = {}): SyncTimings => ({
  namespace: 'ns',
  fetchSeconds: 10,
  snapshotBytes: 2 * MB,
  namespaceEntries: 1_000,
  holdSeconds: 1,
  applySeconds: 7,
  backups: [{ seconds: 2, bytes: 100 * MB }],
  restores: [{ seconds: 1, bytes: 100 * MB }],
  ...over,
});

describe('sync cost model', () => {
  it('grows the hold and the sync linearly with device size, at the default figures', () => {
    const small = estimateSync(DEFAULT_SITE_FIGURES, 20_000);
    const big = estimateSync(DEFAULT_SITE_FIGURES, 100_000);
    expect(big.holdSeconds / small.holdSeconds).toBeCloseTo(5, 9);
    expect(big.holdSeconds).toBeCloseTo(6, 9); // 0.06 ms per entry: the restore, and as much again for redone merges
    // Two backups, the merge and the restore (12 s), what holds cost beyond the restore (3 s), and the primary's backup
    // and extract, taken as alike (6 s).
    expect(big.syncSeconds).toBeCloseTo(12 + 3 + 6, 9);
    expect(estimateSync(DEFAULT_SITE_FIGURES, 100_000, 2).syncSeconds).toBeCloseTo(17, 9);
    expect(big.source).toBe('default');
  });

  it('derives per-byte rates, merge time and bytes per entry from one sync', () => {
    const f = figuresOf(timings(), DEFAULT_SITE_FIGURES)!;
    expect(f.backupSecondsPerByte).toBeCloseTo(2 / (100 * MB), 15);
    expect(f.restoreSecondsPerByte).toBeCloseTo(1 / (100 * MB), 15);
    expect(f.mergeSecondsPerByte).toBeCloseTo(4 / (100 * MB), 15);
    expect(f.holdExtraSecondsPerByte).toBe(0);
    expect(f.backupsPerSync).toBe(1);
    // A merge redone inside the hold shows as hold beyond the restore.
    expect(figuresOf(timings({ holdSeconds: 5 }), DEFAULT_SITE_FIGURES)!.holdExtraSecondsPerByte).toBeCloseTo(4 / (100 * MB), 15);
    expect(f.bytesPerEntry).toBe(2_000);
    expect(f.deviceBytes).toBe(100 * MB);
    expect(figuresOf(timings({ backups: [], restores: [] }), DEFAULT_SITE_FIGURES)).toBeUndefined();
  });

  it('estimates the next sync from what it learnt, never below what the last one took', () => {
    const m = new SyncCostModel();
    expect(m.costOf('ns')).toBeUndefined();
    m.observe(timings());
    const c = m.costOf('ns')!;
    expect(c.source).toBe('measured');
    expect(c.deviceEntries).toBe(50_000);
    expect(c.holdSeconds).toBeCloseTo(1, 9);
    // fetch 10 + two backups (the merge base, and the check after the restore) 4 + merge 4 + restore 1
    expect(c.syncSeconds).toBeCloseTo(19, 9);
    expect(c.observedHoldSeconds).toBe(1);
    // Another namespace on the same device: the device's hold, its own fetch unknown (taken as the device's).
    const other = m.costOf('other')!;
    expect(other.holdSeconds).toBeCloseTo(1, 9);
    expect(other.fetchSeconds).toBeCloseTo(100 * MB * (2 / (100 * MB) + 4 / (100 * MB)), 9);
  });

  it('follows a growing device as a moving average, and ignores nonsense timings', () => {
    const m = new SyncCostModel();
    m.observe(timings());
    m.observe(timings({ holdSeconds: 2, applySeconds: 14, backups: [{ seconds: 4, bytes: 200 * MB }], restores: [{ seconds: 2, bytes: 200 * MB }] }));
    expect(m.figures.deviceBytes).toBe(200 * MB);
    expect(m.figures.samples).toBe(2);
    expect(m.costOf('ns')!.holdSeconds).toBeCloseTo(2, 6);
    m.observe(timings({ holdSeconds: Number.NaN }));
    m.observe(timings({ fetchSeconds: -1 }));
    expect(m.figures.samples).toBe(2);
  });

  it('warns past half the schedule period or maxHold, and past the catch-up window, with a remedy', () => {
    const cost = { syncSeconds: 40, holdSeconds: 16, source: 'measured' as const };
    expect(syncCostWarnings(cost, { namespace: 'ns', schedulePeriodSeconds: 81, maxHoldSeconds: 33, catchupWindowSeconds: 40 })).toEqual([]);
    const w = syncCostWarnings(cost, { namespace: 'ns', schedulePeriodSeconds: 60, maxHoldSeconds: 30, catchupWindowSeconds: 30 });
    expect(w.map((x) => x.kind)).toEqual(['schedule', 'hold', 'catchup-window']);
    expect(w[0]!.cause).toMatch(/about 40 s \(estimated from measured syncs\), over 50 % of its schedule's period \(60 s\)/);
    expect(w[1]!.cause).toMatch(/16 s.*gateway\.maxHold \(30 s\)/);
    expect(w[2]!.try).toMatch(/stream\.catchupWindow.*generate: replicated/);
    expect(syncCostWarnings({ ...cost, source: 'default' }, { namespace: 'ns', catchupWindowSeconds: 1 })[0]!.cause).toMatch(/default figures/);
  });
});
