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
 */
import { InternalError } from '../errors.js';
import type { ApplyResult, PartOutcome } from '../replicator/snapshot-apply.js';

/**
 * The shortest wait for fetches still running: fetches started together finish within about this of each other when
 * they share the primary's device backup (snapshot-source.ts), even on a loaded host.
 */
const MIN_WAIT_MS = 250;

/** Runs one batch: every entry's outcome by namespace, or a throw that fails them all. */
export type BatchRunner<E> = (entries: readonly E[]) => Promise<Map<string, PartOutcome>>;

interface Forming<E> {
  entries: { entry: E; resolve: (r: ApplyResult) => void; reject: (err: unknown) => void }[];
  timer: NodeJS.Timeout | undefined;
  /** Ready to start (no fetch to wait for, or the wait is over); waits only for the running batch. */
  due: boolean;
}

export class ApplyBatch<E extends { namespace: string }> {
  /** Namespaces whose snapshot fetch is announced and has not joined or left. */
  readonly #fetching = new Set<string>();
  #forming: Forming<E> | undefined;
  /** The batch being merged and restored (until its apply returns; its deferred verification runs on). */
  #running: Promise<void> | undefined;

  /** `maxWaitMs`: the longest a formed batch waits for fetches still running (default 2 s). */
  constructor(
    private readonly run: BatchRunner<E>,
    private readonly maxWaitMs = 2_000,
  ) {}

  /** A sync starts fetching `namespace`'s snapshot. Returns the release to call when it will not join (its fetch failed). */
  fetching(namespace: string): () => void {
    this.#fetching.add(namespace);
    return () => {
      if (this.#fetching.delete(namespace)) this.#startIfReady();
    };
  }

  /**
   * Joins the forming batch with a fetched snapshot (`fetchMs`: how long the fetch took); resolves with this entry's
   * result, or rejects with why it dropped out or why the batch failed. One entry per namespace at a time (the
   * caller's single flight per namespace).
   */
  join(entry: E, fetchMs: number): Promise<ApplyResult> {
    this.#fetching.delete(entry.namespace);
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
    const run = this.run(entries.map((e) => e.entry)).then(
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
    });
  }
}
