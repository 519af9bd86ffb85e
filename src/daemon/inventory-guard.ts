/**
 * Keeps a primary from answering an anti-entropy inventory read while a restore had erased writes of the namespace
 * (docs/anti-entropy.md, "A primary mid-restore"). From a race replay's `prepare()` (recorded, before the restore) to
 * the end of the replay, this site's device may lack acknowledged keys of the namespace; a replica comparing against
 * such an answer would take them for extras and delete them. So an answer:
 *
 * - is refused at its start while a replay of the namespace is pending (in memory, or in SQLite: the peer API starts
 *   before the replayer loads the rows a crash left);
 * - fails when a replay was prepared for the namespace after it started (its replayer generation moved), even if that
 *   replay has finished since: its reads may have seen the device in between.
 *
 * Every check is O(1) and in memory (a Set and a Map lookup), made once per line of a streamed answer; only the
 * start reads SQLite, once.
 */
import { AntiEntropySourceReplayingError } from '../errors.js';
import type { StateStore } from '../state/store.js';

/** The replayer's side (src/daemon/race-replayer.ts). */
export interface ReplayWatch {
  isPending(namespace: string): boolean;
  generation(namespace: string): number;
}

/** The line a streamed inventory answer ends with instead of its end line when it fails (inventory-ranges.ts reads it). */
export interface InventoryErrorLine {
  kind: 'error';
  code: string;
  message: string;
}

export class InventoryGuard {
  readonly #start: number;

  private constructor(
    private readonly replays: ReplayWatch | undefined,
    private readonly namespace: string,
    private readonly site: string,
  ) {
    this.#start = replays?.generation(namespace) ?? 0;
  }

  /**
   * Opens the guard of one answer about `namespace`, before any device read for it. Throws
   * AntiEntropySourceReplayingError when a replay of the namespace is pending.
   */
  static open(replays: ReplayWatch | undefined, store: StateStore, namespace: string, site: string): InventoryGuard {
    const g = new InventoryGuard(replays, namespace, site);
    const recorded = store.isOpen && store.raceReplays.all().some((r) => r.namespace === namespace);
    if (recorded || replays?.isPending(namespace)) throw g.#error('a restore there erased writes to it that are not re-applied yet');
    return g;
  }

  /** The failure, when the reads made since `open` may have seen a device missing erased writes; undefined when not. */
  failure(): AntiEntropySourceReplayingError | undefined {
    if (!this.replays) return undefined;
    if (this.replays.generation(this.namespace) !== this.#start) return this.#error('a restore there erased writes to it while the answer was being read');
    if (this.replays.isPending(this.namespace)) return this.#error('a restore there erased writes to it that are not re-applied yet');
    return undefined;
  }

  /** Throws `failure()`, if any (a one-answer read, after it). */
  check(): void {
    const err = this.failure();
    if (err) throw err;
  }

  /**
   * A streamed answer's lines, each checked before it is sent: on a failure, one `error` line is sent in place of the
   * rest (and of the end line), so the replica refuses the answer as a whole and knows why.
   */
  async *lines(source: AsyncIterable<string>): AsyncGenerator<string> {
    for await (const line of source) {
      const err = this.failure();
      if (err) {
        const out: InventoryErrorLine = { kind: 'error', code: err.code, message: err.message };
        yield JSON.stringify(out);
        return;
      }
      yield line;
    }
  }

  #error(why: string): AntiEntropySourceReplayingError {
    return new AntiEntropySourceReplayingError(`inventory of namespace ${this.namespace} not served by ${this.site}: ${why}`, { namespace: this.namespace, site: this.site });
  }
}
