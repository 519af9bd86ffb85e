/**
 * The daemon's files under the state directory. Everything here is encrypted under a backup or replication
 * passphrase (device backups, namespace backups); no plaintext key material is ever written. The one exception holds
 * no secret: an anti-entropy pass's per-key digests of public key data (CompactInventory), unlinked as soon as opened.
 *
 *   work/        transient device backups and merged files of a sync in progress (cleared at start); the unlinked
 *                digests' file of an anti-entropy pass
 *   snapshots/   the last namespace snapshot applied per namespace (promote puts its administrators back from it)
 *   handoff/     the final snapshot a demoting primary serves to its successor
 *   kept/        pre-restore device backups kept because a verification failed (operator evidence)
 *   quarantine/  what a fenced former primary held of a namespace when it learned of a higher epoch
 *                (`<ns>-epoch<e>-<time>.nsbackup`), and what was written straight to a replica's device that a
 *                snapshot's restore was about to remove (`<ns>-foreign-epoch<e>-seq<s>-<time>.nsbackup`)
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

export class WorkDir {
  readonly work: string;
  readonly snapshots: string;
  readonly handoff: string;
  readonly kept: string;
  readonly quarantine: string;

  constructor(readonly stateDir: string) {
    this.work = path.join(stateDir, 'work');
    this.snapshots = path.join(stateDir, 'snapshots');
    this.handoff = path.join(stateDir, 'handoff');
    this.kept = path.join(stateDir, 'kept');
    this.quarantine = path.join(stateDir, 'quarantine');
  }

  /** Creates the folders (0700) and clears `work/` of what an interrupted run left. Idempotent. */
  async prepare(): Promise<void> {
    for (const d of [this.work, this.snapshots, this.handoff, this.kept, this.quarantine]) await mkdir(d, { recursive: true, mode: 0o700 });
    for (const f of await readdir(this.work)) await rm(path.join(this.work, f), { force: true, recursive: true });
  }

  /** A fresh path in `work/` (the file does not exist yet). */
  temp(label: string): string {
    return path.join(this.work, `${label}-${Date.now()}-${randomBytes(4).toString('hex')}.bin`);
  }

  /** Written by init-replica: the namespaces the device received from the primary's full backup. */
  get bootstrapFile(): string {
    return path.join(this.stateDir, 'bootstrap.json');
  }

  /**
   * Whether init-replica put `namespace` on this device (so its first sync adopts it rather than refusing it as a
   * namespace of unknown origin). A missing or unreadable file means no.
   */
  isBootstrapped(namespace: string): boolean {
    const ns = this.readBootstrap()?.namespaces;
    return Array.isArray(ns) && ns.includes(namespace);
  }

  /**
   * Records the namespaces a full restore of a primary's backup put on this device (init-replica), so their first
   * sync adopts them. Creates the state directory (0700) if needed. Overwrites an earlier record.
   */
  async recordBootstrap(namespaces: readonly string[], sourceDeviceId: string | undefined): Promise<void> {
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    const record = { namespaces: [...namespaces].sort(), sourceDeviceId: sourceDeviceId ?? null, at: new Date().toISOString() };
    await this.writeBootstrap(record);
  }

  /** True once after init-replica: the device still holds the primary's transport key (see TransportKey.replaceInherited). */
  inheritedTransportKeyPending(): boolean {
    const r = this.readBootstrap();
    return r !== undefined && r.transportKeyReplaced !== true;
  }

  /** Records that the inherited transport key was replaced. */
  async markTransportKeyReplaced(): Promise<void> {
    const r = this.readBootstrap();
    if (r === undefined) return;
    await this.writeBootstrap({ ...r, transportKeyReplaced: true });
  }

  /** Atomic (temporary file, then rename): a concurrent reader sees the old record or the new one, never a torn one. */
  private async writeBootstrap(record: Record<string, unknown>): Promise<void> {
    const tmp = `${this.bootstrapFile}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify(record, null, 2) + '\n', { mode: 0o600 });
      await rename(tmp, this.bootstrapFile);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  private readBootstrap(): Record<string, unknown> | undefined {
    try {
      const data: unknown = JSON.parse(readFileSync(this.bootstrapFile, 'utf8'));
      return data !== null && typeof data === 'object' && !Array.isArray(data) ? (data as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }

  snapshotOf(namespace: string): string {
    return path.join(this.snapshots, `${namespace}.nsbackup`);
  }

  handoffOf(namespace: string): string {
    return path.join(this.handoff, `${namespace}.nsbackup`);
  }

  keptPath(namespace: string): string {
    return path.join(this.kept, `${namespace}-pre-restore-${timestamp()}.bin`);
  }

  quarantinePath(namespace: string, epoch: number): string {
    return path.join(this.quarantine, `${namespace}-epoch${epoch}-${timestamp()}.nsbackup`);
  }

  /**
   * The quarantine files present now: regular files (not symlinks, not directories) whose names pass
   * {@link quarantineFileNameProblem}, sorted by name. Synchronous: `status` and the metrics scrape call it; the folder
   * holds a handful of files. A missing folder holds none.
   */
  quarantineFiles(): string[] {
    let entries;
    try {
      entries = readdirSync(this.quarantine, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return entries.filter((e) => e.isFile() && quarantineFileNameProblem(e.name) === undefined).map((e) => e.name).sort();
  }

  /** Foreign writes at this replica, saved before the restore of the snapshot at (`epoch`, `seq`) removed them. */
  foreignQuarantinePath(namespace: string, epoch: number, seq: number): string {
    return path.join(this.quarantine, `${namespace}-foreign-epoch${epoch}-seq${seq}-${timestamp()}.nsbackup`);
  }
}

const QUARANTINE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*\.nsbackup$/;

/**
 * Why `name` cannot be a quarantine file's name, or undefined when it can: a bare file name (no directory part, so no
 * path can leave `quarantine/`) as the daemon writes them: letters, digits, `.`, `_`, `-`, starting with a letter or
 * digit, ending in `.nsbackup`, at most 255 characters. Never throws.
 */
export function quarantineFileNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  if (name.length > 255) return 'is longer than 255 characters';
  if (/[/\\\0]/.test(name)) return 'is a path; give the file name only, as `quarantine list` shows it';
  if (!QUARANTINE_NAME.test(name)) return 'is not a quarantine file name (letters, digits, . _ -, starting with a letter or digit, ending in .nsbackup)';
  return undefined;
}

/**
 * The namespace a quarantine file belongs to, from its name (`<ns>-epoch…` for a fence, `<ns>-foreign-epoch…` for
 * foreign writes): the longest of `namespaces` that fits, or undefined. Namespace ids may contain `-`, so the name
 * alone is ambiguous; the configured namespaces decide.
 */
export function quarantineNamespaceOf(file: string, namespaces: readonly string[]): string | undefined {
  const fits = namespaces.filter((ns) => file.startsWith(`${ns}-epoch`) || file.startsWith(`${ns}-foreign-epoch`));
  return fits.sort((a, b) => b.length - a.length)[0];
}

/** Removes files, ignoring those already gone. */
export async function removeFiles(...files: (string | undefined)[]): Promise<void> {
  await Promise.all(files.filter((f): f is string => !!f).map((f) => unlink(f).catch(() => undefined)));
}

function timestamp(): string {
  return new Date().toISOString().replace(/[:.]/g, '-');
}
