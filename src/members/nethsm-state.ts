/**
 * What the state of this site's NetHSM (`GET /health/state`) means for the daemon. Only `Operational` works; a device
 * in any other state answers, so it is not "unreachable": the error names the state and its remedy, and the member
 * monitor shows it as `locked` or `not-operational` (src/members/monitor.ts).
 */
import { NetHsmLockedError, NetHsmNotOperationalError, type NhrError } from '../errors.js';

/** Undefined for `Operational`; otherwise the error to report, naming the state. Never throws. */
export function nethsmStateError(state: string): NhrError | undefined {
  if (state === 'Operational') return undefined;
  const operation = 'GET /health/state';
  if (state === 'Locked') return new NetHsmLockedError('the NetHSM is Locked', { operation });
  // The state comes from the device: bounded before it reaches a message.
  return new NetHsmNotOperationalError(`the NetHSM is ${state.slice(0, 40)}`, { operation });
}
