/**
 * What one shared device hold of a replica's stream wrote, as the hold's write ticket says (barrier.ts, WriteTicket):
 * a merge-restore of another namespace that this hold raced re-applies it by moving the namespace's stream position
 * back before it (StreamService.rewind) instead of backing the device up again (docs/concurrency.md, "Racing writes
 * re-applied").
 *
 * One hold may carry several changes (the apply window's imports), so the ticket names the earliest change it applied
 * or found present: rewinding before it applies that change and every later one again (re-applying a change whose
 * effect is there is recorded `present`). Contract of the ticket as the hold ends:
 * - `none` when every change under it was a duplicate (skipped: nothing reached the device);
 * - `stream` (namespace, source, earliest seq) when at least one was recorded applied or present and none failed;
 * - `unknown` when nothing was recorded yet, or once any change under it failed, needed a catch-up or was refused
 *   (its effect may or may not be on the device, and no record says so). Sticky: a later record does not undo it.
 */
import { writeTicket, type WriteTicket } from '../concurrency/barrier.js';

export class StreamApplyTicket {
  /** Passed to the barrier with the hold (SharedOptions.ticket). */
  readonly ticket: WriteTicket = writeTicket();
  #failed = false;

  constructor(
    readonly namespace: string,
    readonly source: string,
  ) {}

  /** A change under this hold was recorded (or skipped as a duplicate). Call before the hold is released. */
  recorded(seq: number, outcome: 'applied' | 'present' | 'duplicate'): void {
    if (this.#failed) return;
    const now = this.ticket.replay;
    if (outcome === 'duplicate') {
      if (now.kind === 'unknown') this.ticket.replay = { kind: 'none' };
      return;
    }
    if (now.kind === 'stream' && now.seq <= seq) return;
    this.ticket.replay = { kind: 'stream', namespace: this.namespace, source: this.source, seq };
  }

  /** A change under this hold failed, needed a catch-up or was refused: the hold cannot be re-applied. */
  failed(): void {
    this.#failed = true;
    this.ticket.replay = { kind: 'unknown' };
  }
}
