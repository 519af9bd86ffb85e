/**
 * The replica's own device backup (B1) taken while the snapshot it will be merged with is still downloading
 * (docs/concurrency.md, "Snapshot sync", step 1): a sync then costs about max(fetch, B1) + merge + restore instead of
 * fetch + B1-with-merge + restore. It belongs to the forming apply batch (daemon/apply-batch.ts), not to one fetch:
 * several namespaces fetched together still cost one B1.
 *
 * Contract: the racing-write tracker is opened BEFORE the backup asks the barrier for its shared hold, exactly as an
 * apply's own B1 does, so every write that may have changed the device since B1 is listed (merge-restore step 2). The
 * window is wider (it spans the fetch), never open: whoever ends up with it either `use`s it (the tracker and the file
 * are then the apply's, which closes and removes them) or `discard`s it (tracker closed, backup awaited, file removed).
 */
import { stat } from 'node:fs/promises';
import type { WriteTracker } from '../concurrency/barrier.js';
import type { Logger } from '../log.js';
import type { DeviceCallTiming } from './cost-model.js';
import type { Device } from './device.js';
import { removeFiles, type WorkDir } from './workdir.js';

export class EarlyBackup {
  /** Lists the write holders in flight at the start and every one admitted until closed. */
  readonly tracker: WriteTracker;
  readonly #file: string;
  /** Settles once the backup ended: its timing, or undefined when it failed (the device removed the file). */
  readonly #taken: Promise<DeviceCallTiming | undefined>;
  #used = false;

  private constructor(device: Device, work: WorkDir, log: Logger) {
    // Opened before the backup is even requested: a write admitted before B1's shared hold is listed too.
    this.tracker = device.barrier.trackWrites();
    this.#file = work.temp('pre-early');
    const started = performance.now();
    this.#taken = device.backupForReading(this.#file).then(
      async () => ({ seconds: (performance.now() - started) / 1000, bytes: await stat(this.#file).then((s) => s.size, () => 0) }),
      (err: unknown) => {
        // The apply then takes its own B1 as before, and fails there if the device does.
        log.warn({ err }, 'device backup taken while the snapshot downloads failed; the apply takes its own');
        return undefined;
      },
    );
  }

  /** Starts B1 now (the tracker first). */
  static start(device: Device, work: WorkDir, log: Logger): EarlyBackup {
    return new EarlyBackup(device, work, log);
  }

  /**
   * Waits for B1. On success the file (and its timing) pass to the caller, who must remove it; the tracker stays
   * open for the caller to close. Undefined when the backup failed (nothing left to remove; the tracker is still the
   * caller's to close). Once only.
   */
  async use(): Promise<{ file: string; timing: DeviceCallTiming } | undefined> {
    if (this.#used) throw new Error('an early backup is used once');
    this.#used = true;
    const timing = await this.#taken;
    return timing && { file: this.#file, timing };
  }

  /**
   * Nobody uses it (every fetch failed, or the apply went another way): closes the tracker, waits for the backup to end
   * and removes its file. After `use`, only closes the tracker (the file is the user's). Idempotent; never throws.
   */
  async discard(): Promise<void> {
    this.tracker.close();
    if (this.#used) return;
    this.#used = true;
    await this.#taken;
    await removeFiles(this.#file);
  }
}
