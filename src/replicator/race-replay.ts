/**
 * Racing writes re-applied (docs/concurrency.md, "Racing writes re-applied"): a merge-restore whose backup and merge,
 * made outside the exclusive hold, were raced by writes outside its namespaces may still restore that merge, provided
 * every racing write can be made good after the restore (no write that could meet a re-applied one is admitted before
 * it is back; docs/concurrency.md, "Racing writes re-applied"):
 * - a change this site logged as primary (`log`): re-applied from the change log, from the first raced seq to the head
 *   (an import from its envelope sealed to this site's own transport key), right after the hold;
 * - a stream change applied here (`stream`): the namespace's position moves back before it, so the stream applies it
 *   again after the hold;
 * - a write that changed nothing (`none`): nothing to do.
 * Anything else (`unknown`: a device-side generate, a user change, another restore, a repair) cannot be re-applied:
 * the sync merges again, as before. The plan is made inside the hold from the barrier's tracker, where every racing
 * holder has released (its ticket is final). The log replay itself runs after the hold (RaceReplayer.replay).
 */
import type { TrackedWrite } from '../concurrency/barrier.js';

/** A stream to move back: its namespace and source, and the first change the stream must apply again. */
export interface StreamRewind {
  readonly namespace: string;
  readonly source: string;
  readonly seq: number;
}

/** What re-applying the racing writes takes. */
export interface ReplayPlan {
  /** Per namespace this site is primary of: the first seq of its change log to re-apply (to its head). */
  readonly logs: ReadonlyMap<string, number>;
  readonly streams: readonly StreamRewind[];
  /** The racing write holders the plan covers (those that changed nothing included). */
  readonly writes: number;
}

/** The checks a plan needs (SQLite only, synchronous: they run inside the hold). */
export interface ReplayChecks {
  /** Undefined when every change of `namespace`'s log from `fromSeq` to its head can be re-applied; else why not. */
  checkLog(namespace: string, fromSeq: number): string | undefined;
  /** Whether the stream position of (`namespace`, `source`) can move back before `seq` (same epoch and change log). */
  canRewind(namespace: string, source: string, seq: number): boolean;
}

/**
 * Carries a plan out (src/daemon/race-replayer.ts). `prepare` and `restored` run inside the merge-restore's exclusive
 * hold; `replay` runs right after it, before the merge-restore returns (so inside the apply batch's run: no other
 * merge-restore starts before it ends).
 */
export interface RaceReplayer extends ReplayChecks {
  /**
   * Before the restore: makes the plan durable (the log replays pending, in SQLite; the streams' positions moved
   * back), so a crash after the restore finishes the replay at start-up before writes are admitted.
   */
  prepare(plan: ReplayPlan): void;
  /**
   * Right after the restore, still inside the hold: fixes what the replay covers (each log from its pending start to
   * its head NOW: changes admitted after the hold are never read) and marks it running, so that from the hold's end
   * the gateway lets through writes that cannot meet it and holds the others until it is done. Never throws.
   */
  restored(plan: ReplayPlan): void;
  /**
   * After the hold: re-applies what `restored` fixed, under a shared hold of the barrier per namespace (scoped to it,
   * with its fencing token), and clears the pending record. Throws when the device refused or failed; the record then
   * stays, and the daemon finishes it in its own exclusive hold (writes to those namespaces refused meanwhile).
   * Resolves with what it did: a namespace it did not re-apply itself (its token went stale, or another hold ended its
   * record first) is in `left`, with why, and must not be reported as re-applied.
   */
  replay(plan: ReplayPlan): Promise<ReplayOutcome>;
  /**
   * The restore after `prepare` failed, or a step after it before `restored` (recording a position), or the hold
   * failed after `restored`: `replay` will not run, and the pending
   * record is finished by the daemon in its own exclusive hold (idempotent whether or not the restore took effect).
   */
  unfinished(): void;
}

/** What `RaceReplayer.replay` did with each namespace of a plan's `logs`. */
export interface ReplayOutcome {
  /** Re-applied by this replay, right after the hold. */
  readonly replayed: readonly string[];
  /**
   * Not re-applied by this replay, each with why: `role-changed`, abandoned before touching the device (its fencing
   * token went stale, or an earlier namespace's did: the record stays pending, for the daemon's retries or a fence's
   * export), or `record-ended`, its record was ended or changed first by another exclusive hold (a demote's finish, a
   * fence's export, with or without these writes: the fence says which).
   */
  readonly left: ReadonlyMap<string, ReplayLeft>;
}

/** Why `replay` left a namespace (metric label `reason`: role_changed, record_ended). */
export interface ReplayLeft {
  readonly reason: 'role-changed' | 'record-ended';
  /** For the log: what happened, in words. */
  readonly detail: string;
}

/** `{ plan }` when every write in `racing` can be re-applied, else `{ refused }` naming the first that cannot. Pure. */
export function planReplay(racing: readonly TrackedWrite[], checks: ReplayChecks): { plan: ReplayPlan } | { refused: string } {
  const logs = new Map<string, number>();
  const streams = new Map<string, StreamRewind>();
  for (const { scope, ticket } of racing) {
    const r = ticket.replay;
    switch (r.kind) {
      case 'none':
        break;
      case 'log':
        logs.set(r.namespace, Math.min(r.seq, logs.get(r.namespace) ?? Infinity));
        break;
      case 'stream': {
        const k = `${r.namespace}\u0000${r.source}`;
        const had = streams.get(k);
        if (!had || r.seq < had.seq) streams.set(k, { namespace: r.namespace, source: r.source, seq: r.seq });
        break;
      }
      default:
        return { refused: scope === null ? 'a write that may touch anything' : `a write in namespace ${scope} that cannot be re-applied` };
    }
  }
  for (const [ns, from] of logs) {
    const why = checks.checkLog(ns, from);
    if (why !== undefined) return { refused: `namespace ${ns}'s change log from ${from}: ${why}` };
  }
  for (const s of streams.values()) {
    if (!checks.canRewind(s.namespace, s.source, s.seq)) return { refused: `the stream of namespace ${s.namespace} from ${s.source} cannot move back before ${s.seq}` };
  }
  return { plan: { logs, streams: [...streams.values()], writes: racing.length } };
}

/** The namespaces whose content the plan changes after the restore (left out of the restore's verification). */
export function replayedNamespaces(plan: ReplayPlan): string[] {
  return [...new Set([...plan.logs.keys(), ...plan.streams.map((s) => s.namespace)])].sort();
}
