/**
 * Automatic failover, the decisions (pure): what one site does for one namespace with `failover: automatic`, given
 * its role row, what etcd holds (the leader key, the epoch floor, the candidates' positions) and whether its own lease
 * is still safely valid. The `Leadership` loop (leadership.ts) gathers the inputs, acts on the decision and persists
 * every role change with `applyRoleChange` first. No I/O and no clock here: the caller passes the monotonic time.
 *
 * Safety rests on two rules:
 *   1. a primary takes writes only while `now < leaseDeadline(...)`, which is before etcd can expire its lease, so
 *      before any other site can create the leader key;
 *   2. a new term's epoch is `max(floor, highest known here) + 1`, written to the floor in the same etcd transaction
 *      that creates the leader key (compare-and-set on the floor's revision): epochs strictly increase across terms,
 *      and two sites can never hold one epoch.
 */
import type { RoleState } from '../roles/role.js';

/** The leader key's value and etcd metadata. */
export interface LeaderRecord {
  readonly site: string;
  readonly epoch: number;
  /** The etcd lease (decimal string) that keeps the key alive. */
  readonly lease: string;
  /** The key's mod revision (etcd's fencing token for compare-and-set on it). */
  readonly modRevision: string;
}

/** A site's published position (`candidates/<site>`, under that site's lease: present only while it is reachable). */
export interface Candidate {
  readonly site: string;
  /** When the primary took the copy this site has applied (ms since the epoch); null: never synced. */
  readonly positionTakenAt: number | null;
}

/** What etcd said for the namespace, or that it could not be asked. */
export type EtcdView =
  | { readonly kind: 'unreachable'; readonly error: string }
  | { readonly kind: 'read'; readonly leader: LeaderRecord | undefined; readonly floor: number; readonly candidates: readonly Candidate[] };

export interface TickInput {
  readonly row: RoleState & { readonly paused: boolean };
  readonly localSite: string;
  readonly view: EtcdView;
  /** This daemon's lease id, when it holds one that is still safely valid (now before the lease deadline). */
  readonly lease: string | undefined;
  /** This site's copy: how far behind (ms), and whether the last sync worked; undefined: never synced. */
  readonly lagMs: number | undefined;
  readonly lastSyncOk: boolean | undefined;
  readonly maxLagMs: number;
  /** The position this site published (compared with the other candidates'). */
  readonly positionTakenAt: number | null;
  /**
   * Whether this site itself began the term of its role's epoch (promoted, resumed or configured primary), as its
   * epoch history says; false when it only learnt that epoch from a peer. Default true.
   */
  readonly tookEpoch?: boolean;
}

export type Decision =
  /** Primary holding the key with its valid lease: keep taking writes. */
  | { readonly kind: 'hold' }
  /** Primary (or a daemon restarted as primary) without the key: take it at its current epoch. `expected`: the record to replace (its own, under an old lease), or undefined when vacant. */
  | { readonly kind: 'claim'; readonly expected: LeaderRecord | undefined }
  /** Primary that must stop writes now (lease not safely valid, or the key is another's). */
  | { readonly kind: 'step-down'; readonly reason: string }
  /**
   * Take the key for a new term and promote (or, after a step-down, resume) at `epoch`. `expected`: the record to
   * replace (this site's own, left by a step-down whose lease never expired); undefined: the key must be vacant.
   * `viaPromote`: a fenced site naming itself at an epoch it never took must promote (administrators restored from
   * its last snapshot), not resume as a stepped-down primary would.
   */
  | { readonly kind: 'campaign'; readonly epoch: number; readonly expected?: LeaderRecord; readonly viaPromote?: boolean }
  /** etcd names a newer primary: observe it (follow, or fence when this site had been primary). */
  | { readonly kind: 'follow'; readonly leader: LeaderRecord }
  /** Nothing to do now; `reason` is shown in `status`. */
  | { readonly kind: 'wait'; readonly reason: string };

/**
 * The monotonic instant (same clock as `sentAt`) until which a primary may take writes after a lease renewal sent at
 * `sentAt`: etcd starts the renewed TTL when it receives the request, which is after `sentAt`, so the lease lives at
 * least until `sentAt + ttl`; the margin covers clock-rate drift between hosts and writes already in flight.
 */
export function leaseDeadline(sentAt: number, ttlMs: number, marginMs: number): number {
  return sentAt + ttlMs - marginMs;
}

/** The epoch of a new term: above the floor in etcd and above every epoch this site knows. */
export function nextTermEpoch(floor: number, highestKnown: number): number {
  return Math.max(floor, highestKnown) + 1;
}

/** The reachable candidate (another site) whose copy is fresher than `mine`, if any. */
export function fresherCandidate(localSite: string, mine: number | null, candidates: readonly Candidate[]): Candidate | undefined {
  return candidates
    .filter((c) => c.site !== localSite && c.positionTakenAt !== null && (mine === null || c.positionTakenAt > mine))
    .sort((a, b) => b.positionTakenAt! - a.positionTakenAt!)[0];
}

/** One decision for one namespace. Pure. */
export function decide(input: TickInput, highestKnown: number): Decision {
  const { row, localSite, view } = input;
  if (row.role === 'primary') return decidePrimary(input);
  if (view.kind === 'unreachable') return { kind: 'wait', reason: `etcd unreachable: ${view.error}` };
  const leader = view.leader;
  if (leader) {
    const newer = leader.epoch > row.epoch || (leader.epoch === row.epoch && leader.site !== row.primarySite);
    if (newer && leader.site !== localSite) return { kind: 'follow', leader };
    if (leader.site === localSite) {
      // A step-down (fenced, still naming itself) whose lease etcd never expired: a renewal arrived after the cut-off
      // deadline but before the TTL, so the key was never vacant and no other term began. Nobody else can take the
      // key while this site renews, so it must take its own record back (compare-and-set on it) or the namespace
      // stays without a writable primary for good. A demote's handover (role replica) waits for its successor.
      if (row.role === 'fenced' && row.primarySite === localSite && leader.epoch === row.epoch && view.floor <= row.epoch && !row.paused && input.lease !== undefined) {
        return { kind: 'campaign', epoch: nextTermEpoch(view.floor, highestKnown), expected: leader, ...viaPromote(input) };
      }
      // A promote that took the key for a new term here and then failed before it could give it back (its etcd calls
      // timed out): the key names this site above its role's epoch, and nobody else can take it while this site
      // renews. Promote again over it; the promote decides afresh (and gives the key up if it refuses).
      if (row.role === 'replica' && row.primarySite !== localSite && leader.epoch > row.epoch && !row.paused && input.lease !== undefined) {
        return { kind: 'campaign', epoch: nextTermEpoch(view.floor, highestKnown), expected: leader };
      }
      return { kind: 'wait', reason: `the leader key still names this site at epoch ${leader.epoch} (handover in progress)` };
    }
    return { kind: 'wait', reason: `${leader.site} holds the leader key at epoch ${leader.epoch}` };
  }
  if (row.paused) return { kind: 'wait', reason: 'paused: automatic failover does not promote this site' };
  if (input.lease === undefined) return { kind: 'wait', reason: 'no valid etcd lease at this site' };
  if (row.role === 'fenced') {
    // A primary that stepped down (lease lost) may lead again only when no other term began since its own: then it
    // still holds everything it acknowledged, and nobody else wrote.
    if (row.primarySite === localSite && view.floor <= row.epoch) return { kind: 'campaign', epoch: nextTermEpoch(view.floor, highestKnown), ...viaPromote(input) };
    return { kind: 'wait', reason: 'fenced: waiting for the new primary to resync from' };
  }
  if (input.lastSyncOk === false) return { kind: 'wait', reason: 'not promoting: the last sync failed' };
  if (input.lagMs === undefined) return { kind: 'wait', reason: 'not promoting: never synced' };
  if (input.lagMs > input.maxLagMs) {
    return { kind: 'wait', reason: `not promoting: ${Math.round(input.lagMs / 1000)}s behind, over maxLagForPromote (${Math.round(input.maxLagMs / 1000)}s); an operator may force it` };
  }
  const fresher = fresherCandidate(localSite, input.positionTakenAt, view.candidates);
  if (fresher) return { kind: 'wait', reason: `not promoting: ${fresher.site} has a fresher copy` };
  return { kind: 'campaign', epoch: nextTermEpoch(view.floor, highestKnown) };
}

/**
 * A site fenced on a peer's word that names it primary at an epoch it never took (a promote here took the key, failed,
 * and the other site reported that term before this site promoted again) holds a replica's copy, without the
 * namespace's administrators: it completes a promote rather than resuming.
 */
function viaPromote(input: TickInput): { viaPromote?: true } {
  return input.tookEpoch === false ? { viaPromote: true } : {};
}

function decidePrimary(input: TickInput): Decision {
  const { row, localSite, view } = input;
  if (input.lease === undefined) return { kind: 'step-down', reason: 'the etcd lease was not renewed in time (no etcd majority reachable?)' };
  if (view.kind === 'unreachable') return { kind: 'hold' }; // the lease deadline decides; the next renewal may work
  const leader = view.leader;
  if (!leader) {
    if (view.floor > row.epoch) return { kind: 'step-down', reason: `etcd records a newer term (epoch ${view.floor}) than this site's ${row.epoch}` };
    return { kind: 'claim', expected: undefined };
  }
  if (leader.site !== localSite || leader.epoch !== row.epoch) return { kind: 'step-down', reason: `the leader key names ${leader.site} at epoch ${leader.epoch}` };
  if (leader.lease !== input.lease) return { kind: 'claim', expected: leader };
  return { kind: 'hold' };
}
