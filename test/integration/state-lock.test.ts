/**
 * One daemon per state directory, with real processes: a second daemon on the same state directory (same config, or
 * other ports and admin socket) exits at once with NHR_ERR_STATE_LOCKED and disturbs nothing (work/ files, the first
 * daemon's admin socket, its service); after the first is killed with SIGKILL a new one starts. Needs `npm run build`.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, Lab } from '../../src/lab/lab.js';
import { cliBin, DaemonProcess, built, daemonRefusal } from '../helpers/daemon-process.js';

function cli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

describe.skipIf(!built)('the state directory lock (one daemon per state directory) — needs `npm run build`', () => {
  let lab: Lab;
  let first: DaemonProcess;
  let config: string;
  let stateDir: string;
  let socket: string;
  let marker: string;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.site('a').startDaemon();
    const b = lab.site('b');
    config = path.join(b.dir, 'config.yaml');
    stateDir = b.stateDir;
    socket = b.config.admin.socket;
    first = new DaemonProcess(config, 'b');
    await first.start();
    // A file of a sync in progress, as the first daemon's work/ would hold it.
    marker = path.join(stateDir, 'work', 'sync-in-progress.bin');
    writeFileSync(marker, 'encrypted backup bytes', { mode: 0o600 });
  }, 120_000);

  afterAll(async () => {
    await first?.stop('SIGKILL');
    await lab?.close();
  });

  /** What a second daemon must leave as it was: the work file, the first daemon's socket, and its service. */
  async function expectUndisturbed(socketIno: number): Promise<void> {
    expect(readFileSync(marker, 'utf8')).toBe('encrypted backup bytes');
    expect(statSync(socket).ino).toBe(socketIno);
    const status = await cli(['status', '--config', config, '--json']);
    expect(status.err).toBe('');
    expect(JSON.parse(status.out)).toMatchObject({ site: 'b' });
    const sync = await cli(['sync', 'alpha', '--config', config]);
    expect(sync.err).toBe('');
    expect(sync.code).toBe(0);
  }

  it('refuses a second daemon with the same config at once, naming the directory and the holder, and changes nothing', async () => {
    const socketIno = statSync(socket).ino;
    const r = await daemonRefusal(config);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`Error: the state directory ${stateDir} is in use by another daemon (pid ${first.child!.pid}); nothing was changed [NHR_ERR_STATE_LOCKED]`);
    expect(r.stderr).toMatch(/^Try: Stop the other daemon/m);
    // It stopped before anything else: no listener was tried.
    expect(r.stderr).not.toMatch(/EADDRINUSE/);
    await expectUndisturbed(socketIno);
  });

  it('refuses a second daemon on the same state directory with other ports and another admin socket', async () => {
    const socketIno = statSync(socket).ino;
    const [peerPort] = await Promise.all([freePort()]);
    const otherSocket = path.join(lab.site('b').dir, 'other-admin.sock');
    const text = readFileSync(config, 'utf8')
      .replace(/peerApi: \{ listen: "127\.0\.0\.1:\d+" \}/, `peerApi: { listen: "127.0.0.1:${peerPort}" }`)
      .replace(/^stateDir: /m, `admin: { socket: ${otherSocket} }\nstateDir: `);
    expect(text).toContain(`127.0.0.1:${peerPort}`);
    const other = path.join(lab.site('b').dir, 'other-ports.yaml');
    writeFileSync(other, text, { mode: 0o600 });
    const r = await daemonRefusal(other);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('[NHR_ERR_STATE_LOCKED]');
    expect(existsSync(otherSocket)).toBe(false);
    await expectUndisturbed(socketIno);
  });

  it('lets a new daemon start after the holder was killed with SIGKILL', async () => {
    expect(await first.stop('SIGKILL')).toBeNull();
    // The dead holder's pid file stays behind; the kernel dropped its lock.
    await first.start();
    const status = await cli(['status', '--config', config, '--json']);
    expect(status.code).toBe(0);
    expect(readFileSync(path.join(stateDir, 'daemon.pid'), 'utf8').trim()).toBe(String(first.child!.pid));
    expect(await first.stop('SIGTERM')).toBe(0);
    expect(existsSync(path.join(stateDir, 'daemon.pid'))).toBe(false);
  });
});
