/**
 * The primary's side of the change stream: what `GET /peer/v1/namespaces/:ns/changes?after=<epoch>.<seq>&log=<id>`
 * sends one replica. After checking the position (in this site's change log, same epoch, not ahead of the log, not
 * older than what retention kept), it sends the changes after it in order, each as that replica's line (its envelope
 * only), wakes on every commit, and sends a heartbeat with the head at least every heartbeat interval. Every line names
 * the log (`log`) unless the replica sent no `log` parameter (a replica older than log ids). When the position cannot
 * be served it sends one `snapshot-required` line and ends. When the namespace stops being primary here (a promote elsewhere, a demote) the
 * stream ends: a replica never receives changes of an epoch that is over.
 */
import { RoleNotPrimaryError } from '../errors.js';
import type { Logger } from '../log.js';
import type { StateStore } from '../state/store.js';
import { changeLineFor, type HeartbeatLine, type SnapshotRequiredLine } from './protocol.js';

export interface FeedOptions {
  site: string;
  store: StateStore;
  heartbeatIntervalMs: number;
  log: Logger;
  /** Changes read from SQLite per query (default 200). */
  batch?: number;
}

export class ChangeFeed {
  readonly #o: FeedOptions;
  readonly #waiters = new Map<string, Set<() => void>>();
  /** Bumped on every notify, so a stream that read the log before a commit does not sleep through its wake-up. */
  readonly #versions = new Map<string, number>();

  constructor(o: FeedOptions) {
    this.#o = o;
  }

  /** A change was committed (or the role changed): wake the namespace's streams. */
  notify(namespace: string): void {
    this.#versions.set(namespace, (this.#versions.get(namespace) ?? 0) + 1);
    const set = this.#waiters.get(namespace);
    if (!set) return;
    this.#waiters.delete(namespace);
    for (const wake of set) wake();
  }

  /** Wakes every stream (shutdown, role changes). */
  notifyAll(): void {
    for (const ns of [...this.#waiters.keys()]) this.notify(ns);
  }

  /**
   * The lines for `peer`. Throws RoleNotPrimaryError at once when the namespace is not primary here at this moment
   * (the peer API answers 409 naming the primary); otherwise the lines end on `signal` or when the role changes.
   */
  open(peer: string, namespace: string, after: { epoch: number; seq: number } | undefined, signal: AbortSignal, log?: string | null): AsyncIterable<string> {
    const row = this.#o.store.roles.require(namespace);
    if (row.role !== 'primary' || row.primarySite !== this.#o.site) {
      throw new RoleNotPrimaryError(`namespace ${namespace} is ${row.role} here at epoch ${row.epoch}; its primary is ${row.primarySite}`, {
        namespace,
        epoch: row.epoch,
        site: row.primarySite,
      });
    }
    // A replica that sent no `log` parameter predates log ids: its lines carry none (its strict schema refuses them).
    const ours = log === undefined ? undefined : this.#o.store.changelog.logId(namespace);
    return this.#lines(peer, namespace, row.epoch, after, signal, { ours, theirs: log });
  }

  async *#lines(
    peer: string,
    namespace: string,
    epoch: number,
    after: { epoch: number; seq: number } | undefined,
    signal: AbortSignal,
    log: { ours: string | undefined; theirs: string | null | undefined },
  ): AsyncGenerator<string> {
    const { store } = this.#o;
    const tag = log.ours !== undefined ? { log: log.ours } : {};
    const refusal = this.#check(namespace, epoch, after, log);
    if (refusal) {
      this.#o.log.info({ namespace, peer, reason: refusal.reason }, 'change stream: the peer needs a snapshot');
      yield JSON.stringify(refusal);
      return;
    }
    let cursor = after!.seq;
    let lastBeat = 0;
    const limit = this.#o.batch ?? 200;
    this.#o.log.info({ namespace, peer, after: `${epoch}.${cursor}` }, 'change stream opened');
    try {
      while (!signal.aborted) {
        const row = store.isOpen ? store.roles.get(namespace) : undefined;
        if (!row || row.role !== 'primary' || row.epoch !== epoch || row.primarySite !== this.#o.site) return;
        const version = this.#versions.get(namespace) ?? 0;
        const batch = store.changelog.after(namespace, epoch, cursor, limit);
        if (batch.length > 0 && batch[0]!.seq !== cursor + 1) {
          yield JSON.stringify(this.#snapshotRequired(namespace, epoch, `changes after ${cursor} are no longer retained`, log.ours));
          return;
        }
        for (const c of batch) {
          yield JSON.stringify(changeLineFor(c, peer, log.ours));
          cursor = c.seq;
          if (signal.aborted) return;
        }
        const now = Date.now();
        if (batch.length === 0 || now - lastBeat >= this.#o.heartbeatIntervalMs) {
          if (batch.length === 0 && lastBeat !== 0) await this.#wait(namespace, version, Math.max(0, lastBeat + this.#o.heartbeatIntervalMs - now), signal);
          if (signal.aborted) return;
          if (batch.length > 0 || store.changelog.after(namespace, epoch, cursor, 1).length === 0) {
            const beat: HeartbeatLine = { type: 'heartbeat', at: Date.now(), head: store.changelog.head(namespace, epoch), ...tag };
            yield JSON.stringify(beat);
            lastBeat = Date.now();
          }
        }
        // A short batch was everything durable as of `version` (read before the query; a change is durable before its
        // notify): read the log again only when woken, not once more to find it empty (two queries per commit).
        if (batch.length > 0 && batch.length < limit && !signal.aborted) {
          await this.#wait(namespace, version, Math.max(0, lastBeat + this.#o.heartbeatIntervalMs - Date.now()), signal);
        }
      }
    } finally {
      this.#o.log.info({ namespace, peer, at: `${epoch}.${cursor}` }, 'change stream closed');
    }
  }

  /**
   * Whether `after` can be served from the log at `epoch`; the refusal line when not. A position in another log (or
   * in none, when the replica reads log ids) is refused first: its numbers may name other changes here.
   */
  #check(
    namespace: string,
    epoch: number,
    after: { epoch: number; seq: number } | undefined,
    log: { ours: string | undefined; theirs: string | null | undefined },
  ): SnapshotRequiredLine | undefined {
    const { changelog } = this.#o.store;
    const refuse = (reason: string) => this.#snapshotRequired(namespace, epoch, reason, log.ours);
    if (after === undefined) return refuse('the replica has no position yet');
    if (log.ours !== undefined && log.theirs !== log.ours) {
      const where = log.theirs ? `is in change log ${log.theirs}` : 'names no change log';
      return refuse(`position ${after.epoch}.${after.seq} ${where}; this site's change log of ${namespace} is ${log.ours}`);
    }
    if (after.epoch !== epoch) return refuse(`position ${after.epoch}.${after.seq} is from epoch ${after.epoch}; the namespace is at epoch ${epoch}`);
    const head = changelog.head(namespace, epoch);
    if (after.seq > head.seq) return refuse(`position ${after.epoch}.${after.seq} is ahead of the change log (head ${head.seq})`);
    if (after.seq < head.seq) {
      const next = changelog.after(namespace, epoch, after.seq, 1)[0];
      if (!next || next.seq !== after.seq + 1) return refuse(`position ${after.epoch}.${after.seq} is older than the change log's retention`);
    }
    return undefined;
  }

  #snapshotRequired(namespace: string, epoch: number, reason: string, log: string | undefined): SnapshotRequiredLine {
    return { type: 'snapshot-required', reason, head: this.#o.store.changelog.head(namespace, epoch), ...(log !== undefined ? { log } : {}) };
  }

  /** Resolves on the namespace's next notify, after `ms`, or on abort. */
  #wait(namespace: string, version: number, ms: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      if ((this.#versions.get(namespace) ?? 0) !== version || signal.aborted) {
        resolve();
        return;
      }
      let set = this.#waiters.get(namespace);
      if (!set) this.#waiters.set(namespace, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#waiters.get(namespace)?.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }
}
