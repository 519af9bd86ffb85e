/**
 * Cross-site crypto at the gateway (the virtual slot, docs/gateway.md "Serving from a peer"), with the application kept
 * at site A: A's NetHSM simulator is killed, then locked, mid-load; the application keeps signing through A's gateway
 * with the same keys, served by B, and no call fails after the detection bound. Writes for A's primary namespace are
 * refused with the cause; a replica past maxLag is refused rather than served; serving returns to A once it is healthy.
 */
import { verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { httpsCaller, type Cred } from '../../src/gateway/test-support.js';
import { waitFor } from '../helpers/wait.js';
import { use } from '../helpers/clients.js';
import { renderStatus, statusExitCode } from '../../src/cli/status.js';

async function getReady(port: number): Promise<{ ready: boolean; checks: Record<string, { ok: boolean; detail?: string }> }> {
  const res = await fetch(`http://127.0.0.1:${port}/health/ready`);
  return (await res.json()) as { ready: boolean; checks: Record<string, { ok: boolean; detail?: string }> };
}

/** The member monitor's probe interval in this lab (`recovery.retryInterval`). */
const PROBE_MS = 500;
const RECOVER_AFTER = 2;
/**
 * Detection bound: a killed NetHSM is noticed by the first call that cannot connect (or the next probe); a Locked one
 * answers calls (412) until the next probe sees the state: one probe interval, plus the probe's own round trip. The
 * margin covers a loaded 2-core CI machine; the figures measured are printed (docs/gateway.md quotes them).
 */
const BOUND_MS = PROBE_MS + 1_500;
const SERVED_BY = 'x-nethsm-replicator-served-by';

interface Outcome {
  at: number;
  ok: boolean;
  servedBy: string | undefined;
  detail: string;
}

describe('the gateway serves from a peer while its NetHSM is down', () => {
  let lab: Lab;
  let a: LabSite;
  let b: LabSite;
  let gwA: ReturnType<typeof httpsCaller>;
  let publicPem: string;
  const operator: Cred = { username: 'alpha~operator', password: LAB_PASSPHRASES.nsOperator };
  const admin: Cred = { username: 'alpha~admin', password: LAB_PASSPHRASES.nsAdmin };

  beforeAll(async () => {
    lab = await Lab.create({
      namespaces: [{ name: 'alpha', primary: 'a' }],
      gateway: true,
      remoteServing: `{ maxLag: 5s, recoverAfter: ${RECOVER_AFTER}, viewTtl: 300ms }`,
      retryInterval: `${PROBE_MS}ms`,
    });
    a = lab.site('a');
    b = lab.site('b');
    await use(a.nsAdmin('alpha'), (c) => c.generateKey({ id: 'k1', type: 'Curve25519', mechanisms: ['EdDSA_Signature'] }));
    await lab.startDaemons();
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    gwA = httpsCaller(`https://127.0.0.1:${a.daemon!.ports.gateway}`, lab.caPem);
    const pem = await gwA.call('GET', '/keys/k1/public.pem', { auth: operator });
    expect(pem.status).toBe(200);
    expect(pem.headers[SERVED_BY]).toBe('a');
    publicPem = pem.body;
  }, 120_000);

  afterAll(async () => {
    await gwA?.close();
    await lab?.close();
  });

  /** One sign through A's gateway, verified with the public key A served before anything failed. */
  async function signOnce(i: number): Promise<Omit<Outcome, 'at'>> {
    const message = Buffer.from(`message ${i}`);
    try {
      const r = await gwA.call('POST', '/keys/k1/sign', { auth: operator, json: { mode: 'EdDSA', message: message.toString('base64') } });
      const servedBy = r.headers[SERVED_BY] as string | undefined;
      if (r.status !== 200) return { ok: false, servedBy, detail: `${r.status} ${r.body.slice(0, 200)}` };
      const signature = Buffer.from((JSON.parse(r.body) as { signature: string }).signature, 'base64');
      const valid = verify(null, message, publicPem, signature);
      return { ok: valid, servedBy, detail: valid ? 'ok' : 'signature does not verify with the public key A served' };
    } catch (err) {
      return { ok: false, servedBy: undefined, detail: (err as Error).message };
    }
  }

  /** Signs with `workers` concurrent callers until `stop()`; each outcome carries when it ended (performance.now()). */
  function load(workers: number): { stop: () => Promise<Outcome[]> } {
    const outcomes: Outcome[] = [];
    let running = true;
    let n = 0;
    const loops = Array.from({ length: workers }, async () => {
      while (running) {
        const o = await signOnce(n++);
        outcomes.push({ ...o, at: performance.now() });
      }
    });
    return {
      stop: async () => {
        running = false;
        await Promise.all(loops);
        return outcomes;
      },
    };
  }

  async function signUntilServedBy(site: string): Promise<number> {
    const start = performance.now();
    await waitFor(async () => (await signOnce(0)).servedBy === site, `signing to be served by ${site}`, 20_000, 50);
    return performance.now() - start;
  }

  /** Runs the load across `fail()`, and checks: no failure after the bound, served by b afterwards, same key. */
  async function keepsSigningAcross(fail: () => Promise<void>, what: string): Promise<void> {
    const l = load(4);
    await new Promise((r) => setTimeout(r, 400));
    const faultStart = performance.now();
    await fail();
    // The bound counts from the fault being in place (a lock call may take a while on a loaded machine).
    const faultDone = performance.now();
    await new Promise((r) => setTimeout(r, BOUND_MS + 2_000));
    const all = await l.stop();
    const before = all.filter((o) => o.at < faultStart);
    const outcomes = all.filter((o) => o.at >= faultStart).map((o) => ({ ...o, at: o.at - faultDone }));
    const failures = outcomes.filter((o) => !o.ok);
    const after = outcomes.filter((o) => o.at > BOUND_MS);
    const lastFailure = failures.length ? Math.max(...failures.map((o) => o.at)) : 0;
    const last = failures.length ? `, the last ${Math.round(lastFailure)} ms after the fault was in place` : '';
    console.log(`${what}: ${outcomes.length} signs during and after the fault, ${failures.length} failed${last} (bound ${BOUND_MS} ms)`);
    expect(failures.filter((o) => o.at > BOUND_MS), JSON.stringify(failures.slice(-3))).toEqual([]);
    expect(after.length).toBeGreaterThan(4);
    expect(after.filter((o) => o.servedBy !== 'b').slice(0, 3)).toEqual([]);
    expect(before.length).toBeGreaterThan(0);
    expect(before.every((o) => o.ok && o.servedBy === 'a')).toBe(true);
  }

  it('keeps signing through A when its simulator is killed mid-load, refuses writes with the cause, and returns to A', async () => {
    await keepsSigningAcross(() => a.stopSim(), 'killed');
    // The public key, certificates and listings come from B now, and are A's.
    const pem = await gwA.call('GET', '/keys/k1/public.pem', { auth: operator });
    expect(pem.headers[SERVED_BY]).toBe('b');
    expect(pem.body).toBe(publicPem);
    expect(JSON.parse((await gwA.call('GET', '/keys', { auth: operator })).body)).toEqual([{ id: 'k1' }]);
    // A write for alpha, primary here: refused, never sent to the replica.
    const w = await gwA.call('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'k2' } });
    expect(w.status).toBe(503);
    expect(w.headers['retry-after']).toBe('5');
    expect(JSON.parse(w.body).message).toMatch(/^namespace alpha is primary at site a and the NetHSM of site a is down \(unreachable: .*\); writes wait for it and are never sent to a replica \[NHR_ERR_GATEWAY_LOCAL_DOWN\]$/);
    expect((await use(b.nsOperator('alpha'), (c) => c.listKeys()))).toEqual(['k1']);
    // Status, health and metrics say so.
    const st = await a.daemon!.status();
    expect(st.gateway).toMatchObject({ serving: 'remote', remoteServing: true });
    expect(st.gateway!.cause).toMatch(/NetHSM is unreachable/);
    expect(st.gateway!.try).toMatch(/after 2 healthy checks in a row/);
    const text = renderStatus(st);
    expect(text).toMatch(/PROBLEM: gateway SERVING REMOTELY since .*: this site's NetHSM is unreachable/);
    expect(text).toMatch(/\nTry: Bring the NetHSM back/);
    expect(statusExitCode(st)).toBe(2);
    const ready = await getReady(a.daemon!.ports.health);
    expect(ready.ready).toBe(false);
    expect(ready.checks.gateway?.detail).toMatch(/^serving remotely: this site's NetHSM is unreachable.*Try: Bring the NetHSM back/);
    const metrics = await a.registry.metrics();
    expect(metrics).toMatch(/nethsm_replicator_gateway_serving_remote 1/);
    expect(metrics).toMatch(/nethsm_replicator_gateway_remote_requests_total\{peer="b",outcome="served"\} [1-9]/);
    expect(metrics).toMatch(/nethsm_replicator_gateway_requests_total\{namespace="alpha",class="mutation",outcome="refused_local_down"\} 1/);

    // A NetHSM restarts Locked (without unattended boot): still down, still served by B.
    await a.startSim();
    await new Promise((r) => setTimeout(r, 3 * PROBE_MS));
    expect((await signOnce(0)).servedBy).toBe('b');
    expect((await a.daemon!.status()).gateway!.cause).toMatch(/NetHSM is locked/);
    await use(a.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    const back = await signUntilServedBy('a');
    console.log(`killed: serving returned to A ${Math.round(back)} ms after its unlock (${RECOVER_AFTER} healthy probes, ${PROBE_MS} ms apart)`);
    expect((await a.daemon!.status()).gateway).toMatchObject({ serving: 'local', cause: null });
    expect(await a.registry.metrics()).toMatch(/nethsm_replicator_gateway_serving_remote 0/);
  }, 60_000);

  it('keeps signing through A when its NetHSM is locked mid-load, and returns to A once unlocked', async () => {
    await keepsSigningAcross(() => use(a.client(), (c) => c.lock()), 'locked');
    expect((await a.daemon!.status()).gateway!.cause).toMatch(/NetHSM is locked/);
    // Device calls still go to A's NetHSM: the operator unlocks it through the gateway.
    const root: Cred = { username: 'admin', password: LAB_PASSPHRASES.admin };
    const unlock = await gwA.call('POST', '/unlock', { auth: root, json: { passphrase: LAB_PASSPHRASES.unlock } });
    expect(unlock.status, unlock.body).toBe(204);
    expect(unlock.headers[SERVED_BY]).toBe('a');
    await signUntilServedBy('a');
  }, 60_000);

  it('refuses rather than serving from a replica that lags past maxLag, naming the lag', async () => {
    // B stops following A: its copy ages.
    await b.daemon!.stream.close();
    await waitFor(() => (b.daemon!.stream.status('alpha')?.lastHeartbeatAt ?? 0) < Date.now() - 5_500, "B's copy to age past maxLag", 15_000, 100);
    await use(a.client(), (c) => c.lock());
    try {
      await waitFor(async () => (await a.daemon!.status()).gateway?.serving === 'remote', 'A to serve remotely', 10_000, 50);
      const r = await gwA.call('POST', '/keys/k1/sign', { auth: operator, json: { mode: 'EdDSA', message: 'aGVsbG8=' } });
      expect(r.status).toBe(503);
      expect(r.headers['retry-after']).toBe('5');
      expect(JSON.parse(r.body).message).toMatch(
        /^the NetHSM of site a is down \(locked: the NetHSM is Locked\) and no peer can serve namespace alpha: replica b lags \d+(\.\d)? s > maxLag 5 s \[NHR_ERR_GATEWAY_NO_PEER\]$/,
      );
      expect(await a.registry.metrics()).toMatch(/nethsm_replicator_gateway_remote_requests_total\{peer="none",outcome="refused"\} [1-9]/);
    } finally {
      await use(a.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    }
  }, 60_000);
});
