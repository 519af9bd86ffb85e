/**
 * The NetHSM simulator: a real HTTPS server serving `/api/v1` as FACTS.md describes, over a KV store kept as the
 * firmware keeps it. See docs/simulator.md.
 */
import type { Logger } from 'pino';
import { silentLogger } from '../log.js';
import { PRODUCTION_KDF, type KdfParams } from './crypto.js';
import { Device, loadIdentity } from './device.js';
import { KvStore } from './kv.js';
import { UserStore } from './users.js';
import { NamespaceStore } from './namespaces.js';
import { KeyStore } from './key-store.js';
import { SimMetrics } from './metrics.js';
import { FailureRateLimiter } from './rate-limit.js';
import { checkLatencyTable, sleep, type LatencyTable } from './latency.js';
import { DeviceSlots } from './device-slots.js';
import { Router } from './router.js';
import { loadOrCreateTlsIdentity } from './tls-identity.js';
import type { SimCore } from './context.js';
import { SimListener } from './listener.js';
import { PowerControl, type PowerReason, type PowerState } from './power.js';
import { parseUpdateKey, TEST_UPDATE_KEY_PEM } from './update/key.js';
import { systemRoutes } from './routes/system.js';
import { configRoutes } from './routes/config.js';
import { userRoutes } from './routes/users.js';
import { namespaceRoutes } from './routes/namespaces.js';
import { keyRoutes } from './routes/keys.js';
import { backupRoutes } from './routes/backup.js';
import { powerRoutes } from './routes/power.js';
import { updateRoutes } from './routes/update.js';
import { tlsRoutes } from './routes/tls.js';
import { fillNamespace, type FillResult, type FillSpec } from './fill.js';
import { RequestHolds, type HoldPattern, type RequestHold } from './request-holds.js';

export interface SimulatorOptions {
  host?: string;
  port?: number;
  /** Persist state here (kv.json, device.json); absent = memory only. */
  dataDir?: string;
  /** With dataDir: write every change to disk before answering (a SIGKILL loses nothing acknowledged). Default false. */
  durable?: boolean;
  /** ms per operation name: sign, decrypt, encrypt, generate, import, backup, restore-per-entry, … */
  latency?: LatencyTable;
  /**
   * Capacity model (docs/simulator.md): at most this many operations in service at once, each holding a slot for its
   * latency, the others queued FIFO. Absent (the default): latency is a sleep with no contention.
   */
  deviceSlots?: number;
  /**
   * Told, with deviceSlots, how long each operation waited for a slot (ms), after it was served: the queueing that
   * other load adds at the device, which a benchmark can compare without the client machine's own CPU noise.
   */
  onSlotWait?: (op: string, waitedMs: number) => void;
  /** scrypt parameters for backup keys (default production). */
  backupScrypt?: KdfParams;
  /** scrypt parameters for the unlock key (default production). */
  unlockScrypt?: KdfParams;
  logger?: Logger;
  /** PEM of the RSA public key update images must be signed with (default: the firmware's test key, see update/key.ts). */
  updateKeyPem?: string;
  /** How long a reboot or factory reset keeps the simulator unreachable (default 0). */
  rebootDelayMs?: number;
  /** Told after every power change: `off` after shutdown (and during a reboot), `on` after a boot. */
  onPowerChange?: (state: PowerState, reason: PowerReason) => void;
}

export interface RunningSimulator {
  url: string;
  apiUrl: string;
  port: number;
  /** The server certificate served now (PEM); changes with `/config/tls/*` and at boot. */
  readonly certPem: string;
  /** SHA-256 fingerprint of {@link certPem}. */
  readonly fingerprint256: string;
  /** `off` after `POST /system/shutdown` (and briefly during a reboot or factory reset). */
  readonly power: PowerState;
  /** Completed boots: 1 after start, +1 per reboot, factory reset, commit-update or power-on. */
  readonly boots: number;
  /** Restores applied (full or partial) since this process started the simulator: tests count them. */
  readonly restores: number;
  /** Backups served (`POST /system/backup` streams started) since this process started the simulator: tests count them. */
  readonly backups: number;
  /** Boots a shut-down simulator (a no-op while on): Locked, Operational with unattended boot, or Unprovisioned. */
  powerOn(): Promise<void>;
  /** Resolves once `n` boots have completed (read `boots`, trigger a reboot, wait for `boots + 1`). */
  waitForBoot(n: number): Promise<void>;
  /**
   * Bulk fill (`--fill`, src/sim/fill.ts): `spec.count` keys in `spec.namespace`, served as imported keys. Rejects
   * (nothing written) when the device is not Operational or the namespace does not exist.
   */
  fill(spec: FillSpec): Promise<FillResult>;
  /**
   * Test hook (src/sim/request-holds.ts; in-process only, never reachable over HTTP): from now on requests matching
   * `pattern` wait unanswered until the hold releases them, e.g. `sim.hold({ method: 'PUT', path: /^\/api\/v1\/keys\// })`.
   * A request goes to the first open hold that matches it. Close the hold (or the simulator) when done.
   */
  hold(pattern: HoldPattern): RequestHold;
  /** Idempotent: stops listening, drops connections, flushes state to the data directory. */
  close(): Promise<void>;
}

const HOURLY = 3_600_000;

async function holdSlot(slots: DeviceSlots, op: string, ms: number, told?: (op: string, waitedMs: number) => void): Promise<void> {
  const waited = await slots.hold(ms);
  told?.(op, waited);
}

/** Starts a simulator. Throws when the data directory holds unreadable state, the update key is bad or the port is taken. */
export async function startSimulator(options: SimulatorOptions = {}): Promise<RunningSimulator> {
  const latency = options.latency ?? {};
  checkLatencyTable(latency);
  const slots = options.deviceSlots === undefined ? undefined : new DeviceSlots(options.deviceSlots);
  if (options.rebootDelayMs !== undefined && !(Number.isFinite(options.rebootDelayMs) && options.rebootDelayMs >= 0)) {
    throw new Error('rebootDelayMs must be a non-negative number of ms');
  }
  const updateKey = parseUpdateKey(options.updateKeyPem ?? TEST_UPDATE_KEY_PEM);
  const kv = await KvStore.open(options.dataDir, { durable: options.durable === true });
  const identity = await loadIdentity(options.dataDir);
  const device = new Device(kv, identity, options.unlockScrypt ?? PRODUCTION_KDF);
  const sim: SimCore = {
    device,
    users: new UserStore(device),
    namespaces: new NamespaceStore(device),
    keys: new KeyStore(device),
    metrics: new SimMetrics(),
    limiter: new FailureRateLimiter(),
    backupKdf: options.backupScrypt ?? PRODUCTION_KDF,
    logger: options.logger ?? silentLogger,
    tls: await loadOrCreateTlsIdentity(device),
    // Both replaced below, once the listener and the power control exist.
    serveTls: () => undefined,
    power: { reboot: () => Promise.resolve(), shutdown: () => Promise.resolve(), factoryReset: () => Promise.resolve() },
    updateKey,
    pendingUpdate: undefined,
    delay: slots ? (op) => holdSlot(slots, op, latency[op] ?? 0, options.onSlotWait) : (op) => sleep(latency[op] ?? 0),
    restoreInProgress: false,
    restoresApplied: 0,
    backupsServed: 0,
  };

  const router = new Router(sim);
  router.add(
    ...systemRoutes(),
    ...powerRoutes(),
    ...updateRoutes(),
    ...configRoutes(),
    ...tlsRoutes(),
    ...namespaceRoutes(),
    ...userRoutes(),
    ...keyRoutes(),
    ...backupRoutes(),
  );
  const host = options.host ?? '127.0.0.1';
  const holds = new RequestHolds();
  const listener = new SimListener((req, res) => holds.admit(req, res, () => void router.handle(req, res)), sim.tls, host, options.port ?? 0);
  sim.serveTls = (id) => {
    sim.tls = id;
    listener.setIdentity(id);
  };
  const power = new PowerControl(sim, listener, {
    ...(options.rebootDelayMs === undefined ? {} : { rebootDelayMs: options.rebootDelayMs }),
    ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
    ...(options.onPowerChange === undefined ? {} : { onChange: options.onPowerChange }),
  });
  sim.power = power;
  await power.start();
  const flushTimer = setInterval(() => sim.keys.flushOperations(), HOURLY);
  flushTimer.unref();

  const port = listener.port;
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  let closing: Promise<void> | undefined;
  sim.logger.info({ url, deviceId: device.deviceId }, 'simulator listening');
  return {
    url,
    apiUrl: `${url}/api/v1`,
    port,
    get certPem() {
      return sim.tls.certPem;
    },
    get fingerprint256() {
      return sim.tls.fingerprint256;
    },
    get power() {
      return power.state;
    },
    get boots() {
      return power.boots;
    },
    get restores() {
      return sim.restoresApplied;
    },
    get backups() {
      return sim.backupsServed;
    },
    powerOn: () => power.powerOn(),
    waitForBoot: (n) => power.waitForBoot(n),
    fill: (spec) => fillNamespace(sim, spec),
    hold: (pattern) => holds.open(pattern),
    close: () => {
      closing ??= (async () => {
        clearInterval(flushTimer);
        holds.abandonAll();
        await power.close();
        sim.limiter.close();
        sim.keys.flushOperations();
        await kv.flush();
      })();
      return closing;
    },
  };
}
