/**
 * The replica's own device backup (B1) taken while the snapshot it will be merged with is still downloading
 * (docs/concurrency.md, "Snapshot sync", step 1): a sync then costs about max(fetch, B1) + merge + restore instead of
 * fetch + B1-with-merge + restore. It belongs to the forming apply batch (daemon/apply-batch.ts), not to one fetch:
 * several namespaces fetched together still cost one B1.
 *
 * Contract: the racing-write tracker is opened BEFORE the backup asks the barrier for its shared hold, exactly as an
 * apply's own B1 does, so every write that may have changed the device since B1 is listed (merge-restore step 2). The
 * window is wider (it spans the fetch), never open: whoever ends up with it either `use`s it (the file is then the
 * apply's, which removes it; the tracker too, which it closes) or `discard`s it (tracker closed, backup awaited, file
 * removed). `discard` after `use` closes the tracker only, so a caller may always call it last.
 *
 * Before the tracker opens, the gateway writes in flight are let end (at most SETTLE_MS): one captured before this
 * site's sync began carries no envelope sealed to this site's own transport key, so a merge-restore it raced could not
 * re-apply it (race-replay.ts) and would merge again. An apply's own B1 came late enough for that not to matter; an
 * early one comes right after the sync began.
 *
 * The daemon's stop (`signal`) cuts it: a stop throws the snapshot away anyway, so waiting minutes for a backup of a
 * large device would only hold the stop (docs/operations.md, "Stopping the daemon"). A cut B1 is one that failed
 * (no file; `use` answers undefined), logged at info.
 */
import { stat } from 'node:fs/promises';
import type { TrackedWrite, WriteTracker } from '../concurrency/barrier.js';
import { InternalError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DeviceCallTiming } from './cost-model.js';
import type { Device } from './device.js';
import { removeFiles, type WorkDir } from './workdir.js';

/** The longest an early B1 waits for gateway writes in flight to end before its tracker opens. */
export const SETTLE_MS = 2_000;

export class EarlyBackup {
  readonly #file: string;
  #tracker: WriteTracker | undefined;
  /** Settles once the backup ended: its timing, or undefined when it failed or was discarded first (no file left). */
  readonly #taken: Promise<DeviceCallTiming | undefined>;
  #used = false;
  #discarded = false;
  /** The certificate table's watch, opened with the tracker (ApplyDeps.watchCerts); ended by discard(). */
  #certs: { since: number; end: () => void } | undefined;

  private constructor(
    private readonly device: Device,
    work: WorkDir,
    private readonly log: Logger,
    private readonly signal: AbortSignal | undefined,
    private readonly watchCerts: (() => { since: number; end: () => void }) | undefined,
  ) {
    this.#file = work.temp('pre-early');
    this.#taken = this.#take();
  }

  /**
   * Starts B1 now (the tracker first, once the gateway writes in flight ended). `signal` (the daemon stopping) cuts
   * it, or keeps it from starting. `watchCerts`: as the apply's (ApplyDeps.watchCerts), opened with the tracker.
   */
  static start(device: Device, work: WorkDir, log: Logger, signal?: AbortSignal, watchCerts?: () => { since: number; end: () => void }): EarlyBackup {
    return new EarlyBackup(device, work, log, signal, watchCerts);
  }

  /**
   * The certificate table's mark taken right before B1 (undefined: no watch, or B1 not started yet). The apply that
   * merges this B1 uses it, as the mark before every backup it merges.
   */
  get certsSince(): number | undefined {
    return this.#certs?.since;
  }

  async #take(): Promise<DeviceCallTiming | undefined> {
    const { barrier } = this.device;
    let timer: NodeJS.Timeout | undefined;
    // Gateway writes (scoped to their namespace or not) and the other unscoped ones; not the stream's long apply holds.
    const settling = (w: TrackedWrite) => w.gateway === true || w.scope === null;
    await Promise.race([barrier.writesEnded(settling), new Promise<void>((r) => (timer = setTimeout(r, SETTLE_MS)))]);
    clearTimeout(timer);
    if (this.#discarded) return undefined;
    this.#tracker = barrier.trackWrites();
    this.#certs = this.watchCerts?.();
    const started = performance.now();
    const { signal } = this;
    try {
      await this.device.backupForReading(this.#file, { signal });
    } catch (err) {
      if (signal?.aborted && err === signal.reason) {
        this.log.info({ seconds: Math.round(performance.now() - started) / 1000 }, 'device backup taken while the snapshot downloads cut by the stop');
        return undefined;
      }
      // The apply then takes its own B1 as before, and fails there if the device does.
      this.log.warn({ err }, 'device backup taken while the snapshot downloads failed; the apply takes its own');
      return undefined;
    }
    return { seconds: (performance.now() - started) / 1000, bytes: await stat(this.#file).then((s) => s.size, () => 0) };
  }

  /**
   * Waits for B1. On success the file, its timing and the tracker opened before it pass to the caller, who must
   * remove the file and close the tracker. Undefined when the backup failed (nothing to remove; its tracker closed).
   * Once only.
   */
  async use(): Promise<{ file: string; timing: DeviceCallTiming; tracker: WriteTracker } | undefined> {
    if (this.#used || this.#discarded) throw new InternalError('an early backup is used once, and not after it was discarded');
    this.#used = true;
    const timing = await this.#taken;
    if (!timing || !this.#tracker) {
      this.#tracker?.close();
      return undefined;
    }
    return { file: this.#file, timing, tracker: this.#tracker };
  }

  /**
   * Nobody uses it (every fetch failed, or the apply went another way): closes the tracker (or keeps it from opening),
   * waits for the backup to end and removes its file. After `use`, only closes the tracker (the file is the user's).
   * Idempotent; never throws.
   */
  async discard(): Promise<void> {
    this.#tracker?.close();
    if (this.#used || this.#discarded) return this.#endCerts();
    this.#discarded = true;
    await this.#taken;
    this.#tracker?.close();
    this.#endCerts();
    await removeFiles(this.#file);
  }

  #endCerts(): void {
    this.#certs?.end();
  }
}
