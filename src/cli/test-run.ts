/**
 * Test helper: runs the CLI in-process through `main` and captures what it writes and its exit code.
 * Restores stdout/stderr and `process.exitCode` afterwards so one run cannot leak into the next (or into vitest's).
 * No test framework import: the file is compiled with the rest of src/.
 */
import { main } from './main.js';

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

export async function runCli(args: string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const capture = (sink: (s: string) => void) =>
    ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      sink(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      cb?.();
      return true;
    }) as typeof process.stdout.write;
  const { stdout, stderr } = process;
  const saved = { out: stdout.write, err: stderr.write };
  stdout.write = capture((s) => (out += s));
  stderr.write = capture((s) => (err += s));
  process.exitCode = undefined;
  try {
    const code = await main(['node', 'nethsm-replicator', ...args]);
    return { code, out, err };
  } finally {
    stdout.write = saved.out;
    stderr.write = saved.err;
    process.exitCode = undefined;
  }
}
