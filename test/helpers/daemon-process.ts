/**
 * A site's daemon as a real process (`bin/nethsm-replicator daemon`, as systemd runs it), for tests that signal or kill
 * it. Needs `npm run build`. Test scrypt parameters (NHR_UNSAFE_TEST_SCRYPT=1) so its snapshots open fast.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { waitFor } from './wait.js';

export const repoRoot = path.resolve(import.meta.dirname, '../..');
export const cliBin = path.join(repoRoot, 'bin/nethsm-replicator');
/** Whether `npm run build` has run (the process tests skip otherwise, saying so in their titles). */
export const built = existsSync(path.join(repoRoot, 'dist/cli/main.js'));

/**
 * Runs `daemon --config <configPath>` expecting it to refuse to start: resolves with its exit code and stderr once it
 * exits. Rejects (after killing it) when it starts instead, or has not exited within `timeoutMs` (a bound, not a timing).
 */
export async function daemonRefusal(configPath: string, timeoutMs = 30_000): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [cliBin, 'daemon', '--config', configPath], {
    env: { ...process.env, NHR_UNSAFE_TEST_SCRYPT: '1', NHR_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  // 'close', not 'exit': every byte of stderr has arrived by then.
  const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
  let done = false;
  void exited.then(() => (done = true));
  try {
    await waitFor(() => done || stderr.includes('daemon started'), 'the second daemon to exit', timeoutMs);
  } finally {
    if (!done) child.kill('SIGKILL');
  }
  if (stderr.includes('daemon started')) throw new Error(`the daemon started instead of refusing:\n${stderr}`);
  return { code: await exited, stderr };
}

export class DaemonProcess {
  child: ChildProcess | undefined;
  /** stderr (the JSON log lines) of the current run. */
  logs = '';

  constructor(
    readonly configPath: string,
    readonly name: string,
    private readonly env: Record<string, string> = {},
  ) {}

  /** Starts the daemon and waits for its "daemon started" line. */
  async start(): Promise<void> {
    this.logs = '';
    const child = spawn(process.execPath, [cliBin, 'daemon', '--config', this.configPath], {
      env: { ...process.env, NHR_UNSAFE_TEST_SCRYPT: '1', NHR_LOG_LEVEL: 'info', ...this.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr!.on('data', (d: Buffer) => (this.logs += d.toString()));
    this.child = child;
    await waitFor(() => this.logs.includes('daemon started'), `daemon ${this.name} to start`, 30_000);
  }

  /** Sends `signal` and resolves with the exit code (null when killed by the signal). */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return c?.exitCode ?? null;
    const exited = new Promise<number | null>((r) => c.once('exit', (code) => r(code)));
    c.kill(signal);
    return exited;
  }
}
