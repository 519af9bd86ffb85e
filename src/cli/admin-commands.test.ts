import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path, { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { AdminServer, type AdminHandlers } from '../admin/server.js';
import { toYaml, validConfigDoc } from '../config/test-helpers.js';
import type { DaemonStatus } from '../daemon/status.js';
import { RoleAdminsNotRestoredError, RoleAdminsSourceMissingError, RolePromoteRefusedError } from '../errors.js';
import { sourceMissingHint } from '../daemon/admin-restorer.js';
import { describeAnswer } from './admin-commands.js';
import { runCli } from './test-run.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = path.join(repoRoot, 'bin', 'nethsm-replicator');
const built = existsSync(path.join(repoRoot, 'dist', 'cli', 'admin-commands.js'));
if (!built) console.warn('skipping the status process test: dist/cli/admin-commands.js is absent (run `npm run build`)');

const ago = (s: number): string => new Date(Date.now() - s * 1000).toISOString();
const later = (s: number): string => new Date(Date.now() + s * 1000).toISOString();

function healthyStatus(): DaemonStatus {
  return {
    site: 'b',
    version: '0.1.0',
    startedAt: ago(3 * 3600),
    namespaces: [
      {
        name: 'alpha', role: 'replica', epoch: 3, primarySite: 'a', paused: false, busy: false,
        lastSync: { at: ago(12), outcome: 'ok', durationSeconds: 3.2, errorCode: null },
        position: { epoch: 3, seq: 0, takenAt: ago(40) }, lagSeconds: 40, lagLimitSeconds: 1800, nextScheduledSync: later(48),
      },
      {
        name: 'beta', role: 'primary', epoch: 7, primarySite: 'b', paused: false, busy: true,
        lastSync: null, position: null, lagSeconds: null, lagLimitSeconds: 1800, nextScheduledSync: null,
      },
    ],
    members: [
      { name: 'nethsm', kind: 'nethsm', status: 'ok', consecutiveFailures: 0, attempts: 0, gaveUp: false, lastErrorCode: null, lastError: null, lastOkAt: ago(5), nextRetryAt: null },
      { name: 'a', kind: 'peer', status: 'ok', consecutiveFailures: 0, attempts: 0, gaveUp: false, lastErrorCode: null, lastError: null, lastOkAt: ago(5), nextRetryAt: null },
    ],
  };
}

describe('admin commands against a real admin server', () => {
  let dir: string;
  let socket: string;
  let configFile: string;
  let server: AdminServer;
  let status: unknown;
  let quarantine: unknown = { directory: '/var/lib/nethsm-replicator/quarantine', files: [] };
  const calls: unknown[][] = [];

  const handlers: AdminHandlers = {
    status: async () => status,
    sync: async (ns, req) => (calls.push(['sync', ns, req]), { namespace: ns, epoch: 3, durationSeconds: 2.5, outcome: 'ok' }),
    promote: async (ns, req) => {
      calls.push(['promote', ns, req]);
      if (ns === 'locked') {
        // The role changed but the administrators could not be put back (failover.ts restoreNow).
        return {
          namespace: ns,
          role: 'primary',
          epoch: 4,
          previousEpoch: 3,
          administratorsRestored: 0,
          administratorsPending: { code: 'NHR_ERR_ROLE_ADMINS_NOT_RESTORED', cause: 'NHR_ERR_NETHSM_NOT_OPERATIONAL: the NetHSM is Locked', retrying: true, hint: 'The daemon retries by itself.' },
        };
      }
      if (!req.force) {
        throw new RolePromoteRefusedError('replica is 45m behind (limit 30m)', { namespace: ns, epoch: 3, reasons: ['behind'] });
      }
      return { namespace: ns, site: 'b', epoch: 4, previousEpoch: 3, role: 'primary' };
    },
    demote: async (ns, req) => (calls.push(['demote', ns, req]), { namespace: ns, epoch: 5, previousEpoch: 4, primarySite: req.to ?? 'a' }),
    pause: async (ns, req) => (calls.push(['pause', ns, req]), { namespace: ns, paused: true }),
    resume: async (ns, req) => (calls.push(['resume', ns, req]), { namespace: ns, paused: false }),
    restoreAdmins: async (ns, req) => {
      calls.push(['restore-admins', ns, req]);
      if (ns === 'locked') {
        throw new RoleAdminsNotRestoredError("namespace locked: the administrators were NOT restored on this site's NetHSM (primary at epoch 4): NHR_ERR_NETHSM_NOT_OPERATIONAL: the NetHSM is Locked", { namespace: ns, epoch: 4 });
      }
      if (ns === 'gone') {
        throw new RoleAdminsSourceMissingError("namespace gone: the fence's quarantine file its users (administrators among them) are to come back from is gone: /q/gone.nsbackup; nothing was restored", {
          namespace: ns,
          epoch: 4,
          path: '/q/gone.nsbackup',
          hint: sourceMissingHint(ns, '/q/gone.nsbackup'),
        });
      }
      if (req.forget) return { namespace: ns, outcome: 'forgotten', epoch: 4 };
      if (ns === 'empty') return { namespace: ns, outcome: 'restored', epoch: 4, restored: 0, source: '/q/empty.nsbackup' };
      return ns === 'idle' ? { namespace: ns, outcome: 'nothing-pending' } : { namespace: ns, outcome: 'restored', epoch: 4, restored: 3 };
    },
    quarantineList: async () => quarantine,
    quarantineAck: async (req) => {
      calls.push(['quarantine-ack', req]);
      return { file: req.file, acknowledged: { at: ago(0), actor: req.actor }, alreadyAcknowledged: false };
    },
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nhr-cli-admin-'));
    socket = join(dir, 'admin.sock');
    server = new AdminServer({ socketPath: socket, handlers });
    await server.start();
    const doc = validConfigDoc();
    doc.admin = { socket };
    configFile = join(dir, 'config.yaml');
    await writeFile(configFile, toYaml(doc));
  });

  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    // The clock stands still from the status's making to its printing (only Date: timers and sockets run as ever), so
    // "12s ago" is not "13s ago" when a loaded machine takes a second between the two.
    vi.useFakeTimers({ toFake: ['Date'] });
    calls.length = 0;
    status = healthyStatus();
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it("shows a member's last error only while the member is not ok (the JSON keeps it)", async () => {
    const st = healthyStatus();
    st.members[1] = { ...st.members[1]!, lastErrorCode: 'NHR_ERR_PEER_UNREACHABLE', lastError: 'was down at start' };
    status = st;
    const r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/\na\s+peer\s+ok\s+0\s+0\s+-\s+-\n/);
    expect(r.out).not.toContain('NHR_ERR_PEER_UNREACHABLE');
    const j = await runCli(['status', '--socket', socket, '--json']);
    expect(j.out).toContain('NHR_ERR_PEER_UNREACHABLE');
    status = healthyStatus();
  });

  it('prints roles, relative times and lag, and exits 0 when all is ok', async () => {
    const r = await runCli(['status', '--socket', socket]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^site b\s+nethsm-replicator 0\.1\.0\s+up 3h/);
    expect(r.out).toMatch(/alpha\s+replica\s+3\s+a\s+ok 12s ago \(3\.2s\)\s+40s \/ 30m\s+in 48s\s+-/);
    expect(r.out).toMatch(/beta\s+primary\s+7\s+b\s+-\s+-\s+-\s+busy/);
    expect(r.out).toMatch(/nethsm\s+nethsm\s+ok\s+0\s+0\s+-\s+-/);
    expect(r.out).toMatch(/\nall ok\n$/);
  });

  it("shows each namespace's change stream: state, position, changes behind, lag, last heartbeat", async () => {
    const st = healthyStatus();
    st.namespaces[0]!.stream = {
      state: 'streaming', position: { epoch: 3, seq: 120 }, head: { epoch: 3, seq: 124 }, changesBehind: 4, lagSeconds: 0.4,
      lastHeartbeat: ago(2), lastErrorCode: null, lastError: null,
    };
    st.namespaces[1]!.stream = {
      state: 'idle', position: { epoch: 7, seq: 88 }, head: null, changesBehind: null, lagSeconds: null, lastHeartbeat: null, lastErrorCode: null, lastError: null,
    };
    status = st;
    const r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/STREAM\s+STATE\s+POSITION\s+BEHIND\s+LAG\s+LAST HEARTBEAT\s+LAST ERROR/);
    expect(r.out).toMatch(/alpha\s+streaming\s+3\.120\s+4\s+0\.4s\s+2s ago\s+-/);
    expect(r.out).toMatch(/beta\s+primary \(head\)\s+7\.88\s+-\s+-\s+-\s+-/);
    status = healthyStatus();
  });

  // Before the fix a replica whose stream could not apply anything (its NetHSM Locked) was reported "all ok".
  it("exits 2 and names the cause when a replica's change stream is failing", async () => {
    const st = healthyStatus();
    st.namespaces[0]!.stream = {
      state: 'waiting', position: { epoch: 3, seq: 120 }, head: { epoch: 3, seq: 121 }, changesBehind: 1, lagSeconds: 14,
      lastHeartbeat: ago(2), lastErrorCode: 'NHR_ERR_NETHSM_NOT_OPERATIONAL',
      lastError: "this site's NetHSM is Locked (or otherwise not Operational): it answered 412 to GET /keys/k1",
    };
    status = st;
    const r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/alpha\s+WAITING\s+3\.120\s+1\s+14s\s+2s ago\s+NHR_ERR_NETHSM_NOT_OPERATIONAL/);
    expect(r.out).toContain('PROBLEM: namespace alpha: change stream FAILING (NHR_ERR_NETHSM_NOT_OPERATIONAL): "this site\'s NetHSM is Locked');
    expect(r.out).not.toContain('all ok');
    status = healthyStatus();
  });

  it('says LOCKED (not unreachable) for a Locked NetHSM and names any other state, each with its remedy', async () => {
    const st = healthyStatus();
    st.members[0] = { ...st.members[0]!, status: 'locked', consecutiveFailures: 2, attempts: 1, lastErrorCode: 'NHR_ERR_NETHSM_LOCKED', lastError: 'the NetHSM is Locked' };
    status = st;
    let r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/\nnethsm\s+nethsm\s+LOCKED\s+2\s+1\s/);
    expect(r.out).toContain("PROBLEM: this site's NetHSM is LOCKED (NHR_ERR_NETHSM_LOCKED)\nTry: Unlock it (POST /unlock with the unlock passphrase");
    st.members[0] = { ...st.members[0]!, status: 'not-operational', lastErrorCode: 'NHR_ERR_NETHSM_NOT_OPERATIONAL', lastError: 'the NetHSM is Unprovisioned' };
    r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(2);
    expect(r.out).toContain("PROBLEM: this site's NetHSM is NOT-OPERATIONAL (NHR_ERR_NETHSM_NOT_OPERATIONAL): the NetHSM is Unprovisioned\nTry: Unprovisioned: ");
    status = healthyStatus();
  });

  it('reports unacknowledged quarantine files as a PROBLEM with its Try:, exit 2', async () => {
    const st = healthyStatus();
    const unacknowledged = ['a', 'b', 'c', 'd'].map((x) => ({ file: `alpha-epoch3-${x}.nsbackup`, namespace: 'alpha' }));
    status = { ...st, quarantine: { directory: '/var/lib/nethsm-replicator/quarantine', unacknowledged } };
    const r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(2);
    expect(r.out).toContain(
      'PROBLEM: 4 quarantine files NOT ACKNOWLEDGED in /var/lib/nethsm-replicator/quarantine: alpha-epoch3-a.nsbackup, alpha-epoch3-b.nsbackup, alpha-epoch3-c.nsbackup, … (1 more)\n' +
        'Try: See what each holds with `nethsm-replicator quarantine list`',
    );
    status = { ...st, quarantine: { directory: '/q', unacknowledged: [] } };
    expect((await runCli(['status', '--socket', socket])).code).toBe(0);
    status = { ...st, quarantine: { directory: '/q', unacknowledged: 'x' } };
    const bad = await runCli(['status', '--socket', socket]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/quarantine\.unacknowledged/);
    status = healthyStatus();
  });

  it('quarantine list prints each file with its ids; ack sends a bare file name and the actor', async () => {
    quarantine = {
      directory: '/q',
      files: [
        { file: 'alpha-epoch3-x.nsbackup', namespace: 'alpha', reason: 'fenced', epoch: 3, seq: null, site: 'b', at: ago(120), bytes: 10, keys: 25, users: 1,
          keyIds: Array.from({ length: 25 }, (_, i) => `k${i}`), userIds: ['admin'], acknowledged: null, error: null },
        { file: 'beta-foreign-epoch2-seq9-y.nsbackup', namespace: null, reason: null, epoch: null, seq: null, site: null, at: ago(60), bytes: 10, keys: null, users: null,
          keyIds: [], userIds: [], acknowledged: { at: ago(30), actor: 'op@h' }, error: 'wrong passphrase [NHR_ERR_BACKUP_WRONG_PASSPHRASE]' },
      ],
    };
    const r = await runCli(['quarantine', 'list', '--socket', socket]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/alpha-epoch3-x\.nsbackup\s+alpha\s+fenced\s+3\s+b\s+\S+ \(2m ago\)\s+25\s+1\s+NO\n/);
    expect(r.out).toMatch(/beta-foreign-epoch2-seq9-y\.nsbackup\s+-\s+-\s+-\s+-\s+\S+ \(1m ago\)\s+-\s+-\s+op@h 30s ago\n/);
    expect(r.out).toContain('  key ids: k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14, k15, k16, k17, k18, k19 … (5 more; --json lists all)');
    expect(r.out).toContain('  cannot be read: wrong passphrase [NHR_ERR_BACKUP_WRONG_PASSPHRASE]');
    expect(r.out).toContain('1 not acknowledged');
    expect(JSON.parse((await runCli(['quarantine', 'list', '--json', '--socket', socket])).out)).toEqual(quarantine);
    quarantine = { directory: '/q', files: [] };
    expect((await runCli(['quarantine', 'list', '--socket', socket])).out).toBe('no quarantine files in /q\n');

    const ack = await runCli(['quarantine', 'ack', 'alpha-epoch3-x.nsbackup', '--socket', socket]);
    expect(ack.out).toMatch(/^acknowledged alpha-epoch3-x\.nsbackup \(by \S+ at \S+\)\n$/);
    expect(calls).toEqual([['quarantine-ack', { actor: expect.stringMatching(/@/), file: 'alpha-epoch3-x.nsbackup' }]]);
  });

  it('quarantine ack refuses anything but a bare quarantine file name before any request', async () => {
    const cases: [string, RegExp][] = [
      ['../state.db', /is a path; give the file name only/],
      ['/var/lib/nethsm-replicator/quarantine/alpha-epoch3-x.nsbackup', /is a path/],
      ['sub/alpha-epoch3-x.nsbackup', /is a path/],
      ['..\\alpha-epoch3-x.nsbackup', /is a path/],
      ['.alpha-epoch3-x.nsbackup', /is not a quarantine file name/],
      ['alpha-epoch3-x.bin', /is not a quarantine file name/],
      ['alpha epoch3.nsbackup', /is not a quarantine file name/],
      [`${'a'.repeat(250)}.nsbackup`, /is longer than 255 characters/],
      ['', /is empty/],
    ];
    for (const [file, msg] of cases) {
      const r = await runCli(['quarantine', 'ack', file, '--socket', socket]);
      expect(r.code, file).toBe(1);
      expect(r.err, file).toMatch(msg);
      expect(r.err, file).toContain('[NHR_ERR_INPUT_INVALID]');
    }
    expect((await runCli(['quarantine', 'ack', '--socket', socket])).err).toMatch(/missing required argument 'file'/);
    expect(calls).toEqual([]);
  });

  it('says "no primary" with its remedy, shows NONE as primary of a namespace this site stepped down from, and no "never synced"', async () => {
    const st = healthyStatus();
    st.namespaces[1] = {
      ...st.namespaces[1]!, role: 'replica', primarySite: 'b', busy: false,
      noPrimary: { cause: 'this site (b) stepped down at epoch 7 and no site has taken over (the handover to a did not finish)', try: 'Run `nethsm-replicator demote beta --to a` again.' },
    };
    status = st;
    const r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/\nbeta\s+replica\s+7\s+NONE\s+-\s+-\s+-\s+-\n/);
    expect(r.out).toContain('PROBLEM: namespace beta: no primary: this site (b) stepped down at epoch 7 and no site has taken over (the handover to a did not finish)\nTry: Run `nethsm-replicator demote beta --to a` again.');
    expect(r.out).not.toContain('NEVER');
    status = healthyStatus();
  });

  it('finds the socket through --config without reading any secret', async () => {
    // The config names secret files and variables that do not exist: status must not need them.
    const r = await runCli(['status', '--config', configFile]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('all ok');
  });

  it('works from a root shell with the shipped example config: no CREDENTIALS_DIRECTORY, no secrets read', async () => {
    const example = await readFile(join(import.meta.dirname, '..', '..', 'deploy', 'config.example.yaml'), 'utf8');
    const file = join(dir, 'example.yaml');
    await writeFile(file, example.replace(/^stateDir: .*$/m, `stateDir: ${dir}\nadmin: { socket: ${JSON.stringify(socket)} }`));
    const saved = process.env.CREDENTIALS_DIRECTORY;
    delete process.env.CREDENTIALS_DIRECTORY;
    try {
      const r = await runCli(['status', '--config', file]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      expect(r.out).toContain('all ok');
    } finally {
      if (saved !== undefined) process.env.CREDENTIALS_DIRECTORY = saved;
    }
  });

  it('exits 2 and spells out each problem: failed sync, lag over limit, fenced, members down', async () => {
    const s = healthyStatus();
    s.namespaces[0]!.lastSync = { at: ago(120), outcome: 'failed', durationSeconds: 1, errorCode: 'NHR_ERR_PEER_UNREACHABLE' };
    s.namespaces[0]!.lagSeconds = 2700;
    s.namespaces[1]!.role = 'fenced';
    s.namespaces[1]!.primarySite = 'a';
    s.namespaces[1]!.epoch = 8;
    s.members[1] = { ...s.members[1]!, status: 'unreachable', consecutiveFailures: 4, attempts: 3, lastErrorCode: 'NHR_ERR_PEER_UNREACHABLE', nextRetryAt: later(30) };
    status = s;
    const r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/alpha\s+replica\s+3\s+a\s+FAILED 2m ago \(1s\) NHR_ERR_PEER_UNREACHABLE\s+OVER 45m \/ 30m/);
    expect(r.out).toMatch(/beta\s+FENCED\s+8/);
    expect(r.out).toMatch(/a\s+peer\s+UNREACHABLE\s+4\s+3\s+in 30s\s+NHR_ERR_PEER_UNREACHABLE/);
    expect(r.out).toContain('PROBLEM: namespace alpha: last sync FAILED 2m ago (NHR_ERR_PEER_UNREACHABLE)');
    expect(r.out).toContain('PROBLEM: namespace alpha: lag 45m is OVER its limit of 30m');
    expect(r.out).toContain('PROBLEM: namespace beta is FENCED at epoch 8');
    expect(r.out).toContain('PROBLEM: peer a is UNREACHABLE (NHR_ERR_PEER_UNREACHABLE)');
    expect(r.out).not.toContain('all ok');
  });

  it('exits 2 for a refused credential and a config file that differs from what the daemon runs, saying what to do', async () => {
    const s = healthyStatus();
    s.credentials = [
      {
        setting: 'nethsm.credentials.admin', name: 'nethsm-admin', user: 'admin', critical: true, since: ago(120),
        error: 'the NetHSM refused the nethsm-admin credential (nethsm.credentials.admin) for user admin: 401 Unauthorized on GET /system/info',
      },
    ];
    s.config = {
      path: '/etc/nethsm-replicator/config.yaml', loadedDigest: 'a'.repeat(64), loadedAt: ago(600), fileDigest: 'b'.repeat(64),
      changedOnDisk: true, restartNeededFor: ['peerApi.listen', 'namespaces[0].maxLagForPromote'],
      lastReload: {
        at: ago(60), outcome: 'failed', changed: [], restartNeededFor: [], errorCode: 'NHR_ERR_CONFIG_INVALID',
        error: '/etc/nethsm-replicator/config.yaml is invalid (1 problem):\n  - nethsm.tls.fingerprint256 "xyz" is not a SHA-256 fingerprint',
      },
    };
    status = s;
    const r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(2);
    expect(r.out).toContain('PROBLEM: the NetHSM refused the nethsm-admin credential (nethsm.credentials.admin) for user admin (since 2m ago): fix that secret, then restart the daemon');
    expect(r.out).toContain('PROBLEM: config file /etc/nethsm-replicator/config.yaml CHANGED since the daemon loaded it 10m ago');
    expect(r.out).toContain('PROBLEM: config reload FAILED 1m ago (NHR_ERR_CONFIG_INVALID); the daemon runs with the config it had: nethsm.tls.fingerprint256 "xyz" is not a SHA-256 fingerprint');
    expect(r.out).toContain('PROBLEM: restart needed for: peerApi.listen, namespaces[0].maxLagForPromote');
    expect(r.out).not.toContain('all ok');
    // A reloaded file with nothing pending is all ok again.
    s.credentials = [];
    s.config = { ...s.config, fileDigest: s.config.loadedDigest, changedOnDisk: false, restartNeededFor: [], lastReload: { ...s.config.lastReload!, outcome: 'ok', errorCode: null, error: null } };
    const ok = await runCli(['status', '--socket', socket]);
    expect(ok.code).toBe(0);
    expect(ok.out).toContain('all ok');
  });

  it('exits 2 for a replica that never synced and for a member that gave up', async () => {
    const s = healthyStatus();
    s.namespaces[0]!.lastSync = null;
    s.namespaces[0]!.lagSeconds = null;
    s.members[0] = { ...s.members[0]!, status: 'recovering', gaveUp: true, attempts: 5 };
    status = s;
    const r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/alpha\s+replica\s+3\s+a\s+NEVER\s+- \/ 30m/);
    expect(r.out).toMatch(/nethsm\s+nethsm\s+RECOVERING \(gave up\)\s+0\s+5\s+never/);
    expect(r.out).toContain('PROBLEM: namespace alpha: replica has NEVER SYNCED from a');
  });

  it('--json prints the object as the daemon sent it, with the same exit code', async () => {
    const ok = await runCli(['status', '--json', '--socket', socket]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.out)).toEqual(status);
    const s = healthyStatus();
    s.members[0]!.status = 'unreachable';
    status = s;
    const bad = await runCli(['status', '--json', '--socket', socket]);
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.out)).toEqual(s);
  });

  it('refuses a malformed status answer with exit 1', async () => {
    status = { site: 'b', namespaces: 'many' };
    const r = await runCli(['status', '--socket', socket]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^Error: the daemon's status answer is malformed: version/);
  });

  it('says plainly when no daemon listens', async () => {
    const r = await runCli(['status', '--socket', join(dir, 'nobody.sock')]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`no daemon answers on ${join(dir, 'nobody.sock')} [NHR_ERR_ADMIN_UNAVAILABLE]`);
    expect(r.err).toMatch(/\nTry: /);
  });

  it('sync posts the actor and onExisting and prints what happened', async () => {
    const r = await runCli(['sync', 'alpha', '--socket', socket, '--on-existing', 'remove']);
    expect(r.code).toBe(0);
    expect(r.out).toBe('synced alpha: epoch=3 durationSeconds=2.5 outcome=ok\n');
    expect(calls).toEqual([['sync', 'alpha', { actor: expect.stringMatching(/^.+@.+$/), onExisting: 'remove', force: false }]]);
    await runCli(['sync', 'alpha', '--socket', socket]);
    expect(calls[1]).toEqual(['sync', 'alpha', { actor: expect.any(String), onExisting: 'refuse', force: false }]);
    await runCli(['sync', 'alpha', '--socket', socket, '--force']);
    expect(calls[2]).toEqual(['sync', 'alpha', { actor: expect.any(String), onExisting: 'refuse', force: true }]);
  });

  it("promote prints the epoch change; a refusal prints the daemon's Error and Try lines and exits 1", async () => {
    const refused = await runCli(['promote', 'alpha', '--socket', socket]);
    expect(refused.code).toBe(1);
    expect(refused.out).toBe('');
    expect(refused.err).toBe(
      'Error: replica is 45m behind (limit 30m) (namespace alpha, epoch 3) [NHR_ERR_ROLE_PROMOTE_REFUSED]\n' +
        'Try: Sync the namespace first (`nethsm-replicator sync <ns>`), or accept the risk with `promote --force`.\n',
    );
    const forced = await runCli(['promote', 'alpha', '--force', '--socket', socket]);
    expect(forced.code).toBe(0);
    expect(forced.err).toMatch(/^Warning: --force promotes even when/);
    expect(forced.out).toBe('promoted alpha at site b: epoch 3 → 4, role=primary\n');
    expect(calls.map((c) => (c[2] as { force: boolean }).force)).toEqual([false, true]);
  });

  it('promote whose administrator restore failed says the role changed, the administrators are NOT restored, the cause, and exits 3', async () => {
    const r = await runCli(['promote', 'locked', '--socket', socket]);
    expect(r.code).toBe(3);
    expect(r.out).toBe(
      'promoted locked: this site is PRIMARY at epoch 4 (was 3), but its administrators were NOT restored on the NetHSM (NHR_ERR_ROLE_ADMINS_NOT_RESTORED); ' +
        "writes by the namespace's users are refused until they are; the daemon retries by itself.\n" +
        'Cause: NHR_ERR_NETHSM_NOT_OPERATIONAL: the NetHSM is Locked\nTry: The daemon retries by itself.\n',
    );
    calls.length = 0;
  });

  it('demote passes --to; pause and resume post the actor', async () => {
    expect((await runCli(['demote', 'alpha', '--to', 'c', '--socket', socket])).out).toBe('demoted alpha: epoch 4 → 5, primarySite=c\n');
    expect((await runCli(['pause', 'alpha', '--socket', socket])).out).toBe('paused alpha: paused=true\n');
    expect((await runCli(['resume', 'alpha', '--socket', socket])).out).toBe('resumed alpha: paused=false\n');
    expect(calls).toEqual([
      ['demote', 'alpha', { actor: expect.any(String), to: 'c' }],
      ['pause', 'alpha', { actor: expect.any(String) }],
      ['resume', 'alpha', { actor: expect.any(String) }],
    ]);
  });

  it('admins restore posts the actor and prints what the attempt did; a failed attempt prints Error and Try and exits 1', async () => {
    const ok = await runCli(['admins', 'restore', 'alpha', '--socket', socket]);
    expect(ok).toEqual({ code: 0, out: "administrators of alpha restored on this site's NetHSM at epoch 4 (3 users put back); its users can write again\n", err: '' });
    expect((await runCli(['admins', 'restore', 'idle', '--socket', socket])).out).toBe('no administrator restore is pending for idle: nothing to do\n');
    const failed = await runCli(['admins', 'restore', 'locked', '--socket', socket]);
    expect(failed.code).toBe(1);
    expect(failed.out).toBe('');
    expect(failed.err).toMatch(/^Error: namespace locked: the administrators were NOT restored .*the NetHSM is Locked \(namespace locked, epoch 4\) \[NHR_ERR_ROLE_ADMINS_NOT_RESTORED\]\nTry: .*`nethsm-replicator admins restore <namespace>`/);
    expect(calls).toEqual([
      ['restore-admins', 'alpha', { actor: expect.any(String) }],
      ['restore-admins', 'idle', { actor: expect.any(String) }],
      ['restore-admins', 'locked', { actor: expect.any(String) }],
    ]);
  });

  // Before: a file holding no users read as "administrators … restored (0 users put back)", and there was no --forget.
  it('admins restore says when there was nothing to put back, names a missing source file, and --forget posts forget and says nothing was restored', async () => {
    expect((await runCli(['admins', 'restore', 'empty', '--socket', socket])).out).toBe(
      'no users of empty to put back at epoch 4: the file they come back from (/q/empty.nsbackup) holds none (or, for a promote, no snapshot was ever applied here); the pending restore is cleared\n',
    );
    const gone = await runCli(['admins', 'restore', 'gone', '--socket', socket]);
    expect(gone.code).toBe(1);
    expect(gone.err).toMatch(/^Error: namespace gone: .* is gone: \/q\/gone\.nsbackup; nothing was restored .*\[NHR_ERR_ROLE_ADMINS_SOURCE_MISSING\]\nTry: Put the file back at \/q\/gone\.nsbackup .*`nethsm-replicator admins restore gone --forget`/s);
    const forgot = await runCli(['admins', 'restore', 'alpha', '--forget', '--socket', socket]);
    expect(forgot).toEqual({
      code: 0,
      out: 'the pending administrator restore of alpha at epoch 4 is forgotten: nothing was restored by the daemon; writes are admitted again (administrators not put back by hand get 401 from the NetHSM)\n',
      err: '',
    });
    expect(calls).toEqual([
      ['restore-admins', 'empty', { actor: expect.any(String) }],
      ['restore-admins', 'gone', { actor: expect.any(String) }],
      ['restore-admins', 'alpha', { actor: expect.any(String), forget: true }],
    ]);
    expect(calls[0]![2]).not.toHaveProperty('forget');
    // A bad namespace is refused before any request.
    const bad = await runCli(['admins', 'restore', '_x', '--forget', '--socket', socket]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/namespace "_x" is not a valid NetHSM namespace id.*\[NHR_ERR_INPUT_INVALID\]/);
    expect(calls).toHaveLength(3);
  });

  it('refuses bad arguments before any request: namespace id, site, flag, choice', async () => {
    const cases: [string[], RegExp][] = [
      [['promote', '.bad', '--socket', socket], /namespace "\.bad" is not a valid NetHSM namespace id.*\[NHR_ERR_INPUT_INVALID\]/],
      [['sync', 'a'.repeat(129), '--socket', socket], /is not a valid NetHSM namespace id/],
      [['demote', 'alpha', '--to', 'b/c', '--socket', socket], /--to "b\/c" is not a valid site name/],
      [['pause', 'alpha', '--socket', socket, '--everything'], /unknown option '--everything'/],
      [['sync', 'alpha', '--socket', socket, '--on-existing', 'merge'], /argument 'merge' is invalid/],
      [['resume', '--socket', socket], /missing required argument 'namespace'/],
      [['admins', 'restore', '--socket', socket], /missing required argument 'namespace'/],
      [['admins', 'restore', '_x', '--socket', socket], /namespace "_x" is not a valid NetHSM namespace id/],
      [['admins', 'restore', 'alpha', 'beta', '--socket', socket], /too many arguments/],
      [['admins', 'restore', 'alpha', '--socket', ''], /--socket must not be empty/],
      [['admins', 'frobnicate', 'alpha', '--socket', socket], /unknown command 'frobnicate'/],
    ];
    for (const [args, msg] of cases) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.err).toMatch(msg);
      expect(r.out).toBe('');
    }
    expect(calls).toEqual([]);
  });

  it('refuses an unreadable or invalid --config with the config error', async () => {
    const r = await runCli(['status', '--config', join(dir, 'missing.yaml')]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/cannot be read \(ENOENT\) \[NHR_ERR_CONFIG_INVALID\]/);
    const notYaml = join(dir, 'not-yaml.yaml');
    await writeFile(notYaml, 'site: [b\n');
    const bad = await runCli(['status', '--config', notYaml]);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('[NHR_ERR_CONFIG_INVALID]');
  });

  it('still reaches the daemon through an edited config that does not validate (the daemon runs with the one it loaded)', async () => {
    const doc = validConfigDoc() as Record<string, unknown> & { namespaces: Record<string, unknown>[] };
    doc.admin = { socket };
    doc.namespaces[0]!.schedule = 'every tuesday';
    const edited = join(dir, 'edited.yaml');
    await writeFile(edited, toYaml(doc));
    const r = await runCli(['status', '--config', edited]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('all ok');
    expect(r.err).toBe(`note: ${edited} does not validate (1 problem(s); \`check-config\` lists them); using its admin socket ${socket}\n`);
  });

  it.skipIf(!built)('the built CLI exits 2 from a real process when a member is down', async () => {
    const s = healthyStatus();
    s.members[0]!.status = 'unreachable';
    status = s;
    const child = spawn(process.execPath, [bin, 'status', '--socket', socket], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(out).toContain("PROBLEM: this site's NetHSM is UNREACHABLE");
  });
});

describe('describeAnswer', () => {
  it('prints any answer shape generically', () => {
    expect(describeAnswer('sync', 'alpha', { ok: true })).toBe('synced alpha');
    expect(describeAnswer('sync', 'alpha', { started: true, note: 'two words' })).toBe('synced alpha: started=true note="two words"');
    expect(describeAnswer('promote', 'alpha', 'done')).toBe('promoted alpha: done');
    expect(describeAnswer('resume', 'alpha', null)).toBe('resumed alpha');
  });
});
