/**
 * Epochs: per namespace, a counter that names one primary's term. Every promote takes the highest epoch known
 * anywhere plus one; a message from an older epoch is stale. Pure.
 */
import { InternalError } from '../errors.js';

/** The epoch of a namespace's configured initial primary, before any promote. */
export const INITIAL_EPOCH = 1;

/** Whether `n` can be an epoch: a safe non-negative integer. */
export function isEpoch(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** -1, 0 or 1 as `a` is older than, the same as, or newer than `b`. */
export function compareEpochs(a: number, b: number): -1 | 0 | 1 {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The epoch a promote takes: highest of `known` (undefined entries ignored) plus one; `INITIAL_EPOCH + 1` when none
 * is known. Throws {@link InternalError} for a value that is not an epoch or when the counter would overflow.
 */
export function nextEpoch(known: Iterable<number | undefined>): number {
  let highest = INITIAL_EPOCH;
  for (const e of known) {
    if (e === undefined) continue;
    if (!isEpoch(e)) throw new InternalError(`not an epoch: ${String(e)}`);
    if (e > highest) highest = e;
  }
  if (highest >= Number.MAX_SAFE_INTEGER) throw new InternalError('epoch counter exhausted');
  return highest + 1;
}
