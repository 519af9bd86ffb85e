/**
 * What this site's NetHSM refusing a replication step means, in words an operator acts on. The NetHSM answers 412 to
 * every key, user and backup call while it is not Operational (Locked after a reboot without unattended boot, or
 * locked by an operator), and 401/403 when an account's passphrase or role does not fit (FACTS §2), then 429 to that
 * account for a second after each refused login (§10). The client reports
 * both as plain NetHsmHttpErrors; the replication paths, which know the account they used, turn them into
 * NetHsmNotOperationalError and NetHsmCredentialRefusedError, so `status`, the sync's answer, the log and the metrics
 * name the cause instead of a status code.
 */
import { withDeadline } from '../util/deadline.js';
import { NetHsmCredentialRefusedError, NetHsmHttpError, NetHsmLockedError, NetHsmNotOperationalError, NetHsmTimeoutError } from '../errors.js';

/** An account of this site's NetHSM, as the operator knows it. */
export interface DeviceAccount {
  /** e.g. `root Operator`, `replication account alpha~replicator`. */
  label: string;
  /** Where the config sets its credential, e.g. `nethsm.credentials.operator`. */
  configPath: string;
}

export const ROOT_OPERATOR: DeviceAccount = { label: 'root Operator', configPath: 'nethsm.credentials.operator' };
export const ROOT_ADMINISTRATOR: DeviceAccount = { label: 'root Administrator', configPath: 'nethsm.credentials.admin' };
export const ROOT_BACKUP: DeviceAccount = { label: 'root Backup user', configPath: 'nethsm.credentials.backup' };

/** The namespace's replication account (`namespaces[].replicationUser`). */
export function replicationAccount(namespace: string, user: string | undefined): DeviceAccount {
  return { label: `replication account ${user ?? `of ${namespace}`}`, configPath: `namespaces[${namespace}].replicationUser` };
}

/**
 * `err` as the cause an operator acts on when it is a 412 (not Operational) or a 401/403/429 (credential or role
 * refused, or rate-limited after a refused login) answer of this site's NetHSM to `account`; any other error is
 * returned unchanged. Never throws.
 */
export function asDeviceFault(err: unknown, account: DeviceAccount): unknown {
  if (!(err instanceof NetHsmHttpError)) return err;
  const operation = err.operation ?? 'a NetHSM call';
  if (err.status === 412) {
    // 412 is the NetHSM's answer to any call while it is not Operational; Locked is by far the most common case.
    return new NetHsmNotOperationalError(`this site's NetHSM is Locked (or otherwise not Operational): it answered 412 to ${operation}`, {
      operation,
      cause: err,
      hint: 'Unlock the NetHSM (`nitropy nethsm unlock`, or enable unattended boot); replication resumes by itself and catches up. `status` names its state.',
    });
  }
  if (err.status === 401 || err.status === 403 || err.status === 429) {
    // Already named by a client labelled with its credential (error-map.ts): keep it.
    if (err instanceof NetHsmCredentialRefusedError) return err;
    // The NetHSM answers 429 to an account for a second after one of its logins failed (FACTS §10): a retry soon after
    // a 401 meets it, and it means the same.
    const why =
      err.status === 401 ? 'wrong user name or passphrase' : err.status === 403 ? 'the account lacks the role for this call' : 'held back after a refused login';
    return new NetHsmCredentialRefusedError(
      { setting: account.configPath, name: account.label },
      {
        status: err.status,
        operation,
        cause: err,
        message: `this site's NetHSM refused the ${account.label} credential (${account.configPath}: ${err.status}, ${why}) on ${operation}`,
      },
    );
  }
  return err;
}

/**
 * Reads the NetHSM's state (`GET /health/state`, no credentials) within `timeoutMs` and throws NetHsmLockedError when
 * it is Locked, NetHsmNotOperationalError naming any other state but Operational. Throws NetHsmTimeoutError past the bound, and
 * the client's errors (unreachable, TLS) as they are.
 */
export async function assertOperational(readState: () => Promise<string>, timeoutMs: number): Promise<void> {
  const state = await withDeadline(
    readState(),
    timeoutMs,
    () => new NetHsmTimeoutError(`this site's NetHSM did not tell its state within ${timeoutMs} ms`, { operation: 'GET /health/state' }),
  );
  if (state === 'Locked') {
    throw new NetHsmLockedError("this site's NetHSM is Locked: nothing can be applied to it until it is unlocked", { operation: 'GET /health/state' });
  }
  if (state !== 'Operational') {
    throw new NetHsmNotOperationalError(`this site's NetHSM is ${state}: nothing can be applied to it until it is Operational again`, {
      operation: 'GET /health/state',
    });
  }
}
