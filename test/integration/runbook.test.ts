/**
 * docs/operations.md sections 1, 3, 4 and 5 as a script: the command blocks marked `<!-- runbook: <name> [exit=<n>] -->`
 * are read from the doc itself (so doc and script cannot drift) and run verbatim with bash, in order, against two
 * simulators (`nethsm-replicator sim`, separate processes) and two real daemon processes.
 *
 * What stands in for a host (and only that):
 * - `$ETC`, `$SITE`, `$NETHSM`, `$NETHSM_TLS` are the variables the doc explains; `NETHSM_TLS=-k` (the simulator's
 *   self-signed certificate; the test compares nothing by hand);
 * - `nethsm-replicator` on PATH runs `bin/nethsm-replicator` with `--config $ETC/config.yaml` added (the default
 *   `/etc/nethsm-replicator/config.yaml` of a host);
 * - `systemctl enable --now|start|stop nethsm-replicator` starts the daemon with the unit's environment
 *   (`CREDENTIALS_DIRECTORY=$ETC/credentials`, NODE_ENV=production, PATH) plus NHR_UNSAFE_TEST_SCRYPT=1 (the
 *   simulators' test scrypt parameters), waits for its "daemon started" line (bounded), or stops it with SIGTERM;
 * - editing the config (copy the example and adapt it; set the fingerprint init-replica printed) is done by the test,
 *   as the doc asks the operator to.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/lab/lab.js';
import { built, cliBin, repoRoot } from '../helpers/daemon-process.js';
import { waitFor } from '../helpers/wait.js';

interface Block {
  name: string;
  exit: number;
  script: string;
}

/** Every marked block of the doc, in order. */
export function runbookBlocks(doc: string): Block[] {
  const out: Block[] = [];
  for (const m of doc.matchAll(/<!-- runbook: ([\w-]+)(?: exit=(\d+))? -->\n```sh\n([\s\S]*?)```/g)) {
    out.push({ name: m[1] ?? '', exit: Number(m[2] ?? 0), script: m[3] ?? '' });
  }
  return out;
}

const doc = await readFile(path.join(repoRoot, 'docs/operations.md'), 'utf8');
const blocks = new Map(runbookBlocks(doc).map((b) => [b.name, b]));

function block(name: string): Block {
  const b = blocks.get(name);
  if (!b) throw new Error(`docs/operations.md has no block marked <!-- runbook: ${name} -->`);
  return b;
}

const WRAPPER = `#!/bin/bash
# nethsm-replicator at a host whose config is $ETC/config.yaml (the default path there).
case "$1" in
  status|sync|promote|demote|pause|resume|admins|quarantine|check-config|init-replica) exec "${process.execPath}" "${cliBin}" "$@" --config "$ETC/config.yaml";;
  *) exec "${process.execPath}" "${cliBin}" "$@";;
esac
`;

const SYSTEMCTL = `#!/bin/bash
# systemctl for nethsm-replicator.service at this "host": the unit's environment, a bounded wait for the start.
set -u
pidfile="$ETC/daemon.pid"
start() {
  env -i PATH="$PATH" CREDENTIALS_DIRECTORY="$ETC/credentials" NODE_ENV=production NHR_UNSAFE_TEST_SCRYPT=1 \\
    "${process.execPath}" "${cliBin}" daemon --config "$ETC/config.yaml" </dev/null >/dev/null 2>"$ETC/daemon.log" &
  echo $! > "$pidfile"
  for _ in $(seq 300); do
    grep -q 'daemon started' "$ETC/daemon.log" && return 0
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat "$ETC/daemon.log" >&2; return 1; }
    sleep 0.1
  done
  echo "daemon did not start within 30s" >&2; return 1
}
stop() {
  pid=$(cat "$pidfile"); kill -TERM "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid"
}
case "$*" in
  "enable --now nethsm-replicator"|"start nethsm-replicator") start;;
  "stop nethsm-replicator") stop;;
  *) echo "systemctl stand-in: unsupported: $*" >&2; exit 1;;
esac
`;

interface Site {
  name: 'berlin' | 'hamburg';
  etc: string;
  simPort: number;
  peerPort: number;
  healthPort: number;
  gatewayPort: number;
  sim?: ChildProcess;
  fingerprint?: string;
}

describe.skipIf(!built)('docs/operations.md as a script (runbook) — needs `npm run build`', () => {
  let dir = '';
  let work = '';
  let bin = '';
  const sites = new Map<string, Site>();

  afterAll(async () => {
    for (const s of sites.values()) {
      const pid = Number(await readFile(path.join(s.etc, 'daemon.pid'), 'utf8').catch(() => '0'));
      if (pid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      s.sim?.kill('SIGTERM');
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Runs one block at `site` (or on the workstation), verbatim after the doc's helpers; returns its output. */
  async function run(name: string, site?: Site): Promise<string> {
    const b = block(name);
    const env: Record<string, string> = { PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`, HOME: work };
    if (site) {
      Object.assign(env, { ETC: site.etc, SITE: site.name, NETHSM: `https://127.0.0.1:${site.simPort}/api/v1`, NETHSM_TLS: '-k' });
    }
    const script = `set -eo pipefail\n${block('helpers').script}\n${b.script}`;
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = spawn('bash', ['-c', script], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.stderr.on('data', (d: Buffer) => (out += d.toString()));
      c.on('close', (code) => resolve({ code, out }));
    });
    expect(r.code, `block ${name}${site ? ` at ${site.name}` : ''}:\n${r.out}`).toBe(b.exit);
    return r.out;
  }

  async function startSim(s: Site): Promise<void> {
    const child = spawn(process.execPath, [cliBin, 'sim', '--port', String(s.simPort), '--data-dir', path.join(dir, `sim-${s.name}`), '--test-scrypt'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    s.sim = child;
    s.fingerprint = (await waitFor(() => /fingerprint ([0-9A-F:]+)/.exec(out)?.[1], `simulator ${s.name}`, 20_000));
  }

  /** Copy deploy/config.example.yaml and adapt it for `s` (host names, ports, paths, pins; the site's names). */
  async function writeConfig(s: Site, peer: Site): Promise<void> {
    let c = await readFile(path.join(repoRoot, 'deploy/config.example.yaml'), 'utf8');
    const rep = (from: string | RegExp, to: string): void => {
      if (typeof from === 'string' ? !c.includes(from) : !from.test(c)) throw new Error(`config.example.yaml no longer contains ${String(from)}`);
      c = c.replace(from, to);
    };
    rep('https://nethsm.berlin.example.net:443', `https://127.0.0.1:${s.simPort}`);
    rep(/fingerprint256: "[0-9A-F:]+"/, `fingerprint256: "${s.fingerprint}"`);
    rep('- name: hamburg\n    url: https://replicator.hamburg.example.net:9443', `- name: ${peer.name}\n    url: https://127.0.0.1:${peer.peerPort}`);
    rep('/etc/nethsm-replicator/tls/berlin.crt', `${s.etc}/tls/${s.name}.crt`);
    c = c.split('/etc/nethsm-replicator/tls/').join(`${s.etc}/tls/`);
    rep('listen: 0.0.0.0:9443', `listen: 127.0.0.1:${s.peerPort}`);
    rep('listen: 127.0.0.1:9810', `listen: 127.0.0.1:${s.healthPort}`);
    rep('listen: 0.0.0.0:8443', `listen: 127.0.0.1:${s.gatewayPort}`);
    rep('stateDir: /var/lib/nethsm-replicator', `stateDir: ${s.etc}/state`);
    rep('site: berlin', `site: ${s.name}`);
    // Scheduled syncs stay out of the way of the doc's manual ones (every minute would race them).
    c = c.replace(/schedule: "[^"]*"/g, 'schedule: "0 0 1 1 *"');
    await writeFile(path.join(s.etc, 'config.yaml'), c);
  }

  /** `status --json` at `s`: the role of each namespace. */
  async function roles(s: Site): Promise<Record<string, string>> {
    const out = await new Promise<string>((resolve) => {
      const c = spawn(process.execPath, [cliBin, 'status', '--json', '--config', path.join(s.etc, 'config.yaml')], { stdio: ['ignore', 'pipe', 'ignore'] });
      let o = '';
      c.stdout.on('data', (d: Buffer) => (o += d.toString()));
      c.on('close', () => resolve(o));
    });
    try {
      const st = JSON.parse(out) as { namespaces: { name: string; role: string; primarySite: string }[] };
      return Object.fromEntries(st.namespaces.map((n) => [n.name, `${n.role}@${n.primarySite}`]));
    } catch {
      return {};
    }
  }

  it('marks every runnable block of sections 1, 3, 4 and 5 (the script the test runs is the doc)', () => {
    expect([...blocks.keys()]).toEqual([
      'helpers', 'certificates', 'secrets', 'install', 'berlin-nethsm', 'berlin-start', 'berlin-start-2', 'hamburg-init',
      'hamburg-unlock', 'hamburg-start', 'hamburg-sync', 'berlin-sync', 'switchover', 'failover-status', 'failover-promote',
      'admins-restore', 'recovery',
    ]);
    // A ```sh block in those sections without a marker would be documentation the test does not run.
    const sections = doc.slice(doc.indexOf('## 1. Setting up'), doc.indexOf('## 6. Reading'));
    const unmarked = [...sections.matchAll(/(.*)\n```sh\n/g)].filter((m) => !/<!-- runbook: /.test(m[1] ?? ''));
    expect(unmarked.map((m) => m[0])).toEqual([]);
  });

  it('sets up two sites, switches over, fails over and recovers with the documented commands', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-runbook-'));
    work = path.join(dir, 'workstation');
    bin = path.join(dir, 'bin');
    await mkdir(work);
    await mkdir(bin);
    await writeFile(path.join(bin, 'nethsm-replicator'), WRAPPER);
    await writeFile(path.join(bin, 'systemctl'), SYSTEMCTL);
    await chmod(path.join(bin, 'nethsm-replicator'), 0o755);
    await chmod(path.join(bin, 'systemctl'), 0o755);
    for (const name of ['berlin', 'hamburg'] as const) {
      const s: Site = { name, etc: path.join(dir, name, 'etc'), simPort: await freePort(), peerPort: await freePort(), healthPort: await freePort(), gatewayPort: await freePort() };
      await mkdir(s.etc, { recursive: true });
      sites.set(name, s);
      await startSim(s);
    }
    const berlin = sites.get('berlin')!;
    const hamburg = sites.get('hamburg')!;

    // 1.1, 1.2: certificates, secrets, installed at both sites.
    await run('certificates');
    await run('secrets');
    await run('install', berlin);
    await run('install', hamburg);

    // 1.3, 1.4: berlin's NetHSM and daemon.
    await run('berlin-nethsm', berlin);
    await writeConfig(berlin, hamburg);
    const check = await run('berlin-start', berlin);
    const failed = check.split('\n').filter((l) => l.startsWith('FAIL'));
    expect(failed.length, check).toBeGreaterThan(0);
    for (const l of failed) expect(l, check).toMatch(/^FAIL\s+peer hamburg/);
    expect(await run('berlin-start-2', berlin)).toMatch(/PROBLEM: peer hamburg is UNREACHABLE/);
    expect(await roles(berlin)).toMatchObject({ payments: 'primary@berlin' });

    // 1.5: hamburg joins from berlin's daemon, gets its own certificate, its namespace, its daemon.
    await writeConfig(hamburg, berlin);
    await run('hamburg-init', hamburg);
    const renewed = await run('hamburg-unlock', hamburg);
    const fp = /^\s+([0-9A-F]{2}(?::[0-9A-F]{2}){31})$/m.exec(renewed)?.[1];
    expect(fp, renewed).toBeDefined();
    const cfg = path.join(hamburg.etc, 'config.yaml');
    await writeFile(cfg, (await readFile(cfg, 'utf8')).replace(`fingerprint256: "${hamburg.fingerprint}"`, `fingerprint256: "${fp}"`));
    await run('hamburg-start', hamburg);
    await run('hamburg-sync', hamburg);
    const status = await run('berlin-sync', berlin);
    expect(status).toMatch(/all ok/);
    expect(await roles(berlin)).toMatchObject({ payments: 'primary@berlin', signing: 'replica@hamburg' });
    expect(await roles(hamburg)).toMatchObject({ payments: 'replica@berlin', signing: 'primary@hamburg' });

    // 3: planned switchover of payments to hamburg.
    await run('switchover', berlin);
    await waitFor(async () => (await roles(berlin)).payments === 'replica@hamburg', 'berlin to follow hamburg', 30_000);
    expect(await roles(hamburg)).toMatchObject({ payments: 'primary@hamburg' });

    // 4: hamburg (now payments' primary) is lost (its daemon stops: not a documented step); berlin takes over.
    await new Promise<void>((resolve, reject) => {
      const c = spawn(path.join(bin, 'systemctl'), ['stop', 'nethsm-replicator'], { env: { PATH: process.env.PATH ?? '', ETC: hamburg.etc }, stdio: 'inherit' });
      c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`systemctl stop: ${code}`))));
    });
    const before = await run('failover-status', berlin);
    expect(before).toMatch(/PROBLEM: .*hamburg/);
    const promoted = await run('failover-promote', berlin);
    expect(promoted).toMatch(/promoted payments: epoch \d+ → \d+, role=primary previousPrimary=hamburg/);
    expect(await roles(berlin)).toMatchObject({ payments: 'primary@berlin' });
    // 4.1: the promote put the administrators back, so the manual retry finds nothing owed.
    expect(await run('admins-restore', berlin)).toMatch(/^no administrator restore is pending for payments: nothing to do$/m);

    // 5: hamburg comes back: fenced, quarantined, resynced, a replica of berlin's again.
    await run('recovery', hamburg);
    await waitFor(async () => (await roles(hamburg)).payments === 'replica@berlin', 'hamburg to resync payments as a replica', 60_000, 200);
    expect(await roles(hamburg)).toMatchObject({ signing: 'primary@hamburg' });
    const quarantined = await readFile(path.join(hamburg.etc, 'daemon.log'), 'utf8');
    expect(quarantined).toMatch(/quarantine/);
  }, 180_000);
});
