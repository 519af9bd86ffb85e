/**
 * `nethsm-replicator sim`: runs the NetHSM simulator until SIGTERM/SIGINT, then exits 0.
 * Prints `listening on https://<host>:<port>` and `fingerprint <AB:CD:…>` on stdout, then one line per power change
 * (`power off (shutdown)`, `power on (reboot) fingerprint <…>`). After `POST /system/shutdown` the process keeps
 * running without listening; SIGHUP powers it on again (the power button).
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { InputInvalidError } from '../errors.js';
import { createLogger } from '../log.js';
import { parseLatencySpec, type LatencyTable } from '../sim/latency.js';
import { TEST_KDF } from '../sim/crypto.js';
import { MAX_DEVICE_SLOTS } from '../sim/device-slots.js';
import { parseUpdateKey } from '../sim/update/key.js';
import { parseFillSpec, type FillSpec } from '../sim/fill.js';

interface SimFlags {
  port: string;
  host: string;
  dataDir?: string;
  latency?: string;
  testScrypt?: boolean;
  updateKey?: string;
  rebootDelay?: string;
  durable?: boolean;
  deviceSlots?: string;
  fill?: string[];
}

export interface SimSettings {
  port: number;
  host: string;
  dataDir?: string;
  latency: LatencyTable;
  testScrypt: boolean;
  /** With a data dir: every change on disk before the answer. */
  durable: boolean;
  /** PEM read from `--update-key`, checked to be an RSA public key. */
  updateKeyPem?: string;
  rebootDelayMs: number;
  /** `--device-slots`: operations in service at once (capacity model); absent: no contention. */
  deviceSlots?: number;
  /** `--fill`, in the order given: the first is tried at start, each SIGUSR2 tries the next (src/sim/fill.ts). */
  fills: FillSpec[];
}

/** Validates the flags (and reads `--update-key`); throws InputInvalidError naming the bad one. */
export function parseSimFlags(flags: SimFlags): SimSettings {
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
  const delay = flags.rebootDelay ?? '0';
  if (!/^\d+$/.test(delay) || Number(delay) > 600_000) {
    throw new InputInvalidError(`--reboot-delay must be a whole number of milliseconds from 0 to 600000, got "${delay}"`);
  }
  const out: SimSettings = {
    port: Number(flags.port),
    host: flags.host,
    latency,
    testScrypt: flags.testScrypt === true,
    durable: flags.durable === true,
    rebootDelayMs: Number(delay),
    fills: (flags.fill ?? []).map(parseFill),
  };
  if (flags.dataDir !== undefined) out.dataDir = flags.dataDir;
  if (flags.deviceSlots !== undefined) {
    if (!/^\d{1,4}$/.test(flags.deviceSlots) || Number(flags.deviceSlots) < 1 || Number(flags.deviceSlots) > MAX_DEVICE_SLOTS) {
      throw new InputInvalidError(`--device-slots must be a whole number from 1 to ${MAX_DEVICE_SLOTS}, got "${flags.deviceSlots}"`);
    }
    out.deviceSlots = Number(flags.deviceSlots);
  }
  if (flags.updateKey !== undefined) out.updateKeyPem = readUpdateKey(flags.updateKey);
  return out;
}

function parseFill(spec: string): FillSpec {
  try {
    return parseFillSpec(spec);
  } catch (err) {
    throw new InputInvalidError(`--fill ${(err as Error).message}`, { hint: 'Use e.g. --fill alpha:1000000 or --fill alpha:1000000:seed1' });
  }
}

/**
 * Runs the next pending fill and prints what happened: `filled <ns>: <n> keys added, <k> kept, in <ms> ms`, or
 * `fill of <ns> waits: <why> (send SIGUSR2 to try again)` when the device cannot take it yet (then it stays pending).
 */
async function fillNext(sim: { fill: (s: FillSpec) => Promise<{ added: number; kept: number; ms: number }> }, pending: FillSpec[]): Promise<void> {
  const spec = pending[0];
  if (spec === undefined) {
    process.stdout.write('fill: nothing left to fill\n');
    return;
  }
  try {
    const r = await sim.fill(spec);
    pending.shift();
    process.stdout.write(`filled ${spec.namespace}: ${r.added} keys added, ${r.kept} kept, in ${Math.round(r.ms)} ms\n`);
  } catch (err) {
    process.stdout.write(`fill of ${spec.namespace} waits: ${(err as Error).message} (send SIGUSR2 to try again)\n`);
  }
}

function readUpdateKey(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new InputInvalidError(`--update-key: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    parseUpdateKey(pem);
  } catch (err) {
    throw new InputInvalidError(`--update-key ${file}: ${(err as Error).message}`, { cause: err });
  }
  return pem;
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
    .option('--update-key <file>', "PEM RSA public key update images must be signed with (default: the firmware's test key)")
    .option('--reboot-delay <ms>', 'how long a reboot or factory reset keeps the simulator unreachable', '0')
    .option('--fill <ns:count[:seed]>', 'bulk fill for benches: count EC P-256 keys in namespace ns (repeatable; the first at start, the next on each SIGUSR2)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--device-slots <n>', 'capacity model: at most n operations in service at once, each for its --latency; others queue (default: no contention)')
    .action(async (flags: SimFlags) => {
      const o = parseSimFlags(flags);
      const kdf = o.testScrypt ? { backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF } : {};
      // Loaded when the command runs: the other commands do not pay for the simulator's modules.
      const { startSimulator } = await import('../sim/server.js');
      let started = false;
      const sim = await startSimulator({
        host: o.host,
        port: o.port,
        latency: o.latency,
        durable: o.durable,
        logger: createLogger({ name: 'nethsm-sim' }),
        rebootDelayMs: o.rebootDelayMs,
        ...kdf,
        ...(o.dataDir === undefined ? {} : { dataDir: o.dataDir }),
        ...(o.deviceSlots === undefined ? {} : { deviceSlots: o.deviceSlots }),
        ...(o.updateKeyPem === undefined ? {} : { updateKeyPem: o.updateKeyPem }),
        onPowerChange: (state, reason) => {
          if (!started) return;
          const tail = state === 'on' ? ` fingerprint ${sim.fingerprint256}` : reason === 'shutdown' ? ' (send SIGHUP to power on)' : '';
          process.stdout.write(`power ${state} (${reason})${tail}\n`);
        },
      });
      started = true;
      process.stdout.write(`listening on ${sim.url}\nfingerprint ${sim.fingerprint256}\n`);
      const powerOn = (): void => {
        sim.powerOn().catch((err: unknown) => process.stderr.write(`power on failed: ${(err as Error).message}\n`));
      };
      process.on('SIGHUP', powerOn);
      const pendingFills = [...o.fills];
      // One fill at a time: a SIGUSR2 during a fill waits for it, then runs the next.
      let filling = Promise.resolve();
      const fill = (): void => {
        filling = filling.then(() => fillNext(sim, pendingFills));
      };
      if (pendingFills.length > 0) fill();
      process.on('SIGUSR2', fill);
      // Signal handlers do not keep Node running: while powered off nothing else would.
      const keepAlive = setInterval(() => undefined, 2 ** 30);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          resolve();
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      process.off('SIGHUP', powerOn);
      process.off('SIGUSR2', fill);
      clearInterval(keepAlive);
      await sim.close();
    });
}
