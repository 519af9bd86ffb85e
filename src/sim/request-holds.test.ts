/**
 * The simulator's hold test hook (request-holds.ts) over real HTTPS: matching requests wait unanswered and reach the
 * device only when released, in the order they came; others pass; a request whose client gave up is never served.
 */
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../gateway/test-support.js';
import { simCaller, startProvisionedSimulator, type ProvisionedSimulator } from './fixture.js';

describe('simulator: holding requests until the test releases them', () => {
  let sim: ProvisionedSimulator;
  let c: ReturnType<typeof simCaller>;
  const admin = () => sim.users.admin;
  const namespaces = async () => (JSON.parse((await c.call('GET', '/namespaces', { auth: admin(), expect: 200 })).body) as { id: string }[]).map((n) => n.id).sort();

  beforeAll(async () => {
    sim = await startProvisionedSimulator();
    c = simCaller(sim);
  });

  afterAll(async () => {
    await c?.close();
    await sim?.close();
  });

  it('keeps matching requests from the device until released, longest held first, and lets others pass', async () => {
    const hold = sim.hold({ method: 'put', path: /^\/api\/v1\/namespaces\// });
    try {
      const answers: string[] = [];
      const put = (ns: string) => c.call('PUT', `/namespaces/${ns}`, { auth: admin() }).then((r) => void answers.push(`${ns} ${r.status}`));
      const first = put('one');
      await hold.waitFor(1);
      const second = put('two');
      await hold.waitFor(2);
      expect(hold.requests()).toEqual([
        { method: 'PUT', path: '/api/v1/namespaces/one' },
        { method: 'PUT', path: '/api/v1/namespaces/two' },
      ]);
      // Not matching (another method, another path): answered at once, and the device has neither namespace yet.
      expect(await namespaces()).toEqual([]);
      expect((await c.call('GET', '/health/ready')).status).toBe(200);
      hold.release(1);
      await first;
      expect(answers).toEqual(['one 204']);
      expect(await namespaces()).toEqual(['one']);
      expect(hold.held()).toBe(1);
      hold.release();
      await second;
      expect(answers).toEqual(['one 204', 'two 204']);
      expect(await namespaces()).toEqual(['one', 'two']);
      expect(hold.caught()).toBe(2);
    } finally {
      hold.close();
    }
  });

  it('never serves a held request whose client gave up', async () => {
    const hold = sim.hold({ path: /^\/api\/v1\/namespaces\/gone$/ });
    const dispatcher = new Agent({ connect: { ca: sim.certPem } });
    try {
      const abort = new AbortController();
      const auth = 'Basic ' + Buffer.from(`${admin().username}:${admin().password}`).toString('base64');
      const gone = request(`${sim.apiUrl}/namespaces/gone`, { method: 'PUT', headers: { authorization: auth }, dispatcher, signal: abort.signal });
      await hold.waitFor(1);
      abort.abort();
      await expect(gone).rejects.toThrow();
      await until(() => hold.held() === 0, 'the held request to be dropped with its connection');
      hold.release();
      expect(await namespaces()).not.toContain('gone');
      expect(hold.caught()).toBe(1);
    } finally {
      hold.close();
      await dispatcher.close();
    }
  });

  it('catches nothing once closed, releases what it held, and tells a waiter', async () => {
    const hold = sim.hold({ path: /^\/api\/v1\/namespaces\/late$/ });
    const pending = c.call('PUT', '/namespaces/late', { auth: admin() });
    await hold.waitFor(1);
    const never = hold.waitFor(2);
    hold.close();
    await expect(never).rejects.toThrow('the hold was closed');
    expect((await pending).status).toBe(204);
    expect((await c.call('DELETE', '/namespaces/late', { auth: admin() })).status).toBe(204);
    expect(hold.caught()).toBe(1);
  });

  it('names what it holds when a wait for more runs out', async () => {
    const hold = sim.hold({ path: /^\/api\/v1\/namespaces\/slow$/ });
    try {
      const pending = c.call('PUT', '/namespaces/slow', { auth: admin() });
      await hold.waitFor(1);
      await expect(hold.waitFor(2, 50)).rejects.toThrow('2 requests were not held at once within 50 ms; held: PUT /api/v1/namespaces/slow');
      hold.release();
      expect((await pending).status).toBe(204);
    } finally {
      hold.close();
    }
  });

  it('refuses a pattern without a RegExp path', () => {
    expect(() => sim.hold({ path: '/api/v1/keys' as unknown as RegExp })).toThrow('hold pattern: path must be a RegExp');
  });
});
