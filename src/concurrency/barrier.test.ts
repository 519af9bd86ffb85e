import { describe, expect, it } from 'vitest';
import { FenceTokenStaleError, GatewayDrainTimeoutError, GatewayHoldTimeoutError, InternalError } from '../errors.js';
import { assertTokenCurrent, type FencingToken } from './fencing.js';
import { DeviceBarrier, writeTicket } from './barrier.js';

/** A promise with its resolve handle, to step through interleavings without timing. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
const tick = () => new Promise<void>((r) => setImmediate(r));

/** An exclusive hold that logs `<name> start` and `<name> end` into `order`, and lasts until `until` resolves. */
function loggedHold(gate: DeviceBarrier, order: string[], name: string, until: Promise<void>): Promise<void> {
  return gate.exclusive([], async () => {
    order.push(`${name} start`);
    await until;
    order.push(`${name} end`);
  });
}

describe('DeviceBarrier', () => {
  it('admits writes at once when nothing is held, and counts them in flight', async () => {
    const gate = new DeviceBarrier();
    const r1 = await gate.enter();
    const r2 = await gate.enter();
    expect(gate.inFlight).toBe(2);
    r1();
    r1(); // idempotent
    expect(gate.inFlight).toBe(1);
    r2();
    expect(gate.inFlight).toBe(0);
  });

  it('makes writes wait during a hold and admits them after it', async () => {
    const gate = new DeviceBarrier();
    const restore = deferred();
    const held = gate.exclusive([], () => restore.promise.then(() => 'restored'));
    expect(gate.held).toBe(true);
    let admitted = false;
    const write = gate.enter().then((release) => {
      admitted = true;
      return release;
    });
    await tick();
    expect(admitted).toBe(false);
    expect(gate.waiting).toBe(1);
    restore.resolve();
    expect(await held).toBe('restored');
    const release = await write;
    expect(admitted).toBe(true);
    expect(gate.held).toBe(false);
    release();
  });

  it('starts a hold only after writes in flight have finished', async () => {
    const gate = new DeviceBarrier();
    const release = await gate.enter();
    let started = false;
    const held = gate.exclusive([], async () => {
      started = true;
    });
    // New writes already wait, though the hold has not started.
    let lateAdmitted = false;
    const late = gate.enter().then((r) => {
      lateAdmitted = true;
      return r;
    });
    await tick();
    expect(started).toBe(false);
    expect(lateAdmitted).toBe(false);
    release();
    await held;
    expect(started).toBe(true);
    (await late)();
    expect(lateAdmitted).toBe(true);
  });

  it('queues overlapping holds and makes a write wait for both', async () => {
    const gate = new DeviceBarrier();
    const order: string[] = [];
    const first = deferred();
    const second = deferred();
    const h1 = loggedHold(gate, order, 'first', first.promise);
    const h2 = loggedHold(gate, order, 'second', second.promise);
    const write = gate.enter().then((r) => {
      order.push('write');
      return r;
    });
    await tick();
    first.resolve();
    await h1;
    await tick();
    expect(order).toEqual(['first start', 'first end', 'second start']);
    second.resolve();
    await h2;
    (await write)();
    expect(order).toEqual(['first start', 'first end', 'second start', 'second end', 'write']);
  });

  it('runs a hold nested inside a hold at once', async () => {
    const gate = new DeviceBarrier();
    const out = await gate.exclusive([], () => gate.exclusive([], async () => 42));
    expect(out).toBe(42);
    expect(gate.held).toBe(false);
  });

  it('answers a write that waits past the bound with a retryable hold timeout', async () => {
    const gate = new DeviceBarrier({ maxWaitMs: 20, retryAfterSeconds: 7 });
    const restore = deferred();
    const held = gate.exclusive([], () => restore.promise);
    const err = await gate.enter().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayHoldTimeoutError);
    expect((err as GatewayHoldTimeoutError).retryable).toBe(true);
    expect(gate.waiting).toBe(0);
    expect(gate.inFlight).toBe(0);
    expect(gate.retryAfterSeconds).toBe(7);
    restore.resolve();
    await held;
  });

  it('gives up a hold whose drain does not finish, without running it, and lets writes go on', async () => {
    const gate = new DeviceBarrier({ drainTimeoutMs: 20 });
    const stuck = await gate.enter();
    let ran = false;
    const err = await gate
      .exclusive([], async () => {
        ran = true;
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayDrainTimeoutError);
    expect(ran).toBe(false);
    expect(gate.held).toBe(false);
    (await gate.enter())();
    stuck();
  });

  it('ends the hold when its function throws', async () => {
    const gate = new DeviceBarrier();
    await expect(gate.exclusive([], async () => Promise.reject(new Error('restore failed')))).rejects.toThrow('restore failed');
    expect(gate.held).toBe(false);
    (await gate.enter())();
  });

  it('drops a waiting write whose client went away', async () => {
    const gate = new DeviceBarrier();
    const restore = deferred();
    const held = gate.exclusive([], () => restore.promise);
    const ac = new AbortController();
    const write = gate.enter({ signal: ac.signal }).catch((e: unknown) => e);
    await tick();
    ac.abort(new Error('client gone'));
    expect(((await write) as Error).message).toBe('client gone');
    expect(gate.waiting).toBe(0);
    restore.resolve();
    await held;
    expect(gate.inFlight).toBe(0);
  });

  it('admits waiting writes into the in-flight count before a later hold can drain', async () => {
    const gate = new DeviceBarrier();
    const first = deferred();
    const h1 = gate.exclusive([], () => first.promise);
    const write = gate.enter();
    first.resolve();
    await h1;
    // The write was admitted synchronously when the hold ended: a new hold must wait for it.
    expect(gate.inFlight).toBe(1);
    let ran = false;
    const h2 = gate.exclusive([], async () => {
      ran = true;
    });
    await tick();
    expect(ran).toBe(false);
    (await write)();
    await h2;
    expect(ran).toBe(true);
  });

  it('gives up an exclusive hold queued behind another when its signal aborts: not run, and the next keeps its place', async () => {
    const gate = new DeviceBarrier();
    const order: string[] = [];
    const first = deferred();
    const third = deferred();
    const h1 = loggedHold(gate, order, 'first', first.promise);
    const stop = new AbortController();
    const reason = new Error('stopping');
    const h2 = gate
      .exclusive([], async () => void order.push('second'), { signal: stop.signal })
      .then(() => 'ran', (e: unknown) => e);
    const h3 = loggedHold(gate, order, 'third', third.promise);
    const write = gate.enter().then((r) => {
      order.push('write');
      return r;
    });
    await tick();
    stop.abort(reason);
    expect(await h2).toBe(reason);
    // The third still waits for the first, and the write for both.
    await tick();
    expect(order).toEqual(['first start']);
    expect(gate.held).toBe(true);
    first.resolve();
    await h1;
    await tick();
    expect(order).toEqual(['first start', 'first end', 'third start']);
    third.resolve();
    await h3;
    (await write)();
    expect(order).toEqual(['first start', 'first end', 'third start', 'third end', 'write']);
    expect(gate.exclusiveRuns).toBe(2);
    expect(gate.writeGeneration).toBe(3);
  });

  it('gives up an exclusive hold draining shared holders: the writes waiting behind it are admitted, nothing is left held', async () => {
    const gate = new DeviceBarrier();
    const inFlight = await gate.enter();
    const stop = new AbortController();
    const reason = new Error('stopping');
    let ran = false;
    const held = gate
      .exclusive([], async () => void (ran = true), { signal: stop.signal })
      .catch((e: unknown) => e);
    const late = gate.enter();
    await tick();
    expect(gate.waiting).toBe(1);
    stop.abort(reason);
    expect(await held).toBe(reason);
    // No exclusive hold pending or running any more: the waiting write is in.
    (await late)();
    expect(ran).toBe(false);
    expect(gate.held).toBe(false);
    expect(gate.waiting).toBe(0);
    expect(gate.exclusiveRuns).toBe(0);
    // A later hold drains as before: it waits for the write still in flight, and runs once it ends.
    let later = false;
    const next = gate.exclusive([], async () => void (later = true));
    await tick();
    expect(later).toBe(false);
    inFlight();
    await next;
    expect(later).toBe(true);
  });

  it('does not queue an exclusive hold whose signal already aborted, and never cuts one that runs', async () => {
    const gate = new DeviceBarrier();
    const stop = new AbortController();
    const reason = new Error('stopping');
    const running = deferred();
    const inside = gate.exclusive(
      [],
      async () => {
        await running.promise;
        return 'restored';
      },
      { signal: stop.signal },
    );
    await tick();
    stop.abort(reason);
    await expect(gate.exclusive([], async () => 'late', { signal: stop.signal })).rejects.toBe(reason);
    running.resolve();
    expect(await inside).toBe('restored');
    expect(gate.held).toBe(false);
    expect(gate.exclusiveRuns).toBe(1);
  });

  it('refuses a non-positive bound', () => {
    expect(() => new DeviceBarrier({ maxWaitMs: 0 })).toThrow(RangeError);
    expect(() => new DeviceBarrier({ drainTimeoutMs: Number.NaN })).toThrow(RangeError);
  });

  describe('fencing tokens', () => {
    const row = { namespace: 'alpha', role: 'replica' as const, epoch: 1, primarySite: 'a', paused: false, createdAt: 0, updatedAt: 0 };
    const token: FencingToken = { namespace: 'alpha', role: 'replica', epoch: 1, primarySite: 'a', paused: false, purpose: 'sync' };
    function barrierOver(current: { row: typeof row | undefined }) {
      return new DeviceBarrier({ check: (t) => assertTokenCurrent(() => current.row, t) });
    }

    it('abandons an exclusive step whose role changed while it waited, before it runs', async () => {
      const current = { row: { ...row } as typeof row | undefined };
      const gate = barrierOver(current);
      const first = deferred();
      const h1 = gate.exclusive([], () => first.promise);
      let ran = false;
      const stale = gate.exclusive([token], async () => {
        ran = true;
      });
      // A promote lands while the sync waits behind another exclusive hold.
      current.row = { ...row, role: 'primary' as never, epoch: 2, primarySite: 'b' };
      first.resolve();
      await h1;
      const err = await stale.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FenceTokenStaleError);
      expect((err as Error).message).toContain('decided as replica at epoch 1');
      expect(ran).toBe(false);
      expect(gate.held).toBe(false);
    });

    it("lets the holder re-check right before its restore, and a pause makes the token stale", async () => {
      const current = { row: { ...row } as typeof row | undefined };
      const gate = barrierOver(current);
      const steps: string[] = [];
      const err = await gate
        .exclusive([token], async (guard) => {
          steps.push('backup');
          current.row = { ...row, paused: true };
          guard.check();
          steps.push('restore');
        })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FenceTokenStaleError);
      expect(steps).toEqual(['backup']);
    });

    it('refuses a shared step with a stale token once admitted, and does not count it in flight', async () => {
      const current = { row: { ...row, epoch: 3 } as typeof row | undefined };
      const gate = barrierOver(current);
      await expect(gate.shared(async () => 'applied', { tokens: [token] })).rejects.toBeInstanceOf(FenceTokenStaleError);
      await expect(gate.enter({ tokens: [token] })).rejects.toBeInstanceOf(FenceTokenStaleError);
      expect(gate.inFlight).toBe(0);
      current.row = { ...row };
      expect(await gate.shared(async () => 'applied', { tokens: [token] })).toBe('applied');
    });

    it('treats a namespace no longer replicated here as stale', () => {
      expect(() => assertTokenCurrent(() => undefined, token)).toThrow(/no longer replicated here/);
    });
  });

  describe('re-entry and lock order', () => {
    it('runs shared work from inside an exclusive hold at once', async () => {
      const gate = new DeviceBarrier();
      expect(await gate.exclusive([], () => gate.shared(async () => 'inner'))).toBe('inner');
    });

    it('runs nested shared work at once even while an exclusive hold waits for the outer one', async () => {
      const gate = new DeviceBarrier();
      const inner = deferred();
      const outer = gate.shared(async () => {
        await inner.promise;
        return gate.shared(async () => 'nested');
      });
      await tick();
      const held = gate.exclusive([], async () => 'restored');
      await tick();
      inner.resolve();
      expect(await outer).toBe('nested');
      expect(await held).toBe('restored');
    });

    it('refuses an exclusive hold requested from inside a shared one (it would wait for itself)', async () => {
      const gate = new DeviceBarrier();
      const err = await gate.shared(() => gate.exclusive([], async () => 'never')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InternalError);
      expect(gate.inFlight).toBe(0);
      expect(gate.held).toBe(false);
    });

    it('lets an unbounded shared caller wait out a long exclusive hold', async () => {
      const gate = new DeviceBarrier({ maxWaitMs: 10 });
      const restore = deferred();
      const held = gate.exclusive([], () => restore.promise);
      const apply = gate.shared(async () => 'applied', { wait: 'unbounded' });
      await new Promise((r) => setTimeout(r, 40));
      restore.resolve();
      await held;
      expect(await apply).toBe('applied');
    });
  });
  describe('write generation (snapshot sync: restore at once when no write passed since the backup)', () => {
    it('is quiet since a mark only when no write was in flight at it and none was admitted after it', async () => {
      const gate = new DeviceBarrier();
      const quiet = gate.markWrites();
      expect(gate.quietSince(quiet)).toBe(true);
      const release = await gate.enter();
      expect(gate.quietSince(quiet)).toBe(false);
      expect(gate.writesSince(quiet)).toBe(1);
      // A write in flight at the mark may land after the backup read its key: not quiet, even once it ends.
      const busy = gate.markWrites();
      expect(busy).toMatchObject({ generation: 1, inFlight: 1 });
      release();
      expect(gate.quietSince(busy)).toBe(false);
      expect(gate.writesSince(busy)).toBe(1);
      expect(gate.quietSince(gate.markWrites())).toBe(true);
    });

    it('does not count read-only holders (backups taken to be read) as writes', async () => {
      const gate = new DeviceBarrier();
      const mark = gate.markWrites();
      const reading = deferred();
      const backup = gate.shared(() => reading.promise, { readOnly: true });
      await tick();
      expect(gate.inFlight).toBe(1);
      expect(gate.markWrites()).toMatchObject({ generation: 0, inFlight: 0 });
      reading.resolve();
      await backup;
      expect(gate.quietSince(mark)).toBe(true);
    });

    it('tells writes scoped to a namespace apart: a merge-restore of that namespace may leave them out', async () => {
      const gate = new DeviceBarrier();
      const mark = gate.markWrites();
      const alpha = await gate.enter({ scope: 'alpha' });
      expect(gate.writesSince(mark)).toBe(1);
      expect(gate.quietSince(mark, new Set(['alpha']))).toBe(true);
      expect(gate.quietSince(mark, new Set(['beta']))).toBe(false);
      expect(gate.scopesWrittenSince(mark)).toEqual(new Set(['alpha']));
      const inFlight = gate.markWrites();
      alpha();
      // In flight at the mark: still counted for alpha, and an unscoped write shows as null.
      const any = await gate.enter();
      expect(gate.scopesWrittenSince(inFlight)).toEqual(new Set(['alpha', null]));
      expect(gate.writesSince(inFlight, new Set(['alpha']))).toBe(1);
      any();
    });

    it('counts an exclusive hold under its scope as it starts, so a mark taken inside it does not see it', async () => {
      const gate = new DeviceBarrier();
      const mark = gate.markWrites();
      const inside = await gate.exclusive([], async () => gate.markWrites(), { scope: 'beta' });
      expect(gate.scopesWrittenSince(mark)).toEqual(new Set(['beta']));
      expect(gate.quietSince(inside)).toBe(true);
      expect(gate.quietSince(mark, new Set(['alpha']))).toBe(false);
    });

    it('counts a write admitted after waiting out an exclusive hold, and the exclusive holds that ran', async () => {
      const gate = new DeviceBarrier();
      const restore = deferred();
      const held = gate.exclusive([], () => restore.promise);
      const mark = gate.markWrites();
      const write = gate.shared(async () => 'written', { wait: 'unbounded' });
      await tick();
      // The exclusive hold itself counts as a write once it runs (a restore changes the device), unscoped by default.
      expect(gate.exclusiveRuns).toBe(1);
      expect(gate.scopesWrittenSince(mark)).toEqual(new Set([null]));
      const during = gate.markWrites();
      restore.resolve();
      await held;
      expect(await write).toBe('written');
      expect(gate.writesSince(during)).toBe(1);
    });
    // Before: every admitted write counted, so a gateway call the NetHSM refused (4xx) or a duplicate stream change
    // made a restore's verification skip itself (unscoped) or leave its namespace out, though it changed nothing.
    it('does not count a write holder that released saying it changed nothing (a none ticket), and counts one in flight', async () => {
      const gate = new DeviceBarrier();
      const mark = gate.markWrites();
      const refused = writeTicket();
      await gate.shared(async () => void (refused.replay = { kind: 'none' }), { ticket: refused });
      const dup = writeTicket();
      await gate.shared(async () => void (dup.replay = { kind: 'none' }), { ticket: dup, scope: 'alpha' });
      expect(gate.scopesWrittenSince(mark)).toEqual(new Set());
      expect(gate.writesSince(mark)).toBe(0);
      expect(gate.quietSince(mark, new Set(['beta']))).toBe(true);
      // Its ticket is not final until it releases: in flight it counts, whatever it says so far.
      const pending = writeTicket();
      pending.replay = { kind: 'none' };
      const release = await gate.enter({ ticket: pending });
      const during = gate.markWrites();
      expect(gate.scopesWrittenSince(mark)).toEqual(new Set([null]));
      pending.replay = { kind: 'unknown' };
      release();
      expect(gate.scopesWrittenSince(mark)).toEqual(new Set([null]));
      expect(gate.writesSince(during)).toBe(1);
      // In flight at a mark and released idle after it: subtracted once, from what the mark counted in flight.
      const late = writeTicket();
      const lateRelease = await gate.enter({ ticket: late, scope: 'beta' });
      const atLate = gate.markWrites();
      late.replay = { kind: 'none' };
      lateRelease();
      expect(gate.scopesWrittenSince(atLate)).toEqual(new Set());
      expect(gate.writesSince(atLate)).toBe(0);
    });

    it('names the unscoped write holders since a mark for the logs: in flight at it, admitted since, exclusive ones too', async () => {
      const gate = new DeviceBarrier();
      const before = await gate.enter({ purpose: 'gateway POST /namespaces/{id}' });
      const mark = gate.markWrites();
      before();
      (await gate.enter({ scope: 'alpha', purpose: 'stream apply alpha' }))();
      const found = writeTicket();
      await gate.shared(async () => void (found.replay = { kind: 'none' }), { ticket: found, purpose: 'transport key ensure' });
      const open = await gate.enter();
      expect(gate.unscopedSince(mark)).toEqual(['gateway POST /namespaces/{id}', 'transport key ensure (changed nothing)', 'unlabelled (in flight)']);
      open();
      await gate.exclusive([], async () => undefined, { purpose: 'promote beta' });
      expect(gate.unscopedSince(mark).slice(-2)).toEqual(['unlabelled', 'promote beta']);
      expect(gate.unscopedSince(gate.markWrites())).toEqual([]);
    });
  });

  describe('write trackers', () => {
    it('lists the writes in flight when made and those admitted since, with the tickets their holders filled in', async () => {
      const gate = new DeviceBarrier();
      const early = writeTicket();
      const releaseEarly = await gate.enter({ ticket: early });
      const done = await gate.enter(); // released before the tracker: not listed
      done();
      const reader = await gate.enter({ readOnly: true }); // a reader: never listed
      const tracker = gate.trackWrites();
      expect(gate.tracking).toBe(true);
      const later = writeTicket();
      const releaseLater = await gate.enter({ ticket: later, scope: 'gamma' });
      early.replay = { kind: 'log', namespace: 'beta', seq: 4 };
      later.replay = { kind: 'stream', namespace: 'gamma', source: 'a', seq: 9 };
      releaseEarly();
      releaseLater();
      reader();
      await gate.exclusive([], async () => undefined, { scopes: ['alpha', 'delta'] });
      tracker.close();
      await (await gate.enter())();
      expect(gate.tracking).toBe(false);
      expect(tracker.writes().map((w) => [w.scope, w.ticket.replay.kind])).toEqual([
        [null, 'log'],
        ['gamma', 'stream'],
        ['alpha', 'unknown'],
        ['delta', 'unknown'],
      ]);
    });

    it('lists a write that waited for a hold once admitted, its ticket unknown unless its holder says', async () => {
      const gate = new DeviceBarrier();
      const hold = deferred();
      const held = gate.exclusive([], () => hold.promise);
      const tracker = gate.trackWrites();
      const waiting = gate.enter();
      await tick();
      // The hold started (it counts as a write that may touch anything); the write waits.
      expect(tracker.writes()).toHaveLength(1);
      hold.resolve();
      await held;
      (await waiting)();
      expect(tracker.writes().map((w) => [w.scope, w.ticket.replay.kind])).toEqual([
        [null, 'unknown'], // the hold itself
        [null, 'unknown'],
      ]);
      tracker.close();
    });
  });

  it('writesEnded waits for the matching write holders in flight at the call only, not for readers or later ones', async () => {
    const gate = new DeviceBarrier();
    const gateway = await gate.enter();
    const stream = await gate.enter({ scope: 'beta' });
    const reader = await gate.enter({ readOnly: true });
    let ended = false;
    const done = gate.writesEnded((w) => w.scope === null).then(() => (ended = true));
    const later = await gate.enter();
    stream();
    await tick();
    expect(ended).toBe(false);
    gateway();
    await done;
    expect(ended).toBe(true);
    // Nothing matching in flight: at once (the reader and the later write are still held).
    await gate.writesEnded((w) => w.scope === 'beta');
    later();
    reader();
  });

  it('detached work started inside an exclusive hold takes its own hold after that one, instead of re-entering it', async () => {
    const gate = new DeviceBarrier();
    const order: string[] = [];
    let inner: Promise<void> | undefined;
    await gate.exclusive([], async () => {
      inner = gate.detached(() => gate.exclusive([], async () => void order.push('detached')));
      await tick();
      order.push('outer ends');
    });
    await inner;
    expect(order).toEqual(['outer ends', 'detached']);
    expect(gate.exclusiveRuns).toBe(2);
  });
});
