import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEPLOY, REPO, hasTool, run } from './tools.js';

const UNIT = path.join(DEPLOY, 'nethsm-replicator.service');
const text = readFileSync(UNIT, 'utf8');

/** Directive → values (a directive may repeat), ignoring comments. */
function directives(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    out.set(m[1] ?? '', [...(out.get(m[1] ?? '') ?? []), m[2] ?? '']);
  }
  return out;
}

/**
 * `systemd-analyze verify` checks that ExecStart's binary exists; on a build machine /usr/bin/nethsm-replicator does
 * not. The copy points ExecStart at this node binary instead (same arguments); everything else is the shipped unit.
 */
function verifiableCopy(): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'nhr-unit-'));
  const file = path.join(dir, 'nethsm-replicator.service');
  writeFileSync(file, text.replace(/^ExecStart=\/usr\/bin\/nethsm-replicator /m, `ExecStart=${process.execPath} `));
  return { dir, file };
}

const haveSystemd = hasTool('systemd-analyze');
if (!haveSystemd) console.warn('systemd-analyze is not installed: skipping the systemd unit verification tests');

describe('deploy/nethsm-replicator.service', () => {
  it('runs the daemon with the packaged config path', () => {
    expect(directives().get('ExecStart')).toEqual(['/usr/bin/nethsm-replicator daemon --config /etc/nethsm-replicator/config.yaml']);
    expect(directives().get('StateDirectory')).toEqual(['nethsm-replicator']);
  });

  it('reloads the config with SIGHUP (systemctl reload), which the daemon handles instead of dying', () => {
    expect(directives().get('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
    const run = readFileSync(path.join(REPO, 'src', 'daemon', 'run.ts'), 'utf8');
    expect(run).toMatch(/process\.on\('SIGHUP'/);
  });

  it('hands every secret over as a credential, never through the environment', () => {
    const creds = (directives().get('LoadCredential') ?? []).map((v) => v.split(':')[0]);
    expect(creds).toEqual(expect.arrayContaining([
      'replication-passphrase', 'nethsm-backup-passphrase', 'nethsm-backup', 'nethsm-admin', 'nethsm-metrics', 'peer-tls-key',
    ]));
    expect(text).not.toMatch(/^Environment=.*(PASSPHRASE|PASSWORD|TOKEN|SECRET)/im);
  });

  it("caps V8's young generation, which keeps a million-key anti-entropy pass under 200 MB (docs/deploy.md)", () => {
    const env = directives().get('Environment') ?? [];
    expect(env).toContain('NODE_OPTIONS=--max-semi-space-size=8');
  });

  it("caps glibc's malloc arenas at 2, which keeps more freed memory of a pass out of the resident set (docs/deploy.md)", () => {
    const env = directives().get('Environment') ?? [];
    expect(env).toContain('MALLOC_ARENA_MAX=2');
  });

  it('loads the credentials the example config refers to', () => {
    const example = readFileSync(path.join(DEPLOY, 'config.example.yaml'), 'utf8');
    const referenced = new Set([...example.matchAll(/^[^#]*\$\{CREDENTIALS_DIRECTORY\}\/([\w.-]+)/gm)].map((m) => m[1]));
    const loaded = text.split('\n').map((l) => /^#?\s*LoadCredential=([\w.-]+):/.exec(l.trim())?.[1]).filter(Boolean);
    expect(referenced.size).toBeGreaterThan(0);
    for (const name of referenced) expect(loaded, `${name} (config.example.yaml)`).toContain(name);
  });

  it('sets the hardening the deployment relies on', () => {
    const d = directives();
    const want: Record<string, string> = {
      NoNewPrivileges: 'yes', ProtectSystem: 'strict', PrivateTmp: 'yes', ProtectHome: 'yes', PrivateDevices: 'yes',
      ProtectKernelTunables: 'yes', ProtectKernelModules: 'yes', ProtectKernelLogs: 'yes', ProtectControlGroups: 'yes',
      RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX', SystemCallArchitectures: 'native', CapabilityBoundingSet: '',
      LockPersonality: 'yes', RestrictNamespaces: 'yes', RestrictRealtime: 'yes', RestrictSUIDSGID: 'yes', UMask: '0077',
      ProtectClock: 'yes', ProtectHostname: 'yes', ProtectProc: 'invisible', ProcSubset: 'pid', DynamicUser: 'yes',
      Restart: 'on-failure', KillSignal: 'SIGTERM',
    };
    for (const [k, v] of Object.entries(want)) expect(d.get(k), k).toEqual([v]);
    expect(d.get('SystemCallFilter')?.[0]).toBe('@system-service');
    // V8's JIT needs writable-then-executable memory: enabling this would stop node at start.
    expect(d.has('MemoryDenyWriteExecute')).toBe(false);
  });

  it.skipIf(!haveSystemd)('passes systemd-analyze verify', () => {
    const { dir, file } = verifiableCopy();
    try {
      const r = run('systemd-analyze', ['verify', file]);
      expect(`${r.stdout}${r.stderr}`).toBe('');
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!haveSystemd || !hasTool('systemd-analyze', ['security', '--help']))(
    'has the exposure figure that docs/deploy.md records',
    () => {
      const { dir, file } = verifiableCopy();
      try {
        const r = run('systemd-analyze', ['security', '--offline=yes', '--no-pager', file]);
        if (r.status !== 0 && /offline/i.test(r.stderr)) {
          console.warn('systemd-analyze security --offline is not supported by this systemd: skipping');
          return;
        }
        const measured = /Overall exposure level for \S+: (\d+\.\d)/.exec(r.stdout)?.[1];
        expect(measured, r.stdout + r.stderr).toBeDefined();
        const documented = /exposure level[^\n]*?\*\*(\d+\.\d)\*\*/i.exec(readFileSync(path.join(REPO, 'docs', 'deploy.md'), 'utf8'))?.[1];
        expect(measured).toBe(documented);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
