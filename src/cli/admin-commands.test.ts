import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path, { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AdminServer, type AdminHandlers } from '../admin/server.js';
import { toYaml, validConfigDoc } from '../config/test-helpers.js';
import type { DaemonStatus } from '../daemon/status.js';
import { RolePromoteRefusedError } from '../errors.js';
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
  const calls: unknown[][] = [];

  const handlers: AdminHandlers = {
    status: async () => status,
    sync: async (ns, req) => (calls.push(['sync', ns, req]), { namespace: ns, epoch: 3, durationSeconds: 2.5, outcome: 'ok' }),
    promote: async (ns, req) => {
      calls.push(['promote', ns, req]);
      if (!req.force) {
        throw new RolePromoteRefusedError('replica is 45m behind (limit 30m)', { namespace: ns, epoch: 3, reasons: ['behind'] });
      }
      return { namespace: ns, site: 'b', epoch: 4, previousEpoch: 3, role: 'primary' };
    },
    demote: async (ns, req) => (calls.push(['demote', ns, req]), { namespace: ns, epoch: 5, previousEpoch: 4, primarySite: req.to ?? 'a' }),
    pause: async (ns, req) => (calls.push(['pause', ns, req]), { namespace: ns, paused: true }),
    resume: async (ns, req) => (calls.push(['resume', ns, req]), { namespace: ns, paused: false }),
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
    calls.length = 0;
    status = healthyStatus();
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

  it('refuses bad arguments before any request: namespace id, site, flag, choice', async () => {
    const cases: [string[], RegExp][] = [
      [['promote', '.bad', '--socket', socket], /namespace "\.bad" is not a valid NetHSM namespace id.*\[NHR_ERR_INPUT_INVALID\]/],
      [['sync', 'a'.repeat(129), '--socket', socket], /is not a valid NetHSM namespace id/],
      [['demote', 'alpha', '--to', 'b/c', '--socket', socket], /--to "b\/c" is not a valid site name/],
      [['pause', 'alpha', '--socket', socket, '--everything'], /unknown option '--everything'/],
      [['sync', 'alpha', '--socket', socket, '--on-existing', 'merge'], /argument 'merge' is invalid/],
      [['resume', '--socket', socket], /missing required argument 'namespace'/],
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
