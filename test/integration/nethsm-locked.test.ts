/**
 * A Locked NetHSM is not an unreachable one: `status`, `/health/ready` and the member metrics say LOCKED, with the
 * remedy, whether the device was locked before the daemon started or while it ran, and go back to ok once unlocked.
 */
import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminClient } from '../../src/admin/client.js';
import { parseDaemonStatus, renderStatus, statusExitCode } from '../../src/cli/status.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { waitFor } from '../helpers/wait.js';
import { use } from '../helpers/clients.js';

function getJson(port: number, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function statusOf(site: LabSite): Promise<{ text: string; code: number }> {
  const s = parseDaemonStatus(await new AdminClient({ socketPath: site.config.admin.socket }).status());
  return { text: renderStatus(s), code: statusExitCode(s) };
}

const memberStatus = (site: LabSite) => site.daemon!.ctx.monitor.get('nethsm')!.status;

async function expectLocked(site: LabSite): Promise<void> {
  const m = site.daemon!.ctx.monitor.get('nethsm')!;
  expect(m.status).toBe('locked');
  expect(m.lastErrorCode).toBe('NHR_ERR_NETHSM_LOCKED');
  const st = await statusOf(site);
  expect(st.code).toBe(2);
  expect(st.text).toMatch(/\nnethsm\s+nethsm\s+LOCKED\s/);
  expect(st.text).toContain("PROBLEM: this site's NetHSM is LOCKED (NHR_ERR_NETHSM_LOCKED)");
  expect(st.text).toContain('Try: Unlock it (POST /unlock with the unlock passphrase');
  expect(st.text).not.toContain('UNREACHABLE');
  const ready = await getJson(site.daemon!.ports.health, '/health/ready');
  expect(ready.status).toBe(503);
  expect(ready.body.failing).toEqual(['nethsm']);
  const detail = String((ready.body.checks as Record<string, { detail?: string }>).nethsm?.detail);
  expect(detail).toContain('NetHSM is Locked');
  expect(detail).toContain('Unlock it (POST /unlock');
  const metrics = await site.registry.metrics();
  expect(metrics).toMatch(/nethsm_replicator_member_status\{member="nethsm",status="locked"\} 1/);
  expect(metrics).toMatch(/nethsm_replicator_member_status\{member="nethsm",status="unreachable"\} 0/);
  expect(metrics).toMatch(/nethsm_replicator_member_up\{member="nethsm"\} 0/);
}

async function expectOk(site: LabSite): Promise<void> {
  await waitFor(() => memberStatus(site) === 'ok', 'the NetHSM member to be ok again', 15_000);
  const st = await statusOf(site);
  expect(st.text).toMatch(/\nnethsm\s+nethsm\s+ok\s/);
  expect(st.text).not.toContain('LOCKED');
  expect((await getJson(site.daemon!.ports.health, '/health/ready')).status).toBe(200);
  expect(await site.registry.metrics()).toMatch(/nethsm_replicator_member_status\{member="nethsm",status="locked"\} 0/);
}

describe('a Locked NetHSM', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  it('is LOCKED, not UNREACHABLE, when locked at start, while running, and ok again after each unlock', async () => {
    // retryInterval is also the periodic probe interval of members that are ok.
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '300ms' });
    const b = lab.site('b');
    await use(b.client(), (c) => c.lock());
    await lab.startDaemons({ settle: false }); // b's NetHSM is Locked at start on purpose
    await expectLocked(b);

    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await expectOk(b);

    // Locked while the daemon runs: the periodic probe sees it within one interval.
    await use(b.client(), (c) => c.lock());
    await waitFor(() => memberStatus(b) === 'locked', 'the lock to be seen', 5_000);
    await expectLocked(b);

    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await expectOk(b);
    // Back to work: the replica syncs again.
    await expect(b.daemon!.syncer.sync('alpha', { actor: 'test' })).resolves.toMatchObject({ outcome: 'applied' });
  });

  it("takes the replica out of a load balancer's read pool while it is Locked (`/replica/<ns>` 503, naming why), and back once unlocked", async () => {
    // The operator drill: a replica whose NetHSM was Locked still answered `/replica/alpha` 200, so a load balancer
    // kept sending reads and signing to a gateway that could only pass on the NetHSM's 412.
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '300ms' });
    await lab.startDaemons();
    const [a, b] = [lab.site('a'), lab.site('b')];
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    const check = () => getJson(b.daemon!.ports.health, '/replica/alpha?max_lag=1h');
    expect((await check()).status).toBe(200);

    await use(b.client(), (c) => c.lock());
    await waitFor(() => memberStatus(b) === 'locked', 'the lock to be seen', 5_000);
    const locked = await check();
    expect(locked.status).toBe(503);
    expect(locked.body).toMatchObject({ namespace: 'alpha', role: 'replica', reason: "this site's NetHSM is locked (NHR_ERR_NETHSM_LOCKED): its gateway cannot serve reads or signing" });
    // The primary's own checks are its own: a's NetHSM answers.
    expect((await getJson(a.daemon!.ports.health, '/primary/alpha')).status).toBe(200);

    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await expectOk(b);
    expect((await check()).status).toBe(200);

    // Unreachable rather than Locked: the same, and readiness names the remedy as it does for a Locked NetHSM.
    await b.stopSim();
    await waitFor(() => memberStatus(b) === 'unreachable', 'the NetHSM to be seen unreachable', 5_000);
    expect((await check()).body.reason).toMatch(/^this site's NetHSM is unreachable \(NHR_ERR_NETHSM_UNREACHABLE\)/);
    const ready = await getJson(b.daemon!.ports.health, '/health/ready');
    expect(String((ready.body.checks as Record<string, { detail?: string }>).nethsm?.detail)).toMatch(/^cannot reach the NetHSM: .*\. Try: Check that the NetHSM is up/);
  });
});
