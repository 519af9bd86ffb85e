/**
 * A promote whose administrator restore fails (the NetHSM is Locked between the role change and the restore) must not
 * leave a silent, admin-less primary: the role change stands, the restore is recorded and retried by the daemon (and
 * at its start), `status`, `/health/ready`, the metric and the gateway say so, and once the NetHSM works again the
 * namespace's administrator can write. A retry decided under a role row that was superseded meanwhile is abandoned
 * before it touches the device. Simulator over real HTTPS; the failures are the firmware's own (412 when Locked).
 */
import { rm } from 'node:fs/promises';
import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminClient } from '../../src/admin/client.js';
import { parseDaemonStatus, renderStatus, statusExitCode } from '../../src/cli/status.js';
import { NetHsmHttpError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import type { RunningSimulator } from '../../src/sim/server.js';
import { prepare } from '../../src/state/sqlite.js';
import { StateStore } from '../../src/state/store.js';
import { waitFor } from '../helpers/wait.js';
import { runCli } from '../../src/cli/test-run.js';
import { use } from '../helpers/clients.js';

const gen = (id: string) => (c: NetHsmClient) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });

function readyOf(site: LabSite): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: site.daemon!.ports.health, path: '/health/ready' }, (res) => {
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

async function pendingMetric(site: LabSite, name = 'nethsm_replicator_admin_restore_pending'): Promise<number | undefined> {
  const m = await site.registry.getSingleMetric(name)?.get();
  return m?.values.find((v) => v.labels.namespace === 'alpha')?.value;
}
const failedAttempts = (site: LabSite) => pendingMetric(site, 'nethsm_replicator_admin_restore_failed_attempts');

const record = (site: LabSite) => site.daemon!.ctx.store.adminRestores.get('alpha');

describe('a promote whose administrator restore fails', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  /** A primary, B synced from it; A is lost and B's NetHSM is Locked: the promote's restore gets the firmware's 412. */
  async function primaryLostReplicaLocked(): Promise<Lab> {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], gateway: true });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), gen('k1'));
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
    await lab.site('a').stop();
    await use(lab.site('b').client(), (c) => c.lock());
    return lab;
  }

  it('keeps the role change, records and shows the restore, refuses writes with 503, and the retry restores the administrators once the NetHSM works', async () => {
    const l = await primaryLostReplicaLocked();
    const b = l.site('b');

    const result = await b.daemon!.failover.promote('alpha', { force: false, actor: 'operator@b' });
    // The truth: the role changed (epoch 2), the administrators are NOT restored, the daemon retries, and why.
    expect(result).toMatchObject({ role: 'primary', epoch: 2, previousEpoch: 1, administratorsRestored: 0 });
    expect(result.administratorsPending).toMatchObject({ code: 'NHR_ERR_ROLE_ADMINS_NOT_RESTORED', retrying: true });
    expect(result.administratorsPending!.cause).toContain('NHR_ERR_NETHSM_NOT_OPERATIONAL: this site\'s NetHSM is Locked');
    expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2, primarySite: 'b' });
    expect(record(b)).toMatchObject({ namespace: 'alpha', epoch: 2, kind: 'promote' });
    expect(b.daemon!.failover.admins.isPending('alpha')).toBe(true);

    // status: a PROBLEM naming the state, the cause and what to do; readiness fails; the metric is 1.
    const st = await statusOf(b);
    expect(st.code).toBe(2);
    expect(st.text).toContain("PROBLEM: namespace alpha (since ");
    expect(st.text).toContain("primary at epoch 2 without its administrators: writes by the namespace's users are refused");
    expect(st.text).toContain('answered 412 to POST /system/backup');
    expect(st.text).toContain('Try: The daemon retries by itself');
    const ready = await readyOf(b);
    expect(ready.status).toBe(503);
    expect(ready.body.failing).toEqual(expect.arrayContaining(['administrators']));
    expect(await pendingMetric(b)).toBe(1);
    // What the alert waits for: the attempts that failed (the promote's own at least).
    expect(await failedAttempts(b)).toBe(record(b)!.attempts);
    expect(await failedAttempts(b)).toBeGreaterThanOrEqual(1);

    // The gateway refuses the namespace's writes with a clear 503, not the device's bare 401.
    const refused = await use(b.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), gen('k-refused')).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(NetHsmHttpError);
    expect((refused as NetHsmHttpError).status).toBe(503);
    expect((refused as NetHsmHttpError).message).toContain('administrators are not restored');

    // The NetHSM works again: the daemon's retry puts the administrators back; writes work; everything is clean.
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await waitFor(() => record(b) === undefined, 'the retry to restore the administrators', 20_000);
    await use(b.nsAdmin('alpha'), gen('k2-at-b'));
    await use(b.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), gen('k3-via-gateway'));
    expect(b.daemon!.failover.admins.isPending('alpha')).toBe(false);
    expect(await pendingMetric(b)).toBe(0);
    expect(await failedAttempts(b)).toBe(0);
    await waitFor(async () => (await readyOf(b)).status === 200, 'readiness once the NetHSM member is ok again', 15_000);
    const after = await statusOf(b);
    expect(after.text).not.toContain('without its administrators');
  });

  it('lets a gateway write that arrives during the retry wait at the gate and go through once the administrators are back', async () => {
    const l = await primaryLostReplicaLocked();
    const b = l.site('b');
    const sim = b.sim as RunningSimulator;
    expect((await b.daemon!.failover.promote('alpha', { force: false, actor: 'operator@b' })).administratorsPending).toBeDefined();
    const backups = sim.hold({ path: /^\/api\/v1\/system\/backup$/ });
    try {
      await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
      b.daemon!.failover.admins.kick();
      await backups.waitFor(1, 15_000);
      // The retry holds the barrier exclusively: a write now waits at the gate instead of getting 503.
      const write = use(b.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), gen('k-during-retry'));
      await waitFor(() => b.daemon!.ctx.barrier.waiting === 1, 'the write to wait at the gate');
      expect(record(b)).toBeDefined();
      backups.release();
      await write;
      expect(record(b)).toBeUndefined();
      expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toContain('k-during-retry');
    } finally {
      backups.close();
    }
  });

  it('restores the administrators at the next daemon start when the record is left', async () => {
    const l = await primaryLostReplicaLocked();
    const b = l.site('b');
    const result = await b.daemon!.failover.promote('alpha', { force: false, actor: 'operator@b' });
    expect(result.administratorsPending).toBeDefined();
    await b.stopDaemon();
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await b.startDaemon();
    await waitFor(() => record(b) === undefined, 'the restore at start', 20_000);
    expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2 });
    await use(b.nsAdmin('alpha'), gen('k2-after-restart'));
    expect(await pendingMetric(b)).toBe(0);
  });

  it('keeps a record edited into nonsense, neither retried nor dropped, and names it in status', async () => {
    const l = await primaryLostReplicaLocked();
    const b = l.site('b');
    expect((await b.daemon!.failover.promote('alpha', { force: false, actor: 'operator@b' })).administratorsPending).toBeDefined();
    await b.stopDaemon();
    const store = StateStore.inDir(b.stateDir).open();
    prepare(store.db, "UPDATE admin_restores SET kind = 'bogus' WHERE namespace = 'alpha'").run();
    store.close();
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await b.startDaemon();
    const st = await statusOf(b);
    expect(st.code).toBe(2);
    expect(st.text).toContain('the pending administrator restore of namespace alpha is not valid: its stored kind "bogus" is neither "promote" nor "resume"');
    expect(await pendingMetric(b)).toBe(1);
    // Never attempted, yet it needs an operator: counted as failed, so the alert fires.
    expect(await failedAttempts(b)).toBeGreaterThanOrEqual(1);
    b.daemon!.failover.admins.kick();
    expect(record(b)?.invalid).toBeDefined();
    // Asking for an attempt now refuses it too, saying why and what to do; the row stays.
    const manual = await runCli(['admins', 'restore', 'alpha', '--socket', b.config.admin.socket]);
    expect(manual.code).toBe(1);
    expect(manual.err).toMatch(/^Error: the pending administrator restore of namespace alpha is not valid: its stored kind "bogus".*\[NHR_ERR_ROLE_ADMINS_NOT_RESTORED\]\nTry: The state database was edited or copied by hand/s);
    expect(record(b)?.invalid).toBeDefined();
    // Still refused at the NetHSM: nothing restored it.
    const err = await use(b.nsAdmin('alpha'), gen('k-no')).catch((e: unknown) => e);
    expect((err as NetHsmHttpError).status).toBe(401);
  });

  it('abandons a retry whose role row was superseded (a newer epoch fenced this site) before it restores anything', async () => {
    const l = await primaryLostReplicaLocked();
    const b = l.site('b');
    const sim = b.sim as RunningSimulator;
    const result = await b.daemon!.failover.promote('alpha', { force: false, actor: 'operator@b' });
    expect(result.administratorsPending).toBeDefined();

    // The retry's device backup is held: the retry is decided (epoch 2, primary here) and inside its exclusive hold.
    const backups = sim.hold({ path: /^\/api\/v1\/system\/backup$/ });
    const restores = sim.hold({ path: /^\/api\/v1\/system\/restore$/ });
    try {
      await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
      b.daemon!.failover.admins.kick();
      await backups.waitFor(1, 15_000);
      // Meanwhile A comes back at a newer epoch: B learns it and is fenced (its fence waits for the retry's hold).
      await b.daemon!.failover.observe('alpha', { from: 'a', epoch: 3, primarySite: 'a' });
      expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'fenced', epoch: 3 });
      backups.release(1);
      // The retry re-checks its token before the restore and gives up; the record is forgotten (superseded). The
      // fence's own backup is the next one held: no restore can have come from anyone else meanwhile.
      await backups.waitFor(1, 15_000);
      await waitFor(() => record(b) === undefined, 'the superseded record to be forgotten');
      expect(restores.caught()).toBe(0);
      expect(b.daemon!.failover.admins.isPending('alpha')).toBe(false);
      expect(await pendingMetric(b)).toBe(0);
    } finally {
      backups.close();
      restores.close();
    }
  });

  // Before: the retry found no snapshot, answered "restored (0 users put back); its users can write again" and dropped
  // the record, while the NetHSM refused the namespace's users.
  it('fails a retry whose snapshot is gone since the failed first attempt (NHR_ERR_ROLE_ADMINS_SOURCE_MISSING) and keeps the record', async () => {
    const l = await primaryLostReplicaLocked();
    const b = l.site('b');
    expect((await b.daemon!.failover.promote('alpha', { force: false, actor: 'operator@b' })).administratorsPending).toBeDefined();
    await b.daemon!.failover.admins.close();
    const { source, attempts } = record(b)!;
    expect(source).toBe(b.daemon!.ctx.work.snapshotOf('alpha'));
    await rm(source);
    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    const manual = await runCli(['admins', 'restore', 'alpha', '--socket', b.config.admin.socket]);
    expect(manual.code).toBe(1);
    expect(manual.out).toBe('');
    expect(manual.err).toContain(`the snapshot its administrators are to come back from is gone since an earlier attempt: ${source}; nothing was restored`);
    expect(manual.err).toContain(`[NHR_ERR_ROLE_ADMINS_SOURCE_MISSING]\nTry: Put the file back at ${source}`);
    expect(record(b)).toMatchObject({ attempts: attempts + 1, lastError: expect.stringMatching(/^NHR_ERR_ROLE_ADMINS_SOURCE_MISSING: /) });
    expect(await failedAttempts(b)).toBe(attempts + 1);
    expect(await pendingMetric(b)).toBe(1);
    expect((await statusOf(b)).text).toContain(`the file they are to come back from is gone (${source})`);
    const refused = await use(b.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), gen('k-refused')).catch((e: unknown) => e);
    expect((refused as NetHsmHttpError).status).toBe(503);
  });

  // Before: no way to ask the daemon to retry now; the operator waited for the backoff (up to recovery.retryInterval).
  it('`admins restore <ns>` retries now through the admin API: Error and Try while the NetHSM is Locked, then the administrators are back', async () => {
    const l = await primaryLostReplicaLocked();
    const b = l.site('b');
    expect((await b.daemon!.failover.promote('alpha', { force: false, actor: 'operator@b' })).administratorsPending).toBeDefined();
    // The background retries stop: only the operator's command can restore from here on.
    await b.daemon!.failover.admins.close();
    const socket = b.config.admin.socket;
    const attempts = record(b)!.attempts;
    // Status's Try: names the command.
    expect((await statusOf(b)).text).toContain('`nethsm-replicator admins restore alpha`');

    const locked = await runCli(['admins', 'restore', 'alpha', '--socket', socket]);
    expect(locked.code).toBe(1);
    expect(locked.out).toBe('');
    expect(locked.err).toMatch(/^Error: namespace alpha: the administrators were NOT restored on this site's NetHSM \(primary at epoch 2\): NHR_ERR_NETHSM_NOT_OPERATIONAL: this site's NetHSM is Locked.*\[NHR_ERR_ROLE_ADMINS_NOT_RESTORED\]\nTry: /s);
    expect(record(b)!.attempts).toBe(attempts + 1);
    expect(await pendingMetric(b)).toBe(1);

    await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    const ok = await runCli(['admins', 'restore', 'alpha', '--socket', socket]);
    expect(ok.err).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/^administrators of alpha restored on this site's NetHSM at epoch 2 \(\d+ users put back\); its users can write again\n$/);
    expect(record(b)).toBeUndefined();
    expect(await pendingMetric(b)).toBe(0);
    await use(b.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin), gen('k-after-manual-restore'));
    // Asked again: nothing owed.
    expect((await runCli(['admins', 'restore', 'alpha', '--socket', socket])).out).toBe('no administrator restore is pending for alpha: nothing to do\n');
    // A namespace this daemon does not replicate is refused with the daemon's error.
    const unknown = await runCli(['admins', 'restore', 'nosuch', '--socket', socket]);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/^Error: .*nosuch.*\[NHR_ERR_/);
  });
});
