/**
 * Which member a failed replication step counts against in the member monitor. Only a failure of a call to the peer
 * says something about the peer; a failure of this site's NetHSM counts against this site's NetHSM; local conditions
 * (a client writing straight to the device during a sync, writes in flight that did not drain, a stale fencing token,
 * a change this site cannot apply) say nothing about any member's health and count against none. A peer's refusal is
 * an answer: the peer is reachable, so it does not count either. Marking the peer
 * unreachable for a local failure would stop scheduled syncs from a healthy primary (data-safety issue, case 10).
 * The monitor itself then counts only retryable failures.
 */
import {
  NetHsmCredentialRefusedError,
  NetHsmHttpError,
  NetHsmLockedError,
  NetHsmNotOperationalError,
  NetHsmResponseInvalidError,
  NetHsmTimeoutError,
  NetHsmTlsUntrustedError,
  NetHsmUnreachableError,
  PeerIdentityError,
  PeerMessageInvalidError,
  PeerUnreachableError,
  TlsPinMismatchError,
} from '../errors.js';

export type Blame = 'peer' | 'device' | 'none';

const PEER_ERRORS = [PeerUnreachableError, PeerMessageInvalidError, PeerIdentityError];
const DEVICE_ERRORS = [
  NetHsmUnreachableError,
  NetHsmTimeoutError,
  NetHsmHttpError,
  NetHsmLockedError,
  NetHsmNotOperationalError,
  NetHsmCredentialRefusedError,
  NetHsmResponseInvalidError,
  TlsPinMismatchError,
  NetHsmTlsUntrustedError,
];

/** Whose failure `err` is. Pure. */
export function blameOf(err: unknown): Blame {
  if (PEER_ERRORS.some((c) => err instanceof c)) return 'peer';
  if (DEVICE_ERRORS.some((c) => err instanceof c)) return 'device';
  return 'none';
}

/** Reports `err` to the member it counts against: `peer` (the peer called) or `device` (this site's NetHSM), or none. */
export function reportBlame(monitor: { reportFailure(name: string, err: unknown): void }, err: unknown, members: { peer: string; device: string }): void {
  const who = blameOf(err);
  if (who === 'peer') monitor.reportFailure(members.peer, err);
  else if (who === 'device') monitor.reportFailure(members.device, err);
}
