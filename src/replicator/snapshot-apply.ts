/**
 * The replica's side of snapshot replication: write one namespace into this site's device without losing anything
 * else on it. A NetHSM restore replaces the whole store, so (docs/concurrency.md, "Snapshot sync"):
 *   1. mark the barrier's write generation, back the device up (B1) under a read-only SHARED hold, and merge OUTSIDE
 *      any exclusive hold: B1's entries outside the namespace + the snapshot's namespace entries, less the namespace's
 *      Administrators (read-only replica; the replication account stays). The same pass lists the namespace's keys
 *      and users the restore will remove, for the foreign-writes check. The merge reads B1 as the device sends it
 *      (a tap on the download; the file is written whole all the same), while the snapshots are still being
 *      checked, and passes B1's entries through as sealed (same key and salt); each key is derived once per apply.
 *      A B1 taken while the snapshots downloaded (applySnapshots' `early`, early-backup.ts: its tracker opened before
 *      it, as the mark here) replaces the first attempt's: the merge then reads its file;
 *   2. take the EXCLUSIVE hold (the caller's `hold`: barrier, then the namespace's lock). If no write outside the
 *      namespace passed the barrier since the mark (none in flight at it either; writes scoped to the namespace itself
 *      are replaced by the restore anyway), B1 is still what the device holds outside it: check the fencing
 *      tokens, save foreign writes (foreign.ts) from B1 to a quarantine file — or, on a first sync with
 *      `onExisting: 'remove'`, the whole namespace to kept/ — and restore. The hold is the restore and nothing else;
 *   2b. if writes raced but every one can be made good after the restore (`raceReplay`, race-replay.ts: changes logged
 *      here as primary, stream applies of other namespaces, writes that changed nothing), record that durably, restore
 *      the merge all the same, fix what the re-apply covers (`restored`), and re-apply them right AFTER the hold,
 *      under a shared hold, before this apply returns (docs/concurrency.md, "Racing writes re-applied"): the hold is
 *      the restore, and meanwhile the gateway holds only writes that could meet a re-applied one;
 *   3. if writes raced otherwise, leave the hold and redo 1–2 (at most `maxRemerges` times, and not at all once an attempt saw
 *      HOPELESS_RACE_WRITES or more: the next would race too); as a last resort do it inside the hold: B1 with the
 *      merge reading it as it arrives, save, restore — nothing that passes the barrier writes there, so B1 is current
 *      for every daemon write. With `directWriters` (writers that bypass the barrier) a B2 re-check comes before the
 *      save (SyncRaceError when they keep racing). `onHeldMerge` reports it (metric, log);
 *   4. after the hold, back up again (B3, shared) and verify in one pass: B3 equals the merged file (every entry
 *      outside the namespace as in B1, the namespace as merged), less the namespaces written since the restore (the
 *      barrier knows them); an unscoped write since skips verification, reported (`onVerifySkipped`). A failed
 *      verification keeps B1 (path logged) and throws SyncVerifyFailedError.
 * Writes made straight to the NetHSM (not through this daemon) between B1 and the restore are invisible to the
 * barrier and are lost in the common path: the window is documented (docs/concurrency.md).
 * applySnapshots does the same for several namespaces at once (docs/concurrency.md, "Coalesced syncs"): one B1, one
 * merged file, one hold and restore, one verification; "the namespace" above is then each of them, and writes within
 * any of them need no new merge.
 */
import { rename } from 'node:fs/promises';
import { listBackupContents, verifyManifest, type BackupContents } from '../backup/contents.js';
import { extractNamespace } from '../backup/namespace.js';
import { KeyCache } from '../backup/key-cache.js';
import { classifyPath, isNamespacePath } from '../backup/paths.js';
import type { ScryptParams } from '../backup/format.js';
import type { BackupReader, OpenBackupOptions } from '../backup/reader.js';
import { closeAll, openSource, type BackupSource } from '../backup/transform.js';
import { SyncNamespaceExistsError, SyncRaceError, SyncVerifyFailedError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { diffEntries, isEmptyDiff, type BackupDiff, type DiffKind } from './compare.js';
import type { ExclusiveGuard, TrackedWrite, WriteMark, WriteTracker } from '../concurrency/barrier.js';
import { planReplay, replayedNamespaces, type RaceReplayer, type ReplayOutcome, type ReplayPlan } from './race-replay.js';
import type { Device } from './device.js';
import { foreignAmong, quarantineForeign, recordFromSnapshot, type ForeignEntries, type ForeignQuarantine } from './foreign.js';
import { isUserOf, rewriteBackup } from './rewrite.js';
import { ChangedKeysCollector, type ChangedKeys } from './changed-keys.js';
import type { Resealer } from '../backup/resealer.js';
import { snapshotMetaOf, type SnapshotMeta } from './snapshot-meta.js';
import { removeFiles, type WorkDir } from './workdir.js';
import { tapBytes, type ByteTap } from '../util/byte-tap.js';
import type { EarlyBackup } from './early-backup.js';
import type { DeviceCallTiming } from './cost-model.js';

/**
 * Takes the exclusive device hold (and whatever locks go with it) and runs `fn` inside it. `namespaces`: the ones the
 * restore changes (the hold's scopes; a coalesced apply passes several, in sorted order).
 */
export type ExclusiveHold = <T>(fn: (guard: ExclusiveGuard) => Promise<T>, namespaces?: readonly string[]) => Promise<T>;

/** Where a sync stands, for tests and progress: each phase is reported as it starts. */
export type ApplyPhase = 'backup' | 'merge' | 'hold' | 'restore' | 'replay' | 'verify';

export interface ApplyDeps {
  device: Device;
  work: WorkDir;
  deviceOpen: OpenBackupOptions;
  /** How snapshots open (the replication passphrase). */
  snapshotOpen: OpenBackupOptions;
  /** A running thread the merge re-seals the snapshots' entries on (the daemon's); absent: the merge starts its own when it is large. */
  resealer?: Resealer;
  /** The namespace's replication account id (without `<ns>~`): kept on the replica. */
  replicationUserId: string;
  /**
   * Takes the exclusive hold around the restore; its guard is checked right before the restore (a stale token
   * abandons the apply). Pass the namespaces as the hold's scopes (ExclusiveOptions). Default: the device's barrier,
   * no tokens, scoped to the namespaces.
   */
  hold?: ExclusiveHold;
  /** Runs inside the exclusive hold right after a successful restore (the caller records the position there). */
  afterRestore?: (r: RestoredSnapshot) => void;
  logger?: Logger;
  /**
   * How many times to back up and merge again outside the hold when writes raced (default 2); then inside it. -1: no
   * attempt outside the hold (writers around the daemon: only the held sequence's re-check sees them).
   */
  maxRemerges?: number;
  /** How many times the last-resort sequence merges again when writers bypassing the barrier race B2 (default 3). */
  maxRechecks?: number;
  /**
   * Whether clients write to this device around the daemon (`replication.directWriters`). Only they can change the
   * device inside the exclusive hold, so only then does the held sequence take a second backup (B2) to re-check its
   * B1 before restoring. Default true (the safe side); the daemon passes its configuration's value.
   */
  directWriters?: boolean;
  /**
   * Makes good, after the restore, the writes that raced an attempt outside the hold (race-replay.ts), so that attempt
   * is restored instead of merged again. Absent: every racing write means a new merge, as without it.
   */
  raceReplay?: RaceReplayer;
  /**
   * Called after an attempt restored its merge and ran the replay of its racing writes (metric), with how many raced and
   * what the replay did: a namespace in `outcome.left` was not re-applied by it (abandoned, or ended by another hold).
   */
  onRaceReplayed?: (namespaces: readonly string[], plan: ReplayPlan, outcome: ReplayOutcome) => void;
  /**
   * The daemon stopping: cuts the backups taken before the restore (B1, and inside the hold B1 and B2 of the last
   * resort), which then reject with `signal.reason` and leave the device as it was; and the wait for the exclusive
   * hold when the default `hold` is used (a `hold` given by the caller takes its own: the daemon's passes the same
   * signal). Nothing from the restore on is cut: not the restore, not the log replay after it, not the verification's
   * B3 (a restore is never left half done, and its check is what says it was not).
   */
  signal?: AbortSignal;
  /** Test seam: runs after B1 is merged and before the exclusive hold is requested (a test writes here). */
  beforeHold?: () => Promise<void>;
  /** Test seam (last resort only): runs after B1 is merged and before B2 is taken. */
  beforeRecheck?: () => Promise<void>;
  /** Called as each phase starts (tests assert where the hold is; progress). */
  onPhase?: (phase: ApplyPhase) => void;
  /** Called when the first attempt uses a B1 taken while the snapshots downloaded (applySnapshots' `early`): its timing (cost model). */
  onEarlyBackup?: (timing: DeviceCallTiming) => void;
  /**
   * Called when the merge fell back to running inside the exclusive hold (metric, status; the log says why), with the
   * namespaces still in the batch, how many attempts outside the hold writes raced (0: it went there at once) and how
   * many writes outside the batch raced the last of them (0 when none was made).
   */
  onHeldMerge?: (namespaces: readonly string[], attempts: number, writes: number) => void;
  /** Called when verification was skipped because writes kept passing the barrier after the restore (metric), with the namespaces restored. */
  onVerifySkipped?: (namespaces: readonly string[]) => void;
  /**
   * Given: the verification (B3 and its comparison) is not awaited; applySnapshot returns once the restore is done and
   * hands it here to run after (it resolves like `verified`, or throws SyncVerifyFailedError, and removes the
   * temporary files either way). The caller must keep the next merge-restore of this namespace waiting for it.
   */
  deferVerify?: (verify: () => Promise<boolean>) => void;
  /** Test seam: runs after the restore and before the check backup (B3) is taken. */
  beforeVerify?: () => Promise<void>;
  /**
   * Called once per merge-restore with the number of entries lost outside its namespaces when verification fails
   * (metrics), and those namespaces (sorted).
   */
  onForeignLoss?: (lost: number, namespaces: readonly string[]) => void;
  /**
   * Opens a watch on the certificate table for the apply (its start to its end, the verification not included): the
   * table's mark now, and the end of the watch. Given, the restore tells the device which keys it may change and since
   * when (Device.restore `certs`), so the table forgets those, and any key written since the mark, instead of the
   * batch's namespaces whole (key-certs-repo.ts `forgetRestored`). Absent: the namespaces are forgotten whole.
   */
  watchCerts?: () => { since: number; end: () => void };
  /**
   * Called when verification finds an entry of the batch's namespaces not as merged (before SyncVerifyFailedError): the
   * keys the table kept as unchanged may not be, so the daemon forgets the namespaces whole.
   */
  onVerifyMismatch?: (namespaces: readonly string[]) => void;
  /** This site's name, for a quarantine file's meta. */
  site?: string;
  /** Whether a stream change this site applied or logged names this key id of the namespace (then it is not foreign). */
  knownKey?: (keyId: string) => boolean;
  /** Namespace backups (opened like snapshots) that already saved entries of the namespace, e.g. the fence's quarantine. */
  savedFiles?: readonly string[];
  /** Passphrase of quarantine files. Default: the snapshots' (`snapshotOpen`), i.e. the replication passphrase. */
  quarantineOut?: { passphrase: string | Buffer; scrypt?: ScryptParams };
  /** Called once foreign entries are saved, before the restore (audit row, metric); a throw abandons the restore. */
  onQuarantined?: (q: ForeignQuarantine) => void;
}

/** The deps that belong to one namespace; a coalesced apply takes them per part. */
type PartDeps = 'replicationUserId' | 'afterRestore' | 'knownKey' | 'savedFiles' | 'onQuarantined';

/** What a coalesced apply shares between its namespaces (the device, the hold, the phases, the verification). */
export type SharedApplyDeps = Omit<ApplyDeps, PartDeps>;

/** One namespace of a coalesced merge-restore (applySnapshots). */
export interface ApplyPart extends Pick<ApplyDeps, PartDeps> {
  namespace: string;
  /** Its verified snapshot file; moved to `snapshots/<ns>.nsbackup` once restored. */
  snapshotFile: string;
  options?: ApplyOptions;
  /**
   * Re-checks what the part was decided under (its fencing token) inside the hold, before anything is saved or
   * restored; a throw drops the part (the throw is its outcome) and the others merge again without it.
   */
  check?: () => void;
  /**
   * What a paths-only check of `snapshotFile`'s bytes found as they downloaded (snapshot-check.ts): a lone part uses
   * it instead of reading its file again; a part of a coalesced apply still reads its file whole (its damage must
   * drop it alone, before the merge).
   */
  opened?: BackupContents;
}

/** A part's outcome: its result, or why it dropped out of the batch (the others went on). */
export type PartOutcome = { ok: true; result: ApplyResult } | { ok: false; error: unknown };

export interface ApplyOptions {
  /** First sync of this namespace at this site: refuse (default) or replace a namespace the device already holds. */
  onExisting?: 'refuse' | 'remove' | 'adopt';
}

export interface ApplyResult {
  meta: SnapshotMeta;
  /** Times the backup and merge were redone because writes raced (outside the hold, then inside it). */
  remerges: number;
  /** Whether the merge ran inside the exclusive hold (last resort: writes kept racing). */
  heldMerge: boolean;
  /**
   * Whether the restore was verified (false: writes that may touch anything passed the barrier after it; reported),
   * or `deferred`: handed to `deferVerify`.
   */
  verified: boolean | 'deferred';
  namespaceEntries: number;
  /** Administrators left out on this replica. */
  strippedAdministrators: string[];
  /** Where the device's previous copy of the namespace was saved (`onExisting: 'remove'`). */
  savedExisting?: string;
  /** Foreign writes the restore removed, and the quarantine file that holds them. */
  quarantined?: ForeignQuarantine;
  /** The namespaces restored together with this one in one coalesced merge-restore (sorted; this one among them). */
  batch: string[];
}

/** What `afterRestore` learns: the result less what only verification tells. */
export type RestoredSnapshot = Omit<ApplyResult, 'verified'>;

/** One namespace in an apply: its part, what its snapshot says, and whether its restore replaces the device's copy. */
interface Part {
  spec: ApplyPart;
  meta: SnapshotMeta;
  stripped: string[];
  namespaceEntries: number;
}

/** One merge: the device backup it came from, the merged file, and per namespace what the restore removes. */
interface Merged {
  base: string;
  merged: string;
  parts: Part[];
  /** Namespaces whose whole copy the restore replaces (`onExisting: 'remove'`). */
  replacing: Set<string>;
  /** Per namespace, the foreign entries among those the restore removes (none when replacing the whole namespace). */
  foreign: Map<string, ForeignEntries>;
  /** Per namespace, the keys the restore may change (what the certificate table forgets for it). */
  changedKeys: ChangedKeys;
}

interface Apply {
  deps: SharedApplyDeps;
  /** The parts still in the batch (a dropped one leaves, with its outcome in `dropped`). */
  parts: Part[];
  dropped: Map<string, unknown>;
  /**
   * Per namespace, the quarantine files this apply already wrote (a later merge's foreign-writes check counts their
   * entries as saved, so a merge redone after a part dropped out inside the hold writes no second copy), the last one's
   * result reported.
   */
  quarantined: Map<string, ForeignQuarantine[]>;
  log: Logger;
  temp: (label: string) => string;
  /** Makes `file` one of the apply's temporary files (removed at its end, or handed to the verification). */
  adopt: (file: string) => void;
  /**
   * Until it settles, the parts' snapshots are still being opened (`parts` then fills; a failure of the only part
   * rejects it): the first backup starts meanwhile and its merge waits for it.
   */
  opening?: Promise<void>;
  /** Whether the merge reads B1 as it arrives (no part's first sync reads the device's copy before merging). */
  tapMerge: boolean;
  /** B1 taken while the snapshots downloaded (early-backup.ts), for the first attempt; taken off once it starts. */
  early?: EarlyBackup;
  /** The certificate table's mark at the apply's start (`watchCerts`), before any backup of it was taken. */
  certsSince?: number;
}

/**
 * Applies a verified snapshot file of `namespace`: the one-namespace case of applySnapshots. On success the snapshot
 * is moved to `snapshots/<ns>.nsbackup`. Throws the codec's errors for a bad snapshot (nothing touched),
 * SyncNamespaceExistsError, SyncRaceError (last resort only), SyncQuarantineFailedError (foreign entries could not be
 * saved; nothing restored), SyncVerifyFailedError (after the restore and `afterRestore`), what `hold` throws
 * (FenceTokenStaleError, a drain timeout: nothing restored), and the client's errors. Before the restore nothing on the
 * device has changed; a failed restore leaves it as it was (the NetHSM applies a restore file only once fully read and
 * authenticated).
 */
export async function applySnapshot(deps: ApplyDeps, namespace: string, snapshotFile: string, options: ApplyOptions = {}): Promise<ApplyResult> {
  const { replicationUserId, afterRestore, knownKey, savedFiles, onQuarantined, ...shared } = deps;
  const part: ApplyPart = {
    namespace,
    snapshotFile,
    options,
    replicationUserId,
    ...(afterRestore ? { afterRestore } : {}),
    ...(knownKey ? { knownKey } : {}),
    ...(savedFiles ? { savedFiles } : {}),
    ...(onQuarantined ? { onQuarantined } : {}),
  };
  const out = (await applySnapshots(shared, [part])).get(namespace)!;
  if (!out.ok) throw out.error;
  return out.result;
}

/**
 * Applies several namespaces' snapshots in ONE merge-restore (docs/concurrency.md, "Coalesced syncs"): one B1, one
 * merged file (each namespace's entries from its own snapshot less its administrators, everything else from B1), one
 * exclusive hold and restore, one verification. A part whose snapshot does not open, whose first sync is refused, or
 * whose `check` throws drops out with that error as its outcome; the others go on. What fails the device step
 * (the client's errors, SyncRaceError, SyncQuarantineFailedError, SyncVerifyFailedError, what `hold` throws) fails
 * every part still in the batch: it is thrown. Namespaces must be distinct.
 */
export async function applySnapshots(deps: SharedApplyDeps, specs: readonly ApplyPart[], early?: EarlyBackup): Promise<Map<string, PartOutcome>> {
  // One derivation per salt for the whole apply, its verification included: the device's backups (B1, the merged
  // file, B3) share one salt, and each snapshot is opened twice. Zeroed when the apply (or its verification) ends.
  const device = new KeyCache();
  const snapshots = new KeyCache();
  const clear = () => {
    device.clear();
    snapshots.clear();
  };
  let verifyLater = false;
  const { deferVerify } = deps;
  const cached: SharedApplyDeps = {
    ...deps,
    deviceOpen: { ...deps.deviceOpen, keyCache: deps.deviceOpen.keyCache ?? device },
    snapshotOpen: { ...deps.snapshotOpen, keyCache: deps.snapshotOpen.keyCache ?? snapshots },
    ...(deferVerify
      ? {
          deferVerify: (verify) => {
            verifyLater = true;
            deferVerify(() => verify().finally(clear));
          },
        }
      : {}),
  };
  try {
    return await applyWithKeys(cached, specs, early);
  } finally {
    if (!verifyLater) clear();
  }
}

/**
 * `early` (B1 taken while the snapshots downloaded): the first attempt merges it from its file instead of taking B1;
 * owned here from the start (used, or discarded: a first sync that reads the device's copy before merging, the held
 * sequence at once). Its timing goes to `onEarlyBackup` when used.
 */
async function applyWithKeys(deps: SharedApplyDeps, specs: readonly ApplyPart[], early?: EarlyBackup): Promise<Map<string, PartOutcome>> {
  const temps: string[] = [];
  const a: Apply = {
    deps,
    parts: [],
    dropped: new Map(),
    quarantined: new Map(),
    log: deps.logger ?? silentLogger,
    temp: (label) => {
      const t = deps.work.temp(label);
      temps.push(t);
      return t;
    },
    adopt: (file) => temps.push(file),
    tapMerge: specs.every((spec) => !checksExisting(spec.options ?? {})),
  };
  // Opened before any backup this apply merges; an early B1 opened its own before it started (the earlier mark: keys
  // written since either are forgotten, so the earlier one covers both).
  const certs = deps.watchCerts?.();
  if (certs) a.certsSince = early?.certsSince ?? certs.since;
  // A first sync that must look at the device's copy first keeps its own path (B1 after the snapshot is in).
  if (early && a.tapMerge && (deps.maxRemerges ?? 2) >= 0) a.early = early;
  const single = specs.length === 1;
  // Opened side by side (each snapshot's key derivation runs on its own, off the event loop), and while B1 starts:
  // the merge reading B1 opens it (the device's key) meanwhile and waits for them before it merges.
  const sorted = [...specs].sort((x, y) => (x.namespace < y.namespace ? -1 : 1));
  a.opening = Promise.allSettled(sorted.map((spec) => openPart(deps, spec, single))).then((opened) => {
    opened.forEach((o, i) => {
      if (o.status === 'fulfilled') a.parts.push(o.value);
      else if (single) throw o.reason;
      else drop(a, sorted[i]!.namespace, o.reason);
    });
  });
  a.opening.catch(() => undefined);
  const hold: ExclusiveHold =
    deps.hold ?? ((fn, ns) => deps.device.barrier.exclusive([], fn, { scopes: ns ?? [], purpose: 'snapshot restore', ...(deps.signal ? { signal: deps.signal } : {}) }));
  try {
    // Inside the try: a snapshot that does not open still leaves `early` discarded (its tracker closed, its file removed).
    if (!a.tapMerge) await a.opening;
    const restored = await mergeAndRestore(a, hold, single);
    const out = new Map<string, PartOutcome>([...a.dropped].map(([ns, error]) => [ns, { ok: false, error }] as const));
    if (!restored) return out;
    const renames = () => Promise.all(restored.parts.map((p) => rename(p.spec.snapshotFile, deps.work.snapshotOf(p.spec.namespace))));
    let verified: boolean | 'deferred';
    const replayed = restored.replayed;
    if (deps.deferVerify) {
      await renames();
      // The temporary files (B1 among them, kept when verification fails) now belong to the verification.
      const files = temps.splice(0);
      const later: Apply = {
        ...a,
        temp: (label) => {
          const t = deps.work.temp(label);
          files.push(t);
          return t;
        },
        adopt: (file) => files.push(file),
      };
      deps.deferVerify(() => verifyAfter(later, restored.merged, restored.after, replayed).finally(() => removeFiles(...files)));
      verified = 'deferred';
    } else {
      verified = await verifyAfter(a, restored.merged, restored.after, replayed);
      await renames();
    }
    restored.parts.forEach((p, i) => out.set(p.spec.namespace, { ok: true, result: { ...restored.done[i]!, verified } }));
    return out;
  } finally {
    // Unused (or its backup failed): tracker closed now, file removed once its backup ended (not waited for here).
    // Used: the tracker only (the file is in `temps`).
    void early?.discard();
    certs?.end();
    await removeFiles(...temps);
  }
}

/**
 * Opens a part's snapshot: its manifest, checked against its entries. A lone part reads them by their path only
 * (listBackupContents' `pathsOnly`): the merge authenticates every entry of the snapshot before anything is restored,
 * and a damaged one fails the apply as it would here, so a second full decryption would buy nothing. Parts of a
 * coalesced apply are authenticated here, so a damaged snapshot drops its part alone instead of failing the merge.
 */
async function openPart(deps: SharedApplyDeps, spec: ApplyPart, single: boolean): Promise<Part> {
  const contents = single && spec.opened ? spec.opened : await listBackupContents(spec.snapshotFile, { input: deps.snapshotOpen, pathsOnly: single });
  verifyManifest(contents);
  const meta = snapshotMetaOf(contents.manifest, spec.namespace);
  return {
    spec,
    meta,
    stripped: meta.administrators.filter((id) => id !== spec.replicationUserId),
    namespaceEntries: contents.namespaces[spec.namespace]?.keys ?? 0,
  };
}

function drop(a: Apply, namespace: string, err: unknown): void {
  a.parts = a.parts.filter((p) => p.spec.namespace !== namespace);
  a.dropped.set(namespace, err);
  a.log.warn({ namespace, err }, 'namespace left out of the coalesced merge-restore; the others go on');
}

/** Drops the parts whose `check` throws; whether any did (the merge must then be redone without them). */
function dropStale(a: Apply, parts: readonly Part[]): boolean {
  let any = false;
  for (const p of parts) {
    try {
      p.spec.check?.();
    } catch (err) {
      drop(a, p.spec.namespace, err);
      any = true;
    }
  }
  return any;
}

interface Restored {
  done: RestoredSnapshot[];
  parts: Part[];
  merged: Merged;
  after: WriteMark;
  /** Namespaces outside the batch that racing writes re-applied after the restore changed (not verified). */
  replayed: string[];
}

/**
 * Writes outside the batch during one attempt outside the hold from which another attempt is not worth its backup and
 * merge. Under steady writes the next attempt, as long as this one, sees about as many (this count is the rate times
 * the attempt's duration), so it passes clean with a probability of about e^-writes (Poisson): 5 % at 3. Fewer (1 or
 * 2: a burst; 37 % and 14 %) are worth another try. docs/concurrency.md, "Snapshot sync".
 */
export const HOPELESS_RACE_WRITES = 3;

/** Steps 1–3 of the module comment for the parts in `a`; undefined when every part dropped out. */
async function mergeAndRestore(a: Apply, hold: ExclusiveHold, single: boolean): Promise<Restored | undefined> {
  const { deps } = a;
  const names = () => a.parts.map((p) => p.spec.namespace);
  const maxRemerges = deps.maxRemerges ?? 2;
  let outcome: Restored | undefined;
  // The plan whose restore is done and whose log replay runs after the hold.
  let replayAfter: ReplayPlan | undefined;
  let remerges = 0;
  // Writes outside the batch that raced the last attempt (0: none did, or it was not made).
  let raced = 0;
  for (; outcome === undefined && remerges <= maxRemerges; remerges++) {
    if (raced >= HOPELESS_RACE_WRITES) break;
    // While the snapshots are still being opened, the parts are not known yet: the merge waits for them.
    if (remerges > 0) await a.opening;
    if (a.parts.length === 0 && (remerges > 0 || !a.tapMerge)) return undefined;
    // The write holders in flight now and every one admitted until the hold: those that may change B1's device. An
    // early B1's tracker was opened before it, when its group's first download started (a wider window, as safe).
    const early = a.early;
    a.early = undefined;
    let tracker: WriteTracker | undefined;
    try {
      let m: Merged | undefined;
      const fromEarly = early && (await mergeEarly(a, early));
      if (fromEarly) ({ tracker, merged: m } = fromEarly);
      else {
        // No early B1, or its backup failed: this attempt takes B1 itself (its tracker first).
        tracker = deps.device.barrier.trackWrites();
        m = await backupAndMerge(a, (file, tap) => deps.device.backupForReading(file, { tap, signal: deps.signal }), remerges, single);
      }
      if (!m) return undefined;
      await deps.beforeHold?.();
      deps.onPhase?.('hold');
      // Writes within the batch's namespaces (their streams, their anti-entropy) need no new merge: the restore
      // replaces them, and the positions recorded with it make the streams apply again what the snapshots lack. Not a
      // gateway write scoped to one of them (write-scope.ts): nothing applies it again, so it races like any other.
      const own = new Set(m.parts.map((p) => p.spec.namespace));
      raced = 0;
      outcome = await hold(async (guard) => {
        const racing = tracker!.writes().filter((w) => w.scope === null || w.gateway === true || !own.has(w.scope));
        raced = racing.length;
        const plan = raced > 0 ? replayPlan(a, racing, own) : undefined;
        if (plan === null) return undefined;
        if (dropStale(a, m.parts)) return undefined;
        const done = await saveAndRestore(a, m, guard, remerges, false, plan);
        if (done && plan) replayAfter = plan;
        return done && { done, parts: m.parts, merged: m, after: deps.device.barrier.markWrites(), replayed: plan ? replayedNamespaces(plan) : [] };
      }, [...own]);
    } catch (err) {
      // The hold failed after `restored` (the replay will not run here): the daemon's retries finish the record.
      if (replayAfter) deps.raceReplay!.unfinished();
      throw err;
    } finally {
      tracker?.close();
    }
  }
  // After the hold, inside this apply (so inside the apply batch's run: no other merge-restore starts meanwhile).
  if (replayAfter && outcome) await replayRacing(a, outcome.parts.map((p) => p.spec.namespace), replayAfter);
  if (outcome !== undefined) return outcome;
  await a.opening;
  if (a.parts.length === 0) return undefined;
  // `remerges` now counts the attempts made outside the hold: the held merge is one more redo.
  const namespaces = names();
  deps.onHeldMerge?.(namespaces, remerges, raced);
  const recheck = (deps.directWriters ?? true) ? ', with a re-check' : '';
  if (remerges === 0) a.log.info({ namespaces }, `merging inside the exclusive hold at once${recheck} (replication.directWriters, or writes raced a recent sync)`);
  else if (remerges <= maxRemerges) {
    a.log.warn(
      { namespaces, attempts: remerges, writes: raced },
      `${raced} writes passed the device barrier during the last backup and merge, so another would most likely race too; merging inside the exclusive hold${recheck} (writes wait for the whole merge-restore)`,
    );
  } else {
    a.log.warn(
      { namespaces, attempts: remerges, writes: raced },
      `writes kept passing the device barrier during every backup and merge; merging inside the exclusive hold${recheck} (writes wait for the whole merge-restore)`,
    );
  }
  return hold(async (guard) => {
    for (;;) {
      dropStale(a, a.parts);
      if (a.parts.length === 0) return undefined;
      const r = await heldMerge(a, remerges, single);
      if (!r) return undefined;
      const done = await saveAndRestore(a, r.merged, guard, r.remerges, true);
      if (done) return { done, parts: r.merged.parts, merged: r.merged, after: deps.device.barrier.markWrites(), replayed: [] };
    }
  }, namespaces);
}

/**
 * Inside the hold, writes outside `own` raced the attempt: the plan that re-applies them after its restore, or null
 * (logged) when one cannot be (the attempt is merged again).
 */
function replayPlan(a: Apply, racing: readonly TrackedWrite[], own: ReadonlySet<string>): ReplayPlan | null {
  const r = a.deps.raceReplay ? planReplay(racing, a.deps.raceReplay) : { refused: 'writes are not re-applied here' };
  if ('plan' in r) return r.plan;
  a.log.info({ namespaces: [...own], writes: racing.length, why: r.refused }, `writes passed the device barrier during the backup and merge, and ${r.refused} cannot be re-applied after the restore; merging again`);
  return null;
}

/**
 * The first attempt's merge when B1 was taken while the snapshots downloaded: waits for it (it usually ended during the
 * download) and merges from its file (nothing to tap any more), with the tracker opened before it. Undefined when its
 * backup failed; `merged` undefined when no part is left.
 */
async function mergeEarly(a: Apply, early: EarlyBackup): Promise<{ tracker: WriteTracker; merged: Merged | undefined } | undefined> {
  a.deps.onPhase?.('backup');
  const b1 = await early.use();
  if (!b1) return undefined;
  a.adopt(b1.file);
  a.deps.onEarlyBackup?.(b1.timing);
  await a.opening;
  if (a.parts.length === 0) return { tracker: b1.tracker, merged: undefined };
  a.deps.onPhase?.('merge');
  return { tracker: b1.tracker, merged: await mergeFrom(a, b1.file, new Set()) };
}

/** How B1 is taken: shared, or inside the hold the holder's own; `tap` reads its bytes as they arrive. */
type TakeBackup = (file: string, tap?: ByteTap<unknown>) => Promise<unknown>;

/**
 * B1 with `backup`, and the merge; undefined when no part is left. The merge reads B1 as the device sends it (a tap on
 * the download), so it costs the sync only what it takes beyond the device's own backup; B1's file is still written
 * whole (quarantine, re-check and a failed verification read it). A first sync that must look at the device's copy of
 * its namespace first (`refuse`, `remove`) reads the file after the backup instead.
 */
async function backupAndMerge(a: Apply, backup: TakeBackup, attempt: number, single: boolean): Promise<Merged | undefined> {
  a.deps.onPhase?.('backup');
  const base = a.temp(`pre-${attempt + 1}`);
  if (a.tapMerge) {
    const tap = tapBytes(async (bytes) => {
      const reader = await openSource(bytes, a.deps.deviceOpen);
      try {
        await a.opening;
        // Every part dropped out: nothing to merge (the backup still ends, unread).
        if (a.parts.length === 0) return undefined;
        const parts = [...a.parts];
        return { parts, ...(await merge(a, parts, reader)) };
      } finally {
        await closeAll(reader);
      }
    });
    await backup(base, tap);
    const r = await tap.result;
    if (!r) return undefined;
    a.deps.onPhase?.('merge');
    return foreignOf(a, base, r.parts, r, new Set());
  }
  await a.opening;
  await backup(base);
  const replacing = new Set<string>();
  for (const p of [...a.parts]) {
    try {
      if (await checkExisting(a.deps, p.spec.namespace, base, p.spec.options ?? {})) replacing.add(p.spec.namespace);
    } catch (err) {
      if (single) throw err;
      drop(a, p.spec.namespace, err);
    }
  }
  if (a.parts.length === 0) return undefined;
  a.deps.onPhase?.('merge');
  return mergeFrom(a, base, replacing);
}

/** The merge of `base`, and the foreign entries the restore would remove (known files read here, outside any hold). */
async function mergeFrom(a: Apply, base: string, replacing: ReadonlySet<string>): Promise<Merged> {
  const parts = [...a.parts];
  return foreignOf(a, base, parts, await merge(a, parts, base), replacing);
}

/** A merge of `base` made: the foreign entries among those its restore removes, per namespace. */
async function foreignOf(
  a: Apply,
  base: string,
  parts: Part[],
  { merged, removed, changedKeys }: MergeOutput,
  replacing: ReadonlySet<string>,
): Promise<Merged> {
  const { deps, log } = a;
  const foreign = new Map<string, ForeignEntries>();
  for (const p of parts) {
    const ns = p.spec.namespace;
    const gone = removed.get(ns);
    if (replacing.has(ns) || !gone || gone.size === 0) continue;
    const savedHere = (a.quarantined.get(ns) ?? []).map((q) => q.path);
    const known = { files: [deps.work.snapshotOf(ns), ...(p.spec.savedFiles ?? []), ...savedHere], open: deps.snapshotOpen, ...(p.spec.knownKey ? { knownKey: p.spec.knownKey } : {}) };
    foreign.set(ns, await foreignAmong(ns, gone, known, log));
  }
  return { base, merged, parts, replacing: new Set([...replacing].filter((ns) => parts.some((p) => p.spec.namespace === ns))), foreign, changedKeys };
}

/**
 * The last resort, inside the exclusive hold: no write passes the barrier, so B1 (merged as it arrives) is current for
 * every daemon write and only writers bypassing the daemon can race it. With `directWriters` a B2 re-check catches
 * those (bounded; SyncRaceError when they keep racing); without, there is nothing to re-check.
 */
async function heldMerge(a: Apply, remergesSoFar: number, single: boolean): Promise<{ merged: Merged; remerges: number } | undefined> {
  let m = await backupAndMerge(a, (file, tap) => a.deps.device.backupTo(file, tap, a.deps.signal), remergesSoFar, single);
  if (!m) return undefined;
  if (!(a.deps.directWriters ?? true)) return { merged: m, remerges: remergesSoFar };
  const namespaces = m.parts.map((p) => p.spec.namespace);
  const otherData = (p: string) => !namespaces.some((ns) => isNamespacePath(p, ns)) && isStoreData(p);
  let rechecks = 0;
  for (;;) {
    await a.deps.beforeRecheck?.();
    const b2 = a.temp(`recheck-${rechecks + 1}`);
    await a.deps.device.backupTo(b2, undefined, a.deps.signal);
    const raced = await diffFiles(a.deps.deviceOpen, m.base, b2, otherData);
    if (isEmptyDiff(raced)) break;
    a.log.warn({ namespaces, changed: raced.samples }, 'entries outside the namespace changed during the sync (a writer bypassing the gateway); merging again');
    if (++rechecks > (a.deps.maxRechecks ?? 3)) {
      const what = namespaces.join(', ');
      throw new SyncRaceError(`entries outside namespace ${what} changed ${rechecks} times during the sync; not restoring`, { namespace: what });
    }
    m = await mergeFrom(a, b2, m.replacing);
  }
  return { merged: m, remerges: remergesSoFar + rechecks };
}

/**
 * Inside the hold: save what the restore removes (from the base it replaces), check the tokens, restore. Undefined
 * when a part's `check` failed after the saves (dropped: the caller merges again without it).
 */
async function saveAndRestore(a: Apply, m: Merged, guard: ExclusiveGuard, remerges: number, held: boolean, plan?: ReplayPlan): Promise<RestoredSnapshot[] | undefined> {
  const { deps, log } = a;
  const saved = new Map<string, { savedExisting?: string; quarantined?: ForeignQuarantine }>();
  for (const p of m.parts) {
    const ns = p.spec.namespace;
    if (m.replacing.has(ns)) saved.set(ns, { savedExisting: await saveExisting(deps, p.spec, m.base, log) });
    else {
      // Foreign writes an earlier attempt of this apply saved are not found again (mergeFrom): report its file.
      const q = (await saveForeign(a, p, m)) ?? a.quarantined.get(ns)?.at(-1);
      saved.set(ns, q ? { quarantined: q } : {});
    }
  }
  guard.check();
  if (dropStale(a, m.parts)) return undefined;
  deps.onPhase?.('restore');
  const batch = m.parts.map((p) => p.spec.namespace);
  // Made durable before the restore erases the racing writes: a crash after it finishes the replay at start-up.
  if (plan) deps.raceReplay!.prepare(plan);
  // Outside the batch the merged file is the device's own (no write passed the barrier there since B1, or those that
  // did are re-applied below): the restore changes these namespaces only, and in them the keys the merge listed
  // (the certificate table forgets just those, and what was written since the apply's mark: key-certs-repo.ts).
  let done: RestoredSnapshot[];
  try {
    await deps.device.restore(m.merged, batch, a.certsSince === undefined ? undefined : { changed: m.changedKeys, since: a.certsSince });
    done = m.parts.map((p): RestoredSnapshot => {
      const s = saved.get(p.spec.namespace)!;
      return {
        meta: p.meta,
        remerges,
        heldMerge: held,
        namespaceEntries: p.namespaceEntries,
        strippedAdministrators: p.stripped,
        batch,
        ...(s.savedExisting ? { savedExisting: s.savedExisting } : {}),
        ...(s.quarantined ? { quarantined: s.quarantined } : {}),
      };
    });
    m.parts.forEach((p, i) => p.spec.afterRestore?.(done[i]!));
  } catch (err) {
    // Whether the NetHSM applied it is not always known (an answer lost), or it did and recording its position failed:
    // either way `restored` will not run, and the replay, idempotent, is left pending to the daemon's retries.
    if (plan) deps.raceReplay!.unfinished();
    throw err;
  }
  // Still inside the hold: what the replay covers is fixed now (each log to its head: nothing was admitted since the
  // racing writes), and from the hold's end the gateway holds the writes that could meet a re-applied one.
  if (plan) deps.raceReplay!.restored(plan);
  return done;
}

/**
 * Right after the hold: the racing writes logged here are re-applied (race-replayer.ts, under shared holds), then
 * reported. A failure fails the apply, as it did inside the hold: the record stays and the daemon retries it.
 */
async function replayRacing(a: Apply, batch: readonly string[], plan: ReplayPlan): Promise<void> {
  a.deps.onPhase?.('replay');
  const outcome = await a.deps.raceReplay!.replay(plan);
  a.deps.onRaceReplayed?.(batch, plan, outcome);
  const what = { namespaces: batch, writes: plan.writes, logs: Object.fromEntries(plan.logs), streams: plan.streams };
  if (outcome.left.size === 0) {
    a.log.info(what, 'writes raced the backup and merge; restored the merge and re-applied them after the hold');
    return;
  }
  // Only what ran is claimed: the rest is pending (the daemon's retries, a fence's export: status shows it) or was
  // ended by the hold that got in first.
  const left = Object.fromEntries([...outcome.left].map(([ns, l]) => [ns, `${l.reason}: ${l.detail}`]));
  a.log.warn(
    { ...what, reapplied: outcome.replayed, notReapplied: left },
    `writes raced the backup and merge; restored the merge, but the writes logged in ${[...outcome.left.keys()].join(', ')} were NOT re-applied after the hold (see notReapplied: a role changed, or another hold ended the record first)`,
  );
}

/**
 * Base entries outside the namespaces + each snapshot's namespace entries less its stripped administrators, in one
 * pass that also lists, per namespace, its keys and users of the base the restore removes (the snapshot lacks them).
 */
async function merge(a: Apply, parts: readonly Part[], base: BackupSource | BackupReader): Promise<MergeOutput> {
  const inAny = (p: string) => parts.some((x) => isNamespacePath(p, x.spec.namespace));
  const removed = new Map<string, Set<string>>();
  const changed = new ChangedKeysCollector(parts.map((x) => x.spec.namespace));
  const out = a.temp('merged');
  await rewriteBackup({
    base: { source: base, open: a.deps.deviceOpen, keep: (p) => !inAny(p) },
    overlays: parts.map((x) => {
      const dropAdmin = isUserOf(x.spec.namespace, x.stripped);
      const within = (p: string) => isNamespacePath(p, x.spec.namespace);
      return { source: x.spec.snapshotFile, open: a.deps.snapshotOpen, within, select: (p: string) => !dropAdmin(p) };
    }),
    out,
    ...(a.deps.resealer ? { resealer: a.deps.resealer } : {}),
    onOverlay: (p, held) => {
      if (held !== 'same') changed.note(p);
    },
    onDropped: (p, replaced) => {
      if (replaced) return;
      changed.note(p);
      const c = classifyPath(p);
      if ((c.kind === 'namespace-key' || c.kind === 'namespace-user') && inAny(p)) {
        const ns = parts.find((x) => isNamespacePath(p, x.spec.namespace))!.spec.namespace;
        let set = removed.get(ns);
        if (!set) removed.set(ns, (set = new Set()));
        set.add(p);
      }
    },
  });
  return { merged: out, removed, changedKeys: changed.result };
}

/** What merge() made: the merged file, per namespace the base's keys and users it lacks, and the keys its restore may change. */
interface MergeOutput {
  merged: string;
  removed: Map<string, Set<string>>;
  changedKeys: ChangedKeys;
}

async function diffFiles(
  open: OpenBackupOptions,
  before: string,
  after: string,
  inScope: (p: string) => boolean,
  onDiff?: (path: string, kind: DiffKind) => void,
): Promise<BackupDiff> {
  const a = await openSource(before, open);
  try {
    const b = await openSource(after, open);
    try {
      return await diffEntries(a.entries(), b.entries(), inScope, onDiff);
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}

/**
 * After the hold: B3 under a shared hold, compared with the merged file in one pass (outside the namespace it holds
 * B1's entries, inside it the namespace as merged). `after` was marked inside the hold right after the restore, so the
 * barrier tells which writes may have reached B3 since: the namespaces scoped writers wrote in are left out of the
 * comparison; an unscoped write (may touch anything) skips verification, reported (`onVerifySkipped`). Returns
 * whether it verified; keeps B1 and throws SyncVerifyFailedError when anything compared is off.
 */
async function verifyAfter(a: Apply, m: Merged, after: WriteMark, replayed: readonly string[]): Promise<boolean> {
  const { deps, log } = a;
  const namespaces = m.parts.map((p) => p.spec.namespace);
  const inBatch = (p: string) => namespaces.some((ns) => isNamespacePath(p, ns));
  deps.onPhase?.('verify');
  await deps.beforeVerify?.();
  const b3 = a.temp('post');
  await deps.device.backupForReading(b3);
  const written = deps.device.barrier.scopesWrittenSince(after);
  if (written.has(null)) {
    deps.onVerifySkipped?.(namespaces);
    log.warn({ namespaces, unscopedWrites: deps.device.barrier.unscopedSince(after) }, 'restore not verified: writes that may touch anything passed the device barrier after it (the restore itself succeeded)');
    return false;
  }
  // Namespaces that racing writes re-applied after the restore are written since it too.
  const skip = [...new Set([...replayed, ...[...written].filter((s): s is string => s !== null)])];
  const inScope = (p: string) => isStoreData(p) && !skip.some((ns) => isNamespacePath(p, ns));
  let lostOutside = 0;
  const diff = await diffFiles(deps.deviceOpen, m.merged, b3, inScope, (p, kind) => {
    if (kind !== 'added' && !inBatch(p)) lostOutside++;
  });
  if (isEmptyDiff(diff)) return true;
  const what = namespaces.join(', ');
  const kept = deps.work.keptPath(namespaces.join('+'));
  await rename(m.base, kept);
  if (lostOutside > 0) deps.onForeignLoss?.(lostOutside, namespaces);
  deps.onVerifyMismatch?.(namespaces);
  log.error({ namespaces, kept, differences: diff.samples, notCompared: skip }, 'restore verification failed; pre-restore backup kept');
  throw new SyncVerifyFailedError(
    `after restoring namespace ${what}: ${diff.missing + diff.changed + diff.added} entries not as merged, ${lostOutside} of them outside it lost or changed; pre-restore backup kept at ${kept}`,
    { namespace: what, path: kept },
  );
}

/**
 * Users, keys and namespaces: what a restore replaces and clients write. Device-local configuration (unlock salt,
 * domain-key slots, TLS, network) is re-sealed by every restore with fresh nonces, so it is not compared.
 */
function isStoreData(path: string): boolean {
  const k = classifyPath(path).kind;
  return k !== 'config' && k !== 'store-version' && k !== 'manifest';
}

/**
 * On a first sync, a device that already holds the namespace is refused (`refuse`), or replaced (`remove`: returns
 * true; its copy is saved to `kept/` from the last backup before the restore), or taken as the bootstrap copy
 * (`adopt`: init-replica put it there).
 */
/** Whether checkExisting reads the device backup for this part (a first sync that is not init-replica's). */
function checksExisting(options: ApplyOptions): boolean {
  return options.onExisting === 'refuse' || options.onExisting === 'remove';
}

async function checkExisting(deps: SharedApplyDeps, namespace: string, deviceBackup: string, options: ApplyOptions): Promise<boolean> {
  const mode = options.onExisting;
  if (!checksExisting(options)) return false;
  const c = await listBackupContents(deviceBackup, { input: deps.deviceOpen });
  const held = c.namespaces[namespace];
  if (!held || (!held.present && held.keys === 0 && held.users === 0)) return false;
  if (mode === 'refuse') {
    throw new SyncNamespaceExistsError(
      `this device already holds namespace ${namespace} (${held.keys} keys, ${held.users} users${held.present ? '' : ', no namespace record'}) that was never synced here`,
      { namespace },
    );
  }
  return true;
}

/**
 * `onExisting: 'remove'`: the whole copy the device holds goes to `kept/` (it holds any foreign entry too); a copy of
 * users without the namespace's record (checkExisting counts them) takes the snapshot's record (foreign.ts).
 */
async function saveExisting(deps: SharedApplyDeps, spec: ApplyPart, deviceBackup: string, log: Logger): Promise<string> {
  const { namespace } = spec;
  const saved = deps.work.keptPath(`${namespace}-existing`).replace(/\.bin$/, '.nsbackup');
  const s = await extractNamespace(deviceBackup, namespace, saved, {
    input: deps.deviceOpen,
    meta: { reason: 'replaced by first sync' },
    missingRecord: recordFromSnapshot(namespace, { file: spec.snapshotFile, open: deps.snapshotOpen }),
  });
  log.warn({ namespace, saved, keys: s.keys, users: s.users }, 'replacing the namespace the device held; its copy was saved');
  return saved;
}

/**
 * Inside the hold: saves the foreign entries (foreign.ts, found with the merge) from the base to a quarantine file and
 * reports them; undefined when there are none (no file), counting as saved what an earlier attempt of this apply
 * already wrote (idempotent across merges redone inside one apply). Throws SyncQuarantineFailedError: the caller must
 * not restore then.
 */
async function saveForeign(a: Apply, p: Part, m: Merged): Promise<ForeignQuarantine | undefined> {
  const { deps, log } = a;
  const { namespace } = p.spec;
  const { meta } = p;
  const foreign = m.foreign.get(namespace);
  if (!foreign || foreign.paths.size === 0) return undefined;
  const out = deps.quarantineOut ?? {
    ...(deps.snapshotOpen.passphrase !== undefined ? { passphrase: deps.snapshotOpen.passphrase } : {}),
    ...(typeof deps.snapshotOpen.scrypt === 'object' ? { scrypt: deps.snapshotOpen.scrypt } : {}),
  };
  const device = { file: m.base, open: deps.deviceOpen };
  const q = await quarantineForeign(namespace, device, { file: p.spec.snapshotFile, open: deps.snapshotOpen }, foreign, {
    path: deps.work.foreignQuarantinePath(namespace, meta.epoch, meta.seq),
    ...out,
    meta: { epoch: meta.epoch, seq: meta.seq, site: deps.site ?? null },
  });
  log.warn(
    { namespace, quarantine: q.path, keys: q.keys, users: q.users, keyIds: q.keyIds, userIds: q.userIds },
    'foreign writes at this replica (not replicated; written straight to the NetHSM) saved to quarantine before the snapshot removes them',
  );
  a.quarantined.set(namespace, [...(a.quarantined.get(namespace) ?? []), q]);
  p.spec.onQuarantined?.(q);
  return q;
}
