// The simulator as a process of its own, shared by the benches (bench/gateway.mjs, bench/remote.mjs, bench/sync.mjs).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * `nethsm-replicator sim` on a free port; resolves with the child, its URL and its certificate's fingerprint once it
 * listens. `latency`: the `--latency` value; `testScrypt`: the test KDF (default); `env`: extra environment.
 */
export function startSim({ latency, testScrypt = true, env } = {}) {
  const args = [path.join(ROOT, 'bin', 'nethsm-replicator'), 'sim', '--port', '0', ...(testScrypt ? ['--test-scrypt'] : []), ...(latency ? ['--latency', latency] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'ignore'], ...(env ? { env: { ...process.env, ...env } } : {}) });
  return new Promise((resolve, reject) => {
    let out = '';
    child.once('exit', (code) => reject(new Error(`simulator exited with ${code}: ${out}`)));
    child.stdout.on('data', (b) => {
      out += b.toString();
      const url = /listening on (\S+)/.exec(out)?.[1];
      const fingerprint256 = /fingerprint (\S+)/.exec(out)?.[1];
      if (url && fingerprint256) resolve({ child, url, fingerprint256 });
    });
  });
}
