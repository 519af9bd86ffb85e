/**
 * One-shot runs of the operator's command line (`bin/nethsm-replicator promote|demote|sync|status …`), as an operator
 * would type them, bounded in time: a command still running at the bound is killed and reported as timed out.
 */
import { spawn } from 'node:child_process';
import { cliBin } from './child.js';

export interface CliResult {
  /** Exit code; null when killed (timeout). */
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

/** Runs `nethsm-replicator <args>` and resolves when it exits or is killed at `timeoutMs`. Never rejects. */
export function runCli(args: string[], timeoutMs: number, env: Record<string, string> = {}): Promise<CliResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliBin, ...args], {
      env: { ...process.env, NHR_LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: stderr + String(err), timedOut, ms: Date.now() - started });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut, ms: Date.now() - started });
    });
  });
}

/** The first `Error: …` line of a failed command (the registry code is in it), or a short fallback. */
export function cliError(r: CliResult): string {
  if (r.timedOut) return `timed out after ${r.ms} ms`;
  const line = r.stderr.split('\n').find((l) => l.startsWith('Error:'));
  return (line ?? r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`).slice(0, 300);
}
