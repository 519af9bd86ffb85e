/**
 * What every route handler may use: the device, its typed stores, metrics, latency, rate limiter, options, the
 * in-memory TLS identity, the pending update and the power actions. One instance per running simulator; a boot
 * replaces the RAM-only parts (metrics, rate limiter, pending update, TLS identity) in place.
 */
import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import type { Device } from './device.js';
import type { KdfParams } from './crypto.js';
import type { FailureRateLimiter } from './rate-limit.js';
import type { UserStore } from './users.js';
import type { NamespaceStore } from './namespaces.js';
import type { KeyStore } from './key-store.js';
import type { SimMetrics } from './metrics.js';
import type { TlsIdentity } from './tls-identity.js';
import type { PowerReason } from './power.js';

/** Power transitions a route may ask for (run after its answer has been sent). */
export interface PowerActions {
  reboot(reason?: Extract<PowerReason, 'reboot' | 'commit-update'>): Promise<void>;
  shutdown(): Promise<void>;
  factoryReset(): Promise<void>;
}

export interface SimCore {
  device: Device;
  users: UserStore;
  namespaces: NamespaceStore;
  keys: KeyStore;
  metrics: SimMetrics;
  limiter: FailureRateLimiter;
  backupKdf: KdfParams;
  logger: Logger;
  /** The in-memory TLS identity: what the listener serves and `/config/tls/*` reports (FACTS-system §2.7). */
  tls: TlsIdentity;
  /** Makes `identity` the in-memory one and serves it to new connections at once. */
  serveTls(identity: TlsIdentity): void;
  power: PowerActions;
  /** RSA key update images must be signed with. */
  updateKey: KeyObject;
  /** Release notes of an uploaded, not yet committed or cancelled update (RAM only, lost at boot). */
  pendingUpdate: Buffer | undefined;
  /** Sleeps the configured latency for an operation name (no-op when none). */
  delay(op: string): Promise<void>;
  /** Set while a restore runs: a second one is refused. */
  restoreInProgress: boolean;
  /** Restores applied since start (tests count device restores at the device, not in the daemon). */
  restoresApplied: number;
  /** Backups served (streams started) since start (tests count device backups at the device). */
  backupsServed: number;
}
