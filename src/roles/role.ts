/** The role vocabulary shared by the state store and the role machine. */

export const ROLES = ['primary', 'replica', 'fenced'] as const;
/**
 * `primary`: takes writes for the namespace at its epoch. `replica`: read-only copy of the primary's.
 * `fenced`: a former primary that learned of a higher epoch (or a split brain) and must resync before anything else.
 */
export type Role = (typeof ROLES)[number];

/** A namespace's role as this site holds it. `primarySite` is this site's own name while primary (and after demote). */
export interface RoleState {
  readonly namespace: string;
  readonly role: Role;
  readonly epoch: number;
  readonly primarySite: string;
}
