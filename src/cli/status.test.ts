import { describe, expect, it } from 'vitest';
import type { DaemonStatus, NamespaceStatus } from '../daemon/status.js';
import { parseDaemonStatus, renderStatus, statusExitCode, statusWarnings } from './status.js';

const now = new Date('2026-11-29T03:00:00Z');
const at = (secondsFromNow: number) => new Date(now.getTime() + secondsFromNow * 1000).toISOString();

function replica(over: Partial<NamespaceStatus> = {}): NamespaceStatus {
  return {
    name: 'alpha',
    role: 'replica',
    epoch: 1,
    primarySite: 'a',
    paused: false,
    busy: false,
    lastSync: { at: at(-60), outcome: 'ok', durationSeconds: 20, errorCode: null },
    position: { epoch: 1, seq: 5, takenAt: at(-60) },
    lagSeconds: 60,
    lagLimitSeconds: 3600,
    nextScheduledSync: at(600),
    stream: {
      state: 'catching-up',
      position: { epoch: 1, seq: 5 },
      head: { epoch: 1, seq: 245 },
      changesBehind: 240,
      lagSeconds: 12,
      lastHeartbeat: at(-1),
      lastErrorCode: null,
      lastError: null,
      pendingCatchup: { since: at(-12), changes: 240, dueAt: at(18), reason: 'key g6 generated on the device' },
    },
    syncCost: {
      source: 'measured',
      deviceEntries: 120_000,
      estimatedSeconds: 25,
      holdSeconds: 18,
      lastSyncSeconds: 20,
      lastHoldSeconds: 17,
      warnings: [{ kind: 'hold', cause: 'a snapshot sync holds writes at this site for about 18 s', try: 'Raise gateway.maxHold.' }],
    },
    ...over,
  };
}

const status = (ns: NamespaceStatus): DaemonStatus => ({ site: 'b', version: '0.1.0', startedAt: at(-3600), namespaces: [ns], members: [] });

describe('status: sync cost warnings and pending catch-ups', () => {
  it('prints a warning with its Try: and the pending catch-up, and keeps exit 0', () => {
    const s = parseDaemonStatus(JSON.parse(JSON.stringify(status(replica()))));
    const text = renderStatus(s, now);
    expect(text).toContain('pending catch-up alpha: 240 changes wait (first 12s ago); snapshot in 18s ("key g6 generated on the device")');
    expect(text).toMatch(/\nWARNING: namespace alpha: a snapshot sync holds writes at this site for about 18 s\nTry: Raise gateway\.maxHold\.\nno problems; 1 warning above\n$/);
    expect(statusWarnings(s)).toHaveLength(1);
    expect(statusExitCode(s)).toBe(0);
  });

  it('says all ok without warnings, and reads a daemon that predates them', () => {
    const { syncCost: _c, ...old } = replica({ stream: null });
    expect(renderStatus(parseDaemonStatus(JSON.parse(JSON.stringify(status(old)))), now)).toMatch(/\nall ok\n$/);
    expect(renderStatus(status(replica({ syncCost: null, stream: null })), now)).toMatch(/\nall ok\n$/);
  });

  it('refuses a malformed cost view, naming the field', () => {
    const bad = JSON.parse(JSON.stringify(status(replica()))) as { namespaces: { syncCost: { warnings: unknown } }[] };
    bad.namespaces[0]!.syncCost.warnings = 'none';
    expect(() => parseDaemonStatus(bad)).toThrow(/namespaces\.0\.syncCost\.warnings/);
  });
});

describe('status: anti-entropy passes deferred by a primary mid-restore', () => {
  it('prints a warning (since when, cause, Try:), not a problem: the exit code stays 0', () => {
    const deferred = { since: at(-180), cause: 'anti-entropy passes do not complete (nothing repaired): its primary a is re-applying writes a restore erased there', try: 'Nothing to do.' };
    const s = parseDaemonStatus(JSON.parse(JSON.stringify(status(replica({ syncCost: null, stream: null, antiEntropyDeferred: deferred })))));
    const text = renderStatus(s, now);
    expect(text).toMatch(/\nWARNING: namespace alpha \(since 3m ago\): anti-entropy passes do not complete \(nothing repaired\): its primary a is re-applying writes a restore erased there\nTry: Nothing to do\.\nno problems; 1 warning above\n$/);
    expect(statusExitCode(s)).toBe(0);
    expect(renderStatus(status(replica({ syncCost: null, stream: null, antiEntropyDeferred: null })), now)).toMatch(/\nall ok\n$/);
  });
});

describe('status: syncs holding writes for their whole sequence after one raced', () => {
  const held = {
    since: at(-60),
    until: at(540),
    namespaces: ['alpha'],
    cause: `writes outside the namespaces being synced kept racing the snapshot sync of namespace alpha, so syncs at this site hold writes for their whole backup, merge and restore until ${at(540)}`,
    try: 'Schedule syncs at quieter times.',
  };

  it('prints it as a warning with its Try:, and keeps exit 0', () => {
    const s = parseDaemonStatus(JSON.parse(JSON.stringify({ ...status(replica({ syncCost: null, stream: null })), heldSyncs: held })));
    expect(renderStatus(s, now)).toMatch(/\nWARNING: writes outside .* until 2026-11-29T03:09:00\.000Z\nTry: Schedule syncs at quieter times\.\nno problems; 1 warning above\n$/);
    expect(statusExitCode(s)).toBe(0);
    expect(renderStatus(parseDaemonStatus(JSON.parse(JSON.stringify({ ...status(replica({ syncCost: null, stream: null })), heldSyncs: null }))), now)).toMatch(/\nall ok\n$/);
  });

  it('refuses a malformed view, naming the field', () => {
    const bad = { ...status(replica()), heldSyncs: { ...held, until: 5 } };
    expect(() => parseDaemonStatus(JSON.parse(JSON.stringify(bad)))).toThrow(/heldSyncs\.until/);
  });
});

describe('status: the anti-entropy pass queued after a primary restarted', () => {
  it('prints what it waits for, keeps exit 0, and no longer says all ok while it is pending', () => {
    const restartPass = { primary: 'a', since: at(-120), state: 'waiting for the stream to apply 1.245' };
    const s = parseDaemonStatus(JSON.parse(JSON.stringify(status(replica({ syncCost: null, restartPass })))));
    const text = renderStatus(s, now);
    expect(text).toContain("\npending anti-entropy pass alpha: queued after the primary a's daemon restarted (2m ago), to find writes made straight to its NetHSM meanwhile; waiting for the stream to apply 1.245\n");
    expect(text).toMatch(/\nno problems; 1 anti-entropy pass pending above\n$/);
    expect(statusExitCode(s)).toBe(0);
    expect(renderStatus(status(replica({ syncCost: null, stream: null, restartPass: null })), now)).toMatch(/\nall ok\n$/);
  });

  it('names a snapshot sync queued in place of the pass (a namespace paused at the restart, afterPrimaryRestart: snapshot)', () => {
    const restartPass = { primary: 'a', since: at(-120), action: 'snapshot sync' as const, state: 'waiting: the namespace is paused here; runs once it is resumed (replication.afterPrimaryRestart: snapshot)' };
    const text = renderStatus(parseDaemonStatus(JSON.parse(JSON.stringify(status(replica({ syncCost: null, restartPass }))))), now);
    expect(text).toContain("\npending snapshot sync alpha: queued after the primary a's daemon restarted (2m ago), to find writes made straight to its NetHSM meanwhile; waiting: the namespace is paused here; runs once it is resumed (replication.afterPrimaryRestart: snapshot)\n");
    expect(text).toMatch(/\nno problems; 1 check after a primary's restart pending above\n$/);
  });

  it('warns about a primary of an older version whose restarts cannot be seen, with its Try:, keeping exit 0', () => {
    const restartsUnseen = { primary: 'a', version: '0.0.9', cause: 'its primary a runs nethsm-replicator 0.0.9, whose peer status does not say when its daemon restarts', try: 'Upgrade nethsm-replicator at a.' };
    const s = parseDaemonStatus(JSON.parse(JSON.stringify(status(replica({ syncCost: null, stream: null, restartsUnseen })))));
    expect(renderStatus(s, now)).toMatch(/\nWARNING: namespace alpha: its primary a runs nethsm-replicator 0\.0\.9, whose peer status does not say when its daemon restarts\nTry: Upgrade nethsm-replicator at a\.\nno problems; 1 warning above\n$/);
    expect(statusExitCode(s)).toBe(0);
  });

  it('refuses a malformed view, naming the field', () => {
    const bad = JSON.parse(JSON.stringify(status(replica({ restartPass: { primary: 'a', since: at(0), state: 'due now' } })))) as { namespaces: { restartPass: { state: unknown } }[] };
    bad.namespaces[0]!.restartPass.state = 3;
    expect(() => parseDaemonStatus(bad)).toThrow(/namespaces\.0\.restartPass\.state/);
  });
});


describe('status: every PROBLEM has its Try:', () => {
  // The operator drill followed each PROBLEM line to its remedy; several had none (a fenced namespace, a failed sync,
  // a failing stream, a never-synced or lagging replica, a member retrying or given up, a refused credential, a
  // changed, unloadable or restart-needing config file, a lapsed etcd lease).
  it('follows each PROBLEM line with a Try: line, whatever the problem', () => {
    const m = (name: string, kind: 'nethsm' | 'peer', st: 'unreachable' | 'recovering' | 'locked', code: string | null, gaveUp = false) => ({
      name, kind, status: st, consecutiveFailures: 3, attempts: 3, gaveUp, lastErrorCode: code, lastError: code ? 'x' : null, lastOkAt: null, nextRetryAt: null,
    });
    const s: DaemonStatus = {
      site: 'b',
      version: '0.1.0',
      startedAt: at(-3600),
      namespaces: [
        replica({
          name: 'alpha',
          lastSync: { at: at(-120), outcome: 'failed', durationSeconds: 1, errorCode: 'NHR_ERR_NO_SUCH_CODE' },
          lagSeconds: 7200,
          stream: { ...replica().stream!, lastErrorCode: 'NHR_ERR_INTERNAL', lastError: 'database or disk is full' },
        }),
        replica({ name: 'beta', lagSeconds: null, lastSync: null, stream: null }),
        replica({ name: 'gamma', role: 'fenced', epoch: 4, stream: null }),
        replica({
          name: 'delta',
          role: 'primary',
          primarySite: 'b',
          stream: null,
          failover: { mode: 'automatic', leaseValid: false, leaseValidForMs: null, leader: null, state: 'stepped down', lastError: 'etcd unreachable' },
        }),
      ],
      members: [m('nethsm', 'nethsm', 'recovering', null), m('a', 'peer', 'unreachable', 'NHR_ERR_PEER_UNREACHABLE', true), m('c', 'peer', 'unreachable', 'NHR_ERR_NO_SUCH_CODE')],
      credentials: [{ name: 'nethsm-admin', setting: 'nethsm.credentials.admin', user: 'admin', since: at(-60), critical: true, error: '401' }],
      config: {
        path: '/etc/nethsm-replicator/config.yaml',
        loadedDigest: 'a',
        loadedAt: at(-600),
        fileDigest: 'b',
        changedOnDisk: true,
        restartNeededFor: ['peerApi.listen'],
        lastReload: { at: at(-60), outcome: 'failed', errorCode: 'NHR_ERR_CONFIG_INVALID', error: 'x is invalid:\n  - recovery.retryInterval "ten seconds" is not a duration', changed: [] } as never,
      },
    };
    const lines = renderStatus(parseDaemonStatus(JSON.parse(JSON.stringify(s))), now).split('\n');
    const problems = lines.flatMap((l, i) => (l.startsWith('PROBLEM: ') ? [{ problem: l, next: lines[i + 1] ?? '' }] : []));
    expect(problems).toHaveLength(13);
    expect(problems.filter((p) => !p.next.startsWith('Try: ')).map((p) => p.problem)).toEqual([]);
    // A remedy followed literally works from a shell: check-config is named with the credentials directory.
    expect(lines.join('\n')).toContain('check-config --config /etc/nethsm-replicator/config.yaml --credentials-dir /etc/nethsm-replicator/credentials');
    expect(lines.join('\n')).toContain('Try: `nethsm-replicator sync beta` syncs it now');
  });
});
