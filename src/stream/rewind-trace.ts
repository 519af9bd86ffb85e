/**
 * Where a replica's stream spends the time after a merge-restore moved its position back (StreamService.rewind,
 * docs/concurrency.md "Racing writes re-applied"): from the rewind (inside the exclusive hold, before the restore) to
 * the stream's reconnection, its first device admission after the hold, its first record, and the record that brings
 * the position back to where it was before the rewind (`regained`). The puller logs it once regained, so an operator
 * (and bench/scale.mjs --busy stream) can tell the restore from what the stream adds around it.
 */

export interface RewindSummary {
  /** The position before the rewind (`regained` once the stream records it again). */
  readonly from: number;
  /** The position the rewind moved to (the earliest raced change − 1). */
  readonly rewoundTo: number;
  /**
   * Milliseconds after the rewind: reconnected, first admitted to the device, the first effect after that ended
   * (`firstEffect`; `firstEffectMs`: how long that effect took from its start, envelope unwrap and device calls;
   * `firstUnwrapMs`: the unwrap's part, null when it opened no envelope), first
   * record, the first change past `from` on the device (`firstNew`: the stream's stand-still ends there), position
   * regained.
   */
  readonly ms: {
    readonly reconnected: number | null;
    readonly admitted: number | null;
    readonly firstEffect: number | null;
    readonly firstEffectMs: number | null;
    readonly firstUnwrapMs: number | null;
    readonly firstRecord: number | null;
    readonly firstNew: number | null;
    readonly regained: number;
  };
  /** Of the re-read changes, how many the restore had erased (made again) and how many the device still held. */
  readonly applied: number;
  readonly present: number;
}

export class RewindTrace {
  #reconnected: number | undefined;
  #admitted: number | undefined;
  #firstRecord: number | undefined;
  #firstEffect: { at: number; ms: number; unwrapMs: number | undefined } | undefined;
  #firstNew: number | undefined;
  #applied = 0;
  #present = 0;

  constructor(
    readonly from: number,
    readonly rewoundTo: number,
    readonly at: number,
  ) {}

  /** The stream connected again after the rewind (only the first call counts). */
  reconnected(now: number): void {
    this.#reconnected ??= now;
  }

  /** A change of the stream was admitted to the device (only the first call counts: the hold's end, normally). */
  admitted(now: number): void {
    this.#admitted ??= now;
  }

  /**
   * Change `seq`'s effect reached the device, taking `ms` from its start, `unwrapMs` of it opening the envelope (only the first after the first admission
   * counts, and the first past `from`).
   */
  reached(seq: number, ms: number, now: number, unwrapMs?: number): void {
    if (this.#admitted !== undefined) this.#firstEffect ??= { at: now, ms, unwrapMs };
    if (seq > this.from) this.#firstNew ??= now;
  }

  /** Change `seq` was recorded; the summary once the position is back at `from`, else undefined. */
  recorded(seq: number, outcome: 'applied' | 'present' | 'duplicate', now: number): RewindSummary | undefined {
    this.#firstRecord ??= now;
    if (outcome === 'applied') this.#applied++;
    else if (outcome === 'present') this.#present++;
    if (seq < this.from) return undefined;
    const since = (t: number | undefined) => (t === undefined ? null : Math.round(t - this.at));
    return {
      from: this.from,
      rewoundTo: this.rewoundTo,
      ms: {
        reconnected: since(this.#reconnected),
        admitted: since(this.#admitted),
        firstEffect: since(this.#firstEffect?.at),
        firstEffectMs: this.#firstEffect === undefined ? null : Math.round(this.#firstEffect.ms),
        firstUnwrapMs: this.#firstEffect?.unwrapMs === undefined ? null : Math.round(this.#firstEffect.unwrapMs),
        firstRecord: since(this.#firstRecord),
        firstNew: since(this.#firstNew),
        regained: Math.round(now - this.at),
      },
      applied: this.#applied,
      present: this.#present,
    };
  }
}
