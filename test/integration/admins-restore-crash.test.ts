/**
 * A daemon killed (SIGKILL) right after a pending administrator restore put the administrators back, before the restore
 * was recorded done: its restart must find the truth, not NHR_ERR_ROLE_ADMINS_SOURCE_MISSING with a `Try:` asking
 * the operator to put a file back or restore by hand. The restore here comes from the handover's final snapshot (a
 * stepped-down site taking the namespace back after its handover failed), the one source the daemon removes once
 * restored. The daemon runs as its own process, killed at an exact step (NHR_TEST_CRASH_AT, src/util/crash-point.ts).
 * Needs `npm run build`.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminClient } from '../../src/admin/client.js';
import { parseDaemonStatus, renderStatus } from '../../src/cli/status.js';
import type { NhrError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import type { CrashPointName } from '../../src/util/crash-point.js';
import { use } from '../helpers/clients.js';
import { built, cliBin, DaemonProcess } from '../helpers/daemon-process.js';
import { waitFor } from '../helpers/wait.js';

const gen = (id: string) => (c: NetHsmClient) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });

/** Runs site `s`'s daemon until it kills itself at `at`; resolves with the signal it died of. Bounded, not timed. */
async function runUntilCrash(s: LabSite, at: CrashPointName): Promise<{ signal: NodeJS.Signals | null; logs: string }> {
  const child = spawn(process.execPath, [cliBin, 'daemon', '--config', path.join(s.dir, 'config.yaml')], {
    env: { ...process.env, NHR_UNSAFE_TEST_SCRYPT: '1', NHR_LOG_LEVEL: 'info', NHR_TEST_CRASH_AT: at },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let logs = '';
  child.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = new Promise<NodeJS.Signals | null>((r) => child.once('close', (_code, signal) => r(signal)));
  let signal: NodeJS.Signals | null | undefined;
  void exited.then((sig) => (signal = sig));
  try {
    await waitFor(() => signal !== undefined, `the daemon of ${s.name} to reach ${at}`, 60_000);
  } catch (err) {
    // Never reached: stopped here, so the test's SIGKILL is not taken for the crash point's.
    child.kill('SIGKILL');
    await exited;
    throw err;
  }
  return { signal: signal ?? null, logs };
}

type Pending = { cause: string; try: string; attempts: number; lastError: string | null } | null | undefined;

async function alphaStatus(s: LabSite): Promise<{ pending: Pending; text: string }> {
  const st = parseDaemonStatus(await new AdminClient({ socketPath: s.config.admin.socket }).status());
  const ns = st.namespaces.find((n) => n.name === 'alpha');
  return { pending: ns?.administratorsPending as Pending, text: renderStatus(st) };
}

describe.skipIf(!built)('a daemon killed between the administrator restore and forgetting its record — needs `npm run build`', () => {
  let lab: Lab | undefined;
  let proc: DaemonProcess | undefined;
  afterEach(async () => {
    await proc?.stop('SIGKILL');
    proc = undefined;
    await lab?.close();
    lab = undefined;
  });

  /**
   * a steps down from alpha and its handover to b fails (b's daemon is gone); a takes it back with `promote --force`
   * while its NetHSM is Locked, so the restore from the handover snapshot is left pending (one failed attempt).
   * Then a's daemon stops and its NetHSM is unlocked. Returns a and the handover snapshot's path.
   */
  async function pendingRestoreFromHandoff(): Promise<{ a: LabSite; handoff: string; attempts: number }> {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    const a = lab.site('a');
    const b = lab.site('b');
    await use(a.nsAdmin('alpha'), gen('k1'));
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await b.stopDaemon();
    const err = (await a.daemon!.failover.demote('alpha', { actor: 'test' }).catch((e: unknown) => e)) as NhrError;
    expect(err.code).toBe('NHR_ERR_ROLE_HANDOVER_FAILED');
    const handoff = a.daemon!.ctx.work.handoffOf('alpha');
    expect(existsSync(handoff)).toBe(true);

    await use(a.client(), (c) => c.lock());
    const promoted = await a.daemon!.failover.promote('alpha', { force: true, actor: 'test' });
    expect(promoted.administratorsPending).toMatchObject({ code: 'NHR_ERR_ROLE_ADMINS_NOT_RESTORED' });
    await a.daemon!.failover.admins.close();
    const owed = a.daemon!.ctx.store.adminRestores.get('alpha')!;
    expect(owed).toMatchObject({ kind: 'promote', source: handoff });
    expect(owed.attempts).toBeGreaterThan(0);
    await a.stopDaemon();
    await use(a.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    return { a, handoff, attempts: owed.attempts };
  }

  /**
   * Restarts a's daemon (no crash point) and waits until its retry at start settled the pending restore either way:
   * done, or one more failed attempt than the `attempts` the record had before.
   */
  async function restartAndSettle(a: LabSite, attempts: number): Promise<Awaited<ReturnType<typeof alphaStatus>>> {
    proc = new DaemonProcess(path.join(a.dir, 'config.yaml'), 'a');
    await proc.start();
    let last: Awaited<ReturnType<typeof alphaStatus>> | undefined;
    await waitFor(
      async () => {
        last = await alphaStatus(a);
        return last.pending === null || (last.pending?.attempts ?? 0) > attempts;
      },
      'the restarted daemon to settle the pending administrator restore',
      60_000,
    );
    return last!;
  }

  // Before: the handover snapshot was removed before the record was dropped; the restart found the record, its file
  // gone after a failed attempt, and showed "the file they are to come back from is gone" (SOURCE_MISSING) with a
  // Try: to put it back or restore by hand, while the administrators were on the NetHSM.
  it('a restart after a kill just before the record is dropped restores again and shows no problem', async () => {
    const { a, handoff, attempts } = await pendingRestoreFromHandoff();
    const crash = await runUntilCrash(a, 'admin-restore-done');
    expect(crash.signal).toBe('SIGKILL');
    // The restore was done before the kill: the administrator is back on the NetHSM.
    await use(a.nsAdmin('alpha'), gen('k-before-restart'));

    const settled = await restartAndSettle(a, attempts);
    expect(settled.pending).toBeNull();
    expect(settled.text).not.toContain('without its');
    expect(settled.text).not.toContain('NHR_ERR_ROLE_ADMINS_SOURCE_MISSING');
    expect(existsSync(handoff)).toBe(false);
    await use(a.nsAdmin('alpha'), gen('k-after-restart'));
  });

  it('a restart after a kill between dropping the record and removing the handover snapshot shows no problem and removes the file', async () => {
    const { a, handoff, attempts } = await pendingRestoreFromHandoff();
    const crash = await runUntilCrash(a, 'admin-restore-forgotten');
    expect(crash.signal).toBe('SIGKILL');
    expect(existsSync(handoff)).toBe(true);

    const settled = await restartAndSettle(a, attempts);
    expect(settled.pending).toBeNull();
    // A handover snapshot nothing owes a restore from, of a namespace primary here, is a leftover: removed at start.
    await waitFor(() => !existsSync(handoff), 'the leftover handover snapshot to be removed', 30_000);
    await use(a.nsAdmin('alpha'), gen('k-after-restart'));
  });
});
