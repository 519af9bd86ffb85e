import { describe, expect, it } from 'vitest';
import { DeviceSlots } from './device-slots.js';
import { simCaller, startProvisionedSimulator } from './fixture.js';

describe('DeviceSlots', () => {
  it('keeps at most N operations in service and serves the waiting ones in arrival order', async () => {
    const slots = new DeviceSlots(2);
    const order: number[] = [];
    const all = [0, 1, 2, 3, 4].map((i) => slots.hold(i < 2 ? 10 : 0).then(() => order.push(i)));
    expect(slots.queued).toBe(3);
    await Promise.all(all);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(slots.queued).toBe(0);
  });

  it('makes the third of three operations on two slots wait for one to finish', async () => {
    const slots = new DeviceSlots(2);
    const done: string[] = [];
    const a = slots.hold(30).then(() => done.push('a'));
    const b = slots.hold(30).then(() => done.push('b'));
    const c = slots.hold(0).then((wait) => (done.push('c'), wait));
    expect(slots.queued).toBe(1);
    const [, , cWait] = await Promise.all([a, b, c]);
    // c takes the slot a leaves at 30 ms and is served at once: the three end together (their order is the timers',
    // which round each delay to a millisecond), and c waited for that slot (less the instant between the calls).
    expect(done.sort()).toEqual(['a', 'b', 'c']);
    expect(cWait).toBeGreaterThan(20);
  });

  it('keeps its own schedule when the event loop is late: the next operation starts when the slot frees, not when the loop gets to it', async () => {
    // One slot, three 50 ms operations, and the process busy for 120 ms at once (as on a loaded machine). The device
    // serves them at 0–50, 50–100 and 100–150 ms; handing the slot over from the late timers made them wait 120 and
    // 170 ms, so the device's rate fell with the simulator's share of the CPU.
    const slots = new DeviceSlots(1);
    const waits = Promise.all([slots.hold(50), slots.hold(50), slots.hold(50)]);
    const until = performance.now() + 120;
    while (performance.now() < until) {
      // busy: no timer can fire
    }
    const [first, second, third] = await waits;
    // By the device's schedule each waits for the services before it, less the instant between the calls (the upper
    // bounds hold exactly; the lower ones only need the three calls to be made within 25 ms of each other).
    expect(second).toBeLessThanOrEqual(50);
    expect(second).toBeGreaterThan(25);
    expect(third).toBeLessThanOrEqual(100);
    expect(third).toBeGreaterThan(75);
    expect(first).toBeLessThan(1);
  });

  it.each([0, -1, 1.5, Number.NaN, 1025])('refuses %s slots', (n) => {
    expect(() => new DeviceSlots(n)).toThrow(/device slots must be a whole number from 1 to 1024/);
  });
});

describe('a simulator with deviceSlots', () => {
  // One slot, a slow key listing: an operation asked for while the listing is in service waits for it.
  async function finishOrder(deviceSlots: number | undefined): Promise<string[]> {
    const sim = await startProvisionedSimulator({ latency: { 'key-list': 400 }, ...(deviceSlots === undefined ? {} : { deviceSlots }) });
    const caller = simCaller(sim);
    try {
      const done: string[] = [];
      const list = caller.call('GET', '/keys', { auth: sim.users.admin }).then(() => done.push('key list'));
      await new Promise((r) => setTimeout(r, 100));
      const users = caller.call('GET', '/users', { auth: sim.users.admin }).then(() => done.push('users'));
      await Promise.all([list, users]);
      return done;
    } finally {
      await caller.close();
      await sim.close();
    }
  }

  it('makes an operation wait for a slot held by another one, and changes nothing without it', async () => {
    expect(await finishOrder(1)).toEqual(['key list', 'users']);
    expect(await finishOrder(undefined)).toEqual(['users', 'key list']);
  });

  it('refuses a bad slot count at start', async () => {
    await expect(startProvisionedSimulator({ deviceSlots: 0 })).rejects.toThrow(/device slots must be a whole number/);
  });
});

describe('onSlotWait', () => {
  it('tells each operation how long it waited for a slot', async () => {
    const told: [string, number][] = [];
    const sim = await startProvisionedSimulator({ latency: { 'key-list': 300 }, deviceSlots: 1, onSlotWait: (op, ms) => told.push([op, ms]) });
    const caller = simCaller(sim);
    try {
      told.length = 0; // the fixture's own set-up calls
      await Promise.all([caller.call('GET', '/keys', { auth: sim.users.admin }), caller.call('GET', '/keys', { auth: sim.users.admin })]);
      expect(told.map(([op]) => op)).toEqual(['key-list', 'key-list']);
      // The first found the slot free; the second (asked while the first held it for 300 ms) waited for it.
      expect(told[0]![1]).toBeLessThan(1);
      expect(told[1]![1]).toBeGreaterThan(told[0]![1]);
    } finally {
      await caller.close();
      await sim.close();
    }
  });
});
