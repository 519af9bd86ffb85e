/**
 * The simulated box's power: boot, reboot, shutdown, factory reset and power-on (FACTS-system §1.1–1.3).
 *
 * - Boot: RAM state starts empty (pending update, rate-limit table, metrics), the device state comes from the store
 *   (Unprovisioned, Locked, or Operational with unattended boot) and the TLS identity is read from the store.
 * - Reboot: operation counters flushed, listener off (connections dropped), `rebootDelayMs`, boot, listener on.
 * - Shutdown: counters flushed, listener off, and it stays off: the process keeps running and `powerOn()`
 *   (the `sim` command: SIGHUP) boots it again, like pressing the power button.
 * - Factory reset: listener off, the whole store wiped and a new device key made (the device id stays), then boot:
 *   Unprovisioned, with a fresh TLS certificate and the default network and logging.
 * Transitions run one at a time, in the order asked.
 */
import { randomFillSync } from 'node:crypto';
import type { SimCore } from './context.js';
import type { SimListener } from './listener.js';
import { saveIdentity } from './device.js';
import { FailureRateLimiter } from './rate-limit.js';
import { SimMetrics } from './metrics.js';
import { sleep } from './latency.js';
import { loadOrCreateTlsIdentity } from './tls-identity.js';
import { readNetworkConfig } from './local-config.js';

export type PowerState = 'on' | 'off';
/** Why the power changed: the first start, an API call, or `powerOn()`. */
export type PowerReason = 'start' | 'reboot' | 'shutdown' | 'factory-reset' | 'commit-update' | 'power-on';

export interface PowerOptions {
  /** Time the box stays unreachable during a reboot or factory reset (default 0). */
  rebootDelayMs?: number;
  /** Where the device identity is kept (a factory reset rewrites its key there). */
  dataDir?: string;
  /** Told after every change (for the `sim` command's output). */
  onChange?: (state: PowerState, reason: PowerReason) => void;
}

export class PowerControl {
  state: PowerState = 'off';
  /** Completed boots (1 after the first start). */
  boots = 0;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly bootWaiters: Array<{ n: number; resolve: () => void }> = [];

  constructor(
    private readonly sim: SimCore,
    private readonly listener: SimListener,
    private readonly options: PowerOptions = {},
  ) {}

  /** Boots and starts listening (the first start). */
  start(): Promise<void> {
    return this.serialize(() => this.on('start'));
  }

  /** Reboot (also the end of `commit-update`): comes back Locked, or Operational with unattended boot. */
  reboot(reason: 'reboot' | 'commit-update' = 'reboot'): Promise<void> {
    return this.serialize(async () => {
      this.sim.keys.flushOperations();
      await this.off(reason);
      await sleep(this.options.rebootDelayMs ?? 0);
      await this.on(reason);
    });
  }

  /** Stops serving until `powerOn()`. */
  shutdown(): Promise<void> {
    return this.serialize(async () => {
      this.sim.keys.flushOperations();
      await this.off('shutdown');
    });
  }

  /** Wipes everything but the device id and comes back Unprovisioned. Operation counters are not flushed. */
  factoryReset(): Promise<void> {
    return this.serialize(async () => {
      await this.off('factory-reset');
      await this.wipe();
      await sleep(this.options.rebootDelayMs ?? 0);
      await this.on('factory-reset');
    });
  }

  /** Boots a shut-down simulator; a no-op while it is on. Rejects when the port cannot be bound again. */
  powerOn(): Promise<void> {
    return this.serialize(async () => {
      if (this.state === 'off') await this.on('power-on');
    });
  }

  /** Resolves once `n` boots have completed (read `boots` before triggering a reboot, wait for `boots + 1`). */
  waitForBoot(n: number): Promise<void> {
    if (this.boots >= n) return Promise.resolve();
    return new Promise((resolve) => this.bootWaiters.push({ n, resolve }));
  }

  /** Stops the listener for good (simulator close): transitions asked for later do nothing. */
  close(): Promise<void> {
    return this.serialize(async () => {
      this.closed = true;
      await this.listener.stop();
    });
  }

  private serialize(step: () => Promise<void>): Promise<void> {
    const run = this.queue.then(() => (this.closed ? undefined : step()));
    this.queue = run.catch((err: unknown) => this.sim.logger.error({ err }, 'simulator power transition failed'));
    return run;
  }

  private async off(reason: PowerReason): Promise<void> {
    await this.listener.stop();
    this.state = 'off';
    await this.sim.device.kv.flush();
    this.options.onChange?.('off', reason);
  }

  private async on(reason: PowerReason): Promise<void> {
    await this.boot();
    await this.listener.start();
    this.state = 'on';
    this.boots++;
    this.options.onChange?.('on', reason);
    for (const w of this.bootWaiters.filter((x) => x.n <= this.boots)) {
      this.bootWaiters.splice(this.bootWaiters.indexOf(w), 1);
      w.resolve();
    }
  }

  /** What a fresh keyfender process starts with: empty RAM state, the stored state and TLS identity. */
  private async boot(): Promise<void> {
    const { sim } = this;
    sim.pendingUpdate = undefined;
    sim.restoreInProgress = false;
    sim.limiter.close();
    sim.limiter = new FailureRateLimiter();
    sim.metrics = new SimMetrics();
    sim.keys.dropPendingOperations();
    const { device } = sim;
    if (!device.kv.has('/.initialized')) device.kv.set('/.initialized', Buffer.alloc(0));
    readNetworkConfig(device); // the firmware writes the default network at boot when none is stored
    device.boot();
    sim.tls = await loadOrCreateTlsIdentity(device);
    this.listener.setIdentity(sim.tls);
  }

  /** The data partition reformatted: every KV entry gone, a new device key (persisted when there is a data dir). */
  private async wipe(): Promise<void> {
    const { device } = this.sim;
    device.setDomainKey(undefined);
    device.kv.clear();
    randomFillSync(device.identity.deviceKey);
    if (this.options.dataDir !== undefined) await saveIdentity(this.options.dataDir, device.identity);
    await device.kv.flush();
  }
}
