/**
 * The state directory must be a real, writable directory before anything else runs: a daemon that cannot write its
 * state must exit as a configuration error (78, not restarted by systemd), naming the path, instead of failing later
 * and being restarted in a loop.
 */
import { accessSync, constants, mkdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { StateDirUnusableError } from '../errors.js';

/** Kernel pseudo filesystems: nothing written there persists, and some writes there change the running system. */
const PSEUDO = ['/proc', '/sys', '/dev'];

const under = (p: string, root: string) => p === root || p.startsWith(`${root}/`);

/**
 * Creates `stateDir` (0700) when absent and proves it writable with a probe file, which it removes. Throws
 * StateDirUnusableError naming the directory and the reason (a pseudo filesystem, not a directory, not writable).
 */
export function assertUsableStateDir(stateDir: string): void {
  const dir = path.resolve(stateDir);
  const fail = (why: string, cause?: unknown): never => {
    throw new StateDirUnusableError(`stateDir ${dir} cannot hold the daemon's state: ${why}`, { path: dir, ...(cause ? { cause } : {}) });
  };
  if (PSEUDO.some((root) => under(dir, root))) fail(`it is under ${PSEUDO.find((root) => under(dir, root))}, a kernel pseudo filesystem`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    fail(`it cannot be created (${(err as { code?: string }).code ?? 'error'})`, err);
  }
  const real = realpathSync(dir);
  if (PSEUDO.some((root) => under(real, root))) fail(`it resolves to ${real}, on a kernel pseudo filesystem`);
  if (!statSync(real).isDirectory()) fail('it is not a directory');
  const probe = path.join(real, `.write-probe-${process.pid}`);
  try {
    accessSync(real, constants.W_OK | constants.X_OK);
    writeFileSync(probe, '', { mode: 0o600 });
    rmSync(probe, { force: true });
  } catch (err) {
    fail(`this user cannot write there (${(err as { code?: string }).code ?? 'error'})`, err);
  }
}
