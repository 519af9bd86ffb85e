import { describe, expect, it } from 'vitest';
import type { ServingView } from '../peer/messages.js';
import { RemoteServing, type RemoteServingOptions } from './remote-serving.js';

type NsView = ServingView['namespaces'][number];

function view(site: string, ns: Partial<NsView> & { role: NsView['role'] }, extra: Partial<ServingView> = {}): ServingView {
  return {
    site,
    nethsm: 'ok',
    gateway: true,
    namespaces: [{ namespace: 'alpha', epoch: 2, primarySite: ns.role === 'primary' ? site : 'a', lagSeconds: null, ...ns }],
    ...extra,
  };
}

function serving(views: Record<string, ServingView | Error | (() => Promise<ServingView>)>, over: Partial<RemoteServingOptions> = {}) {
  const fetched: string[] = [];
  let clock = 1_000_000;
  const rs = new RemoteServing({
    peers: Object.keys(views).map((name) => ({ name, gatewayUrl: `https://${name}.example:8443` })),
    fetchView: async (peer) => {
      fetched.push(peer);
      const v = views[peer]!;
      if (v instanceof Error) throw v;
      return typeof v === 'function' ? v() : v;
    },
    maxLagMs: 30_000,
    recoverAfter: 3,
    viewTtlMs: 2_000,
    routing: 'local-first',
    now: () => clock,
    ...over,
  });
  return { rs, fetched, advance: (ms: number) => (clock += ms) };
}

describe('remote serving: when the local NetHSM is down and back (hysteresis)', () => {
  it('serves remotely at the first down report, and locally again only after recoverAfter healthy reports in a row', () => {
    const { rs } = serving({});
    expect(rs.observeLocal(false)).toBe(false);
    expect(rs.state.remote).toBe(false);
    expect(rs.observeLocal(true, 'locked: the NetHSM is Locked')).toBe(true);
    expect(rs.state).toMatchObject({ remote: true, cause: 'locked: the NetHSM is Locked', healthyInARow: 0 });
    rs.observeLocal(false);
    rs.observeLocal(false);
    expect(rs.state).toMatchObject({ remote: true, healthyInARow: 2 });
    // A failure between healthy reports starts the count again (a flapping NetHSM does not get traffic back).
    expect(rs.observeLocal(true, 'unreachable')).toBe(false);
    expect(rs.state).toMatchObject({ remote: true, healthyInARow: 0, cause: 'unreachable' });
    rs.observeLocal(false);
    rs.observeLocal(false);
    expect(rs.observeLocal(false)).toBe(true);
    expect(rs.state).toEqual({ remote: false, cause: null, since: null, healthyInARow: 0 });
  });

  it('refuses bad settings with a RangeError naming them', () => {
    expect(() => serving({}, { recoverAfter: 0 })).toThrow(/recoverAfter must be a positive integer/);
    expect(() => serving({}, { viewTtlMs: 1.5 })).toThrow(/viewTtlMs must be a positive integer/);
    expect(() => serving({}, { maxLagMs: -1 })).toThrow(/maxLagMs must be >= 0/);
    expect(() => serving({}, { routing: 'round-robin' as never })).toThrow(/routing must be one of local-first, nearest-healthy/);
  });
});

describe('remote serving: which peer serves a namespace', () => {
  it("prefers the namespace's primary, else the freshest replica within maxLag", async () => {
    const { rs } = serving({ b: view('b', { role: 'replica', lagSeconds: 3 }), c: view('c', { role: 'primary' }) });
    expect(await rs.choose('alpha', 2)).toEqual({ ok: true, peer: 'c', url: 'https://c.example:8443' });
    const two = serving({ b: view('b', { role: 'replica', lagSeconds: 12 }), c: view('c', { role: 'replica', lagSeconds: 2 }) });
    expect(await two.rs.choose('alpha', 2)).toMatchObject({ ok: true, peer: 'c' });
  });

  it('refuses a replica lagging past maxLag, and names every reason no peer can serve', async () => {
    const { rs } = serving({
      b: view('b', { role: 'replica', lagSeconds: 45 }),
      c: view('c', { role: 'replica', lagSeconds: null }),
      d: view('d', { role: 'primary' }, { nethsm: 'down' }),
      e: view('e', { role: 'replica', lagSeconds: 1, epoch: 1 }),
      f: new Error('peer f is unreachable: connect ECONNREFUSED'),
      g: view('g', { role: 'fenced' }),
      h: view('x', { role: 'primary' }),
      i: view('i', { role: 'primary' }, { gateway: false }),
      j: view('j', { role: 'primary', namespace: 'beta' }),
    });
    const c = await rs.choose('alpha', 2);
    expect(c.ok).toBe(false);
    const cause = (c as { cause: string }).cause;
    expect(cause).toMatch(/^no peer can serve namespace alpha: /);
    expect(cause).toContain('replica b lags 45 s > maxLag 30 s');
    expect(cause).toContain('replica c has never synced namespace alpha');
    expect(cause).toContain("site d's NetHSM is down too");
    expect(cause).toContain("site e holds namespace alpha at epoch 1, older than this site's 2");
    expect(cause).toContain('site f: peer f is unreachable: connect ECONNREFUSED');
    expect(cause).toContain('namespace alpha is fenced at site g');
    expect(cause).toContain('site h answered as site x');
    expect(cause).toContain('site i runs no gateway');
    expect(cause).toContain('site j does not replicate namespace alpha');
  });

  it('serves a replica exactly at maxLag, not one a fraction past it', async () => {
    expect(await serving({ b: view('b', { role: 'replica', lagSeconds: 30 }) }).rs.choose('alpha', 2)).toMatchObject({ ok: true });
    const past = await serving({ b: view('b', { role: 'replica', lagSeconds: 30.4 }) }).rs.choose('alpha', 2);
    expect(past).toEqual({ ok: false, cause: 'no peer can serve namespace alpha: replica b lags 30.4 s > maxLag 30 s' });
  });

  it('asks each peer at most once per TTL (answers and failures alike), and again after it or after forget()', async () => {
    const { rs, fetched, advance } = serving({ b: view('b', { role: 'primary' }), c: new Error('down') });
    await Promise.all([rs.choose('alpha', 2), rs.choose('alpha', 2), rs.choose('alpha', 2)]);
    expect(fetched.sort()).toEqual(['b', 'c']);
    advance(1_999);
    await rs.choose('alpha', 2);
    expect(fetched).toHaveLength(2);
    rs.forget('b');
    await rs.choose('alpha', 2);
    expect(fetched).toHaveLength(3);
    advance(2_000);
    await rs.choose('alpha', 2);
    expect(fetched).toHaveLength(5);
  });

  it('nearest-healthy picks the eligible peer with the shortest round trip; local-first the primary', async () => {
    const slow = () => new Promise<ServingView>((r) => setTimeout(() => r(view('b', { role: 'primary' })), 60));
    const views = { b: slow, c: view('c', { role: 'replica', lagSeconds: 5 }) };
    expect(await serving(views, { routing: 'nearest-healthy' }).rs.choose('alpha', 2)).toMatchObject({ ok: true, peer: 'c' });
    expect(await serving(views, { routing: 'local-first' }).rs.choose('alpha', 2)).toMatchObject({ ok: true, peer: 'b' });
  });

  it('says so when no peer gateway is configured', async () => {
    expect(await serving({}).rs.choose('alpha', 2)).toEqual({ ok: false, cause: 'no peer gateway is configured (peers[].gatewayUrl)' });
  });
});
