/**
 * No primary: a demote whose handover failed leaves the namespace read-only everywhere. `status` says "no primary"
 * (not "replica of itself, never synced") at both sites, with a remedy, and both remedies work: running the demote
 * again once the successor answers, or `promote --force` at the site that stepped down (administrators back).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AdminClient } from '../../src/admin/client.js';
import { parseDaemonStatus, renderStatus, statusExitCode } from '../../src/cli/status.js';
import { runCli } from '../../src/cli/test-run.js';
import type { NhrError, RolePromoteRefusedError } from '../../src/errors.js';
import { Lab, type LabSite } from '../../src/lab/lab.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import { waitFor } from '../helpers/wait.js';
import { use } from '../helpers/clients.js';

const gen = (id: string) => (c: NetHsmClient) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
const keys = (c: NetHsmClient) => c.listKeys();

async function status(s: LabSite): Promise<{ text: string; code: number }> {
  const st = parseDaemonStatus(await new AdminClient({ socketPath: s.config.admin.socket }).status());
  return { text: renderStatus(st), code: statusExitCode(st) };
}

describe('no primary after a failed handover', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  /** a is primary of alpha, b synced; b's daemon goes away and a's demote to b fails half-way. */
  async function failedHandover(): Promise<{ a: LabSite; b: LabSite }> {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '300ms' });
    await lab.startDaemons();
    const a = lab.site('a');
    const b = lab.site('b');
    await use(a.nsAdmin('alpha'), gen('k1'));
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await use(a.nsAdmin('alpha'), gen('k2-before-demote'));
    await b.stopDaemon();
    const err = (await a.daemon!.failover.demote('alpha', { actor: 'op@a' }).catch((e: unknown) => e)) as NhrError;
    expect(err.code).toBe('NHR_ERR_ROLE_HANDOVER_FAILED');
    expect(err.message).toMatch(/^namespace alpha: this site stepped down at epoch 1 but the handover to b failed: .*; no site is primary for alpha now$/);
    expect(err.hint).toBe('Run `nethsm-replicator demote alpha --to b` again once b answers, or take it back here with `nethsm-replicator promote alpha --force` (docs/operations.md §3).');
    expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'replica', epoch: 1, primarySite: 'a' });
    return { a, b };
  }

  async function expectNoPrimaryAtA(a: LabSite): Promise<void> {
    const st = await status(a);
    expect(st.code).toBe(2);
    expect(st.text).toMatch(/\nalpha\s+replica\s+1\s+NONE\s+-\s+-/);
    expect(st.text).not.toContain('NEVER');
    expect(st.text).toContain(
      'PROBLEM: namespace alpha: no primary: this site (a) stepped down at epoch 1 and no site has taken over (the handover to b did not finish)\n' +
        'Try: Run `nethsm-replicator demote alpha --to b` again once b answers, or take it back here with `nethsm-replicator promote alpha --force` (docs/operations.md §3).',
    );
  }

  it('says so at both sites, and running the demote again finishes the handover', async () => {
    const { a, b } = await failedHandover();
    await expectNoPrimaryAtA(a);
    // A plain promote names the real reason (not "never synced") and the way out.
    const refused = (await a.daemon!.failover.promote('alpha', { force: false, actor: 'op@a' }).catch((e: unknown) => e)) as RolePromoteRefusedError;
    expect(refused.reasons).toEqual(['handover-pending']);
    expect(refused.message).toBe('refusing to promote namespace alpha: this site stepped down at epoch 1 and its handover did not finish');

    // b is back: it reaches a, and a is not primary any more.
    await b.startDaemon();
    await waitFor(async () => (await status(b)).text.includes('no primary'), 'b to see that a is not primary', 15_000);
    const sb = await status(b);
    expect(sb.code).toBe(2);
    expect(sb.text).toContain('PROBLEM: namespace alpha: no primary: a, its primary at epoch 1, answers but is not primary there (it stepped down; its handover did not finish)\nTry: ');

    // The remedy: the same command again.
    const again = await runCli(['demote', 'alpha', '--to', 'b', '--socket', a.config.admin.socket]);
    expect(again.err).toBe('');
    expect(again.out).toBe('demoted alpha: epoch 1 → 2, to=b\n');
    expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2, primarySite: 'b' });
    expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'replica', epoch: 2, primarySite: 'b' });
    expect(await use(b.nsOperator('alpha'), keys)).toEqual(['k1', 'k2-before-demote']);
    await use(b.nsAdmin('alpha'), gen('k3-at-b'));
    for (const s of [a, b]) await waitFor(async () => !(await status(s)).text.includes('no primary'), `${s.name} to see a primary`, 15_000);
    const audit = a.daemon!.ctx.store.audit.list({ namespace: 'alpha' }).filter((e) => e.action === 'demote');
    expect(audit.map((e) => [e.fromRole, e.toRole, e.detail.handoverTo, e.detail.retry ?? false])).toEqual([
      ['primary', 'replica', 'b', false],
      ['replica', 'replica', 'b', true],
    ]);
  });

  it('promote --force at the site that stepped down takes it back with its administrators; the other site follows', async () => {
    const { a, b } = await failedHandover();
    const r = await a.daemon!.failover.promote('alpha', { force: true, actor: 'op@a' });
    expect(r).toMatchObject({ role: 'primary', epoch: 2, previousEpoch: 1, previousPrimary: 'a', administratorsRestored: 1 });
    // The namespace's administrator works at a again (the demote had removed it).
    await use(a.nsAdmin('alpha'), gen('k3-at-a'));
    expect(await use(a.nsOperator('alpha'), keys)).toEqual(['k1', 'k2-before-demote', 'k3-at-a']);
    const st = await status(a);
    expect(st.text).not.toContain('no primary');
    expect(st.text).toMatch(/\nalpha\s+primary\s+2\s+a\s/);

    await b.startDaemon();
    await waitFor(() => b.daemon!.ctx.store.roles.get('alpha')?.epoch === 2, 'b to learn epoch 2', 15_000);
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(await use(b.nsOperator('alpha'), keys)).toEqual(['k1', 'k2-before-demote', 'k3-at-a']);
    expect((await status(b)).text).not.toContain('no primary');

    // Its primary gone, the replica has no reachable primary either: said in the same words.
    await a.stopDaemon();
    await waitFor(async () => (await status(b)).text.includes('no primary'), 'b to see a gone', 15_000);
    expect((await status(b)).text).toContain(
      'PROBLEM: namespace alpha: no primary: its primary a is UNREACHABLE\nTry: If a is only briefly away, wait: this replica resumes by itself. If a is lost, promote here: `nethsm-replicator promote alpha` (docs/operations.md §4).',
    );
  });
});
