/**
 * Persists the members' states (MemberMonitor's `onChange`) through the store's group commit. A plain `save` commits
 * with synchronous=FULL, i.e. an fsync on the event loop (2–30 ms on a shared disk), once per member per probe
 * (every `recovery.retryInterval`), stalling every request and stream change of the daemon meanwhile. Here the write
 * joins a group commit (one transaction, its WAL sync off the event loop; it lingers up to LINGER_MS for other writes
 * to share it), and a member whose state changes again before its write runs is written once, with its latest state.
 *
 * Durability: the stored row only lets a restarted daemon resume a member's counts and show its last state; nothing
 * outside the process acts on it, and the in-memory state (status, health, metrics) is the monitor's, updated at once.
 * A write still queued when the process dies loses that last state change only; a clean shutdown commits it (the
 * store's close() flushes queued writes).
 */
import type { Logger } from '../log.js';
import type { MemberHealth } from '../state/members-repo.js';
import type { StateStore } from '../state/store.js';

/** A member's write waits up to this long to share another group's transaction and WAL sync rather than cost its own. */
const LINGER_MS = 1_000;

export class MemberStateWriter {
  readonly #store: StateStore;
  readonly #log: Logger;
  /** Members with a write queued, and the state it will write (the latest given). */
  readonly #pending = new Map<string, MemberHealth>();
  /** Whether the last write failed (logged once per run of failures, not at every probe). */
  #failing = false;

  constructor(store: StateStore, log: Logger) {
    this.#store = store;
    this.#log = log;
  }

  /** Queues `state` to be stored (a copy). Never throws: a closed store or a failed group is logged, not raised. */
  save(state: Readonly<MemberHealth>): void {
    if (!this.#store.isOpen) return;
    const queued = this.#pending.has(state.name);
    this.#pending.set(state.name, { ...state });
    if (queued) return;
    let ran = false;
    const write = () => {
      ran = true;
      const latest = this.#pending.get(state.name);
      this.#pending.delete(state.name);
      if (latest) this.#store.members.save(latest);
    };
    this.#store.groupCommit(write, { lingerMs: LINGER_MS }).then(
      () => (this.#failing = false),
      (err: unknown) => {
        // Not written (rolled back, store closed, sync failed): the next change writes again. A state queued after
        // `write` ran has a write of its own queued, so only a state this write never took is forgotten here.
        if (!ran) this.#pending.delete(state.name);
        if (!this.#failing) this.#log.warn({ member: state.name, err }, "cannot store a member's state; it is kept in memory and stored with its next change");
        this.#failing = true;
      },
    );
  }
}
