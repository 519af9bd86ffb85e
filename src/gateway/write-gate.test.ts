import { describe, expect, it } from 'vitest';
import { GatewayDrainTimeoutError, GatewayHoldTimeoutError } from '../errors.js';
import { WriteGate } from './write-gate.js';

/** A promise with its resolve handle, to step through interleavings without timing. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
const tick = () => new Promise<void>((r) => setImmediate(r));

describe('WriteGate', () => {
  it('admits writes at once when nothing is held, and counts them in flight', async () => {
    const gate = new WriteGate();
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
    const gate = new WriteGate();
    const restore = deferred();
    const held = gate.hold(() => restore.promise.then(() => 'restored'));
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
    const gate = new WriteGate();
    const release = await gate.enter();
    let started = false;
    const held = gate.hold(async () => {
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
    const gate = new WriteGate();
    const order: string[] = [];
    const first = deferred();
    const second = deferred();
    const h1 = gate.hold(async () => {
      order.push('first start');
      await first.promise;
      order.push('first end');
    });
    const h2 = gate.hold(async () => {
      order.push('second start');
      await second.promise;
      order.push('second end');
    });
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
    const gate = new WriteGate();
    const out = await gate.hold(() => gate.hold(async () => 42));
    expect(out).toBe(42);
    expect(gate.held).toBe(false);
  });

  it('answers a write that waits past the bound with a retryable hold timeout', async () => {
    const gate = new WriteGate({ maxWaitMs: 20, retryAfterSeconds: 7 });
    const restore = deferred();
    const held = gate.hold(() => restore.promise);
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
    const gate = new WriteGate({ drainTimeoutMs: 20 });
    const stuck = await gate.enter();
    let ran = false;
    const err = await gate
      .hold(async () => {
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
    const gate = new WriteGate();
    await expect(gate.hold(async () => Promise.reject(new Error('restore failed')))).rejects.toThrow('restore failed');
    expect(gate.held).toBe(false);
    (await gate.enter())();
  });

  it('drops a waiting write whose client went away', async () => {
    const gate = new WriteGate();
    const restore = deferred();
    const held = gate.hold(() => restore.promise);
    const ac = new AbortController();
    const write = gate.enter(ac.signal).catch((e: unknown) => e);
    await tick();
    ac.abort(new Error('client gone'));
    expect(((await write) as Error).message).toBe('client gone');
    expect(gate.waiting).toBe(0);
    restore.resolve();
    await held;
    expect(gate.inFlight).toBe(0);
  });

  it('admits waiting writes into the in-flight count before a later hold can drain', async () => {
    const gate = new WriteGate();
    const first = deferred();
    const h1 = gate.hold(() => first.promise);
    const write = gate.enter();
    first.resolve();
    await h1;
    // The write was admitted synchronously when the hold ended: a new hold must wait for it.
    expect(gate.inFlight).toBe(1);
    let ran = false;
    const h2 = gate.hold(async () => {
      ran = true;
    });
    await tick();
    expect(ran).toBe(false);
    (await write)();
    await h2;
    expect(ran).toBe(true);
  });

  it('refuses a non-positive bound', () => {
    expect(() => new WriteGate({ maxWaitMs: 0 })).toThrow(RangeError);
    expect(() => new WriteGate({ drainTimeoutMs: Number.NaN })).toThrow(RangeError);
  });
});
