/**
 * `nethsm-replicator sim`: runs the NetHSM simulator until SIGTERM/SIGINT, then exits 0.
 * Prints `listening on https://<host>:<port>` and `fingerprint <AB:CD:…>` on stdout.
 */
import type { Command } from 'commander';
import { InputInvalidError } from '../errors.js';
import { createLogger } from '../log.js';
import { parseLatencySpec, type LatencyTable } from '../sim/latency.js';
import { TEST_KDF } from '../sim/crypto.js';

interface SimFlags {
  port: string;
  host: string;
  dataDir?: string;
  latency?: string;
  testScrypt?: boolean;
  durable?: boolean;
}

/** Validates the flags; throws InputInvalidError naming the bad one. */
export function parseSimFlags(flags: SimFlags): { port: number; host: string; dataDir?: string; latency: LatencyTable; testScrypt: boolean; durable: boolean } {
  if (!/^\d+$/.test(flags.port) || Number(flags.port) > 65535) {
    throw new InputInvalidError(`--port must be an integer from 0 to 65535, got "${flags.port}"`);
  }
  if (flags.host.trim() === '') throw new InputInvalidError('--host must not be empty');
  let latency: LatencyTable = {};
  if (flags.latency !== undefined) {
    try {
      latency = parseLatencySpec(flags.latency);
    } catch (err) {
      throw new InputInvalidError(`--latency: ${(err as Error).message}`, { hint: 'Use e.g. --latency sign=40ms,generate=900ms,restore-per-entry=2ms' });
    }
  }
  if (flags.durable === true && flags.dataDir === undefined) throw new InputInvalidError('--durable needs --data-dir (without it the state is in memory only)');
  const out = { port: Number(flags.port), host: flags.host, latency, testScrypt: flags.testScrypt === true, durable: flags.durable === true };
  return flags.dataDir === undefined ? out : { ...out, dataDir: flags.dataDir };
}

export function registerSim(program: Command): void {
  program
    .command('sim')
    .description('Run a NetHSM simulator (HTTPS, /api/v1) until SIGTERM or SIGINT.')
    .requiredOption('--port <port>', 'port to listen on (0 picks a free one)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--data-dir <dir>', 'keep state in this directory (absent: memory only)')
    .option('--latency <spec>', 'per-operation latency, e.g. sign=40ms,generate=900ms,restore-per-entry=2ms')
    .option('--test-scrypt', "use the firmware's test scrypt parameters (N=2, r=1, p=1) for unlock and backup keys")
    .option('--durable', 'with --data-dir: write each change to disk before answering (a SIGKILL loses nothing acknowledged)')
    .action(async (flags: SimFlags) => {
      const o = parseSimFlags(flags);
      const kdf = o.testScrypt ? { backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF } : {};
      // Loaded when the command runs: the other commands do not pay for the simulator's modules.
      const { startSimulator } = await import('../sim/server.js');
      const sim = await startSimulator({
        host: o.host,
        port: o.port,
        latency: o.latency,
        durable: o.durable,
        logger: createLogger({ name: 'nethsm-sim' }),
        ...kdf,
        ...(o.dataDir === undefined ? {} : { dataDir: o.dataDir }),
      });
      process.stdout.write(`listening on ${sim.url}\nfingerprint ${sim.fingerprint256}\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          resolve();
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      await sim.close();
    });
}
