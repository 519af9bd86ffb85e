/**
 * The NetHSM simulator: a real HTTPS server serving `/api/v1` as FACTS.md describes, over a KV store kept as the
 * firmware keeps it. See docs/simulator.md.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
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
import { Router } from './router.js';
import { loadOrCreateTlsIdentity } from './tls-identity.js';
import { readNetworkConfig } from './local-config.js';
import type { SimCore } from './context.js';
import { systemRoutes } from './routes/system.js';
import { configRoutes } from './routes/config.js';
import { userRoutes } from './routes/users.js';
import { namespaceRoutes } from './routes/namespaces.js';
import { keyRoutes } from './routes/keys.js';
import { backupRoutes } from './routes/backup.js';

export interface SimulatorOptions {
  host?: string;
  port?: number;
  /** Persist state here (kv.json, device.json); absent = memory only. */
  dataDir?: string;
  /** With dataDir: write every change to disk before answering (a SIGKILL loses nothing acknowledged). Default false. */
  durable?: boolean;
  /** ms per operation name: sign, decrypt, encrypt, generate, import, backup, restore-per-entry, … */
  latency?: LatencyTable;
  /** scrypt parameters for backup keys (default production). */
  backupScrypt?: KdfParams;
  /** scrypt parameters for the unlock key (default production). */
  unlockScrypt?: KdfParams;
  logger?: Logger;
}

export interface RunningSimulator {
  url: string;
  apiUrl: string;
  port: number;
  certPem: string;
  fingerprint256: string;
  /** Idempotent: stops listening, drops connections, flushes state to the data directory. */
  close(): Promise<void>;
}

const HOURLY = 3_600_000;

/** Starts a simulator. Throws when the data directory holds unreadable state or the port is taken. */
export async function startSimulator(options: SimulatorOptions = {}): Promise<RunningSimulator> {
  const latency = options.latency ?? {};
  checkLatencyTable(latency);
  const kv = await KvStore.open(options.dataDir, { durable: options.durable === true });
  const identity = await loadIdentity(options.dataDir);
  const device = new Device(kv, identity, options.unlockScrypt ?? PRODUCTION_KDF);
  const tls = await loadOrCreateTlsIdentity(device);
  if (!kv.has('/.initialized')) kv.set('/.initialized', Buffer.alloc(0));
  readNetworkConfig(device); // the firmware writes the default network at boot when none is stored
  const limiter = new FailureRateLimiter();
  const sim: SimCore = {
    device,
    users: new UserStore(device),
    namespaces: new NamespaceStore(device),
    keys: new KeyStore(device),
    metrics: new SimMetrics(),
    limiter,
    backupKdf: options.backupScrypt ?? PRODUCTION_KDF,
    logger: options.logger ?? silentLogger,
    tls,
    delay: (op) => sleep(latency[op] ?? 0),
    restoreInProgress: false,
  };
  device.boot();

  const router = new Router(sim);
  router.add(...systemRoutes(), ...configRoutes(), ...namespaceRoutes(), ...userRoutes(), ...keyRoutes(), ...backupRoutes());

  const server = https.createServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => void router.handle(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const flushTimer = setInterval(() => sim.keys.flushOperations(), HOURLY);
  flushTimer.unref();

  const port = (server.address() as AddressInfo).port;
  const host = options.host ?? '127.0.0.1';
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  let closing: Promise<void> | undefined;
  sim.logger.info({ url, deviceId: device.deviceId }, 'simulator listening');
  return {
    url,
    apiUrl: `${url}/api/v1`,
    port,
    certPem: tls.certPem,
    fingerprint256: tls.fingerprint256,
    close: () => {
      closing ??= (async () => {
        clearInterval(flushTimer);
        limiter.close();
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeAllConnections();
        await closed;
        sim.keys.flushOperations();
        await kv.flush();
      })();
      return closing;
    },
  };
}
