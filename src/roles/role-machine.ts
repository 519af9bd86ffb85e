/**
 * The role state machine of one namespace at one site. Pure: each function takes the current {@link RoleState}
 * and returns the {@link RoleChange} to persist (with `applyRoleChange`, before acting on it) or throws a typed
 * refusal. Transitions:
 *
 *   (none)  --init-->         primary | replica        configured primary, epoch 1
 *   replica --promote-->      primary                  epoch = highest known + 1; guarded (lag, last sync) unless forced
 *   fenced  --promote(force)--> primary                operator chooses this site after a split brain
 *   replica --promote(force)--> primary                of itself: a demote whose handover failed, taken back here
 *   primary --demote-->       replica                  same epoch, primary stays this site: "stepped down, handing over"
 *   primary --fence-->        fenced                   a higher epoch with another primary was seen
 *   replica --follow-->       replica                  a higher epoch: follow its primary
 *   fenced  --follow-->       fenced                   a higher epoch while fenced: still must resync
 *   replica --fence (fenceToExport)--> fenced        stepped down here with erased writes not re-applied, and a higher
 *                                                      epoch has another primary (or such a follow found at start)
 *   fenced  --resync-->       replica                  after the quarantine export and a successful sync
 *   primary --split-brain-->  fenced                   another site claims the same epoch
 *   primary --fence (stepDown)--> fenced               automatic failover: the etcd lease was not renewed in time
 *   fenced  --promote (resumeLeadership)--> primary    that site takes the leader key again, no other term since
 *
 * Split brain (two primaries claim one epoch) can only come from concurrent forced promotes or lost state. Policy:
 * **both fence and alert**. Each site that is primary at that epoch fences itself when it sees the other's claim, so
 * writes stop at both; no side is picked by name, because the operator knows which site's writes matter. The operator
 * promotes the chosen site with `--force` (a higher epoch); the other follows, exports its quarantine and resyncs.
 */
import { InternalError, PeerMessageInvalidError, PeerStaleEpochError, RoleNotPrimaryError, RolePromoteRefusedError, RoleSplitBrainError, type PromoteRefusal } from '../errors.js';
import { INITIAL_EPOCH, isEpoch, nextEpoch } from './epoch.js';
import type { RoleState } from './role.js';

export type RoleAction = 'init' | 'promote' | 'demote' | 'fence' | 'follow' | 'resync' | 'split-brain';

export interface RoleChange {
  readonly action: RoleAction;
  readonly namespace: string;
  /** The state the decision was made on; undefined for `init`. Persisting fails if the stored state differs. */
  readonly from: RoleState | undefined;
  readonly to: RoleState;
  /** The (epoch → primary) fact this change adds to the epoch history, if any. */
  readonly claim?: { readonly epoch: number; readonly primarySite: string; readonly learnedFrom: string };
  /** For the audit row: reasons, the peer that told us, forced refusals. Never a secret. */
  readonly detail: Readonly<Record<string, unknown>>;
}

/** The first state of a namespace: primary here when configured so, else a replica of the configured primary. */
export function initialRole(namespace: string, localSite: string, configuredPrimary: string): RoleChange {
  const to: RoleState = {
    namespace,
    role: configuredPrimary === localSite ? 'primary' : 'replica',
    epoch: INITIAL_EPOCH,
    primarySite: configuredPrimary,
  };
  return { action: 'init', namespace, from: undefined, to, claim: { epoch: INITIAL_EPOCH, primarySite: configuredPrimary, learnedFrom: 'config' }, detail: {} };
}

export interface PromoteInput {
  localSite: string;
  force: boolean;
  /** How old this site's copy is (now − when the primary took the last applied snapshot); undefined: never synced. */
  lagMs: number | undefined;
  /** The namespace's `maxLagForPromote`. */
  maxLagMs: number;
  /** Outcome of the last sync attempt; undefined when none was made. */
  lastSyncOk: boolean | undefined;
  /** Epochs known from elsewhere (the epoch history, reachable peers); the state's own epoch is always included. */
  knownEpochs: readonly number[];
  /** The current primary answered just now and still claims the namespace at this site's epoch (a switchover case). */
  primaryAlive?: boolean;
  /**
   * The epoch etcd assigned to this term (automatic failover: the leader key was taken at it). Must be above every
   * known epoch; replaces highest known + 1.
   */
  epoch?: number;
}

/**
 * Decides a promote at this site. Throws {@link RolePromoteRefusedError} with every reason that applies:
 * `already-primary` (even with force), and unless `force`: `fenced`, `last-sync-failed`, `never-synced`, `behind`.
 */
export function promote(state: RoleState, input: PromoteInput): RoleChange {
  const ns = state.namespace;
  if (state.role === 'primary') {
    throw new RolePromoteRefusedError(`namespace ${ns} is already primary here at epoch ${state.epoch}`, {
      namespace: ns,
      epoch: state.epoch,
      reasons: ['already-primary'],
      hint: 'Nothing to do.',
    });
  }
  const reasons: PromoteRefusal[] = [];
  const why: string[] = [];
  if (state.role === 'fenced') {
    reasons.push('fenced');
    why.push('this site is fenced (its copy diverged from the primary and has not resynced)');
  }
  const steppedDown = state.role === 'replica' && state.primarySite === input.localSite;
  if (steppedDown) {
    // Stepped down here (demote) and nobody took over: this site holds the latest copy, so sync state is beside the
    // point; what matters is that the successor may still take over (or did, and its answer was lost).
    reasons.push('handover-pending');
    why.push(`this site stepped down at epoch ${state.epoch} and its handover did not finish`);
  } else {
    if (input.lastSyncOk === false) {
      reasons.push('last-sync-failed');
      why.push('the last sync failed');
    }
    if (input.lagMs === undefined) {
      reasons.push('never-synced');
      why.push('it has never synced');
    } else if (input.lagMs > input.maxLagMs) {
      reasons.push('behind');
      why.push(`it is ${Math.round(input.lagMs / 1000)}s behind, over the limit of ${Math.round(input.maxLagMs / 1000)}s`);
    }
  }
  if (input.primaryAlive) {
    reasons.push('primary-alive');
    why.push(`its primary ${state.primarySite} answers and still claims it at epoch ${state.epoch}`);
  }
  if (reasons.length > 0 && !input.force) {
    const hint = steppedDown
      ? `Finish the handover: run \`nethsm-replicator demote ${ns} --to <site>\` again once that site answers; or take the namespace back here with \`nethsm-replicator promote ${ns} --force\` (docs/operations.md §3).`
      : input.primaryAlive
        ? `For a switchover that loses nothing, run \`nethsm-replicator demote ${ns} --to ${input.localSite}\` at ${state.primarySite}. ` +
          `\`promote --force\` here fences ${state.primarySite}: its writes not yet replicated go to its quarantine.`
        : undefined;
    throw new RolePromoteRefusedError(`refusing to promote namespace ${ns}: ${why.join('; ')}`, { namespace: ns, epoch: state.epoch, reasons, ...(hint ? { hint } : {}) });
  }
  const epoch = termEpoch(state, input);
  return {
    action: 'promote',
    namespace: ns,
    from: state,
    to: { namespace: ns, role: 'primary', epoch, primarySite: input.localSite },
    claim: { epoch, primarySite: input.localSite, learnedFrom: 'local' },
    detail: { force: input.force, ...(reasons.length > 0 ? { overridden: reasons } : {}), previousPrimary: state.primarySite, lagMs: input.lagMs ?? null },
  };
}

function termEpoch(state: RoleState, input: PromoteInput): number {
  const next = nextEpoch([state.epoch, ...input.knownEpochs]);
  if (input.epoch === undefined) return next;
  if (input.epoch < next) throw new InternalError(`namespace ${state.namespace}: the etcd-assigned epoch ${input.epoch} is not above the known epochs (next would be ${next})`);
  return input.epoch;
}

/**
 * Automatic failover: the primary could not renew its etcd lease in time and stops taking writes. It becomes
 * `fenced` at the same epoch, still naming itself primary (nobody else is known yet): fenced refuses writes at the
 * gateway and in the device barrier, and when a newer epoch shows up the fence procedure exports what this site holds
 * to quarantine before it resyncs. Throws {@link RoleNotPrimaryError} when this site is not the primary.
 */
export function stepDown(state: RoleState, input: { localSite: string; reason: string }): RoleChange {
  assertPrimary(state, input.localSite);
  return { action: 'fence', namespace: state.namespace, from: state, to: { ...state, role: 'fenced' }, detail: { stepDown: true, reason: input.reason } };
}

/**
 * Automatic failover: a site that stepped down (fenced, still naming itself primary) leads again at the etcd-assigned
 * `epoch`, which is allowed only when no other term began since its own (the caller checked etcd's epoch floor): it
 * holds everything it ever acknowledged, and nobody else wrote. Throws {@link InternalError} otherwise.
 */
export function resumeLeadership(state: RoleState, input: { localSite: string; epoch: number }): RoleChange {
  if (state.role !== 'fenced' || state.primarySite !== input.localSite || input.epoch <= state.epoch) {
    throw new InternalError(`namespace ${state.namespace}: only a stepped-down primary resumes, at a higher epoch (is ${state.role} of ${state.primarySite} at ${state.epoch})`);
  }
  const to: RoleState = { namespace: state.namespace, role: 'primary', epoch: input.epoch, primarySite: input.localSite };
  return { action: 'promote', namespace: state.namespace, from: state, to, claim: { epoch: input.epoch, primarySite: input.localSite, learnedFrom: 'etcd' }, detail: { resumed: true, previousEpoch: state.epoch } };
}

/**
 * Decides a planned step-down at the primary, handing over to `toSite`: the namespace becomes a replica at the same
 * epoch, still naming this site as that epoch's primary (the epoch's history does not change), until `toSite`
 * promotes with a higher epoch. Throws {@link RoleNotPrimaryError} when this site is not the primary.
 */
export function demote(state: RoleState, input: { localSite: string; toSite: string }): RoleChange {
  assertPrimary(state, input.localSite);
  if (input.toSite === input.localSite) throw new InternalError('demote: the handover site must be another site');
  return {
    action: 'demote',
    namespace: state.namespace,
    from: state,
    to: { ...state, role: 'replica' },
    detail: { handoverTo: input.toSite },
  };
}

/** Throws {@link RoleNotPrimaryError} unless this site is the namespace's primary. */
export function assertPrimary(state: RoleState, localSite: string): void {
  if (state.role !== 'primary' || state.primarySite !== localSite) {
    throw new RoleNotPrimaryError(
      `namespace ${state.namespace} is ${state.role} here at epoch ${state.epoch}; its primary is ${state.primarySite}`,
      { namespace: state.namespace, epoch: state.epoch, site: state.primarySite },
    );
  }
}

/** What a peer said about a namespace: it (or the site it names) is primary at `epoch`. */
export interface EpochClaim {
  /** The peer that said it. */
  from: string;
  epoch: number;
  primarySite: string;
}

export type Observation =
  /** Same epoch, same primary: nothing to do. */
  | { kind: 'current' }
  /** A newer epoch: persist `change` (fence, follow). */
  | { kind: 'change'; change: RoleChange }
  /** Same epoch, another primary. `change` fences this site when it was primary; alert with `error` either way. */
  | { kind: 'split-brain'; change: RoleChange | undefined; error: RoleSplitBrainError };

/**
 * Decides what a peer's epoch claim means here. Throws {@link PeerStaleEpochError} when the claim is older than
 * this site's epoch (the message must be refused) and {@link PeerMessageInvalidError} when it is not an epoch.
 */
export function observeEpoch(state: RoleState, localSite: string, claim: EpochClaim): Observation {
  const ns = state.namespace;
  if (!isEpoch(claim.epoch)) throw new PeerMessageInvalidError(`peer ${claim.from} sent an invalid epoch for namespace ${ns}`, { namespace: ns, site: claim.from });
  if (claim.epoch < state.epoch) {
    throw new PeerStaleEpochError(
      `peer ${claim.from} speaks for epoch ${claim.epoch} of namespace ${ns}; this site holds epoch ${state.epoch} (primary ${state.primarySite})`,
      { namespace: ns, epoch: state.epoch, site: claim.from },
    );
  }
  if (claim.epoch === state.epoch) {
    if (claim.primarySite === state.primarySite) return { kind: 'current' };
    const error = new RoleSplitBrainError(
      `namespace ${ns}: ${claim.from} says ${claim.primarySite} is primary at epoch ${claim.epoch}, this site holds ${state.primarySite}`,
      { namespace: ns, epoch: claim.epoch, site: claim.primarySite },
    );
    const change: RoleChange | undefined =
      state.role === 'primary'
        ? {
            action: 'split-brain',
            namespace: ns,
            from: state,
            to: { ...state, role: 'fenced' },
            detail: { claimedPrimary: claim.primarySite, reportedBy: claim.from },
          }
        : undefined;
    return { kind: 'split-brain', change, error };
  }
  // A newer epoch.
  const learned = { epoch: claim.epoch, primarySite: claim.primarySite, learnedFrom: claim.from };
  const detail = { reportedBy: claim.from, previousEpoch: state.epoch, previousPrimary: state.primarySite };
  if (claim.primarySite === localSite || state.role !== 'replica') {
    // A primary (or a fenced site) meeting a newer epoch is fenced. A newer epoch naming *this* site primary is one
    // this site never took (lost state): fence as well, never act as primary on someone else's word.
    const action = state.role === 'fenced' && claim.primarySite !== localSite ? 'follow' : 'fence';
    return {
      kind: 'change',
      change: { action, namespace: ns, from: state, to: { namespace: ns, role: 'fenced', epoch: claim.epoch, primarySite: claim.primarySite }, claim: learned, detail },
    };
  }
  return {
    kind: 'change',
    change: { action: 'follow', namespace: ns, from: state, to: { namespace: ns, role: 'replica', epoch: claim.epoch, primarySite: claim.primarySite }, claim: learned, detail },
  };
}

/**
 * A site that stopped being primary without a fence while writes a restore erased still await their re-apply here
 * (race_replays: a demote whose re-apply failed, then another site took over): fenced instead of a replica, so the
 * fence procedure exports them to quarantine before anything from the new primary replaces the namespace here (the
 * schedule and recoveries finish a fenced namespace's fence before its resync; its stream stays idle). `claim`: the newer epoch
 * observed at a stepped-down site (the follow it replaces); none: a replica of another site found with such writes
 * (a follow persisted before this rule, seen at start). Throws {@link InternalError} for any other state.
 */
export function fenceToExport(state: RoleState, localSite: string, claim?: EpochClaim): RoleChange {
  const ns = state.namespace;
  const detail = { unexportedWrites: true, previousEpoch: state.epoch, previousPrimary: state.primarySite };
  if (claim) {
    if (state.role !== 'replica' || state.primarySite !== localSite || claim.epoch <= state.epoch || claim.primarySite === localSite) {
      throw new InternalError(`namespace ${ns}: only a stepped-down site meeting a newer epoch of another primary is fenced to export (is ${state.role} of ${state.primarySite} at ${state.epoch})`);
    }
    const to: RoleState = { namespace: ns, role: 'fenced', epoch: claim.epoch, primarySite: claim.primarySite };
    return { action: 'fence', namespace: ns, from: state, to, claim: { epoch: claim.epoch, primarySite: claim.primarySite, learnedFrom: claim.from }, detail: { ...detail, reportedBy: claim.from } };
  }
  if (state.role !== 'replica' || state.primarySite === localSite) {
    throw new InternalError(`namespace ${ns}: only a replica of another site is fenced to export at start (is ${state.role} of ${state.primarySite})`);
  }
  return { action: 'fence', namespace: ns, from: state, to: { ...state, role: 'fenced' }, detail };
}

/**
 * A fenced site has exported its quarantine and synced from the primary: it becomes a replica. Throws
 * {@link InternalError} unless fenced with another site as primary (a site fenced by a split brain waits for the
 * operator's promote, somewhere, first).
 */
export function completeResync(state: RoleState, localSite: string, detail: Record<string, unknown> = {}): RoleChange {
  if (state.role !== 'fenced' || state.primarySite === localSite) {
    throw new InternalError(`namespace ${state.namespace}: resync completes only a fenced namespace with another primary (is ${state.role}, primary ${state.primarySite})`);
  }
  return { action: 'resync', namespace: state.namespace, from: state, to: { ...state, role: 'replica' }, detail };
}
