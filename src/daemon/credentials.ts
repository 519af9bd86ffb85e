/**
 * The daemon's NetHSM credentials as the NetHSM judges them: which of them it refused (401), learnt from every real call
 * made with a labelled client (`NetHsmClient.withAuth(user, pw, label)`), including the member probe, which logs in as
 * the root Administrator. A refused credential is reported at once (log, `status`, `/health/ready`) instead of
 * surfacing later as a failed sync; it clears when the NetHSM accepts it again (its passphrase was set to match).
 * Also here: how the daemon names its passphrases when one does not open a file (replication.backupPassphrase for
 * its own device backups, replication.passphrase for snapshots).
 */
import type { NetHsmCredentialRefusedError } from '../errors.js';
import type { Logger } from '../log.js';
import type { CredentialLabel } from '../nethsm/client.js';

export type RootAccount = 'admin' | 'backup' | 'operator' | 'metrics';

/**
 * The root accounts of `nethsm.credentials`, named as the shipped unit's systemd credentials are. `critical`: without
 * it the daemon cannot replicate (admin restores, backup takes backups, operator unwraps streamed keys), so readiness
 * fails while it is refused; a refused metrics account only loses the NetHSM metrics re-export.
 */
export const ROOT_CREDENTIALS: Readonly<Record<RootAccount, CredentialLabel & { critical: boolean }>> = {
  admin: { setting: 'nethsm.credentials.admin', name: 'nethsm-admin', critical: true },
  backup: { setting: 'nethsm.credentials.backup', name: 'nethsm-backup', critical: true },
  operator: { setting: 'nethsm.credentials.operator', name: 'nethsm-operator', critical: true },
  metrics: { setting: 'nethsm.credentials.metrics', name: 'nethsm-metrics', critical: false },
};

/** The label of namespace `index`'s replication account (`namespaces[1].replicationUser`). */
export function replicationCredential(index: number, namespace: string): CredentialLabel {
  return { setting: `namespaces[${index}].replicationUser`, name: `${namespace}-replicator` };
}

export interface RefusedCredential {
  setting: string;
  name: string;
  user: string;
  critical: boolean;
  /** When the NetHSM first refused it (ms since the epoch). */
  since: number;
  /** The refusal's message (names the setting, the user and the operation). */
  message: string;
}

export class CredentialHealth {
  readonly #refused = new Map<string, RefusedCredential>();
  readonly #log: Logger;
  readonly #now: () => number;

  constructor(log: Logger, now: () => number = Date.now) {
    this.#log = log;
    this.#now = now;
  }

  /**
   * The observer for the NetHSM pool (`NetHsmClientOptions.onCredential`). Only the root accounts are tracked: a
   * namespace's replication account is absent at a replica until its first sync, so its 401 is no alarm there.
   */
  readonly observe = (credential: CredentialLabel & { user: string }, refused: NetHsmCredentialRefusedError | undefined): void => {
    const root = Object.values(ROOT_CREDENTIALS).find((c) => c.setting === credential.setting);
    if (!root) return;
    const was = this.#refused.get(credential.setting);
    if (refused) {
      if (was) return;
      this.#refused.set(credential.setting, { ...root, user: credential.user, since: this.#now(), message: refused.message });
      this.#log.error({ setting: credential.setting, user: credential.user, code: refused.code, operation: refused.operation }, refused.message);
    } else if (was) {
      this.#refused.delete(credential.setting);
      this.#log.info({ setting: credential.setting, user: credential.user }, 'the NetHSM accepts this credential again');
    }
  };

  /** Every credential the NetHSM refused at its last use, in the order of ROOT_CREDENTIALS. */
  refused(): RefusedCredential[] {
    const order = Object.values(ROOT_CREDENTIALS).map((c) => c.setting);
    return [...this.#refused.values()].sort((a, b) => order.indexOf(a.setting) - order.indexOf(b.setting)).map((r) => ({ ...r }));
  }
}

/** One sentence for status and readiness: `the NetHSM refused the nethsm-admin credential (nethsm.credentials.admin) for user admin`. */
export function describeRefusal(r: Pick<RefusedCredential, 'name' | 'setting' | 'user'>): string {
  return `the NetHSM refused the ${r.name} credential (${r.setting}) for user ${r.user}`;
}

/** How the daemon opens its own NetHSM's backups: named, so a wrong passphrase says which setting to fix. */
export const DEVICE_BACKUP_PASSPHRASE = {
  path: 'replication.backupPassphrase',
  hint:
    "replication.backupPassphrase must be this site's NetHSM backup passphrase (the one set on the device with PUT " +
    '/config/backup-passphrase); fix the secret it names and restart the daemon. `nethsm-replicator check-config` checks it.',
} as const;

/** How the daemon opens snapshots (sealed by the sending site): the group's replication passphrase. */
export const SNAPSHOT_PASSPHRASE = {
  path: 'replication.passphrase',
  hint:
    'replication.passphrase must be the same at every site of the replication group (the sending site sealed the ' +
    'snapshot with its own); fix the secret at the site that differs and restart its daemon. `nethsm-replicator ' +
    'check-config` checks it against each peer.',
} as const;
