/**
 * Overlapping imports at a replica. Applying one change at a time costs a replica one NetHSM round trip chain per
 * import (envelope unwrap through the NetHSM's decrypt when not cached, import), so a primary taking imports from
 * several clients at once outruns it by the primary's concurrency. The window lets up to `size` consecutive
 * `key-imported` changes of distinct keys be carried out on the device at the same time, and still records them (the
 * record and the new position together) strictly in stream order, each as soon as it and every earlier
 * one are done.
 *
 * Why this is as safe as one at a time: imports of distinct ids do not interact on the device, and every other kind of
 * change (or a second change of a key in flight) is a barrier the puller applies alone after draining the window. A
 * crash or failure leaves the position at the last change recorded in order; the changes after it that did reach the
 * device are replayed from there and found present, exactly as one change applied but not recorded is today. After a
 * failure nothing later is recorded, the owner is told at once (`failed`), and `drain()` waits for every effect in
 * flight to settle before it returns, so no device write of this window overlaps a snapshot or a reconnect.
 *
 * Records go through the store's group commit (one transaction and fsync for the records of up to RECORD_LINGER_MS), each
 * still after every earlier one and each checked, inside that transaction, to follow the stored position (recordNext),
 * so a record whose predecessor failed to commit is refused rather than moving the position past it. A slot counts as
 * done, and the caller is told (`recorded`), only once its record is durable. The window's size bounds the effects at
 * the device; a change waiting for its record does not count against it (its room goes to the next import).
 *
 * Its size is fixed (`size: n`) or adaptive (`size: ApplyLimit`, apply-limit.ts: twice the rate the device delivers
 * times its unloaded latency, bounded by the NetHSM client's pool); the window reports each import's latency to it and
 * when it is full.
 *
 * Read-ahead (`queue`, used while a stream applies again what a restore erased): an import may be admitted without
 * waiting for device room. It is queued, not started: queued changes start (once the lines already received are
 * admitted) while fewer than `size` of them are at the device and no `add` waits for room, so the changes added
 * meanwhile (`add`, the new ones) start first, with the room beyond the queued ones' up to `readAheadRoom` (the NetHSM
 * client's pool) while read-ahead changes are in the window. Records still go strictly in
 * stream order, so a new change's record waits for every queued change before it. The contract for queued changes:
 * - a barrier drain (`drain()`) starts them all, as room frees, and waits for them: the next change applies after them;
 * - a failure, a drain to let another holder in (`yieldWanted`, `holdBound`) and `abandon()` drop them instead: a
 *   dropped change is never started (its effect cannot begin later, inside another holder's device hold), and neither
 *   it nor any later change is recorded. The window fails with `ReadAheadDropped` (its owner reconnects from the
 *   stored position, which is at or before the first dropped change, and reads them again); the effects of later
 *   changes that did reach the device are found present then, as after any failure;
 * - the queue is bounded by READ_AHEAD_MAX changes in the window (memory): `queue` waits for the earliest to be
 *   recorded beyond that.
 *
 * While the window is not empty it holds, in the lock order (docs/concurrency.md), a shared hold of the device barrier
 * (`admit`, which also checks the stream's fencing token) and then the namespace's lock. The token is checked again
 * right before each change's first device call (`fence`): a change admitted under the hold may wait for room, or queued
 * read ahead, past a pause or role change, and must not start after it (the window then fails, as for a stale token). It gives both up when it
 * empties, after `holdBound` changes when another caller waits for the lock, and as soon as an exclusive device hold
 * is waiting (`yieldWanted`), after a drain, so neither a snapshot sync of this namespace nor a merge-restore of
 * another is starved by a stream of imports.
 */
import { FenceTokenStaleError, isRetryable } from '../errors.js';
import type { Mutex } from '../util/mutex.js';
import { admitChange, makeEffect, recordNext, type ApplyDeps, type Effect } from './apply.js';
import type { ChangeLine } from './protocol.js';

/** A change of the window needs a snapshot (e.g. no transport key here): nothing from it on was recorded. */
export class CatchupNeeded extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

/** An adaptive size (ApplyLimit): read before each admission, told when the window is full and how each import went. */
export interface WindowLimit {
  readonly current: number;
  full(): void;
  sample(ms: number, failed?: boolean): void;
}

export interface ApplyWindowOptions {
  deps: ApplyDeps;
  namespace: string;
  source: string;
  lock: Mutex;
  /** Admission to the device barrier (shared, token-checked), taken before `lock`; resolves with its release. */
  admit?: () => Promise<() => void>;
  /**
   * The stream's fencing token check (throws FenceTokenStaleError), run right before each change's first device call
   * (makeEffect): `admit` checks the token once per hold, and one hold carries many changes. A stale one fails the
   * window (nothing from that change on is recorded) with the change never started.
   */
  fence?: () => void;
  /** Whether an exclusive device hold waits for this window to let go. */
  yieldWanted?: () => boolean;
  /** Imports in flight at most: a fixed number (1: the window takes no import), or an adaptive limit. */
  size: number | WindowLimit;
  /**
   * Effects at the device at most while read-ahead changes are in the window: `add` gets the room beyond the queued
   * changes' `size` up to this (the NetHSM client's pool). Default (and never below) `size`.
   */
  readAheadRoom?: number;
  /** Changes admitted under one hold of the lock before the window drains and lets waiters in (when any wait). */
  holdBound?: number;
  /**
   * Called when a change's effect is on the device (applied or found present), before its record, in any order; `ms`:
   * how long the effect took from its start (the unwrap, the device calls), `unwrapMs` the unwrap's part (imports
   * that opened their envelope).
   */
  reached?(line: ChangeLine, ms: number, unwrapMs: number | undefined): void;
  /** Called after each change is recorded (metrics, gauges). */
  recorded(line: ChangeLine, outcome: 'applied' | 'present' | 'duplicate'): void;
  /**
   * Called once, at once, when a change of the window fails (until the drain that reports it). The window keeps its
   * device hold and the namespace's lock until then, so the owner must drain now (e.g. cut its stream), not at the
   * next change, which may never come: heartbeats alone would keep a failed window holding them for ever.
   */
  failed?(err: unknown): void;
}

/**
 * The window dropped read-ahead changes it had not started (an exclusive device hold or a waiter for the namespace's
 * lock wants in, or the owner abandoned the window): nothing from the first of them on was recorded. Not a failure of
 * any change: the owner reconnects from the stored position at once.
 */
export class ReadAheadDropped extends Error {
  constructor(readonly reason: string) {
    super(`read-ahead stream changes dropped before they started (${reason}); reconnecting from the stored position`);
  }
}

interface Slot {
  keyId: string;
  /** Admitted by `queue` (read ahead), not `add`. */
  readAhead: boolean;
  /** While queued (read ahead, not started): starts the effect now, or drops it (it never starts). */
  start?: () => void;
  drop?: (err: Error) => void;
  /** Settles when the change is recorded (or fails, or an earlier one failed). */
  done: Promise<void>;
  /** Settles when the device effect has ended, whatever the outcome. */
  settled: Promise<unknown>;
}

/** Changes whose effect ended may wait for their record up to this many times the window's size. */
const RECORD_BACKLOG = 4;
/**
 * How long a record may wait for others to share its group commit. Imports end one per event-loop turn, so without it
 * each record is a transaction and a WAL sync of its own (~0.25 ms of CPU each on a virtual disk); nothing waits for a
 * record but the lag (its room in the window went to the next import when its effect ended), so it may wait this long.
 */
export const RECORD_LINGER_MS = 20;
/**
 * Changes in the window at most while it reads ahead (`queue`). Bounds memory: an import line with its envelope is a
 * few KB, so about 4 MB; an erased span is the stream's rate times a sync's backup and merge (50–170 changes at 50/s).
 */
export const READ_AHEAD_MAX = 1024;

export class ApplyWindow {
  readonly #o: ApplyWindowOptions;
  #slots: Slot[] = [];
  #tail: Promise<void> = Promise.resolve();
  #lastSeq: number | undefined;
  #release: (() => void) | undefined;
  #held = 0;
  #failure: unknown;
  /** Effects started and not ended: what loads the device. */
  #atDevice = 0;
  /** add() calls (and a flushing drain) waiting for an effect to end. */
  #roomWaiters: (() => void)[] = [];
  /** Read-ahead changes admitted and not started, in stream order. */
  #queue: Slot[] = [];
  /** Read-ahead changes whose effect has not ended (queued or at the device): while any, `add` has readAheadRoom. */
  #readAhead = 0;
  /** Read-ahead changes at the device: at most `size` (the span's room; new changes get the rest of readAheadRoom). */
  #readAheadAtDevice = 0;
  /** A #pumpSoon is pending. */
  #pumpScheduled = false;

  constructor(o: ApplyWindowOptions) {
    this.#o = o;
  }

  /** Whether `line` may join the window: an import of a key with no change in flight. */
  accepts(line: ChangeLine): boolean {
    const { size } = this.#o;
    return line.kind === 'key-imported' && (typeof size !== 'number' || size > 1) && !this.#slots.some((s) => s.keyId === line.keyId);
  }

  /** No change in flight or waiting for its record (a failed one counts until the drain). */
  get empty(): boolean {
    return this.#slots.length === 0;
  }

  /** Imports the window lets be in flight now. */
  get size(): number {
    const { size } = this.#o;
    return typeof size === 'number' ? size : size.current;
  }

  /**
   * Admits an import (accepts(line) must hold) and starts its effect; waits for room first. Throws an earlier failure
   * of the window (after draining), or what admitChange throws (stale epoch, gap) after draining.
   */
  async add(line: Extract<ChangeLine, { kind: 'key-imported' }>): Promise<void> {
    await this.#admit(line, false);
  }

  /**
   * Admits an import read ahead (accepts(line) must hold): queued without waiting for device room, started when room
   * frees and no `add` waits for it (see the class's contract). Waits only while READ_AHEAD_MAX changes are in the
   * window. Throws as `add` does, and ReadAheadDropped when it had to drop queued changes to let another holder in.
   */
  async queue(line: Extract<ChangeLine, { kind: 'key-imported' }>): Promise<void> {
    await this.#admit(line, true);
  }

  async #admit(line: Extract<ChangeLine, { kind: 'key-imported' }>, readAhead: boolean): Promise<void> {
    if (this.#failure !== undefined) await this.drain();
    // Give the lock up after `holdBound` changes only when someone waits for it: draining costs the device a whole
    // window's latency idle (measured: a few per cent of a replica's throughput at one drain per 256 changes).
    if (this.#mustLetGo()) await this.#letGo();
    await this.#room(readAhead);
    if (!this.#release) this.#release = await this.#hold();
    const { deps, namespace, source } = this.#o;
    let verdict: 'duplicate' | 'go';
    try {
      verdict = admitChange(deps, namespace, source, line, this.#lastSeq);
    } catch (err) {
      this.#fail(err);
      await this.drain();
      throw err;
    }
    this.#held++;
    this.#lastSeq = Math.max(this.#lastSeq ?? line.seq, line.seq);
    if (verdict === 'duplicate') {
      this.#o.recorded(line, 'duplicate');
      if (this.#slots.length === 0) this.#idle();
      return;
    }
    const slot: Slot = { keyId: line.keyId, readAhead, done: Promise.resolve(), settled: Promise.resolve() };
    // A read-ahead change's effect is a promise its start() resolves with the effect it then begins (or drop() rejects).
    const effect: Promise<Effect> = readAhead
      ? new Promise<Effect>((resolve, reject) => {
          slot.start = () => resolve(this.#start(line, true));
          slot.drop = reject;
        })
      : this.#start(line, false);
    slot.settled = effect.then(
      () => undefined,
      () => undefined,
    );
    // `queued`: this change's record is in the group-commit queue, after its predecessor's (the order of records);
    // `done`: it is committed. A failure of either is the window's failure, and no later change is recorded after it.
    let committed: Promise<void> = Promise.resolve();
    const queued = this.#tail.then(async () => {
      const e = await effect;
      if (e.outcome === 'catchup') throw new CatchupNeeded(e.reason);
      const outcome = e.outcome;
      committed = deps.store
        .groupCommit(() => recordNext(deps, namespace, source, line, outcome), { lingerMs: RECORD_LINGER_MS })
        .then(() => this.#o.recorded(line, outcome));
    });
    const done = queued.then(() => committed);
    done.catch((err: unknown) => this.#fail(err));
    slot.done = done;
    this.#tail = queued;
    this.#slots.push(slot);
    if (readAhead) {
      this.#readAhead++;
      this.#queue.push(slot);
      this.#pumpSoon();
    }
    // Drop the slot once recorded, so `accepts` and the room count see only changes in flight; an empty window gives
    // the lock up at once (a stream idle after a burst must not keep snapshot syncs waiting).
    void done.then(
      () => {
        this.#slots = this.#slots.filter((s) => s !== slot);
        if (this.#slots.length === 0 && this.#failure === undefined) this.#idle();
      },
      () => undefined,
    );
  }

  /**
   * Waits for room for one more change. Read ahead: at most READ_AHEAD_MAX changes in the window. Otherwise at most
   * `size` effects at the device (readAheadRoom while read-ahead changes are in the window: the new changes' room beyond
   * them); a change whose effect ended and whose record waits for its group commit no longer loads the device, but at
   * most RECORD_BACKLOG × that many changes not read ahead may be unrecorded. A recorded slot leaves #slots by itself; a
   * failed one stays until the drain.
   */
  async #room(readAhead: boolean): Promise<void> {
    for (;;) {
      const room = this.#readAhead > 0 ? this.#readAheadRoom() : this.size;
      const deviceFull = !readAhead && this.#atDevice >= room;
      const backlog = readAhead ? this.#slots.length >= READ_AHEAD_MAX : this.#slots.filter((s) => !s.readAhead).length >= RECORD_BACKLOG * room;
      if (!deviceFull && !backlog) return;
      if (deviceFull && typeof this.#o.size !== 'number') this.#o.size.full();
      await (deviceFull ? new Promise<void>((wake) => this.#roomWaiters.push(wake)) : this.#slots[0]!.done.catch(() => undefined));
      if (this.#failure !== undefined) await this.drain();
      // Another holder began to wait meanwhile: the room that freed is not this change's to take (it would start on
      // the device after the exclusive hold asked for it, which then waits for it too). Drain and let go first.
      else if (this.#mustLetGo()) await this.#letGo();
    }
  }

  /** Effects at the device at most while read-ahead changes are in the window. */
  #readAheadRoom(): number {
    return Math.max(this.size, this.#o.readAheadRoom ?? 0);
  }

  /** Starts `line`'s effect now (it counts at the device until it ends) and returns it. */
  #start(line: Extract<ChangeLine, { kind: 'key-imported' }>, readAhead: boolean): Promise<Effect> {
    const started = performance.now();
    const effect = makeEffect(this.#o.deps, this.#o.namespace, line, this.#o.fence);
    const limit = typeof this.#o.size === 'number' ? undefined : this.#o.size;
    this.#atDevice++;
    if (readAhead) this.#readAheadAtDevice++;
    // `failed`: a transient failure (the limit halves); undefined: the effect never reached the device, no sample.
    const effectEnded = (failed: boolean | undefined) => {
      this.#atDevice--;
      if (readAhead) {
        this.#readAhead--;
        this.#readAheadAtDevice--;
      }
      if (failed !== undefined) limit?.sample(performance.now() - started, failed);
      // An add() waiting for room gets it before a queued change (new changes first): the queue is pumped after it ran.
      const waiting = this.#roomWaiters.length > 0;
      for (const wake of this.#roomWaiters.splice(0)) wake();
      if (waiting) this.#pumpSoon();
      else this.#pump();
    };
    void effect.then(
      (e) => {
        effectEnded(false);
        if (e.outcome !== 'catchup') this.#o.reached?.(line, performance.now() - started, e.unwrapMs);
      },
      // A change its fence stopped (a stale token) ended before any device call: its near-zero time is no latency of
      // the device's. Sampled, it became the limit's baseline, whose target then shrank the limit to 1 at the next
      // full round, so the backlog after a pause or role change went one import at a time until a probe (5 s).
      (err: unknown) => effectEnded(err instanceof FenceTokenStaleError ? undefined : isRetryable(err)),
    );
    return effect;
  }

  /**
   * Starts queued changes while fewer than `size` of them are at the device (within readAheadRoom in all) and no add()
   * waits for room. When another
   * holder wants in (mustLetGo) it starts none and drops the queue instead: the window fails with ReadAheadDropped.
   */
  #pump(): void {
    while (this.#queue.length > 0 && this.#failure === undefined && this.#readAheadAtDevice < this.size && this.#atDevice < this.#readAheadRoom() && this.#roomWaiters.length === 0) {
      if (this.#mustLetGo()) {
        this.#fail(this.#letGoDrop());
        return;
      }
      this.#queue.shift()!.start!();
    }
  }

  /**
   * Pumps once the lines already received are admitted (setImmediate runs after this turn's I/O callbacks): after a
   * hold, the stream's buffer holds the span and then the new changes that came meanwhile, and pumping at once gave the
   * span the device's (and the pool's warm connections') first turn. The queue still starts at every effect's end.
   */
  #pumpSoon(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setImmediate(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  /** Another holder wants in: an exclusive device hold waits (yieldWanted), or a lock waiter after `holdBound` changes. */
  #mustLetGo(): boolean {
    if (!this.#release) return false;
    return (this.#held >= (this.#o.holdBound ?? 256) && this.#o.lock.waiting > 0) || this.#o.yieldWanted?.() === true;
  }

  /** Why queued read-ahead changes are dropped when another holder wants in (mustLetGo). */
  #letGoDrop(): ReadAheadDropped {
    return new ReadAheadDropped(this.#o.yieldWanted?.() ? 'an exclusive device hold waits' : 'a caller waits for the namespace lock');
  }

  /** Lets another holder in: drains (queued changes are dropped, never started inside its hold) and gives the hold up. */
  async #letGo(): Promise<void> {
    if (this.#queue.length > 0) this.#fail(this.#letGoDrop());
    await this.drain();
  }

  /**
   * Waits until every change admitted is recorded or has failed and every device effect has ended (queued read-ahead
   * changes are started first, as room frees, unless the window failed: then they are dropped, never started), gives
   * the lock up, and throws the window's first failure (a CatchupNeeded, ReadAheadDropped, a NetHSM or envelope error)
   * if there was one. Idempotent; the window is empty and reusable afterwards.
   */
  async drain(): Promise<void> {
    while (this.#queue.length > 0 && this.#failure === undefined) {
      this.#pump();
      if (this.#queue.length === 0 || this.#failure !== undefined) break;
      await new Promise<void>((wake) => this.#roomWaiters.push(wake));
    }
    this.#dropQueue();
    const slots = this.#slots;
    await Promise.all(slots.map((s) => s.settled));
    await Promise.all(slots.map((s) => s.done.catch(() => undefined)));
    this.#slots = [];
    this.#idle();
    const failure = this.#failure;
    this.#failure = undefined;
    if (failure !== undefined) throw failure;
  }

  /**
   * Drops the queued read-ahead changes (never started; nothing from the first of them on is recorded), waits for the
   * effects at the device and the records before the first dropped change, and gives the lock up. For an owner that
   * stops (its stream cut): it reads the dropped changes again from the stored position. Never throws.
   */
  async abandon(): Promise<void> {
    if (this.#queue.length > 0 && this.#failure === undefined) this.#failure = new ReadAheadDropped('the stream stopped');
    await this.drain().catch(() => undefined);
  }

  /** After a failure: the queued changes never start; their records (and every later one) are not made. */
  #dropQueue(): void {
    const queued = this.#queue.splice(0);
    if (queued.length === 0) return;
    const err = this.#failure instanceof Error ? this.#failure : new ReadAheadDropped('the window failed');
    for (const slot of queued) {
      this.#readAhead--;
      slot.drop!(err);
    }
  }

  /**
   * Keeps the first failure (drain() throws it), drops the queued read-ahead changes at once, and tells the owner. At
   * once, not at the drain: an add() or queue() waiting for record room waits for the earliest change in the window,
   * which may be queued, and nothing else would ever settle it (the window then kept its hold and the lock for good).
   */
  #fail(err: unknown): void {
    if (this.#failure !== undefined) return;
    this.#failure = err;
    this.#dropQueue();
    this.#o.failed?.(err);
  }

  /** The barrier (shared) then the namespace's lock; released in reverse. */
  async #hold(): Promise<() => void> {
    const outer = this.#o.admit ? await this.#o.admit() : undefined;
    const inner = await acquire(this.#o.lock);
    return () => {
      inner();
      outer?.();
    };
  }

  /** Empty: forget the in-flight sequence (the stored position is the truth again) and give the lock up. */
  #idle(): void {
    this.#tail = Promise.resolve();
    this.#lastSeq = undefined;
    this.#held = 0;
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }
}

/** Takes the mutex and resolves with its release (Mutex only offers run()). */
function acquire(lock: Mutex): Promise<() => void> {
  return new Promise((held) => {
    void lock.run(() => new Promise<void>((release) => held(release)));
  });
}
