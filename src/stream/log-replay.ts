/**
 * Log replay: re-applies a primary namespace's changes from this site's own change log onto this site's NetHSM, after
 * a merge-restore erased writes that raced it (docs/concurrency.md, "Racing writes re-applied"). The restore put the
 * namespace back as the merge's base backup had it: some prefix of the log, at or after `fromSeq - 1`, which replay
 * cannot know. So every change is applied as the replica's apply does (apply.ts makeEffect: found in place → skipped,
 * missing → made), in seq order, and the device converges to the log's state from any such prefix: an import, delete,
 * import of one id deletes and re-imports; a label set on a key the suffix deletes later is skipped (it could only land
 * on the later copy). Imports are opened from the envelope sealed to this site's own transport key (capture.ts, while
 * the barrier tracks writes). No replica position or applied record is written: the namespace is primary here.
 *
 * `check` refuses what replay cannot make converge: a catch-up (no API call carries it), an import without an own
 * envelope, changes no longer retained, and moves whose ids the suffix also reuses in a way that leaves the device's
 * copy ambiguous (a key a move made cannot be re-made: deleting the wrong copy would lose it).
 *
 * A merge-restore's replay runs AFTER its exclusive hold, under a shared hold scoped to the namespace, and reads the log
 * only up to `toSeq`, the head when the hold restored (race-replayer.ts): a change admitted after the hold may be in
 * flight on a key, so it is never read; meanwhile the gateway lets through only writes to keys this span does not name,
 * of kinds replay can always re-apply (`span`), and holds the others until the replay is done. A replay left pending
 * (a crash, a device that failed it) is finished in an exclusive hold, to the current head.
 */
import { NetHsmHttpError, StreamApplyFailedError, StreamReplayRefusedError } from '../errors.js';
import type { NetHsmClient } from '../nethsm/client.js';
import type { LoggedChange } from '../state/changelog-repo.js';
import type { StateStore } from '../state/store.js';
import { exists, makeEffect, type ApplyDeps, type Unwrapper } from './apply.js';
import { changeLineFor, type ChangeLine } from './protocol.js';

export interface LogReplayOptions {
  store: StateStore;
  /** This site's name: the envelopes it opens are those the capture sealed under it. */
  site: string;
  /**
   * This site's transport key; undefined when it has none (imports are then refused). Its `unwrap` answers the window
   * keys the capture made itself from memory (UnwrappedKeyCache.remember), others through the NetHSM.
   */
  transportKey(): Unwrapper | undefined;
  /**
   * The namespace's replication account on this site's NetHSM (StreamService.client): the same Administrator the
   * stream's apply uses at a replica; a primary has it too (anti-entropy reads the primary's keys through it).
   */
  client(namespace: string): NetHsmClient;
}

/**
 * Which epoch's log a replay reads and why it runs. `epoch`: the epoch the erased writes were logged at (default: the
 * namespace's current one); a record kept across an epoch change of a namespace still primary here replays its own
 * epoch's changes. `purpose`: `primary` (default) needs this site to be the namespace's primary (or stepped down with
 * its hand-off pending); `fence export` needs it fenced, and is only for the fence's exclusive hold, before the
 * quarantine export that must hold the writes (src/daemon/failover.ts).
 */
export interface ReplayAt {
  readonly epoch?: number;
  readonly purpose?: 'primary' | 'fence export';
  /**
   * The last seq to read (default: the epoch's head). A replay after a merge-restore's hold passes the head as it was
   * when the hold restored: changes admitted since may be in flight, and are not the replay's (contract 1 of
   * docs/concurrency.md, "Racing writes re-applied").
   */
  readonly toSeq?: number;
}

/** What a replay from a seq reads: up to which seq, and the key ids it names (namespace-qualified: `ns/id`). */
export interface ReplaySpan {
  readonly toSeq: number;
  readonly keys: ReadonlySet<string>;
}

/** Rows read from SQLite per query. */
const BATCH = 500;
/** Keys replayed at once at most (each key's changes in order): about what a NetHSM serves in parallel. */
export const REPLAY_CONCURRENCY = 8;
/** Changes dropOwnEnvelopes scans per transaction. */
const DROP_SLICE = 20_000;

export class LogReplay {
  readonly #o: LogReplayOptions;
  /** Per namespace, the seq up to which own envelopes were dropped (dropOwnEnvelopes). */
  readonly #dropped = new Map<string, number>();

  constructor(o: LogReplayOptions) {
    this.#o = o;
  }

  /**
   * Whether `replay(namespace, fromSeq, at)` can re-apply every change of the epoch (`at.epoch`, default the current
   * one) from `fromSeq` to that epoch's head: undefined when it can (also when there is none), else the reason.
   * Synchronous, SQLite only.
   */
  check(namespace: string, fromSeq: number, at?: ReplayAt): string | undefined {
    return this.#plan(namespace, fromSeq, at).reason;
  }

  /**
   * What `replay(namespace, fromSeq, at)` would read: the last seq (the epoch's head, or `at.toSeq`) and every key id
   * the changes name (a change's key, a move's new id), qualified as the capture's key locks are (`ns/id`). The
   * gateway holds a write to any of these keys until that replay is done. Undefined when `check` refuses. SQLite only.
   */
  span(namespace: string, fromSeq: number, at?: ReplayAt): ReplaySpan | undefined {
    const plan = this.#plan(namespace, fromSeq, at);
    if (plan.reason !== undefined) return undefined;
    const keys = new Set<string>();
    for (const c of plan.rows) {
      if (c.keyId !== undefined) keys.add(`${namespace}/${c.keyId}`);
      const n = newIdOf(c);
      if (n !== undefined) keys.add(`${namespace}/${n}`);
    }
    return { toSeq: plan.toSeq, keys };
  }

  /**
   * Applies those changes in seq order with the replica's effect semantics; resolves with how many effects it had to
   * make (the others were in place). Records no position. Throws StreamReplayRefusedError (nothing applied) when
   * `check` gives a reason; what apply.ts makeEffect throws for a change this NetHSM refuses or a device condition,
   * and StreamApplyFailedError for a change the device state contradicts (a key the log says exists is missing).
   * On a failure it starts no further change and settles only once every change it started has been answered (the
   * caller's hold must outlast them). Idempotent: a second call (after a crash, say) converges to the same state. Call it inside the exclusive hold, or
   * (with `at.toSeq`) under a shared hold while the gateway holds writes to the span's keys (race-replayer.ts).
   */
  async replay(namespace: string, fromSeq: number, at?: ReplayAt): Promise<number> {
    const plan = this.#plan(namespace, fromSeq, at);
    if (plan.reason !== undefined) {
      throw new StreamReplayRefusedError(`changes of ${namespace} from ${fromSeq} cannot be re-applied from the change log: ${plan.reason}`, { namespace });
    }
    const deps: ApplyDeps = { site: this.#o.site, store: this.#o.store, client: (ns) => this.#o.client(ns), transportKey: () => this.#o.transportKey() };
    // The hold lasts as long as the replay: keys are independent of each other (a move links two, so any move makes
    // it one chain), so each key's changes run in order and up to REPLAY_CONCURRENCY keys at once (never more than the
    // pool's connections). Not the whole pool: the replay runs after the hold while the namespace's other writes pass
    // (`admitsDuring`), and a write that finds 32 replayed imports queued at a device serving a few at a time is held
    // for them; the branch that used the pool's width measured the busy hold 1.7–2.1× a raw restore against 0.9–1.6
    // at 8 (docs/benchmarks.md, "Busy site: the racing writes re-applied faster").
    const chains = replayChains(plan.rows);
    const width = Math.max(1, Math.min(REPLAY_CONCURRENCY, this.#o.client(namespace).connections, chains.length));
    let made = 0;
    let next = 0;
    // The first failure stops every worker before its next change, and replay() settles only once each has: the
    // caller's barrier hold ends when it settles, and a change still on its way to the NetHSM then would land outside it.
    let failure: { err: unknown } | undefined;
    const worker = async (): Promise<void> => {
      while (failure === undefined && next < chains.length) {
        const chain = chains[next++]!;
        try {
          for (const [i, change] of chain.entries()) {
            if (failure !== undefined) return;
            if (await this.#apply(deps, namespace, changeLineFor(change, this.#o.site), chain, i)) made++;
          }
        } catch (err) {
          failure ??= { err };
        }
      }
    };
    await Promise.all(Array.from({ length: width }, worker));
    if (failure !== undefined) throw failure.err;
    return made;
  }

  /**
   * Removes every envelope sealed to this site's own transport key from the change log and open intents; returns the
   * rows changed. The lead calls it when no write tracker is open and no replay is pending: own envelopes live only
   * while a merge-restore may need them (docs/key-material.md). `stop` is asked before each slice: once it says true
   * (a sync started while the drop yielded, so imports are sealed for it again) the drop ends there, and the next one
   * goes on from where it stopped.
   */
  async dropOwnEnvelopes(stop: () => boolean = () => false): Promise<number> {
    const { store, site } = this.#o;
    let n = store.transaction(() => store.intents.dropEnvelopesOf(site));
    for (const row of store.roles.list()) {
      const ns = row.namespace;
      const top = store.changelog.maxSeq(ns);
      // Own envelopes exist only on changes logged since the last drop; the first drop after a start (a crash may have
      // left some) reads the whole log, in slices that let the event loop breathe.
      for (let from = this.#dropped.get(ns) ?? 0; from < top; from += DROP_SLICE) {
        if (stop()) return n;
        const to = Math.min(top, from + DROP_SLICE);
        n += store.transaction(() => store.changelog.dropEnvelopesOf(site, ns, from, to));
        this.#dropped.set(ns, to);
        if (to < top) await new Promise<void>((r) => setImmediate(r));
      }
    }
    return n;
  }

  /** One change (`chain[at]`); true when its effect had to be made. */
  async #apply(deps: ApplyDeps, namespace: string, line: ChangeLine, chain: readonly LoggedChange[], at: number): Promise<boolean> {
    if (line.kind === 'catchup') throw new StreamReplayRefusedError(`change ${line.seq} is a catch-up: ${line.reason}`, { namespace });
    if (line.kind === 'key-moved') return this.#move(namespace, line);
    // A label, tag or certificate change that lands on a later copy of its key id (the device is past a delete and
    // re-import) is undone by that delete, which comes after it in the suffix.
    const effect = await makeEffect(deps, namespace, line);
    if (effect.outcome !== 'catchup') return effect.outcome === 'applied';
    // The key is missing: fine when the suffix deletes or moves it away later (the device is past that), else the
    // device contradicts the log.
    if (chain.some((c, j) => j > at && removes(c, line.keyId))) return false;
    throw new StreamApplyFailedError(`change ${line.seq} (${line.kind}) of ${namespace} cannot be re-applied: ${effect.reason}`, { namespace });
  }

  /**
   * A move A→B: B there means the device is past it (B did not exist before it, or the move would have failed; check
   * refuses suffixes that make B earlier); A missing means past it too (A was deleted or moved later). Otherwise moved.
   */
  async #move(namespace: string, line: Extract<ChangeLine, { kind: 'key-moved' }>): Promise<boolean> {
    const c = this.#o.client(namespace);
    if ((await exists(c, line.newId)) || !(await exists(c, line.keyId))) return false;
    try {
      await c.moveKey(line.keyId, line.newId);
      return true;
    } catch (err) {
      if (!(err instanceof NetHsmHttpError) || err.retryable) throw err;
      throw new StreamApplyFailedError(`change ${line.seq} (move of ${line.keyId} to ${line.newId}) refused by this NetHSM: ${err.status}`, { namespace, cause: err });
    }
  }

  /** The rows from `fromSeq` to the head (or `at.toSeq`), or why they cannot be replayed. */
  #plan(namespace: string, fromSeq: number, at: ReplayAt = {}): { rows: LoggedChange[]; toSeq: number; reason?: string } {
    const refuse = (reason: string) => ({ rows: [], toSeq: 0, reason });
    if (!Number.isSafeInteger(fromSeq) || fromSeq < 1) return refuse(`from-seq ${String(fromSeq)} is not a positive integer`);
    const { store, site } = this.#o;
    const role = store.roles.get(namespace);
    if (!role) return refuse(`namespace ${namespace} is not known here`);
    if (at.purpose === 'fence export') {
      // Only a fenced site, inside its fence's exclusive hold before the export: the quarantine file must hold them.
      if (role.role !== 'fenced') return refuse(`namespace ${namespace} is ${role.role} here, not fenced: only a fence export re-applies at a site that is not primary`);
    } else if ((role.role !== 'primary' && role.role !== 'replica') || role.primarySite !== site) {
      // Stepped down (a demote whose hand-off is pending) counts: the successor takes the namespace from this device.
      return refuse(`namespace ${namespace} is not primary here`);
    }
    const epoch = at.epoch ?? role.epoch;
    if (!Number.isSafeInteger(epoch) || epoch < 0 || epoch > role.epoch) return refuse(`epoch ${String(epoch)} is not one namespace ${namespace} has had here (it is at ${role.epoch})`);
    // An earlier epoch's changes end where that epoch's log ends (seqs go on across epochs).
    const last = epoch === role.epoch ? store.changelog.head(namespace, epoch).seq : store.changelog.lastSeqAt(namespace, epoch);
    if (at.toSeq !== undefined && (!Number.isSafeInteger(at.toSeq) || at.toSeq < 0)) return refuse(`to-seq ${String(at.toSeq)} is not a non-negative integer`);
    const head = at.toSeq === undefined ? last : Math.min(last, at.toSeq);
    if (head < fromSeq) return { rows: [], toSeq: head };
    const rows: LoggedChange[] = [];
    for (let after = fromSeq - 1; after < head; ) {
      const batch = store.changelog.after(namespace, epoch, after, Math.min(BATCH, head - after));
      for (const c of batch) {
        if (c.seq !== after + 1) return refuse(after < fromSeq ? `changes from ${fromSeq} are no longer retained` : `change ${after + 1} is missing from the log`);
        rows.push(c);
        after = c.seq;
      }
      if (batch.length === 0) return refuse(`changes from ${after + 1} are no longer retained`);
    }
    for (const [i, c] of rows.entries()) {
      const why = this.#refusal(rows, i);
      if (why !== undefined) return refuse(`change ${c.seq} (${c.kind}${c.keyId !== undefined ? ` of ${c.keyId}` : ''}): ${why}`);
    }
    return { rows, toSeq: head };
  }

  /**
   * Why change `rows[i]` cannot be replayed given the changes before and after it in the suffix; undefined when it can.
   * Only a move looks at the others (this runs inside the merge-restore's hold, via `span`: no copy of the suffix per
   * change, which made the check quadratic in the racing writes).
   */
  #refusal(rows: readonly LoggedChange[], i: number): string | undefined {
    const c = rows[i]!;
    const line = changeLineFor(c, this.#o.site);
    if (line.kind === 'catchup') return `a catch-up (${line.reason})`;
    if (line.kind === 'key-imported' && this.#o.transportKey() === undefined) return 'an import, and this site has no transport key to open it';
    if (line.kind !== 'key-moved') return undefined;
    const before = rows.slice(0, i);
    const after = rows.slice(i + 1);
    const from = line.keyId;
    const to = line.newId;
    // Replay reads "B exists" as "past this move": only sound when nothing earlier in the suffix made or removed B.
    if (before.some((b) => names(b, to))) return `an earlier change of the suffix names ${to}`;
    // A made or removed before the move: on a device past the move, replay would re-make it and leave a copy behind.
    if (before.some((b) => CONTENT_KINDS.has(b.kind) && names(b, from))) return `an earlier change of the suffix makes or removes ${from}`;
    // A changed before and made again after: the earlier change would land on the later copy.
    if (before.some((b) => names(b, from)) && after.some((a) => makes(a, from))) return `${from} is changed before the move and made again after it`;
    return undefined;
  }
}

const CONTENT_KINDS: ReadonlySet<string> = new Set(['key-imported', 'key-deleted', 'key-moved']);

function newIdOf(c: LoggedChange): string | undefined {
  const n = (c.detail as { newId?: unknown }).newId;
  return c.kind === 'key-moved' && typeof n === 'string' ? n : undefined;
}

/** The change names `id` as its key or as a move's new id. */
function names(c: LoggedChange, id: string): boolean {
  return c.keyId === id || newIdOf(c) === id;
}

/** The change makes `id` exist (an import of it, a move to it). */
function makes(c: LoggedChange, id: string): boolean {
  return (c.kind === 'key-imported' && c.keyId === id) || newIdOf(c) === id;
}

/** The change makes `id` stop existing (a delete of it, a move away from it). */
function removes(c: LoggedChange, id: string): boolean {
  return (c.kind === 'key-deleted' || c.kind === 'key-moved') && c.keyId === id;
}

/** What a label, tag or certificate change sets (its later change of the same thing on the same copy supersedes it). */
function attributeOf(c: LoggedChange): string | undefined {
  switch (c.kind) {
    case 'label-set':
    case 'label-removed':
      return 'label';
    case 'cert-set':
    case 'cert-removed':
      return 'cert';
    case 'tag-added':
    case 'tag-removed':
      return `tag:${String((c.detail as { tag?: unknown }).tag)}`;
    default:
      return undefined;
  }
}

/**
 * The suffix as chains to replay, each in seq order: one per key id, less the label, tag and certificate changes a
 * later change of the same thing supersedes before the key is made or removed again (the device ends as the last one
 * says); one chain for all when a move links keys. Exported for its test.
 */
export function replayChains(rows: readonly LoggedChange[]): LoggedChange[][] {
  const kept: LoggedChange[] = [];
  const seen = new Map<string, Set<string>>();
  for (let i = rows.length - 1; i >= 0; i--) {
    const c = rows[i]!;
    const key = c.keyId ?? '';
    const attr = attributeOf(c);
    if (attr === undefined) {
      // Made, removed or moved: what came before it was set on another copy.
      seen.delete(key);
      kept.push(c);
      continue;
    }
    let s = seen.get(key);
    if (!s) seen.set(key, (s = new Set()));
    if (s.has(attr)) continue;
    s.add(attr);
    kept.push(c);
  }
  kept.reverse();
  if (kept.some((c) => c.kind === 'key-moved')) return kept.length > 0 ? [kept] : [];
  const chains = new Map<string, LoggedChange[]>();
  for (const c of kept) {
    const key = c.keyId ?? '';
    let chain = chains.get(key);
    if (!chain) chains.set(key, (chain = []));
    chain.push(c);
  }
  return [...chains.values()];
}
