/**
 * One site of a fault run as real processes: a NetHSM simulator (`nethsm-replicator sim --durable`) and a daemon
 * (`nethsm-replicator daemon --config …`), plus the proxies in front of its gateway and of its NetHSM. The daemon's
 * config (written by the lab, rewritten by the cluster) points at the proxies, so the nemesis can cut them.
 *
 * Ports: every process listens on a port the system picks (port 0) and says which (the simulator's `listening on`
 * line, the daemon's `daemon started` line); each start points the proxies in front of it there. No port is picked
 * first and bound later, so a concurrent run (or any process) cannot take one in between; a restart may come up on
 * another port, which its proxies follow.
 */
import path from 'node:path';
import { AdminClient } from '../../src/admin/client.js';
import type { DaemonStatus } from '../../src/daemon/status.js';
import { LAB_PASSPHRASES } from '../../src/lab/lab.js';
import { NetHsmClient } from '../../src/nethsm/client.js';
import { NodeChild } from './child.js';
import type { LinkProxy } from './proxy.js';

/** Where the processes listen now (0 before the first start): set at each start from what the process says. */
export interface SitePorts {
  /** The simulator's real port. */
  sim: number;
  /** The daemon's peer API's real port. */
  peer: number;
  /** The daemon's gateway's real port. */
  gateway: number;
  /** The daemon's health/role endpoint (plain HTTP). */
  health: number;
}

/** The daemon's `daemon started` log line: it names the ports it bound (daemon.ts). */
const DAEMON_STARTED = /^\{.*"msg":"daemon started".*\}\n/m;

const READY_TIMEOUT_MS = 45_000;

export class Site {
  readonly sim: NodeChild;
  readonly daemon: NodeChild;
  simFingerprint = '';
  /** The nemesis locked the NetHSM (POST /lock) and has not unlocked it yet. */
  lockedByNemesis = false;
  readonly ports: SitePorts = { sim: 0, peer: 0, gateway: 0, health: 0 };
  /** The other sites' links to this site's peer API (set by the cluster): they follow its port. */
  inboundPeerLinks: LinkProxy[] = [];

  constructor(
    readonly name: string,
    /** The lab's directory of this site (config.yaml, state/, sim/). */
    readonly dir: string,
    /** Applications' way in (client → gateway) and the daemon's way to its NetHSM (daemon and gateway → NetHSM). */
    readonly proxies: { gateway: LinkProxy; device: LinkProxy },
    logDir: string,
  ) {
    this.sim = new NodeChild(
      `sim ${name}`,
      ['sim', '--port', '0', '--host', '127.0.0.1', '--data-dir', path.join(dir, 'sim'), '--test-scrypt', '--durable'],
      path.join(logDir, `sim-${name}.log`),
      { NHR_LOG_LEVEL: 'warn' },
    );
    this.daemon = new NodeChild(`daemon ${name}`, ['daemon', '--config', this.configPath], path.join(logDir, `daemon-${name}.log`), {
      NHR_UNSAFE_TEST_SCRYPT: '1',
      NHR_LOG_LEVEL: 'info',
    });
  }

  get configPath(): string {
    return path.join(this.dir, 'config.yaml');
  }

  get stateDir(): string {
    return path.join(this.dir, 'state');
  }

  get quarantineDir(): string {
    return path.join(this.stateDir, 'quarantine');
  }

  /** Applications' URL: the gateway through its proxy. */
  get gatewayUrl(): string {
    return `https://127.0.0.1:${this.proxies.gateway.port}`;
  }

  /** The simulator's own URL, for the operator's direct calls (lock, unlock, the final audit): never proxied. */
  get simUrl(): string {
    return `https://127.0.0.1:${this.ports.sim}`;
  }

  /** Starts the simulator and unlocks it when it comes back Locked (a restarted NetHSM without unattended boot). */
  async startSim(): Promise<void> {
    const m = await this.sim.start(/listening on https:\/\/127\.0\.0\.1:(\d+)\nfingerprint ([0-9A-F:]+)/, READY_TIMEOUT_MS);
    this.ports.sim = Number(m[1]);
    this.simFingerprint = m[2]!;
    this.proxies.device.targetPort = this.ports.sim;
    if (!this.lockedByNemesis) await this.unlock();
  }

  /** Starts the daemon (its config listens on port 0 everywhere) and points its proxies at the ports it bound. */
  async startDaemon(): Promise<void> {
    const line = JSON.parse((await this.daemon.start(DAEMON_STARTED, READY_TIMEOUT_MS))[0]) as { peerPort?: number; healthPort?: number; gatewayPort?: number };
    if (!line.peerPort || !line.healthPort || !line.gatewayPort) throw new Error(`${this.daemon.name} did not say where it listens: ${JSON.stringify(line)}`);
    Object.assign(this.ports, { peer: line.peerPort, health: line.healthPort, gateway: line.gatewayPort });
    this.proxies.gateway.targetPort = this.ports.gateway;
    for (const l of this.inboundPeerLinks) l.targetPort = this.ports.peer;
  }

  /** A client of the simulator as `user` (default the root Administrator), with a short timeout. Close it. */
  simClient(user = 'admin', password: string = LAB_PASSPHRASES.admin, timeoutMs = 5_000): NetHsmClient {
    return new NetHsmClient({ url: this.simUrl, tls: { fingerprint256: this.simFingerprint }, auth: { username: user, password }, timeoutMs });
  }

  /** Unlocks the NetHSM when it is Locked; bounded retries (the unlock rate limit answers 429 for a second). */
  async unlock(): Promise<void> {
    const c = this.simClient();
    try {
      for (let attempt = 0; attempt < 10; attempt++) {
        try {
          if ((await c.healthState()) !== 'Locked') return;
          await c.unlock(LAB_PASSPHRASES.unlock);
          return;
        } catch (err) {
          if (attempt === 9) throw err;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    } finally {
      await c.close();
    }
  }

  /** POST /lock as the root Administrator. */
  async lock(): Promise<void> {
    const c = this.simClient();
    try {
      await c.lock();
    } finally {
      await c.close();
    }
  }

  /** The daemon's status (what `status --json` prints), through its admin socket; rejects after `timeoutMs`. */
  async status(timeoutMs = 2_000): Promise<DaemonStatus> {
    return new AdminClient({ socketPath: path.join(this.stateDir, 'admin.sock'), timeoutMs }).status<DaemonStatus>();
  }

  /** GET http://127.0.0.1:<health>/<what> → HTTP status, or 0 when it did not answer within 2 s. */
  async health(what: string): Promise<number> {
    // A daemon that is not running answers nothing, whatever another process may have bound its old port since.
    if (!this.daemon.running) return 0;
    try {
      const res = await fetch(`http://127.0.0.1:${this.ports.health}${what}`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      return res.status;
    } catch {
      return 0;
    }
  }
}
