/**
 * This site's NetHSM as the replicator uses it: device backups (root Backup account), restores (root Administrator),
 * and the roles of a namespace's users (root Administrator may read them). One backup-or-restore at a time per device:
 * the firmware allows one restore cluster-wide, and a backup taken during a restore would be inconsistent.
 */
import { NetHsmResponseInvalidError } from '../errors.js';
import type { NetHsmClient } from '../nethsm/client.js';
import { Mutex } from '../util/mutex.js';
import { removeFiles } from './workdir.js';

export interface DeviceAccounts {
  /** Root Backup user. */
  backup: NetHsmClient;
  /** Root Administrator. */
  admin: NetHsmClient;
}

export interface NamespaceUsers {
  administrators: string[];
  others: string[];
}

export class Device {
  /** Serialises backups and restores of this device. Callers that need several steps atomically use `exclusive`. */
  readonly lock = new Mutex();

  constructor(
    private readonly accounts: DeviceAccounts,
    /** The device backup passphrase (sent with restores; never logged). */
    private readonly backupPassphrase: string,
  ) {}

  /** Takes a device backup to `file` (0600). Call inside `lock.run` when it must not interleave with a restore. */
  async backupTo(file: string): Promise<number> {
    try {
      return await this.accounts.backup.backupToFile(file);
    } catch (err) {
      await removeFiles(file);
      throw err;
    }
  }

  /** Partial restore of `file` (the device is Operational). Call inside `lock.run`. */
  async restore(file: string): Promise<void> {
    await this.accounts.admin.restore(file, { backupPassphrase: this.backupPassphrase, systemTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') });
  }

  /** The device's state (Operational, Locked, …). */
  state(): Promise<string> {
    return this.accounts.admin.healthState();
  }

  /**
   * The namespace's users by role: which are Administrators (stripped on replicas) and which are not. Read through
   * the API (the daemon cannot read user records inside backups).
   */
  async namespaceUsers(namespace: string): Promise<NamespaceUsers> {
    const prefix = `${namespace}~`;
    const ids = (await this.accounts.admin.listUsers()).filter((u) => u.startsWith(prefix));
    const out: NamespaceUsers = { administrators: [], others: [] };
    for (const id of ids) {
      const user = await this.accounts.admin.getUser(id);
      if (!user || typeof user.role !== 'string') throw new NetHsmResponseInvalidError(`user ${id} has no role in the NetHSM's answer`);
      (user.role === 'Administrator' ? out.administrators : out.others).push(id.slice(prefix.length));
    }
    return out;
  }
}
