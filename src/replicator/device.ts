/**
 * This site's NetHSM as the replicator uses it: device backups (root Backup account), restores (root Administrator),
 * and the roles of a namespace's users (root Administrator may read them).
 *
 * Ordering (docs/concurrency.md): a backup that will be restored, and the restore, run inside an exclusive hold of the
 * site's DeviceBarrier, which the caller takes. Backups taken only to be read (snapshots served to peers) take a shared
 * hold here, so they never overlap a restore. Below the barrier, the backup and restore calls themselves are serialised
 * one at a time (the innermost lock): the firmware allows one restore cluster-wide, and shared backups may overlap.
 */
import { InternalError, NetHsmResponseInvalidError, SyncSourceReplayingError } from '../errors.js';
import type { ChangedKeys } from './changed-keys.js';
import type { NetHsmClient } from '../nethsm/client.js';
import { asDeviceFault, ROOT_ADMINISTRATOR, ROOT_BACKUP } from '../nethsm/device-fault.js';
import type { DeviceBarrier } from '../concurrency/barrier.js';
import type { BackupSource } from '../backup/transform.js';
import { tapBytes, type ByteTap } from '../util/byte-tap.js';
import { Mutex } from '../util/mutex.js';
import { removeFiles, type WorkDir } from './workdir.js';

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

interface SharedBackup {
  file: string;
  /** When the backup was requested: the data is at least this new. */
  takenAt: number;
  /** What `capture` returned just before this backup was requested (e.g. change-log heads): no newer than the data. */
  captured: Readonly<Record<string, number>>;
  ready: Promise<void>;
  /** Joinable while the backup is being taken; a caller after that takes a fresh one. */
  taking: boolean;
  users: number;
  /** What the callers that joined are doing with the file (the starter finishes with them: see withSharedBackup). */
  joiners: Promise<unknown>[];
}

/** Device.backupForReading's optional arguments. */
export interface ReadBackupOptions {
  /** Reads the bytes as they arrive (backupTo's `tap`). */
  tap?: ByteTap<unknown>;
  /** Runs once the shared hold is granted, before the device is asked; a throw abandons the backup. */
  admitted?: () => void;
  /** The daemon stopping: cuts the wait for the shared hold, then as backupTo's `signal`. */
  signal?: AbortSignal;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

/**
 * What a merge-restore vouches for within its namespaces (changed-keys.ts): the keys it may change (per namespace, or
 * 'all'), and `since`, the certificate table's mark taken before the backup its merge started from. Every other key of
 * those namespaces holds the same stored write after it as in that backup.
 */
export interface RestoredKeys {
  changed: ChangedKeys;
  since: number;
}

export class Device {
  /** Serialises the backup and restore calls themselves (innermost lock). */
  readonly #io = new Mutex();
  #shared: SharedBackup | undefined;

  constructor(
    private readonly accounts: DeviceAccounts,
    /** The site's device barrier (shared for read-only backups). */
    readonly barrier: DeviceBarrier,
    /** The device backup passphrase (sent with restores; never logged). */
    private readonly backupPassphrase: string,
    /** Called for every device backup taken (metrics). */
    private readonly onBackup: () => void = () => undefined,
    /**
     * Called before and after every restore (whatever its outcome) with the namespaces the restore can change, or
     * undefined when its effect is not bounded to known namespaces, and the restore's `certs` when it has them: what
     * the site knows of those keys (the certificate table, key-certs-repo.ts) is dropped on both sides of it.
     */
    private readonly onRestore: (namespaces?: readonly string[], certs?: RestoredKeys) => void = () => undefined,
  ) {}

  /**
   * Takes a device backup to `file` (0600). A backup that will be restored must be taken inside the caller's exclusive
   * barrier hold; `backupForReading` is the form for backups only read. With `tap`, its reader reads the bytes as they
   * arrive (a merge or extract overlapping the device's work); the call waits for it too, and its failure is the
   * backup's (the file is removed). `signal` (the daemon stopping; only for a backup read before any device write of
   * its step): aborting it cuts the backup, or its wait for its turn at the device (behind another backup or a
   * restore), and it is never asked for after; the call then rejects with `signal.reason` as it is (never a device
   * fault: nothing blames the device for it), the file removed and the tap's reader failed.
   */
  async backupTo(file: string, tap?: ByteTap<unknown>, signal?: AbortSignal): Promise<number> {
    try {
      return await this.#io.run(async () => {
        // Its turn may come in the same moment as the stop: the device is not asked.
        signal?.throwIfAborted();
        this.onBackup();
        return await this.accounts.backup.backupToFile(file, tap, signal);
      }, signal);
    } catch (err) {
      await removeFiles(file);
      if (signal?.aborted && err === signal.reason) {
        tap?.fail(err);
        throw err;
      }
      throw asDeviceFault(err, ROOT_BACKUP);
    }
  }

  /**
   * A backup only to be read (served to a peer, extracted): a shared barrier hold, so it never overlaps a restore.
   * Options as ReadBackupOptions says. The signal cuts the wait for the hold too (behind an exclusive hold: a restore,
   * an administrator step): the backup is then never asked for, and the call rejects with `signal.reason`. A cut
   * backup releases its hold as any failure does; whatever fails it fails the tap's reader too.
   */
  async backupForReading(file: string, options: ReadBackupOptions = {}): Promise<number> {
    const { tap, admitted, signal } = options;
    try {
      return await this.barrier.shared(
        () => {
          admitted?.();
          return this.backupTo(file, tap, signal);
        },
        { wait: 'unbounded', readOnly: true, ...(signal ? { signal } : {}) },
      );
    } catch (err) {
      // A backup that never started (its wait given up, `admitted` threw) leaves a reader waiting for bytes otherwise.
      tap?.fail(err);
      throw err;
    }
  }

  /**
   * Runs `fn` on a device backup, for readers that only extract from it (snapshots). Callers that arrive while a backup
   * is being taken share it: replicas pulling several namespaces at the same cron tick cost the device one backup,
   * not one each (on a device with millions of keys, minutes and gigabytes each). A caller arriving after the backup
   * finished takes a fresh one. `capture` runs just before a new backup is requested and its result goes to every
   * caller of that backup: a joiner must use it (not what it read itself, which may be newer than the backup) for
   * anything the backup is to reflect, such as a change-log position. The file is removed after the last user.
   * `fn` gets the backup as a file path, except the caller whose request started the backup: it reads the bytes as
   * they arrive (`source` is then a byte stream), so its extract overlaps the device's work; its own failure fails it
   * alone, the backup goes on for the others; it answers once the callers that joined are done too. Throws the
   * backup's error to every caller sharing it. `signal` (the daemon stopping): a backup this call starts is cut when
   * it aborts (backupTo), failing every caller sharing it with its reason; a backup joined keeps the signal of the
   * call that started it (one daemon passes one stop signal everywhere). Not used inside an exclusive hold (the
   * demote hand-off's backup is part of a step the stop lets end).
   */
  async withSharedBackup<T>(
    work: WorkDir,
    capture: () => Readonly<Record<string, number>>,
    fn: (source: BackupSource, takenAt: number, captured: Readonly<Record<string, number>>) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    // Inside an exclusive hold (the demote hand-off) the backup is the holder's own: a shared one still waiting for
    // admission waits for this very hold, so joining it would deadlock, and nobody may join one taken in here.
    if (this.barrier.insideExclusive) return this.#privateBackup(work, capture, fn);
    let s = this.#shared;
    let mine: Promise<Settled<T>> | undefined;
    if (!s || !s.taking) {
      const file = work.temp('device-shared');
      // Captured before the backup is requested, so a joiner gets positions the backup is sure to contain.
      const captured = capture();
      const fresh: SharedBackup = { file, takenAt: Date.now(), captured, ready: Promise.resolve(), taking: true, users: 0, joiners: [] };
      // The reader settles instead of failing: a failure of its own then stops only its reading, not the backup.
      const tap = tapBytes((bytes) => settle(fn(bytes, fresh.takenAt, captured)));
      mine = tap.result;
      // A restore may run between the capture and the backup's admission. If it erased changes the capture claims and
      // left them to a pending re-apply, the positions now read lower (failover.ts `heads`): the backup would lack
      // them, so it is not taken (no restore can run while the hold is held, so the check holds for the backup).
      const stillThere = () => {
        const now = capture();
        const gone = Object.entries(captured).filter(([ns, seq]) => (now[ns] ?? 0) < seq);
        if (gone.length > 0) {
          const [ns, seq] = gone[0]!;
          const err = new SyncSourceReplayingError(`namespace ${ns}: changes up to ${seq} were erased by a restore here and are not re-applied yet (now ${now[ns] ?? 0}); no snapshot is served until they are`, { namespace: ns });
          // The reader was started with the tap: it fails with it (the backup never started).
          tap.fail(err);
          throw err;
        }
      };
      fresh.ready = this.backupForReading(file, { tap, admitted: stillThere, signal }).then(
        () => void (fresh.taking = false),
        (err: unknown) => {
          fresh.taking = false;
          throw err;
        },
      );
      this.#shared = s = fresh;
    }
    const shared = s;
    shared.users++;
    try {
      if (mine) {
        await shared.ready;
        const r = await mine;
        // Snapshots requested together are answered together, as when all read the finished file: a replica
        // coalesces the syncs whose snapshots arrive together into one merge-restore (daemon/apply-batch.ts).
        await Promise.allSettled(shared.joiners);
        if (!r.ok) throw r.error;
        return r.value;
      }
      const joined = shared.ready.then(() => fn(shared.file, shared.takenAt, shared.captured));
      shared.joiners.push(joined);
      return await joined;
    } finally {
      if (--shared.users === 0) {
        if (this.#shared === shared && !shared.taking) this.#shared = undefined;
        await removeFiles(shared.file);
      }
    }
  }

  /** withSharedBackup's form inside an exclusive hold: a backup of its own, removed after `fn`. */
  async #privateBackup<T>(
    work: WorkDir,
    capture: () => Readonly<Record<string, number>>,
    fn: (source: BackupSource, takenAt: number, captured: Readonly<Record<string, number>>) => Promise<T>,
  ): Promise<T> {
    const file = work.temp('device-own');
    const captured = capture();
    const takenAt = Date.now();
    try {
      await this.backupTo(file);
      return await fn(file, takenAt, captured);
    } finally {
      await removeFiles(file);
    }
  }

  /**
   * Partial restore of `file` (the device is Operational). Call inside an exclusive barrier hold. `namespaces`: the
   * only namespaces the restore can change, which the caller vouches for (a merge-restore: everything else in the file
   * is what the device holds, and no write passed the barrier outside them since); omitted: it may change anything.
   * `certs` (with `namespaces`): within them, the keys it may change and the certificate table's mark taken before
   * the backup the merge started from (RestoredKeys); omitted: it may change any key of them.
   */
  async restore(file: string, namespaces?: readonly string[], certs?: RestoredKeys): Promise<void> {
    if (certs && !namespaces) throw new InternalError('a restore names the keys it may change only within the namespaces it names');
    this.onRestore(namespaces, certs);
    try {
      await this.#io.run(() =>
        this.accounts.admin
          .restore(file, { backupPassphrase: this.backupPassphrase, systemTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') })
          .catch((err: unknown) => Promise.reject(asDeviceFault(err, ROOT_ADMINISTRATOR))),
      );
    } finally {
      this.onRestore(namespaces, certs);
    }
  }

  /** The device's state (Operational, Locked, …). */
  state(): Promise<string> {
    return this.accounts.admin.healthState();
  }

  /**
   * The namespace's users by role: which are Administrators (stripped on replicas) and which are not. Read through
   * the API (the daemon cannot read user records inside backups). A 412 or 401/403 is thrown as its cause
   * (device-fault.ts), as for backups and restores.
   */
  async namespaceUsers(namespace: string): Promise<NamespaceUsers> {
    try {
      return await this.#namespaceUsers(namespace);
    } catch (err) {
      throw asDeviceFault(err, ROOT_ADMINISTRATOR);
    }
  }

  /** Whether the device has `namespace` (root Administrator lists them); device faults as namespaceUsers'. */
  async hasNamespace(namespace: string): Promise<boolean> {
    try {
      return (await this.accounts.admin.listNamespaces()).includes(namespace);
    } catch (err) {
      throw asDeviceFault(err, ROOT_ADMINISTRATOR);
    }
  }

  async #namespaceUsers(namespace: string): Promise<NamespaceUsers> {
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
