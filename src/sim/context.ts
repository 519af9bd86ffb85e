/**
 * What every route handler may use: the device, its typed stores, metrics, latency, rate limiter and options.
 * One instance per running simulator.
 */
import type { Logger } from 'pino';
import type { Device } from './device.js';
import type { KdfParams } from './crypto.js';
import type { FailureRateLimiter } from './rate-limit.js';
import type { UserStore } from './users.js';
import type { NamespaceStore } from './namespaces.js';
import type { KeyStore } from './key-store.js';
import type { SimMetrics } from './metrics.js';

export interface SimCore {
  device: Device;
  users: UserStore;
  namespaces: NamespaceStore;
  keys: KeyStore;
  metrics: SimMetrics;
  limiter: FailureRateLimiter;
  backupKdf: KdfParams;
  logger: Logger;
  /** The certificate the listener serves (PEM), for `/config/tls/cert.pem`. */
  tls: { certPem: string; keyPem: string };
  /** Sleeps the configured latency for an operation name (no-op when none). */
  delay(op: string): Promise<void>;
  /** Set while a restore runs: a second one is refused. */
  restoreInProgress: boolean;
}
