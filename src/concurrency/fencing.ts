/**
 * Fencing tokens: what a device-changing step was decided under. A sync, catch-up, repair, strip or restore of
 * administrators, fence export or stream apply is decided from the namespace's role row at one moment; by the time it
 * reaches the device, a promote, demote, fence, follow or pause may have changed that row. The step carries the row's
 * identity (epoch, role, primary site, paused) as a token and the barrier re-checks it after admission and again right
 * before the irreversible call (a restore), so a step decided under an old epoch or role is abandoned before it
 * touches the device, as a PostgreSQL timeline or a Patroni leader key fences an old leader.
 */
import { FenceTokenStaleError } from '../errors.js';
import type { Role } from '../roles/role.js';
import type { NamespaceRow as RoleRow } from '../state/roles-repo.js';

export interface FencingToken {
  readonly namespace: string;
  readonly epoch: number;
  readonly role: Role;
  readonly primarySite: string;
  readonly paused: boolean;
  /** What the step is (logs and the stale-token message): `sync`, `stream apply`, `fence export`, … */
  readonly purpose: string;
}

/** The token of a step decided now from `row`. */
export function tokenOf(row: RoleRow, purpose: string): FencingToken {
  return { namespace: row.namespace, epoch: row.epoch, role: row.role, primarySite: row.primarySite, paused: row.paused, purpose };
}

/** Reads a namespace's current role row (the state store's), or undefined when the namespace is gone. */
export type RoleReader = (namespace: string) => RoleRow | undefined;

/**
 * Throws FenceTokenStaleError when the namespace's role row no longer matches `token` (another epoch, role or
 * primary, or paused/resumed since the step was decided). Pure apart from the read.
 */
export function assertTokenCurrent(read: RoleReader, token: FencingToken): void {
  const row = read(token.namespace);
  if (row && row.epoch === token.epoch && row.role === token.role && row.primarySite === token.primarySite && row.paused === token.paused) return;
  const now = row ? `${row.role} at epoch ${row.epoch} (primary ${row.primarySite}${row.paused ? ', paused' : ''})` : 'no longer replicated here';
  throw new FenceTokenStaleError(
    `${token.purpose} of namespace ${token.namespace} abandoned before touching the device: decided as ${token.role} at epoch ${token.epoch}` +
      ` (primary ${token.primarySite}${token.paused ? ', paused' : ''}), the namespace is now ${now}`,
    { namespace: token.namespace, epoch: token.epoch, operation: token.purpose },
  );
}
