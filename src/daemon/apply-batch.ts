/**
 * Coalesces the snapshot applies of several namespaces due at this site at once (a cron tick for several namespaces,
 * catch-ups of several, anti-entropy asking for snapshots) into ONE merge-restore (docs/concurrency.md, "Coalesced
 * syncs"): one device backup, one merged file, one exclusive hold and restore, one verification. Without it each
 * sync's restore makes the next one's merge race and redo.
 *
 * How a batch forms: a sync announces its snapshot fetch (`fetching`) and joins with the fetched snapshot (`join`).
 * The first join opens a batch; it starts as soon as no other announced fetch is still running, or after the first
 * joiner's own fetch time (at least MIN_WAIT_MS, at most `maxWaitMs`) when one is, so a lone sync starts at once and a slow fetch delays the
 * others by at most about what a fetch takes. Later joins form the next batch, which starts once the running one has
 * restored (not before: that restore would make its merge race and redo) and gathers whatever joins meanwhile. A fetch
 * that fails leaves (`fetching`'s release) and so never holds a batch back.
 *
 * Early work (`EarlyWork`; the replica's own device backup B1, replicator/early-backup.ts): a fetch that wants it
 * calls `prefetch` as its download starts. The first such call starts it for the group being formed, unless a batch is
 * running (that batch's restore would make it stale at once); later fetchers of the same group reuse it. The batch that
 * starts next takes it (the runner owns it from then on); when a running batch ends while fetches that want it are
 * still downloading, it starts for them. When every fetch of the group left and none joined, it is discarded.
 */
import { InternalError } from '../errors.js';
import type { ApplyResult, PartOutcome } from '../replicator/snapshot-apply.js';

/**
 * The shortest wait for fetches still running: fetches started together finish within about this of each other when
 * they share the primary's device backup (snapshot-source.ts), even on a loaded host.
 */
const MIN_WAIT_MS = 250;

/**
 * Runs one batch: every entry's outcome by namespace, or a throw that fails them all. `early`: the early work started
 * for it, if any; the runner owns it (uses or discards it, also when it throws).
 */
export type BatchRunner<E, W> = (entries: readonly E[], early: W | undefined) => Promise<Map<string, PartOutcome>>;

/** Work a batch can start before its snapshots are in (the device backup B1), and how to throw it away unused. */
export interface EarlyWork<W> {
  /** Starts it; undefined when none is wanted now (e.g. the site's syncs merge inside the hold at once). */
  start(): W | undefined;
  /** Throws it away (nobody will use it); must not throw. */
  discard(work: W): void;
}

interface Forming<E> {
  entries: { entry: E; resolve: (r: ApplyResult) => void; reject: (err: unknown) => void }[];
  timer: NodeJS.Timeout | undefined;
  /** Ready to start (no fetch to wait for, or the wait is over); waits only for the running batch. */
  due: boolean;
}

export class ApplyBatch<E extends { namespace: string }, W = never> {
  /** Namespaces whose snapshot fetch is announced and has not joined or left. */
  readonly #fetching = new Set<string>();
  /** Those of them whose download started and that want the early work. */
  readonly #wanting = new Set<string>();
  /** The early work of the group being formed (never while a batch runs: taken by the next batch that starts). */
  #early: W | undefined;
  #forming: Forming<E> | undefined;
  /** The batch being merged and restored (until its apply returns; its deferred verification runs on). */
  #running: Promise<void> | undefined;

  /** `maxWaitMs`: the longest a formed batch waits for fetches still running (default 2 s). */
  constructor(
    private readonly run: BatchRunner<E, W>,
    private readonly maxWaitMs = 2_000,
    private readonly early?: EarlyWork<W>,
  ) {}

  /** A sync starts fetching `namespace`'s snapshot. Returns the release to call when it will not join (its fetch failed). */
  fetching(namespace: string): () => void {
    this.#fetching.add(namespace);
    return () => {
      this.#wanting.delete(namespace);
      if (!this.#fetching.delete(namespace)) return;
      // The last fetch of a group nobody joined: its early work has no user.
      if (this.#fetching.size === 0 && !this.#forming) this.#discardEarly();
      this.#startIfReady();
    };
  }

  /**
   * `namespace`'s announced fetch starts downloading and wants the early work: starts it for the forming group unless
   * it runs already or a batch is running (then it starts when that batch ends, if this fetch has not joined by then).
   */
  prefetch(namespace: string): void {
    if (!this.#fetching.has(namespace)) return;
    this.#wanting.add(namespace);
    this.#startEarly();
  }

  #startEarly(): void {
    if (this.#early === undefined && !this.#running && this.#wanting.size > 0) this.#early = this.early?.start();
  }

  #discardEarly(): void {
    const w = this.#early;
    this.#early = undefined;
    if (w !== undefined) this.early!.discard(w);
  }

  /**
   * Joins the forming batch with a fetched snapshot (`fetchMs`: how long the fetch took); resolves with this entry's
   * result, or rejects with why it dropped out or why the batch failed. One entry per namespace at a time (the
   * caller's single flight per namespace).
   */
  join(entry: E, fetchMs: number): Promise<ApplyResult> {
    this.#fetching.delete(entry.namespace);
    this.#wanting.delete(entry.namespace);
    const forming = (this.#forming ??= { entries: [], timer: undefined, due: false });
    const p = new Promise<ApplyResult>((resolve, reject) => forming.entries.push({ entry, resolve, reject }));
    if (forming.timer === undefined && this.#fetching.size > 0) {
      forming.timer = setTimeout(() => this.#start(), Math.min(Math.max(fetchMs, MIN_WAIT_MS), this.maxWaitMs));
    }
    this.#startIfReady();
    return p;
  }

  #startIfReady(): void {
    if (this.#forming && this.#fetching.size === 0) this.#start();
  }

  #start(): void {
    const batch = this.#forming;
    if (!batch) return;
    batch.due = true;
    if (this.#running) return;
    this.#forming = undefined;
    clearTimeout(batch.timer);
    const entries = batch.entries;
    const early = this.#early;
    this.#early = undefined;
    const run = this.run(
      entries.map((e) => e.entry),
      early,
    ).then(
      (out) => {
        for (const e of entries) {
          const o = out.get(e.entry.namespace);
          if (o?.ok) e.resolve(o.result);
          else e.reject(o ? o.error : new InternalError(`namespace ${e.entry.namespace}: no outcome from its merge-restore`));
        }
      },
      (err: unknown) => {
        for (const e of entries) e.reject(err);
      },
    );
    this.#running = run.finally(() => {
      this.#running = undefined;
      if (this.#forming?.due) this.#start();
      else this.#startIfReady();
      // Fetches still downloading form the next group: their B1 can start now that this restore is done.
      if (!this.#running) this.#startEarly();
    });
  }
}
