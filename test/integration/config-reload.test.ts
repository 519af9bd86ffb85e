/**
 * The config file changes under a running daemon (a real process, as systemd runs it): SIGHUP (`systemctl reload`)
 * applies the NetHSM's TLS pin, a bad edit changes nothing and `status` says why, and `status` tells when the file on
 * disk differs from what the daemon runs with and what only a restart applies.
 */
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import type { DaemonStatus } from '../../src/daemon/status.js';
import { DaemonProcess, built, cliBin } from '../helpers/daemon-process.js';
import { waitFor } from '../helpers/wait.js';

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

describe.skipIf(!built)('config reload on SIGHUP, as a process — needs `npm run build`', () => {
  let lab: Lab;
  let daemon: DaemonProcess;
  let configPath: string;
  let original: string;
  let rightPin: string;
  let healthPort: number;

  const wrongPin = Array(32).fill('AB').join(':');

  async function ready(): Promise<{ status: number; body: string }> {
    const r = await request(`http://127.0.0.1:${healthPort}/health/ready`);
    return { status: r.statusCode, body: await r.body.text() };
  }

  async function status(): Promise<{ code: number | null; s: DaemonStatus }> {
    const r = await cli(['status', '--json', '--config', configPath]);
    return { code: r.code, s: JSON.parse(r.out) as DaemonStatus };
  }

  /** The config gauges from `/metrics` (the operator drill: a failed reload showed in status only, so no alert could see it). */
  async function configGauges(): Promise<{ reloadFailed: number; restartNeeded: number }> {
    const text = await (await request(`http://127.0.0.1:${healthPort}/metrics`)).body.text();
    const value = (n: string) => Number(new RegExp(`^nethsm_replicator_${n} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
    return { reloadFailed: value('config_reload_failed'), restartNeeded: value('config_restart_needed') };
  }

  /** Sends SIGHUP and waits until the daemon logged the reload's outcome (the n-th one). */
  async function hangup(): Promise<void> {
    const before = (daemon.logs.match(/"msg":"config reload(ed| FAILED)/g) ?? []).length;
    daemon.child!.kill('SIGHUP');
    await waitFor(() => (daemon.logs.match(/"msg":"config reload(ed| FAILED)/g) ?? []).length > before, 'the reload to finish', 20_000);
  }

  beforeAll(async () => {
    lab = await Lab.create({ sites: ['a'], namespaces: [{ name: 'alpha', primary: 'a' }] });
    configPath = path.join(lab.site('a').dir, 'config.yaml');
    original = await readFile(configPath, 'utf8');
    rightPin = lab.site('a').sim!.fingerprint256;
    expect(original).toContain(rightPin);
    daemon = new DaemonProcess(configPath, 'a');
    await daemon.start();
    healthPort = Number(/"healthPort":(\d+)/.exec(daemon.logs)?.[1]);
  });

  afterAll(async () => {
    await daemon?.stop('SIGKILL');
    await lab?.close();
  });

  it('runs with the pin it started with; an edited file shows in status until it is reloaded', async () => {
    expect((await ready()).status).toBe(200);
    const start = await status();
    expect(start.code).toBe(0);
    expect(start.s.config).toMatchObject({ path: configPath, changedOnDisk: false, restartNeededFor: [], lastReload: null });
    expect(start.s.config!.fileDigest).toBe(start.s.config!.loadedDigest);

    await writeFile(configPath, original.replace(rightPin, wrongPin));
    const edited = await status();
    expect(edited.code).toBe(2);
    expect(edited.s.config).toMatchObject({ changedOnDisk: true, restartNeededFor: [] });
    expect(edited.s.config!.fileDigest).not.toBe(edited.s.config!.loadedDigest);
    const text = await cli(['status', '--config', configPath]);
    expect(text.out).toContain(`PROBLEM: config file ${configPath} CHANGED since the daemon loaded it`);
    // Not reloaded yet: still the old pin.
    expect((await ready()).status).toBe(200);
  });

  it('SIGHUP applies the new pin: the daemon now refuses the NetHSM whose certificate it no longer pins', async () => {
    await hangup();
    expect(daemon.child!.exitCode).toBeNull();
    const r = await ready();
    expect(r.status).toBe(503);
    expect(r.body).toContain(`expected ${wrongPin}`);
    const after = await status();
    expect(after.s.config).toMatchObject({ changedOnDisk: false, restartNeededFor: [], lastReload: { outcome: 'ok', changed: ['nethsm.tls'], errorCode: null } });
  });

  it('a bad edit changes nothing: the daemon keeps the pin it had, and status says the reload failed and why', async () => {
    await writeFile(configPath, original.replace(rightPin, 'not-a-fingerprint'));
    await hangup();
    expect(daemon.child!.exitCode).toBeNull();
    expect(daemon.logs).toMatch(/"msg":"config reload FAILED; the daemon keeps running with the config it had"/);
    const { code, s } = await status();
    expect(code).toBe(2);
    expect(s.config).toMatchObject({ changedOnDisk: true, lastReload: { outcome: 'failed', errorCode: 'NHR_ERR_CONFIG_INVALID' } });
    expect(s.config!.lastReload!.error).toContain('nethsm.tls.fingerprint256 "not-a-fingerprint" is not a SHA-256 fingerprint');
    const text = await cli(['status', '--config', configPath]);
    // The operator's own `status --config` still reaches the daemon through the broken file.
    expect(text.err).toContain(`note: ${configPath} does not validate (1 problem(s)`);
    expect(text.out).toMatch(/PROBLEM: config reload FAILED (now|[\d.]+s ago) \(NHR_ERR_CONFIG_INVALID\); the daemon runs with the config it had: nethsm\.tls\.fingerprint256 "not-a-fingerprint" is not a SHA-256 fingerprint/);
    // Still the pin of the last good reload.
    expect((await ready()).body).toContain(`expected ${wrongPin}`);
    expect(await configGauges()).toEqual({ reloadFailed: 1, restartNeeded: 0 });
  });

  it('the right pin again: ready again; a listener change is named as needing a restart and is not applied', async () => {
    const port = Number(/peerApi: \{ listen: "127\.0\.0\.1:(\d+)" \}/.exec(original)?.[1]);
    await writeFile(configPath, original.replace(`127.0.0.1:${port}`, `127.0.0.1:${port + 1}`).replace('logging: { level: info }', 'logging: { level: warn }'));
    await hangup();
    await waitFor(async () => (await ready()).status === 200, 'readiness with the right pin', 20_000);
    const { code, s } = await status();
    expect(code).toBe(2);
    expect(s.config).toMatchObject({ changedOnDisk: false, restartNeededFor: ['peerApi.listen'], lastReload: { outcome: 'ok', restartNeededFor: ['peerApi.listen'] } });
    expect(s.config!.lastReload!.changed).toEqual(expect.arrayContaining(['nethsm.tls', 'logging.level']));
    const text = await cli(['status', '--config', configPath]);
    expect(text.out).toContain('PROBLEM: restart needed for: peerApi.listen');
    expect(daemon.logs).toContain('config reloaded; restart needed for: peerApi.listen');
    expect(await configGauges()).toEqual({ reloadFailed: 0, restartNeeded: 1 });

    await writeFile(configPath, original);
    await hangup();
    const back = await status();
    expect(back.code).toBe(0);
    expect(back.s.config!.restartNeededFor).toEqual([]);
    expect(await configGauges()).toEqual({ reloadFailed: 0, restartNeeded: 0 });
    expect(await daemon.stop('SIGTERM')).toBe(0);
  });
});
