/**
 * The snapshot-sync cost model (docs/benchmarks.md, "Cost model"). A replica's snapshot sync of a namespace costs
 *   sync(D) = fetch + D · s · (k · b + m + r),   hold(D) = D · s · (r + h)
 * where D is this site's device size in entries, s its bytes per entry, b and r the device's backup and restore time
 * per byte (the device rate), m the merge time per byte (this host's decrypt/merge/encrypt), k the device backups one
 * sync takes (the merge base, any re-merges, the check after the restore), and `fetch` the primary's side (its device
 * backup, the extract, the transfer), as observed per namespace. The exclusive hold, which writes at this site wait
 * for, is the restore alone unless writes raced every merge (snapshot-apply.ts: the merge is then redone inside it);
 * h is what holds cost beyond the restore, per byte, averaged over the syncs seen. The whole sync must fit the
 * namespace's schedule.
 *
 * The figures are learnt from each sync's step timings (`observe`, fed by NamespaceSync) as moving averages, and kept
 * in memory only: a restarted daemon starts from the conservative defaults below until its first sync. Pure apart from
 * the object's own state; no I/O, no clock.
 */

/** One device call a sync made: its duration and the size of the backup file it wrote or read. */
export interface DeviceCallTiming {
  seconds: number;
  bytes: number;
}

/** The step timings of one successful snapshot sync at this site. */
export interface SyncTimings {
  namespace: string;
  /** The primary's snapshot: its device backup, the extract and the transfer here. */
  fetchSeconds: number;
  snapshotBytes: number;
  /** Entries of the namespace in the snapshot, when known (gives bytes per entry). */
  namespaceEntries?: number;
  /** The exclusive device hold (writes at this site wait for it): the restore, and a merge redone inside it. */
  holdSeconds: number;
  /** This site's whole apply: backups, merges, restore (the check after the restore may still run). */
  applySeconds: number;
  /** Device backups the apply took (the merge base, re-merges, the check after the restore if it ended already). */
  backups: readonly DeviceCallTiming[];
  restores: readonly DeviceCallTiming[];
}

/** What the model knows of this site's device (per byte, seconds). */
export interface SiteFigures {
  /** `default` until a sync with device timings was observed. */
  source: 'default' | 'measured';
  samples: number;
  backupSecondsPerByte: number;
  restoreSecondsPerByte: number;
  mergeSecondsPerByte: number;
  /** Hold time beyond the restore per device byte (merges redone inside the hold), averaged. */
  holdExtraSecondsPerByte: number;
  backupsPerSync: number;
  bytesPerEntry: number;
  /** The device's backup size at the last observed sync; null before one. */
  deviceBytes: number | null;
}

export interface SyncEstimate {
  source: 'default' | 'measured';
  deviceEntries: number;
  holdSeconds: number;
  fetchSeconds: number;
  syncSeconds: number;
}

/** A warning `status`, health and metrics show: what approaches which bound, and the remedy. */
export interface SyncCostWarning {
  kind: 'schedule' | 'hold' | 'catchup-window';
  cause: string;
  try: string;
}

/**
 * Conservative defaults (slower than measured on the simulator, issue 11): RSA-2048-sized entries of 2,300 bytes in a
 * device backup, 0.03 ms per entry for each backup, the restore and the merge, two backups a sync (merge base and the
 * check after the restore), and holds that cost as much again as the restore (a share of syncs whose merge raced
 * writes and was redone inside the hold). So 0.06 ms of hold per entry (6 s at 100k) and 0.15 ms of sync.
 */
export const DEFAULT_BYTES_PER_ENTRY = 2_300;
const PER_ENTRY_STEP_SECONDS = 0.000_03;
export const DEFAULT_SITE_FIGURES: SiteFigures = Object.freeze({
  source: 'default',
  samples: 0,
  backupSecondsPerByte: PER_ENTRY_STEP_SECONDS / DEFAULT_BYTES_PER_ENTRY,
  restoreSecondsPerByte: PER_ENTRY_STEP_SECONDS / DEFAULT_BYTES_PER_ENTRY,
  mergeSecondsPerByte: PER_ENTRY_STEP_SECONDS / DEFAULT_BYTES_PER_ENTRY,
  holdExtraSecondsPerByte: PER_ENTRY_STEP_SECONDS / DEFAULT_BYTES_PER_ENTRY,
  backupsPerSync: 2,
  bytesPerEntry: DEFAULT_BYTES_PER_ENTRY,
  deviceBytes: null,
});

/** A warning fires when a cost passes this share of its bound (schedule period, maxHold, catch-up window). */
export const WARN_SHARE = 0.5;
/** Weight of the newest sync in the moving averages: recent enough to follow a growing device, not one outlier. */
const ALPHA = 0.3;

/** Hold and whole sync for a device of `entries` entries, from per-byte figures and the primary's fetch time. Pure. */
export function estimateSync(f: SiteFigures, entries: number, fetchSeconds?: number): SyncEstimate {
  const bytes = Math.max(0, entries) * f.bytesPerEntry;
  const holdSeconds = bytes * (f.restoreSecondsPerByte + f.holdExtraSecondsPerByte);
  const applySeconds = bytes * (f.backupsPerSync * f.backupSecondsPerByte + f.mergeSecondsPerByte + f.restoreSecondsPerByte) + holdSeconds - bytes * f.restoreSecondsPerByte;
  // Unobserved fetch: the primary's device taken to be as large and as fast as this one (one backup and one extract).
  const fetch = fetchSeconds ?? bytes * (f.backupSecondsPerByte + f.mergeSecondsPerByte);
  return { source: f.source, deviceEntries: Math.round(Math.max(0, entries)), holdSeconds, fetchSeconds: fetch, syncSeconds: fetch + applySeconds };
}

/** The per-byte figures one sync shows, or undefined when it made no device call to learn from. Pure. */
export function figuresOf(t: SyncTimings, prior: SiteFigures): Omit<SiteFigures, 'source' | 'samples'> | undefined {
  const deviceBytes = Math.max(0, ...t.backups.map((b) => b.bytes), ...t.restores.map((r) => r.bytes));
  if (deviceBytes <= 0) return undefined;
  const perByte = (calls: readonly DeviceCallTiming[], fallback: number) => {
    const bytes = calls.reduce((n, c) => n + c.bytes, 0);
    return bytes > 0 ? calls.reduce((n, c) => n + c.seconds, 0) / bytes : fallback;
  };
  const deviceSeconds = [...t.backups, ...t.restores].reduce((n, c) => n + c.seconds, 0);
  const entries = t.namespaceEntries ?? 0;
  return {
    backupSecondsPerByte: perByte(t.backups, prior.backupSecondsPerByte),
    restoreSecondsPerByte: perByte(t.restores, prior.restoreSecondsPerByte),
    mergeSecondsPerByte: Math.max(0, t.applySeconds - deviceSeconds) / deviceBytes,
    holdExtraSecondsPerByte: Math.max(0, t.holdSeconds - t.restores.reduce((n, c) => n + c.seconds, 0)) / deviceBytes,
    backupsPerSync: t.backups.length,
    bytesPerEntry: entries > 0 && t.snapshotBytes > 0 ? t.snapshotBytes / entries : prior.bytesPerEntry,
    deviceBytes,
  };
}

/** Warnings for an estimate (or what was observed, whichever is larger) against the namespace's bounds. Pure. */
export function syncCostWarnings(
  cost: { syncSeconds: number; holdSeconds: number; source: 'default' | 'measured' },
  bounds: { namespace: string; schedulePeriodSeconds?: number; maxHoldSeconds?: number; catchupWindowSeconds?: number },
): SyncCostWarning[] {
  const out: SyncCostWarning[] = [];
  const basis = cost.source === 'default' ? 'estimated from default figures' : 'estimated from measured syncs';
  const s = (x: number) => `${x < 10 ? x.toFixed(1) : Math.round(x)} s`;
  const { namespace: ns, schedulePeriodSeconds: period, maxHoldSeconds: maxHold, catchupWindowSeconds: window } = bounds;
  if (period !== undefined && cost.syncSeconds > WARN_SHARE * period) {
    out.push({
      kind: 'schedule',
      cause: `a snapshot sync of ${ns} takes about ${s(cost.syncSeconds)} (${basis}), over ${WARN_SHARE * 100} % of its schedule's period (${s(period)})`,
      try: `Space out namespaces.${ns}.schedule, or carry the namespace by its change stream (generate: replicated) so snapshots are rare (docs/benchmarks.md, "Cost model").`,
    });
  }
  if (maxHold !== undefined && cost.holdSeconds > WARN_SHARE * maxHold) {
    out.push({
      kind: 'hold',
      cause: `a snapshot sync holds writes at this site for about ${s(cost.holdSeconds)} (${basis}), over ${WARN_SHARE * 100} % of gateway.maxHold (${s(maxHold)}); past it writes answer 503`,
      try: 'Raise gateway.maxHold, or keep fewer keys on this NetHSM: the hold grows with the whole device, not the namespace (docs/benchmarks.md, "Cost model").',
    });
  }
  if (window !== undefined && cost.syncSeconds > window) {
    out.push({
      kind: 'catchup-window',
      cause: `namespace ${ns} generates keys on the device (generate: device): each catch-up is a snapshot sync of about ${s(cost.syncSeconds)} (${basis}), longer than stream.catchupWindow (${s(window)})`,
      try: `Raise stream.catchupWindow above ${s(cost.syncSeconds)}, or set namespaces.${ns}.generate: replicated so generated keys are streamed per key (docs/streaming.md).`,
    });
  }
  return out;
}

/** The figures learnt at this site, and each namespace's last fetch time. */
export class SyncCostModel {
  #site: SiteFigures = { ...DEFAULT_SITE_FIGURES };
  readonly #fetch = new Map<string, number>();
  readonly #observed = new Map<string, { syncSeconds: number; holdSeconds: number }>();

  get figures(): SiteFigures {
    return { ...this.#site };
  }

  /** Learns from one successful sync's timings. Ignores non-finite or negative figures (a clock step). */
  observe(t: SyncTimings): void {
    const nums = [t.fetchSeconds, t.holdSeconds, t.applySeconds, t.snapshotBytes, ...t.backups.flatMap((b) => [b.seconds, b.bytes]), ...t.restores.flatMap((r) => [r.seconds, r.bytes])];
    if (!nums.every((n) => Number.isFinite(n) && n >= 0)) return;
    this.#fetch.set(t.namespace, ewma(this.#fetch.get(t.namespace), t.fetchSeconds));
    this.#observed.set(t.namespace, { syncSeconds: t.fetchSeconds + t.applySeconds, holdSeconds: t.holdSeconds });
    const seen = figuresOf(t, this.#site);
    if (!seen) return;
    const prior = this.#site.samples === 0 ? undefined : this.#site;
    this.#site = {
      source: 'measured',
      samples: this.#site.samples + 1,
      backupSecondsPerByte: ewma(prior?.backupSecondsPerByte, seen.backupSecondsPerByte),
      restoreSecondsPerByte: ewma(prior?.restoreSecondsPerByte, seen.restoreSecondsPerByte),
      mergeSecondsPerByte: ewma(prior?.mergeSecondsPerByte, seen.mergeSecondsPerByte),
      holdExtraSecondsPerByte: ewma(prior?.holdExtraSecondsPerByte, seen.holdExtraSecondsPerByte),
      // The newest count and size: the apply path and the device change in steps, not noise. The check after the
      // restore runs once the sync answered, after these timings were taken: counted here.
      backupsPerSync: seen.backupsPerSync + 1,
      bytesPerEntry: ewma(prior?.bytesPerEntry, seen.bytesPerEntry),
      deviceBytes: seen.deviceBytes,
    };
  }

  /**
   * The cost of the next sync of `namespace`: the estimate at this device's last known size, or what the last sync took,
   * whichever is larger. Undefined before this site's first sync of anything (no device size is known).
   */
  costOf(namespace: string): (SyncEstimate & { observedSyncSeconds: number | null; observedHoldSeconds: number | null }) | undefined {
    const f = this.#site;
    const seen = this.#observed.get(namespace);
    if (f.deviceBytes === null && !seen) return undefined;
    const est = estimateSync(f, (f.deviceBytes ?? 0) / f.bytesPerEntry, this.#fetch.get(namespace));
    return {
      ...est,
      holdSeconds: Math.max(est.holdSeconds, seen?.holdSeconds ?? 0),
      syncSeconds: Math.max(est.syncSeconds, seen?.syncSeconds ?? 0),
      observedSyncSeconds: seen?.syncSeconds ?? null,
      observedHoldSeconds: seen?.holdSeconds ?? null,
    };
  }
}

function ewma(prev: number | undefined, next: number): number {
  return prev === undefined ? next : prev + ALPHA * (next - prev);
}
