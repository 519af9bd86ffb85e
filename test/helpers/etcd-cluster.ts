/**
 * A real etcd cluster on loopback for tests (Debian's `etcd-server`, 3.4.x: binary `etcd`): one member per site plus
 * a witness, each a child process with its data directory in a temp dir. Ports are below the ephemeral range
 * (32768+), picked at random per cluster and retried on a clash. Tests that find no binary skip and say so
 * (`etcdBinary` undefined).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { noop } from 'cockatiel';

/** The etcd binary on PATH, or undefined (tests skip, naming this). */
export const etcdBinary: string | undefined = (() => {
  const r = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' });
  const bin = r.status === 0 ? r.stdout.trim() : '';
  return bin ? bin : undefined;
})();

export interface EtcdMember {
  readonly name: string;
  /** Fixed, except that a restarted member behind proxies may move (see {@link EtcdClusterOptions.onMemberMoved}). */
  clientPort: number;
  peerPort: number;
  clientUrl: string;
  /** The peer port the others dial (a proxy's, see {@link EtcdClusterOptions.advertisePeerPort}); else peerPort. */
  advertisedPeerPort: number;
  child: ChildProcess | undefined;
  logs: string;
}

export interface EtcdClusterOptions {
  /**
   * Called once per member before it starts, with its real peer port: returns the port the other members shall dial
   * instead (a fault-suite proxy in front of the member's peer listener, so a nemesis can cut it). Default: the real port.
   */
  advertisePeerPort?: (name: string, peerPort: number) => Promise<number>;
  /**
   * With `advertisePeerPort` (the other members dial a proxy, not the member): a member that cannot come back on its
   * ports at a restart (another process took one while it was down) restarts on fresh ones, and this hears of it, to
   * point the proxies there. Without it such a restart throws: the peers and clients name the member's ports.
   */
  onMemberMoved?: (member: Readonly<EtcdMember>) => Promise<void> | void;
  /** Appends each member's stderr to `<logDir>/etcd-<name>.log` (besides the in-memory tail). */
  logDir?: string;
  /** Raft timing (default 50 ms / 500 ms: fast elections keep the tests short; etcd's own defaults are 100 / 1000). */
  heartbeatMs?: number;
  electionMs?: number;
}

export class EtcdCluster {
  readonly members: EtcdMember[];
  private readonly dir: string;

  private constructor(
    names: readonly string[],
    basePort: number,
    private readonly options: EtcdClusterOptions,
  ) {
    this.dir = mkdtempSync(path.join(tmpdir(), 'nhr-etcd-'));
    this.members = names.map((name, i) => {
      const clientPort = basePort + 2 * i;
      return { name, clientPort, peerPort: clientPort + 1, advertisedPeerPort: clientPort + 1, clientUrl: `http://127.0.0.1:${clientPort}`, child: undefined, logs: '' };
    });
  }

  /**
   * Starts `names` (default: two sites and a witness) as one new cluster and waits (bounded) until it has a leader.
   * Throws when no etcd binary exists or the cluster does not come up.
   */
  static async start(names: readonly string[] = ['berlin', 'hamburg', 'witness'], options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
    if (!etcdBinary) throw new Error('no etcd binary on PATH (apt-get install etcd-server)');
    let lastErr: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const base = randomBasePort();
      const cluster = new EtcdCluster(names, base, options);
      try {
        if (options.advertisePeerPort) for (const m of cluster.members) m.advertisedPeerPort = await options.advertisePeerPort(m.name, m.peerPort);
        for (const m of cluster.members) cluster.spawn(m);
        await cluster.waitHealthy(20_000);
        cluster.assertAllRunning();
        return cluster;
      } catch (err) {
        lastErr = err;
        await cluster.stop();
      }
    }
    throw new Error(`etcd cluster did not start: ${String(lastErr)}`);
  }

  member(name: string): EtcdMember {
    const m = this.members.find((x) => x.name === name);
    if (!m) throw new Error(`no etcd member ${name}`);
    return m;
  }

  endpoints(names: readonly string[] = this.members.map((m) => m.name)): string[] {
    return names.map((n) => this.member(n).clientUrl);
  }

  private spawn(m: EtcdMember, state: 'new' | 'existing' = 'new'): void {
    const initialCluster = this.members.map((x) => `${x.name}=http://127.0.0.1:${x.advertisedPeerPort}`).join(',');
    const args = [
      `--name=${m.name}`,
      `--data-dir=${path.join(this.dir, m.name)}`,
      `--listen-client-urls=${m.clientUrl}`,
      `--advertise-client-urls=${m.clientUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${m.advertisedPeerPort}`,
      `--initial-cluster=${initialCluster}`,
      `--initial-cluster-state=${state}`,
      '--initial-cluster-token=nhr-test',
      // Loopback: fast elections keep the tests short; production keeps etcd's defaults (docs/failover.md).
      `--heartbeat-interval=${this.options.heartbeatMs ?? 50}`,
      `--election-timeout=${this.options.electionMs ?? 500}`,
      '--logger=zap',
      '--log-level=warn',
    ];
    m.logs = '';
    const child = spawn(etcdBinary!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const logFile = this.options.logDir ? path.join(this.options.logDir, `etcd-${m.name}.log`) : undefined;
    child.stderr!.on('data', (d: Buffer) => {
      m.logs = (m.logs + d.toString()).slice(-20_000);
      if (logFile) appendFileSync(logFile, d);
    });
    m.child = child;
  }

  /** Waits until every running member answers and the cluster has a leader. */
  private async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const m of this.members) {
      for (;;) {
        if (m.child?.exitCode !== null && m.child?.exitCode !== undefined) throw new Error(`etcd ${m.name} exited: ${m.logs.slice(-2000)}`);
        if (await portOpen(m.clientPort)) break;
        if (Date.now() > deadline) throw new Error(`etcd ${m.name} did not listen in time: ${m.logs.slice(-2000)}`);
        await sleep(50);
      }
    }
    const client = new Etcd3({ hosts: this.endpoints(), dialTimeout: 2_000 });
    try {
      for (;;) {
        try {
          await client.put('/nhr-test/ready').value('1').exec();
          return;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await sleep(100);
        }
      }
    } finally {
      client.close();
    }
  }

  /**
   * Throws when a member exited. A member whose port another process holds exits at once (address in use), yet the
   * others can form a quorum without it, and `waitHealthy`'s check of its port may have reached that other process:
   * the start would return a cluster short of a member.
   */
  private assertAllRunning(): void {
    const gone = this.members.filter((m) => !this.running(m.name));
    if (gone.length > 0) throw new Error(`etcd ${gone.map((m) => m.name).join(', ')} exited: ${gone.map((m) => m.logs.slice(-2000)).join('\n')}`);
  }

  /** Whether the member's process is running. */
  running(name: string): boolean {
    const c = this.member(name).child;
    return c !== undefined && c.exitCode === null && c.signalCode === null;
  }

  /** SIGSTOPs a member: its ports still accept connections, nothing answers (a hung or cut-off member). */
  pause(name: string): void {
    this.member(name).child?.kill('SIGSTOP');
  }

  /** SIGCONTs a paused member. */
  resume(name: string): void {
    this.member(name).child?.kill('SIGCONT');
  }

  /**
   * Waits (bounded) until every running member serves a linearizable read itself: each is connected to a leader that
   * has a quorum, so the cluster is whole again after a partition heals or a member restarts (a member that rejoined
   * may still be catching up for seconds, and until then killing another leaves no majority). Returns the ms waited;
   * throws naming the members that did not answer in time.
   */
  async waitWhole(timeoutMs: number): Promise<number> {
    const t0 = Date.now();
    const members = this.members.filter((m) => this.running(m.name));
    const pending = new Set(members.map((m) => m.name));
    while (pending.size > 0) {
      await Promise.all(
        members.filter((m) => pending.has(m.name)).map(async (m) => {
          const c = new Etcd3({ hosts: [m.clientUrl], dialTimeout: 1_000, faultHandling: { host: () => noop, global: noop } });
          try {
            await c.get('/nhr-test/whole').options({ deadline: Date.now() + 1_000 }).string();
            pending.delete(m.name);
          } catch {
            // not yet: asked again below
          } finally {
            c.close();
          }
        }),
      );
      if (pending.size === 0) break;
      if (Date.now() - t0 > timeoutMs) throw new Error(`etcd not whole after ${timeoutMs} ms: ${[...pending].join(', ')} serve no linearizable read`);
      await sleep(100);
    }
    return Date.now() - t0;
  }

  /** Stops one member (SIGKILL: a lost site), keeping its data. */
  async kill(name: string): Promise<void> {
    const m = this.member(name);
    const c = m.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGCONT');
    c.kill('SIGKILL');
    await exited;
  }

  /**
   * Restarts a stopped member with its data (a site coming back). When another process took one of its ports while
   * it was down it exits at once; with `onMemberMoved` it then comes back on fresh ports (at most 3 moves), else this throws.
   */
  async restart(name: string): Promise<void> {
    const m = this.member(name);
    for (let moves = 0; ; moves++) {
      try {
        return await this.restartOnce(m);
      } catch (err) {
        if (!this.options.onMemberMoved || !this.options.advertisePeerPort || moves >= 3 || !/address already in use/.test(m.logs)) throw err;
        await this.kill(name);
        const base = randomBasePort();
        Object.assign(m, { clientPort: base, peerPort: base + 1, clientUrl: `http://127.0.0.1:${base}` });
        process.stderr.write(`etcd ${name}: a port of it was taken while it was down; restarting it on ${base}/${base + 1}\n`);
        await this.options.onMemberMoved(m);
      }
    }
  }

  private async restartOnce(m: EtcdMember): Promise<void> {
    const name = m.name;
    this.spawn(m, 'existing');
    const deadline = Date.now() + 20_000;
    // Exited (a port taken) or listening: a port that answers while the member is gone is another process's.
    for (;;) {
      if (!this.running(name)) throw new Error(`etcd ${name} exited at its restart: ${m.logs.slice(-2000)}`);
      if (await portOpen(m.clientPort)) break;
      if (Date.now() > deadline) throw new Error(`etcd ${name} did not come back: ${m.logs.slice(-2000)}`);
      await sleep(50);
    }
    // Back in the cluster: a linearizable write through this member alone goes through.
    const client = new Etcd3({ hosts: [m.clientUrl], dialTimeout: 2_000 });
    try {
      for (;;) {
        try {
          await client.put('/nhr-test/ready').value(name).exec();
          return;
        } catch (err) {
          if (!this.running(name)) throw new Error(`etcd ${name} exited at its restart: ${m.logs.slice(-2000)}`, { cause: err });
          if (Date.now() > deadline) throw err;
          await sleep(100);
        }
      }
    } finally {
      client.close();
    }
  }

  /** Stops every member and removes the data directories. Idempotent. */
  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => this.kill(m.name)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A cluster's first client port (members take it and the ports after it), below the ephemeral range. */
function randomBasePort(): number {
  return 20_000 + 2 * Math.floor(Math.random() * 5_000);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
