/**
 * One long-running child process of the fault suite (a simulator or a daemon, `bin/nethsm-replicator …`): start and
 * wait for its ready line, signal it (SIGKILL, SIGSTOP, SIGCONT), restart it. Its stdout and stderr are appended to a
 * log file across restarts. Every child ever started is killed when the runner exits, however it exits (see
 * {@link killAllChildren}), so nothing outlives a run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import path from 'node:path';

/** The checkout: three levels up when compiled (dist-faults/test/faults), two when run from source (vitest). */
export const repoRoot = [path.resolve(import.meta.dirname, '../../..'), path.resolve(import.meta.dirname, '../..')].find((d) => existsSync(path.join(d, 'bin/nethsm-replicator')))!;
export const cliBin = path.join(repoRoot, 'bin/nethsm-replicator');

const live = new Set<ChildProcess>();

/** SIGKILLs every child still running (after SIGCONT, so a stopped one dies too). Synchronous: safe in 'exit'. */
export function killAllChildren(): void {
  for (const c of live) {
    try {
      c.kill('SIGCONT');
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

/** Keeps the last part of a process's output for ready-line matching (the full output is in the log file). */
const OUTPUT_TAIL = 256 * 1024;

export class NodeChild {
  #child: ChildProcess | undefined;
  #log: WriteStream;
  #output = '';
  #stopped = false;
  /** Starts so far (1 after the first start). */
  starts = 0;

  constructor(
    /** For messages: `sim a`, `daemon b`. */
    readonly name: string,
    private readonly args: string[],
    logFile: string,
    private readonly env: Record<string, string> = {},
  ) {
    this.#log = createWriteStream(logFile, { flags: 'a' });
  }

  get running(): boolean {
    const c = this.#child;
    return c !== undefined && c.exitCode === null && c.signalCode === null;
  }

  /** Whether it is SIGSTOPped now. */
  get stopped(): boolean {
    return this.#stopped && this.running;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Output of the current run (tail). */
  get output(): string {
    return this.#output;
  }

  /**
   * Starts the process and resolves with the first match of `ready` in its output. Rejects (and kills it) when it
   * exits first or `timeoutMs` passes.
   */
  async start(ready: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    if (this.running) throw new Error(`${this.name} is already running`);
    this.#output = '';
    this.#stopped = false;
    this.starts++;
    this.#log.write(`\n=== ${new Date().toISOString()} start #${this.starts}: ${this.args.join(' ')}\n`);
    const child = spawn(process.execPath, [cliBin, ...this.args], {
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(child);
    this.#child = child;
    const onData = (d: Buffer): void => {
      this.#log.write(d);
      this.#output = (this.#output + d.toString('utf8')).slice(-OUTPUT_TAIL);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, signal) => {
      live.delete(child);
      this.#log.write(`=== ${new Date().toISOString()} exit code=${code} signal=${signal}\n`);
    });
    return new Promise<RegExpMatchArray>((resolve, reject) => {
      const deadline = setTimeout(() => finish(new Error(`${this.name} did not become ready within ${timeoutMs} ms`)), timeoutMs);
      const check = (): void => {
        const m = ready.exec(this.#output);
        if (m) finish(undefined, m);
      };
      const exited = (code: number | null, signal: string | null): void => finish(new Error(`${this.name} exited before it was ready (code ${code}, signal ${signal})`));
      const finish = (err: Error | undefined, m?: RegExpMatchArray): void => {
        clearTimeout(deadline);
        child.stdout!.off('data', check);
        child.stderr!.off('data', check);
        child.off('exit', exited);
        if (err) {
          child.kill('SIGKILL');
          reject(err);
        } else resolve(m!);
      };
      child.stdout!.on('data', check);
      child.stderr!.on('data', check);
      child.once('exit', exited);
      check();
    });
  }

  /** Sends SIGKILL and waits for the exit. A no-op when it is not running. */
  async kill(): Promise<void> {
    const c = this.#child;
    if (!c || !this.running) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGKILL');
    await exited;
    this.#stopped = false;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async terminate(graceMs = 5_000): Promise<void> {
    const c = this.#child;
    if (!c || !this.running) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    if (this.#stopped) c.kill('SIGCONT');
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
    this.#stopped = false;
  }

  /** SIGSTOP: the process freezes with its sockets open. */
  pause(): void {
    if (!this.running) return;
    this.#child!.kill('SIGSTOP');
    this.#stopped = true;
  }

  /** SIGCONT. */
  resume(): void {
    if (!this.running) return;
    this.#child!.kill('SIGCONT');
    this.#stopped = false;
  }

  /** Closes the log file (after the process is gone). */
  async closeLog(): Promise<void> {
    await new Promise<void>((r) => this.#log.end(() => r()));
  }
}
