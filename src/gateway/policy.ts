/**
 * What the gateway does with a classified request, given who is primary for which namespace. Pure: the roles come from an
 * injected {@link NamespaceRoles}; nothing here does I/O or throws.
 *
 * Rules (docs/gateway.md explains why):
 * - reads and crypto, namespace or device: forward, never held;
 * - namespace mutations: for every namespace the call touches (the caller's, and one named in a `/users/ns~id` path),
 *   a replica or fenced role refuses it (403 naming the primary and epoch) or, when the primary's gateway URL is known,
 *   forwards it there; otherwise forward locally, held during a merge-restore, observed when the namespace is primary here;
 * - root-namespace and unreplicated-namespace mutations: forward locally, held (a merge-restore replaces them too), not observed;
 * - device writes: a few are refused outright (restore, factory reset, backup passphrase, cluster changes, replicated
 *   namespace lifecycle); the rest are forwarded and held;
 * - ambiguous credentials on a namespace mutation: refused with an empty 401, as the NetHSM answers credentials it cannot read.
 * - mutations of a namespace primary here whose erased writes are still being re-applied after a merge-restore: 503
 *   with Retry-After (docs/concurrency.md, "Racing writes re-applied");
 * - mutations of a namespace primary here whose administrators are not back on the NetHSM since its promote: 503 with
 *   Retry-After (docs/operations.md, "Promoted without its administrators").
 */
import {
  GatewayAdminsPendingError,
  GatewayCallRefusedError,
  GatewayReadOnlyError,
  GatewayReplayPendingError,
  GatewayRequestInvalidError,
  type NhrError,
} from '../errors.js';
import type { CallerIdentity } from './basic-auth.js';
import type { Classification } from './classify.js';

export interface NamespaceRole {
  role: 'primary' | 'replica' | 'fenced';
  epoch: number;
  primarySite: string;
  /** The primary site's gateway base URL (`https://host:port`); when set, replica mutations are forwarded there. */
  primaryGatewayUrl?: string;
  /** Primary here, and writes a restore erased are still being re-applied: its mutations are refused (503) meanwhile. */
  replayPending?: boolean;
  /** Primary here, and its administrators are not back on the NetHSM since its promote: its mutations are refused (503). */
  adminsPending?: boolean;
}

/** Injected by the daemon; `undefined` = the namespace is not replicated by this site. Must be cheap and synchronous. */
export interface NamespaceRoles {
  roleOf(namespace: string): NamespaceRole | undefined;
}

/** Outcomes reported per request (a superset of the metrics module's gateway outcomes; see docs/gateway.md). */
export type GatewayOutcome =
  | 'forwarded'
  | 'forwarded_primary'
  | 'refused_replica'
  | 'refused_fenced'
  | 'refused_device'
  | 'rejected_input'
  | 'refused_capture'
  | 'refused_replay'
  | 'refused_admins'
  | 'held_timeout'
  | 'rejected_too_large'
  | 'cut_slow'
  | 'served_remote'
  | 'refused_local_down'
  | 'refused_no_peer'
  | 'error';

export type Decision =
  | {
      action: 'forward';
      /** Wait at the write gate (merge-restore) and count as in flight. */
      hold: boolean;
      /** The replicated namespace, primary here, whose change capture must see this mutation. */
      observe?: string;
    }
  | { action: 'forward-primary'; namespace: string; url: string; role: NamespaceRole }
  | { action: 'refuse'; status: number; error: NhrError; outcome: GatewayOutcome; emptyBody?: boolean; retryAfter?: boolean };

export interface PolicyInput {
  classification: Classification;
  caller: CallerIdentity;
  /** This site's name (for messages). */
  site: string;
  /** The request already came through another site's gateway: never forward it again (loop guard). */
  viaGateway?: string;
  /** Whether this gateway can reach other sites' gateways (trust configured). Default true. */
  canForwardToPrimary?: boolean;
}

/** Device writes refused whatever the roles. */
const REFUSED_DEVICE_CALLS: Record<string, string> = {
  'POST /system/restore':
    'a restore replaces every namespace on the NetHSM, including those nethsm-replicator keeps, behind its back',
  'POST /system/factory-reset': 'a factory reset destroys the replication domain of this site',
  'PUT /config/backup-passphrase':
    'nethsm-replicator opens this NetHSM\'s backups with the configured backup passphrase; change both together on the NetHSM directly',
};

/** Every read and crypto call's decision: one object, not one per request (callers never change a Decision). */
const FORWARD: Decision = Object.freeze({ action: 'forward', hold: false });

export function decide(input: PolicyInput, roles: NamespaceRoles): Decision {
  const { classification: c, caller } = input;
  if (c.kind === 'read' || c.kind === 'crypto' || c.kind === 'device-read') return FORWARD;
  if (c.kind === 'device-write') return decideDeviceWrite(c, roles);
  // Only namespace mutations depend on the caller's namespace, so only they need credentials read with certainty.
  if (caller.kind === 'unparsable') {
    return {
      action: 'refuse',
      status: 401,
      emptyBody: true,
      outcome: 'rejected_input',
      error: new GatewayRequestInvalidError(`write refused: ${caller.reason}`, { operation: c.operation }),
    };
  }
  return decideMutation(input, roles);
}

function decideDeviceWrite(c: Classification, roles: NamespaceRoles): Decision {
  const why =
    REFUSED_DEVICE_CALLS[c.operation] ??
    (c.operation.startsWith('POST /cluster') || c.operation.startsWith('PUT /cluster') || c.operation.startsWith('DELETE /cluster')
      ? 'joining or changing a cluster changes the replication domain of this site'
      : undefined) ??
    (c.operation.endsWith(' /namespaces/{ns}') && c.pathNamespace !== undefined && roles.roleOf(c.pathNamespace) !== undefined
      ? `namespace ${c.pathNamespace} is replicated by nethsm-replicator; remove it from the configuration first`
      : undefined);
  if (why === undefined) return { action: 'forward', hold: true };
  return {
    action: 'refuse',
    status: 403,
    outcome: 'refused_device',
    error: new GatewayCallRefusedError(`${c.operation} is not served by the gateway: ${why}`, {
      operation: c.operation,
      ...(c.pathNamespace !== undefined ? { namespace: c.pathNamespace } : {}),
    }),
  };
}

function decideMutation(input: PolicyInput, roles: NamespaceRoles): Decision {
  const { classification: c, caller } = input;
  const touched = new Set<string>();
  if (caller.kind === 'user' && caller.namespace !== undefined) touched.add(caller.namespace);
  if (c.pathNamespace !== undefined) touched.add(c.pathNamespace);
  let observe: string | undefined;
  for (const ns of touched) {
    const r = roles.roleOf(ns);
    if (r === undefined) continue;
    if (r.role === 'primary') {
      if (r.replayPending === true) return refuseReplayPending(ns, input);
      if (r.adminsPending === true) return refuseAdminsPending(ns, r, input);
      // The path's namespace (a user target) is where the change lands; otherwise the caller's.
      if (observe === undefined || ns === c.pathNamespace) observe = ns;
      continue;
    }
    const canForward = input.canForwardToPrimary !== false && input.viaGateway === undefined && touched.size === 1;
    if (r.primaryGatewayUrl !== undefined && canForward) {
      return { action: 'forward-primary', namespace: ns, url: r.primaryGatewayUrl, role: r };
    }
    return refuseReadOnly(ns, r, input);
  }
  return observe === undefined ? { action: 'forward', hold: true } : { action: 'forward', hold: true, observe };
}

function refuseReplayPending(ns: string, input: PolicyInput): Decision {
  return {
    action: 'refuse',
    status: 503,
    outcome: 'refused_replay',
    retryAfter: true,
    error: new GatewayReplayPendingError(
      `namespace ${ns} takes no writes at site ${input.site} until the writes a merge-restore erased are re-applied from its change log`,
      { namespace: ns, operation: input.classification.operation },
    ),
  };
}

function refuseAdminsPending(ns: string, r: NamespaceRole, input: PolicyInput): Decision {
  return {
    action: 'refuse',
    status: 503,
    outcome: 'refused_admins',
    retryAfter: true,
    error: new GatewayAdminsPendingError(
      `namespace ${ns} is primary at site ${input.site} (epoch ${r.epoch}) but its administrators are not restored on the NetHSM yet (the restore failed and is being retried); the NetHSM would refuse its users`,
      { namespace: ns, epoch: r.epoch, operation: input.classification.operation },
    ),
  };
}

function refuseReadOnly(ns: string, r: NamespaceRole, input: PolicyInput): Decision {
  const state = r.role === 'fenced' ? 'fenced (it took writes in an older epoch and must resync)' : 'a read-only replica';
  const loop = input.viaGateway !== undefined ? `; the request already came through the gateway of site ${input.viaGateway}` : '';
  const message = `namespace ${ns} is ${state} at site ${input.site} (epoch ${r.epoch}); its primary is site ${r.primarySite}${loop}`;
  return {
    action: 'refuse',
    status: 403,
    outcome: r.role === 'fenced' ? 'refused_fenced' : 'refused_replica',
    error: new GatewayReadOnlyError(message, {
      namespace: ns,
      site: r.primarySite,
      epoch: r.epoch,
      operation: input.classification.operation,
    }),
  };
}
