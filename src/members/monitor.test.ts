import { describe, expect, it } from 'vitest';
import { BackupWrongPassphraseError, NetHsmUnreachableError } from '../errors.js';
import { nethsmStateError } from './nethsm-state.js';
import { waitFor } from '../../test/helpers/wait.js';
import { MemberMonitor, type MemberState } from './monitor.js';

function flaky() {
  let up = true;
  let probes = 0;
  return {
    member: {
      name: 'nethsm',
      probe: async () => {
        probes++;
        if (!up) throw new NetHsmUnreachableError('connection refused');
      },
    },
    set: (v: boolean) => (up = v),
    probes: () => probes,
  };
}

describe('member monitor', () => {
  it('retries an unreachable member at the interval and gives up after the attempt limit', async () => {
    const f = flaky();
    f.set(false);
    const changes: MemberState[] = [];
    const mon = new MemberMonitor({ members: [f.member], retryIntervalMs: 5, maxAttempts: 3, onChange: (s) => changes.push({ ...s }) });
    await mon.start();
    await waitFor(() => mon.get('nethsm')!.gaveUp, 'give-up');
    const s = mon.get('nethsm')!;
    expect(s.status).toBe('unreachable');
    expect(s.attempts).toBe(3);
    expect(s.consecutiveFailures).toBe(4);
    expect(s.lastErrorCode).toBe('NHR_ERR_NETHSM_UNREACHABLE');
    expect(s.nextRetryAt).toBeNull();
    const probesAtGiveUp = f.probes();
    await new Promise((r) => setTimeout(r, 40));
    expect(f.probes()).toBe(probesAtGiveUp);
    await mon.close();
  });

  it('checks a member at once when asked (a call saw a state change), between its scheduled checks', async () => {
    const f = flaky();
    const mon = new MemberMonitor({ members: [f.member], retryIntervalMs: 60_000, maxAttempts: Infinity });
    await mon.checkNow('nethsm'); // not started: nothing
    expect(f.probes()).toBe(0);
    await mon.start();
    expect(f.probes()).toBe(1);
    f.set(false);
    await mon.checkNow('nethsm');
    expect(f.probes()).toBe(2);
    expect(mon.get('nethsm')!.status).toBe('unreachable');
    await mon.checkNow('nobody');
    await mon.close();
  });

  it('moves a member that answers again through recovering to ok, resuming its work', async () => {
    const f = flaky();
    const recovered: string[] = [];
    const mon = new MemberMonitor({ members: [f.member], retryIntervalMs: 5, maxAttempts: Infinity, onRecovered: (n) => recovered.push(n) });
    await mon.start();
    expect(mon.get('nethsm')!.status).toBe('ok');
    f.set(false);
    mon.reportFailure('nethsm', new NetHsmUnreachableError('reset'));
    expect(mon.available('nethsm')).toBe(false);
    f.set(true);
    await waitFor(() => recovered.length === 1, 'recovery');
    expect(mon.get('nethsm')!.status).toBe('recovering');
    expect(mon.available('nethsm')).toBe(true);
    mon.markOk('nethsm');
    expect(mon.get('nethsm')!.status).toBe('ok');
    await mon.close();
  });

  // Before: no resumeFailed; a member whose resume failed stayed recovering, its work never run again.
  it("runs the owner's work again while resuming it fails, keeping the failure as its last error, until markOk", async () => {
    const f = flaky();
    const recovered: string[] = [];
    const mon = new MemberMonitor({ members: [f.member], retryIntervalMs: 5, maxAttempts: Infinity, onRecovered: (n) => recovered.push(n) });
    await mon.start();
    mon.reportFailure('nethsm', new NetHsmUnreachableError('reset'));
    await waitFor(() => recovered.length === 1, 'recovery');
    mon.resumeFailed('nethsm', new BackupWrongPassphraseError('a snapshot did not open'));
    expect(mon.get('nethsm')).toMatchObject({ status: 'recovering', lastErrorCode: BackupWrongPassphraseError.code });
    await waitFor(() => recovered.length === 2, 'the work run again');
    expect(mon.get('nethsm')!.status).toBe('recovering');
    mon.resumeFailed('nethsm', new BackupWrongPassphraseError('again'));
    mon.markOk('nethsm');
    expect(mon.get('nethsm')).toMatchObject({ status: 'ok', nextRetryAt: null });
    await new Promise((r) => setTimeout(r, 30));
    expect(recovered).toHaveLength(2);
    await mon.close();
  });

  it('lets an operator retry a member it gave up on', async () => {
    const f = flaky();
    f.set(false);
    const mon = new MemberMonitor({ members: [f.member], retryIntervalMs: 5, maxAttempts: 1 });
    await mon.start();
    await waitFor(() => mon.get('nethsm')!.gaveUp, 'give-up');
    f.set(true);
    await mon.retryNow('nethsm');
    expect(mon.get('nethsm')!.status).toBe('recovering');
    await mon.close();
  });

  it('does not count non-connectivity errors against a member', async () => {
    const f = flaky();
    const mon = new MemberMonitor({ members: [f.member], retryIntervalMs: 5, maxAttempts: 3 });
    await mon.start();
    mon.reportFailure('nethsm', new BackupWrongPassphraseError('bad passphrase'));
    expect(mon.get('nethsm')!.status).toBe('ok');
    expect(mon.get('nethsm')!.consecutiveFailures).toBe(0);
    await mon.close();
  });

  it('resumes counts from persisted state and keeps a fenced member fenced', async () => {
    const f = flaky();
    const initial: MemberState[] = [
      { name: 'nethsm', status: 'fenced', consecutiveFailures: 0, attempts: 0, gaveUp: false, lastErrorCode: null, lastError: null, lastOkAt: 1, nextRetryAt: null },
    ];
    const mon = new MemberMonitor({ members: [f.member], retryIntervalMs: 5, maxAttempts: 3, initial });
    await mon.start();
    expect(mon.get('nethsm')!.status).toBe('fenced');
    expect(mon.available('nethsm')).toBe(false);
    await mon.close();
  });

  it('checks healthy members periodically, so news reaches a site after a quiet link comes back', async () => {
    const f = flaky();
    const mon = new MemberMonitor({ members: [f.member], retryIntervalMs: 1000, probeIntervalMs: 5, maxAttempts: 3 });
    await mon.start();
    const after = f.probes();
    await waitFor(() => f.probes() >= after + 3, 'periodic probes');
    await mon.close();
    const stopped = f.probes();
    await new Promise((r) => setTimeout(r, 30));
    expect(f.probes()).toBe(stopped);
  });

  it('names a NetHSM that answers but is Locked, Unprovisioned or Failed, and recovers it when Operational again', async () => {
    let state = 'Locked';
    const recovered: string[] = [];
    const member = { name: 'nethsm', probe: async () => { const e = nethsmStateError(state); if (e) throw e; } };
    const mon = new MemberMonitor({ members: [member], retryIntervalMs: 5, maxAttempts: Infinity, onRecovered: (n) => recovered.push(n) });
    await mon.start();
    expect(mon.get('nethsm')).toMatchObject({ status: 'locked', lastErrorCode: 'NHR_ERR_NETHSM_LOCKED', lastError: 'the NetHSM is Locked' });
    expect(mon.available('nethsm')).toBe(false);
    state = 'Unprovisioned';
    await waitFor(() => mon.get('nethsm')!.status === 'not-operational', 'not-operational');
    expect(mon.get('nethsm')).toMatchObject({ lastErrorCode: 'NHR_ERR_NETHSM_NOT_OPERATIONAL', lastError: 'the NetHSM is Unprovisioned' });
    state = 'Failed';
    await waitFor(() => mon.get('nethsm')!.lastError === 'the NetHSM is Failed', 'Failed named');
    state = 'Operational';
    await waitFor(() => recovered.length === 1, 'recovery');
    expect(mon.get('nethsm')!.status).toBe('recovering');
    mon.markOk('nethsm');
    expect(mon.get('nethsm')!.status).toBe('ok');
    await mon.close();
  });

  it('sees a healthy NetHSM locked by its periodic probe, and an answering call after the unlock recovers it', async () => {
    let state = 'Operational';
    const member = { name: 'nethsm', probe: async () => { const e = nethsmStateError(state); if (e) throw e; } };
    const mon = new MemberMonitor({ members: [member], retryIntervalMs: 1000, probeIntervalMs: 5, maxAttempts: Infinity });
    await mon.start();
    expect(mon.get('nethsm')!.status).toBe('ok');
    state = 'Locked';
    await waitFor(() => mon.get('nethsm')!.status === 'locked', 'the lock seen by the periodic probe');
    mon.reportSuccess('nethsm');
    expect(mon.get('nethsm')!.status).toBe('recovering');
    await mon.close();
  });

  it('fences a member that acts on a stale view and clears it when it stops', async () => {
    const f = flaky();
    const mon = new MemberMonitor({ members: [f.member], retryIntervalMs: 1000, maxAttempts: 3 });
    await mon.start();
    mon.markFenced('nethsm');
    expect(mon.get('nethsm')!.status).toBe('fenced');
    expect(mon.available('nethsm')).toBe(false);
    mon.clearFenced('nethsm');
    expect(mon.get('nethsm')!.status).toBe('ok');
    await mon.close();
  });
});
