/**
 * When a replica's pending catch-up runs (docs/streaming.md, "Catch-ups"). Every catch-up is a snapshot sync: on a
 * large device a merge-restore of the whole replica (docs/benchmarks.md, "Cost model"). Keys generated inside the
 * primary's NetHSM (`generate: device`) reach a replica only this way, so a burst of generates must cost a bounded
 * number of catch-ups, not one each. The rule:
 *   - at most one catch-up starts per `windowMs` (measured from the start of the last one);
 *   - within that, a pending catch-up runs once `maxChanges` changes wait, or `gatherMs` after it became pending,
 *     whichever comes first.
 * Pure.
 */

export interface CatchupBatchOptions {
  /** Shortest time between the starts of two catch-ups (`stream.catchupWindow`); 0: no bound. */
  windowMs: number;
  /** How long a pending catch-up gathers more changes before it runs (`stream.catchupDebounce`). */
  gatherMs: number;
  /** Changes waiting that make it run without gathering longer (`stream.catchupMaxChanges`). */
  maxChanges: number;
}

/** A catch-up waiting to run: since when (ms), why (the first cause), how many changes wait (null: unknown). */
export interface PendingCatchup {
  since: number;
  reason: string;
  changes: number | null;
}

/** When (ms) the pending catch-up is due, given the start of the last catch-up (null: none yet). */
export function catchupDueAt(pending: PendingCatchup, lastStartedAt: number | null, o: CatchupBatchOptions): number {
  const windowOpens = lastStartedAt === null ? Number.NEGATIVE_INFINITY : lastStartedAt + o.windowMs;
  const enough = pending.changes !== null && pending.changes >= o.maxChanges;
  return Math.max(windowOpens, enough ? pending.since : pending.since + o.gatherMs);
}
