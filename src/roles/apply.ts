/**
 * Persisting role decisions. A role change is written (namespace row, epoch history, audit row) in ONE durable
 * transaction before anything acts on it: nothing is told to peers, no write is accepted or refused, no device is
 * touched until `applyRoleChange` has returned.
 */
import { RoleStateChangedError } from '../errors.js';
import type { NamespaceRow } from '../state/roles-repo.js';
import type { StateStore } from '../state/store.js';
import { initialRole, promote, type RoleChange } from './role-machine.js';

/**
 * Writes `change` by `actor` ('daemon', or the operator) in one transaction and returns the stored row. Throws
 * {@link RoleStateChangedError} when the stored state is no longer `change.from` (or, for `init`, the namespace
 * already exists), and {@link RoleSplitBrainError} when the change's epoch is recorded with another primary; in
 * both cases nothing is written.
 */
export function applyRoleChange(store: StateStore, change: RoleChange, actor: string): NamespaceRow {
  const ns = change.namespace;
  return store.transaction(() => {
    if (change.from === undefined) {
      if (store.roles.get(ns)) throw new RoleStateChangedError(`namespace ${ns} is already initialised`, { namespace: ns });
      store.roles.insert(change.to);
    } else if (!store.roles.compareAndSet(change.from, change.to)) {
      const now = store.roles.get(ns);
      throw new RoleStateChangedError(
        `namespace ${ns} changed before the ${change.action} was saved (now ${now ? `${now.role} at epoch ${now.epoch}` : 'gone'})`,
        { namespace: ns, ...(now ? { epoch: now.epoch } : {}) },
      );
    }
    if (change.claim) store.epochs.record(ns, change.claim.epoch, change.claim.primarySite, change.claim.learnedFrom);
    store.audit.append({
      actor,
      action: change.action,
      namespace: ns,
      ...(change.from ? { fromEpoch: change.from.epoch, fromRole: change.from.role } : {}),
      toEpoch: change.to.epoch,
      toRole: change.to.role,
      detail: { ...change.detail, primarySite: change.to.primarySite },
    });
    return store.roles.require(ns);
  });
}

/**
 * Creates the namespace's row from the config (primary here or replica of the configured primary, epoch 1) unless
 * it exists. Idempotent; returns the stored row either way. The stored role wins over the config after the first
 * start: changing `primary` in the config later does not move the role (promote does).
 */
export function ensureNamespace(store: StateStore, namespace: string, localSite: string, configuredPrimary: string): NamespaceRow {
  return store.transaction(() => store.roles.get(namespace) ?? applyRoleChange(store, initialRole(namespace, localSite, configuredPrimary), 'daemon'));
}

export interface PromoteRequest {
  localSite: string;
  force: boolean;
  maxLagMs: number;
  /** Epochs reported by the peers that answered (the daemon asks them first); the local history is added here. */
  peerEpochs?: readonly number[];
  /** The current primary answered and still claims the namespace at this site's epoch (see PromoteInput). */
  primaryAlive?: boolean;
  /** The etcd-assigned epoch of an automatic-failover term (see PromoteInput.epoch). */
  epoch?: number;
  now?: number;
}

/**
 * Whether the last sync from the primary counts for a promote: undefined when none was made, true when it applied. A
 * sync that failed only because the primary could not be reached says nothing the lag does not already say: the copy
 * is as of the last applied sync, and a lost primary makes every later sync fail, which would otherwise turn each
 * failover into a `--force`. Any other failure (the snapshot did not apply here) counts.
 */
export function lastSyncCounts(position: { lastSyncOutcome: 'ok' | 'failed' | undefined; lastErrorCode: string | undefined } | undefined): boolean | undefined {
  if (position?.lastSyncOutcome === undefined) return undefined;
  if (position.lastSyncOutcome === 'ok') return true;
  return position.lastErrorCode === 'NHR_ERR_PEER_UNREACHABLE' ? undefined : false;
}

/**
 * Decides a promote from what the store knows: the lag and last outcome of syncs from the current primary, and the
 * highest epoch in the history. Pure decision, no write; throws {@link RolePromoteRefusedError} /
 * {@link NamespaceUnknownError}. Pass the result to {@link applyRoleChange}.
 */
export function decidePromote(store: StateStore, namespace: string, req: PromoteRequest): RoleChange {
  const state = store.roles.require(namespace);
  const position = store.positions.get(namespace, state.primarySite);
  const now = req.now ?? Date.now();
  const taken = position?.positionTakenAt;
  return promote(state, {
    localSite: req.localSite,
    force: req.force,
    maxLagMs: req.maxLagMs,
    lagMs: taken === undefined ? undefined : Math.max(0, now - taken),
    lastSyncOk: lastSyncCounts(position),
    knownEpochs: [...(req.peerEpochs ?? []), ...[store.epochs.highest(namespace)].filter((e): e is number => e !== undefined)],
    ...(req.primaryAlive ? { primaryAlive: true } : {}),
    ...(req.epoch !== undefined ? { epoch: req.epoch } : {}),
  });
}
