/**
 * A pending administrator restore whose source file is gone (a fence's quarantine file deleted or lost, for resuming
 * leadership) must not be answered "restored (0 users put back)" and dropped while the namespace's users get 401:
 * the attempt fails with NHR_ERR_ROLE_ADMINS_SOURCE_MISSING naming the file, the record stays, `status` and the
 * failed-attempts metric say so, and only the operator's `admins restore <ns> --forget` (after putting the users back
 * by hand) drops it. Simulator over real HTTPS; the role change and device work as in resume-leadership.test.ts.
 */
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminClient } from '../../src/admin/client.js';
import { parseDaemonStatus, renderStatus, statusExitCode } from '../../src/cli/status.js';
import { runCli } from '../../src/cli/test-run.js';
import { NetHsmHttpError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { createLogger } from '../../src/log.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import { applyRoleChange } from '../../src/roles/apply.js';
import { stepDown } from '../../src/roles/role-machine.js';
import { use } from '../helpers/clients.js';
import { waitFor } from '../helpers/wait.js';

const CODE = 'NHR_ERR_ROLE_ADMINS_SOURCE_MISSING';
const gen = (id: string) => (c: NetHsmClient) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });

async function statusOf(site: LabSite): Promise<{ text: string; code: number }> {
  const s = parseDaemonStatus(await new AdminClient({ socketPath: site.config.admin.socket }).status());
  return { text: renderStatus(s), code: statusExitCode(s) };
}

async function metric(site: LabSite, name: string): Promise<number | undefined> {
  const m = await site.registry.getSingleMetric(`nethsm_replicator_${name}`)?.get();
  return m?.values.find((v) => v.labels.namespace === 'alpha')?.value;
}

describe('a pending administrator restore whose source file is gone', () => {
  let lab: Lab;
  const lines: { level: string; msg: string; [k: string]: unknown }[] = [];

  beforeAll(async () => {
    const sink = { write: (s: string) => void lines.push(JSON.parse(s) as (typeof lines)[number]) };
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], logger: (site) => createLogger({ level: site === 'a' ? 'warn' : 'silent', destination: sink }) });
    await lab.startDaemons();
  });

  afterAll(async () => {
    await lab?.close();
  });

  const record = () => lab.site('a').daemon!.ctx.store.adminRestores.get('alpha');

  /** a steps down and is fenced (quarantine file written, the namespace's users stripped); returns the file and the row. */
  async function stepDownAndFence(): Promise<{ file: string; epoch: number }> {
    const d = lab.site('a').daemon!;
    const row = d.ctx.store.roles.require('alpha');
    applyRoleChange(d.ctx.store, stepDown(row, { localSite: 'a', reason: 'test: lease lost' }), 'daemon');
    const { quarantine } = await d.failover.fence('alpha', row.epoch);
    return { file: quarantine, epoch: row.epoch };
  }

  // Before: the retry and the CLI answered "restored (0 users put back); its users can write again" and dropped the
  // record; status showed nothing while the namespace's users got 401.
  it('fails each attempt with the code and the path, keeps the record, and shows it in status and the metric', async () => {
    const a = lab.site('a');
    const d = a.daemon!;
    const { file, epoch } = await stepDownAndFence();
    // The first attempt fails (NetHSM Locked): the restore is pending; then the quarantine file is lost.
    await use(a.client(), (c) => c.lock());
    const r = await d.failover.resumeLeadership('alpha', epoch + 1);
    expect(r.pending).toMatchObject({ code: 'NHR_ERR_ROLE_ADMINS_NOT_RESTORED' });
    await rm(file);
    await use(a.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));

    // The daemon's retry: fails with the code, the record stays, counted as a failed attempt.
    d.failover.admins.kick();
    await waitFor(() => record()?.lastError?.startsWith(`${CODE}:`) === true, 'the retry to fail on the missing file', 20_000);
    expect(record()).toMatchObject({ kind: 'resume', source: file, epoch: epoch + 1 });
    expect(record()!.lastError).toContain(file);
    expect(d.failover.admins.isPending('alpha')).toBe(true);
    expect(await metric(a, 'admin_restore_pending')).toBe(1);
    expect(await metric(a, 'admin_restore_failed_attempts')).toBeGreaterThanOrEqual(2);

    // The CLI: Error with the code and the path, the remedy, exit 1; the record stays.
    await d.failover.admins.close();
    const attempts = record()!.attempts;
    const manual = await runCli(['admins', 'restore', 'alpha', '--socket', a.config.admin.socket]);
    expect(manual.code).toBe(1);
    expect(manual.out).toBe('');
    expect(manual.err).toContain(`is gone: ${file}; nothing was restored`);
    expect(manual.err).toContain(`[${CODE}]\nTry: Put the file back at ${file}`);
    expect(manual.err).toContain('`nethsm-replicator admins restore alpha --forget`');
    expect(record()!.attempts).toBe(attempts + 1);

    // status: a PROBLEM saying the file is gone, and what to do.
    const st = await statusOf(a);
    expect(st.code).toBe(2);
    expect(st.text).toContain(`primary at epoch ${epoch + 1} without its users: the file they are to come back from is gone (${file})`);
    expect(st.text).toContain(`Try: Put the file back at ${file}`);
    // Nothing put the users back: the NetHSM still refuses them.
    const err = await use(a.nsAdmin('alpha'), gen('k-no')).catch((e: unknown) => e);
    expect((err as NetHsmHttpError).status).toBe(401);
  });

  it('`admins restore <ns> --forget` refuses a bad namespace and changes nothing, then drops the record after the users are put back by hand', async () => {
    const a = lab.site('a');
    const socket = a.config.admin.socket;
    const before = record();
    expect(before).toBeDefined();
    const bad = await runCli(['admins', 'restore', '_x', '--forget', '--socket', socket]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/namespace "_x" is not a valid NetHSM namespace id.*\[NHR_ERR_INPUT_INVALID\]/);
    const unknown = await runCli(['admins', 'restore', 'nosuch', '--forget', '--socket', socket]);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/^Error: .*nosuch.*\[NHR_ERR_/);
    expect(record()).toEqual(before);

    // The runbook's by-hand restore: the replication account (the namespace's only administrator left) puts the
    // stripped administrator back.
    await use(a.client('alpha~replicator', LAB_PASSPHRASES.replicator), (c) =>
      c.createUser({ realName: 'admin', role: 'Administrator', passphrase: LAB_PASSPHRASES.nsAdmin }, 'alpha~admin'),
    );
    const forgot = await runCli(['admins', 'restore', 'alpha', '--forget', '--socket', socket]);
    expect(forgot.err).toBe('');
    expect(forgot.code).toBe(0);
    expect(forgot.out).toBe(`the pending administrator restore of alpha at epoch ${before!.epoch} is forgotten: nothing was restored by the daemon; writes are admitted again (administrators not put back by hand get 401 from the NetHSM)\n`);
    expect(record()).toBeUndefined();
    expect(a.daemon!.failover.admins.isPending('alpha')).toBe(false);
    expect(await metric(a, 'admin_restore_pending')).toBe(0);
    expect(await metric(a, 'admin_restore_failed_attempts')).toBe(0);
    expect((await statusOf(a)).text).not.toContain('without its');
    expect(lines).toContainEqual(
      expect.objectContaining({ level: 'warn', msg: expect.stringMatching(/forgotten by the operator/), namespace: 'alpha', actor: expect.stringMatching(/.+/), source: before!.source, attempts: before!.attempts }),
    );
    // The audit trail: one admins-forget row, with who, the epoch and what was dropped.
    const audit = a.daemon!.ctx.store.audit.list({ namespace: 'alpha' }).filter((e) => e.action === 'admins-forget');
    expect(audit).toEqual([
      expect.objectContaining({ actor: expect.stringMatching(/.+/), toEpoch: before!.epoch, detail: expect.objectContaining({ kind: before!.kind, source: before!.source, attempts: before!.attempts }) }),
    ]);
    // Writable again (the 401 above blocks that user's logins for 1 s: 429, the firmware's rate limit).
    const written = () => use(a.nsAdmin('alpha'), gen('k-after-forget')).then(() => true, (e: unknown) => (e instanceof NetHsmHttpError && e.status === 429 ? false : Promise.reject(e)));
    await waitFor(written, 'the restored administrator to write');
    expect((await runCli(['admins', 'restore', 'alpha', '--forget', '--socket', socket])).out).toBe('no administrator restore is pending for alpha: nothing to do\n');
  });

  // Before: resuming found no file, so no restore was recorded: a primary without its users and nothing saying so.
  it('records the restore and fails it when the file is already gone when leadership resumes', async () => {
    const a = lab.site('a');
    const { file, epoch } = await stepDownAndFence();
    await rm(file);
    const r = await a.daemon!.failover.resumeLeadership('alpha', epoch + 1);
    expect(r.row).toMatchObject({ role: 'primary', epoch: epoch + 1 });
    expect(r.restored).toBe(0);
    expect(r.pending?.cause).toMatch(new RegExp(`^${CODE}: .*is gone: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    expect(r.pending?.hint).toContain('--forget');
    expect(record()).toMatchObject({ kind: 'resume', source: file, attempts: 1 });
    expect((await statusOf(a)).text).toContain('the file they are to come back from is gone');
  });
});
