#!/usr/bin/env node
// Streaming replication under a sustained import load: two lab sites on loopback (simulators with appliance-like
// latency, two daemons, A's gateway), N EC P-256 JSON imports through A's gateway at concurrency C (optionally paced
// to R keys/s), and for each key the time from A's 2xx to its apply at B. The baseline is the rate of importing the
// same kind of keys directly into B's simulator at the same concurrency, into a namespace of its own (`bench`).
// Each site's simulator (`nethsm-replicator sim`) and daemon (`nethsm-replicator daemon --config`) run as processes of
// their own, as in a deployment; the load generator runs here. `--in-process` runs them all in this one process (one
// event loop) as before, e.g. to profile everything in one profile.
// Each of --rounds rounds (default 3) measures a direct run and then a replicated run back to back, so each ratio
// compares two runs under the same machine load; the summary is the median of the rounds. Before the first round,
// --warmup imports of the same kind per path (default 300, not measured) bring both paths to their steady state: V8's
// compiled code, the connection pools, and the daemons' SQLite WAL at its working size (a fresh WAL grows with every
// commit, and an fdatasync that extends a file costs a journal commit, ~10× one that overwrites; the WAL is reused
// from its start after each checkpoint, so a running daemon overwrites).
// Usage: npm run build && node bench/stream.mjs [--keys 300] [--concurrency 8] [--rate R] [--latency import=50ms,...]
//        [--warmup 300] [--rounds 3] [--in-process] [--logs DIR]  (process mode: the daemons' log lines into DIR)
//        [--daemon-node-flags=--max-semi-space-size=8]  process mode: node flags of the two daemons only (with `=`)
//        [--device-slots S]  process mode: both simulators with the capacity model (`sim --device-slots S`): at most S
//                       operations in service at once, each for its --latency, the rest queue. Then a device is the
//                       bound (S / 50 ms = 20·S imports/s at the default latency), as a NetHSM doing its crypto on its
//                       own hardware is, instead of this machine's CPU; both paths meet the same devices.
//        [--partition S [--lead L] [--tail T]]  process mode: instead of the direct/replicated rounds, each round
//                       streams steadily at --rate (default 50 keys/s here) through A's gateway for L s (default 10),
//                       then cuts B off from A's peer API for S s (a TCP proxy between them drops every connection and
//                       refuses new ones) while A keeps importing, then heals and streams T s more (default 10). Prints
//                       the backlog, B's reconnect, the drain (time and changes/s) and B's apply window over time.
//        [--profile P]  process mode: P is a directory for V8 CPU profiles of each simulator and daemon process (whole
//                       life, `node --cpu-prof`); in-process: P is the file for a profile of the last replicated run.
// Everything listens on 127.0.0.1 and is torn down at the end. Figures go to docs/benchmarks.md.
import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { Session } from 'node:inspector/promises';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { freePort, Lab, LAB_PASSPHRASES } from '../dist/lab/lab.js';
import { NetHsmClient } from '../dist/nethsm/client.js';
import { parseLatencySpec } from '../dist/sim/latency.js';
import { openDatabase, prepare } from '../dist/state/sqlite.js';
import { STATE_DB_FILE } from '../dist/state/store.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/nethsm-replicator');
const CLOCK_TICKS_PER_S = 100; // /proc/<pid>/stat counts CPU time in USER_HZ (100 on Linux)

// Appliance-like defaults: a key import and a private-key operation take tens of ms on a NetHSM; reads are cheap.
// `decrypt` is what the replica pays to unwrap each envelope's key with its transport key (RSA-OAEP).
const DEFAULT_LATENCY = 'import=50ms,sign=40ms,decrypt=40ms,key-get=2ms,key-list=2ms,key-delete=20ms,key-update=20ms';

const { values } = benchArgs(import.meta.url, {
  options: {
    keys: { type: 'string', default: '300' },
    warmup: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', short: 'c', default: '8' },
    rate: { type: 'string', default: '0' },
    latency: { type: 'string', default: DEFAULT_LATENCY },
    profile: { type: 'string' },
    'in-process': { type: 'boolean', default: false },
    logs: { type: 'string' },
    'daemon-node-flags': { type: 'string', default: '' },
    'device-slots': { type: 'string' },
    partition: { type: 'string', default: '0' },
    lead: { type: 'string', default: '10' },
    tail: { type: 'string', default: '10' },
  },
});
const N = positiveInt(values.keys, '--keys');
const WARMUP = Number(values.warmup);
if (!Number.isInteger(WARMUP) || WARMUP < 0) throw new Error('--warmup must be a whole number of keys (0: none)');
const ROUNDS = positiveInt(values.rounds, '--rounds');
const C = positiveInt(values.concurrency, '--concurrency');
const RATE = Number(values.rate);
if (!Number.isFinite(RATE) || RATE < 0) throw new Error('--rate must be a number of keys/s (0: as fast as the concurrency allows)');
// Operations left out of --latency keep the defaults, so `--latency import=100ms` changes only the import.
const IN_PROCESS = values['in-process'];
const PROFILE = values.profile === undefined ? undefined : path.resolve(values.profile);
const LOGS = values.logs === undefined ? undefined : path.resolve(values.logs);
if (LOGS) mkdirSync(LOGS, { recursive: true });
const LATENCY = { ...parseLatencySpec(DEFAULT_LATENCY), ...parseLatencySpec(values.latency) };
// Node flags for the daemon processes only (e.g. `--max-semi-space-size=8`), to measure what V8 heap flags cost the
// stream; the simulators and the load generator run without them.
const DAEMON_FLAGS = values['daemon-node-flags'].split(/\s+/).filter(Boolean);
// The simulators' capacity model (process mode only: the in-process lab's simulators have none).
const DEVICE_SLOTS = values['device-slots'] === undefined ? undefined : positiveInt(values['device-slots'], '--device-slots');
if (DEVICE_SLOTS !== undefined && IN_PROCESS) throw new Error('--device-slots needs process mode (the simulators as processes): drop --in-process');

// A partition phase: seconds B is cut off from A, and the steady stream's seconds before and after.
const PARTITION = Number(values.partition);
if (!Number.isFinite(PARTITION) || PARTITION < 0) throw new Error('--partition must be a number of seconds (0: no partition phase)');
if (PARTITION > 0 && IN_PROCESS) throw new Error('--partition needs process mode (B reaches A through a proxy): drop --in-process');
const LEAD = Number(values.lead);
const TAIL = Number(values.tail);
if (!(LEAD >= 0) || !(TAIL >= 0)) throw new Error('--lead and --tail must be numbers of seconds');
const STREAM_RATE = PARTITION > 0 && RATE === 0 ? 50 : RATE;

function positiveInt(v, name) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`);
  return n;
}

/** A fresh EC P-256 key as a NetHSM JSON import body (PrivateKey): the private scalar from the JWK `d`. */
function p256Body() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const d = Buffer.from(privateKey.export({ format: 'jwk' }).d, 'base64url');
  return { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: d.toString('base64') } };
}

/**
 * Runs `op(i)` for i in 0..n-1 with at most `concurrency` in flight; with `rate` > 0 request i does not start before
 * i/rate seconds (open-loop pacing). Returns per-request start/end (performance.now) and wall-clock end (Date.now).
 */
async function load(n, concurrency, rate, op) {
  const started = new Float64Array(n);
  const ended = new Float64Array(n);
  const endedWall = new Float64Array(n);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++;
        if (rate > 0) {
          const due = t0 + (i * 1000) / rate - performance.now();
          if (due > 0) await new Promise((r) => setTimeout(r, due));
        }
        started[i] = performance.now();
        await op(i);
        ended[i] = performance.now();
        endedWall[i] = Date.now();
      }
    }),
  );
  const seconds = (Math.max(...ended) - t0) / 1000;
  return { started, ended, endedWall, seconds, rate: n / seconds };
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function eventually(check, timeoutMs, what) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** CPU time (user + system, ms) a child process has used so far, from /proc (Linux). */
function cpuMsOf(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // after "pid (comm) ": state is fields[0]
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_S;
}

/**
 * Time (ms) the main thread of process `pid` ('self': this one) has spent runnable but waiting for a CPU, from
 * /proc/<pid>/schedstat (Linux; its second field, ns): what a loaded machine adds to every hop of a request.
 */
function waitMsOf(pid) {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e6;
}

/** Resolves with the output once `child` has printed a match of `marker` on `stream` (rejects when it exits first or after `timeoutMs`). */
function waitForOutput(child, stream, marker, what, timeoutMs = 60_000) {
  let text = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}:\n${text.slice(-2000)}`)), timeoutMs);
    const onData = (d) => {
      text += d.toString();
      if (marker.test(text)) {
        clearTimeout(timer);
        stream.off('data', onData);
        resolve(text);
      }
    };
    stream.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what}: the process exited (${code}) first:\n${text.slice(-2000)}`));
    });
  });
}

/** A child process handle: SIGTERM then wait (a --cpu-prof process writes its profile on that clean exit). Idempotent. */
function stopper(child) {
  const exited = new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
  return async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
}

function profFlags(name) {
  return PROFILE && !IN_PROCESS ? ['--cpu-prof', '--cpu-prof-dir', PROFILE, `--cpu-prof-name=${name}.cpuprofile`] : [];
}

/** `nethsm-replicator sim` as a process of its own, in memory, with the bench's latency table; for the lab. */
async function spawnSim(site, port, latency) {
  const spec = Object.entries(latency).map(([k, v]) => `${k}=${v}ms`).join(',');
  const args = [...profFlags(`sim-${site}`), CLI, 'sim', '--port', String(port), '--host', '127.0.0.1', '--test-scrypt', ...(spec ? ['--latency', spec] : []), ...(DEVICE_SLOTS ? ['--device-slots', String(DEVICE_SLOTS)] : [])];
  // warn: the simulator logs each request at info, which a NetHSM does not cost its clients.
  const child = spawn(process.execPath, args, { env: { ...process.env, NHR_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
  const out = await waitForOutput(child, child.stdout, /fingerprint \S+\n/, `simulator ${site}`);
  child.stdout.resume();
  pids.set(`sim ${site}`, child.pid);
  return { url: /listening on (\S+)/.exec(out)[1], fingerprint256: /fingerprint (\S+)/.exec(out)[1], close: stopper(child) };
}

/** A site's daemon as a process (`nethsm-replicator daemon --config`, as systemd runs it) on the lab's config. */
async function spawnDaemon(site) {
  const args = [...DAEMON_FLAGS, ...profFlags(`daemon-${site.name}`), CLI, 'daemon', '--config', path.join(site.dir, 'config.yaml')];
  const child = spawn(process.execPath, args, { env: { ...process.env, NHR_UNSAFE_TEST_SCRYPT: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
  const file = LOGS ? createWriteStream(path.join(LOGS, `daemon-${site.name}.log`), { flags: 'a' }) : undefined;
  if (file) child.stderr.pipe(file);
  const log = trackWarnings(`daemon ${site.name}`, child.stderr);
  await waitForOutput(child, child.stderr, /daemon started/, `daemon ${site.name} to start`);
  log.started();
  pids.set(`daemon ${site.name}`, child.pid);
  return stopper(child);
}

const warnings = new Map(); // "daemon a: message" → count, for log lines at warn or above after the start
/** Counts a daemon's JSON log lines at warn (40) or above into `warnings`, from `started()` on. */
function trackWarnings(name, stream) {
  let on = false;
  let rest = '';
  stream.on('data', (d) => {
    const lines = (rest + d.toString()).split('\n');
    rest = lines.pop() ?? '';
    if (!on) return;
    for (const l of lines) {
      const m = /"level":(\d+).*?"msg":"([^"]*)"/.exec(l);
      if (m && Number(m[1]) >= 40) warnings.set(`${name}: ${m[2]}`, (warnings.get(`${name}: ${m[2]}`) ?? 0) + 1);
    }
  });
  return { started: () => (on = true) };
}

/** Gives the gateway and health listeners fixed ports in a site's config (the lab's say 0: any). */
async function fixPorts(site) {
  const file = path.join(site.dir, 'config.yaml');
  const ports = { gateway: await freePort(), health: await freePort() };
  const text = (await readFile(file, 'utf8'))
    .replace('gateway: { listen: "127.0.0.1:0"', `gateway: { listen: "127.0.0.1:${ports.gateway}"`)
    .replace('health: { listen: "127.0.0.1:0" }', `health: { listen: "127.0.0.1:${ports.health}" }`);
  await writeFile(file, text, { mode: 0o600 });
  return ports;
}

/** A gauge's value for namespace alpha from a daemon's /metrics, or undefined. */
async function gaugeOf(healthPort, metric) {
  const res = await fetch(`http://127.0.0.1:${healthPort}/metrics`);
  const text = await res.text();
  const line = text.split('\n').find((l) => l.startsWith(`nethsm_replicator_${metric}{`) && l.includes('namespace="alpha"'));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/**
 * A TCP proxy on 127.0.0.1 to `targetPort`, for a partition between two sites: `cut()` drops every connection through
 * it and refuses new ones (closed at once, as an unreachable peer's connect fails) until `heal()`.
 */
async function partitionProxy(targetPort) {
  const sockets = new Set();
  let cut = false;
  const server = createServer((inbound) => {
    if (cut) return inbound.destroy();
    const outbound = connect(targetPort, '127.0.0.1');
    for (const [x, y] of [[inbound, outbound], [outbound, inbound]]) {
      sockets.add(x);
      x.on('error', () => y.destroy());
      x.on('close', () => {
        sockets.delete(x);
        y.destroy();
      });
      x.pipe(y);
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    cut: () => {
      cut = true;
      for (const s of sockets) s.destroy();
    },
    heal: () => (cut = false),
    close: () => new Promise((r) => (server.close(() => r()), [...sockets].forEach((s) => s.destroy()))),
  };
}

const pids = new Map(); // process name → pid (process mode), for CPU per process
// Interrupted: the simulators and daemons started here go too (the lab's directory stays in the temp dir).
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    for (const pid of pids.values()) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    process.exit(130);
  });
}
// The simulators keep their state in memory: a NetHSM does not write to the daemons' disk (a persisting simulator
// rewrites its whole store every 50 ms under writes, which slows the daemons' WAL syncs on the same disk).
const lab = await Lab.create({
  namespaces: [{ name: 'alpha', primary: 'a' }],
  gateway: true,
  latency: LATENCY,
  simPersistence: false,
  ...(IN_PROCESS ? {} : { startSimulator: spawnSim }),
});
const closers = [];
const stopDaemons = [];
try {
  const a = lab.site('a');
  const b = lab.site('b');
  await lab.startDaemons();
  // Both transport keys published and known to the peer, so every import travels in an envelope (not as a catch-up).
  // (The daemon ensures its transport key in the background after it starts: asked too early, it throws; ask again.)
  const published = (s) => s.daemon.stream.publicTransportKey().then(() => true, () => false);
  for (const s of [a, b]) await eventually(() => published(s), 60_000, `site ${s.name} to publish its transport key`);
  await eventually(async () => (await a.daemon.stream.recipients.refresh('b')) !== undefined, 60_000, "A to know B's transport key");
  await b.daemon.syncer.sync('alpha', { actor: 'bench' }); // the stream starts from the first snapshot's position

  // Process mode: the daemons set up above stop and run again as processes, on the same state and config.
  let gatewayPort;
  let healthB;
  let proxy;
  if (IN_PROCESS) {
    gatewayPort = a.daemon.ports.gateway;
  } else {
    for (const s of [a, b]) await s.stopDaemon();
    const [pa, pb] = [await fixPorts(a), await fixPorts(b)];
    gatewayPort = pa.gateway;
    healthB = pb.health;
    if (PARTITION > 0) {
      // B reaches A's peer API through a proxy the partition phase cuts (A reaches B directly).
      const file = path.join(b.dir, 'config.yaml');
      const text = await readFile(file, 'utf8');
      const m = /(name: a, url: "https:\/\/127\.0\.0\.1:)(\d+)"/.exec(text);
      if (!m) throw new Error("B's config names no peer API URL of A to put a proxy in front of");
      proxy = await partitionProxy(Number(m[2]));
      closers.push(proxy);
      await writeFile(file, text.replace(m[0], `${m[1]}${proxy.port}"`), { mode: 0o600 });
    }
    for (const s of [a, b]) stopDaemons.push(await spawnDaemon(s));
  }

  const latencyText = Object.entries(LATENCY).map(([k, v]) => `${k}=${v}ms`).join(', ');
  const layout = IN_PROCESS ? 'everything in one process' : 'simulators and daemons as processes of their own, load generator here';
  console.log(`node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}; ${layout}, on 127.0.0.1`);
  console.log(`simulator latency (both sites): ${latencyText}`);
  console.log(DEVICE_SLOTS ? `device model (both sites): ${DEVICE_SLOTS} operations in service at once, the rest queue (device-bound)` : 'device model: none (every operation sleeps its latency, no contention: this machine\'s CPU is the bound)');
  console.log(`N=${N} EC P-256 JSON imports per run, concurrency ${C}, ${RATE > 0 ? `paced at ${RATE} keys/s` : 'unpaced'}, after ${WARMUP} warm-up imports per path; ${ROUNDS} rounds of a direct then a replicated run`);

  // Baseline: the same imports straight into B's simulator (same device, latency, TLS server and process load as the
  // replicated run), as the Administrator of a namespace of its own, so the replica namespace is left untouched.
  const root = b.client();
  closers.push(root);
  await root.createUser({ realName: 'bench admin', role: 'Administrator', passphrase: LAB_PASSPHRASES.nsAdmin }, 'bench~admin');
  await root.createNamespace('bench');
  const direct = new NetHsmClient({ url: b.sim.url, tls: { fingerprint256: b.sim.fingerprint256 }, auth: { username: 'bench~admin', password: LAB_PASSPHRASES.nsAdmin }, connections: C });
  closers.push(direct);
  await direct.listKeys(); // connection warm-up
  if (WARMUP > 0) {
    const warm = Array.from({ length: WARMUP }, p256Body);
    await load(WARMUP, C, 0, (i) => direct.importKey(warm[i], `warmdirect${i}`));
  }
  // Replicated: the same load through A's gateway; B's apply times come from B's applied_changes (applied_at is
  // written in the transaction that follows the 2xx of B's NetHSM, i.e. when the key has just become usable at B).
  // In process mode the bench reads B's state database as a second connection (WAL: readers do not block the daemon).
  const gw = new NetHsmClient({ url: `https://127.0.0.1:${gatewayPort}`, tls: { caPem: lab.caPem }, auth: { username: 'alpha~admin', password: LAB_PASSPHRASES.nsAdmin }, connections: C });
  closers.push(gw);
  await gw.listKeys();
  const dbB = IN_PROCESS ? b.daemon.ctx.store.db : openDatabase(path.join(b.stateDir, STATE_DB_FILE));
  const appliedQuery = prepare(dbB, "SELECT key_id AS id, applied_at AS at FROM applied_changes WHERE namespace = 'alpha' AND kind = 'key-imported'");
  // A snapshot sync at B (e.g. after a member probe timed out on a loaded machine: a recovered member is resumed with a
  // sync) moves B's position past changes without applied_changes rows. Such keys count as applied when the bench
  // sees B's position at A's head with a sync newer than the run's start, and are reported as "by snapshot".
  const dbA = IN_PROCESS ? a.daemon.ctx.store.db : openDatabase(path.join(a.stateDir, STATE_DB_FILE));
  const headQuery = prepare(dbA, "SELECT max(seq) AS seq FROM change_log WHERE namespace = 'alpha'");
  const positionQuery = prepare(dbB, "SELECT seq, last_sync_at AS syncAt FROM replica_positions WHERE namespace = 'alpha'");
  /** Waits until B applied every key of `ids` (imported since `since`, ms); resolves with their apply times. */
  const appliedAtB = async (ids, since = 0) => {
    const applied = new Map();
    let bySnapshot = 0;
    const head = headQuery.get().seq;
    await eventually(
      () => {
        for (const r of appliedQuery.all()) if (ids.has(r.id)) applied.set(r.id, r.at);
        const pos = positionQuery.get();
        if (applied.size < ids.size && pos && pos.seq >= head && pos.syncAt >= since) {
          const now = Date.now();
          for (const id of ids) {
            if (applied.has(id)) continue;
            applied.set(id, now);
            bySnapshot++;
          }
        }
        return applied.size === ids.size;
      },
      600_000,
      'B to apply every import',
    );
    return Object.assign(applied, { bySnapshot });
  };
  if (WARMUP > 0) {
    const warm = Array.from({ length: WARMUP }, p256Body);
    await load(WARMUP, C, 0, (i) => gw.importKey(warm[i], `w${i}`));
    await appliedAtB(new Set(warm.map((_, i) => `w${i}`)));
  }

  /** CPU used so far and time spent waiting for a CPU (ms) per process: this one, and in process mode each simulator and daemon. */
  const cpuNow = () => {
    const u = process.cpuUsage();
    const out = { bench: [(u.user + u.system) / 1000, waitMsOf('self')] };
    for (const [name, pid] of pids) out[name] = [cpuMsOf(pid), waitMsOf(pid)];
    return out;
  };
  /** CPU and CPU wait per key (ms) per process and in all, from `before` until now, as "name x.xx" texts. */
  const cpuPerKey = (before) => {
    const now = cpuNow();
    const per = (j) => {
      const parts = Object.keys(now).map((k) => [k, (now[k][j] - before[k][j]) / N]);
      const total = parts.reduce((t, [, v]) => t + v, 0);
      return { total, text: `${total.toFixed(2)}${IN_PROCESS && j === 0 ? '' : ` (${parts.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')})`}` };
    };
    const [cpu, wait] = [per(0), per(1)];
    return { total: cpu.total, text: cpu.text, wait };
  };

  /** One direct run of N imports into B's simulator. */
  async function directRun(round) {
    const bodies = Array.from({ length: N }, p256Body);
    const cpu = cpuNow();
    const elu = performance.eventLoopUtilization();
    const run = await load(N, C, RATE, (i) => direct.importKey(bodies[i], `direct${round}_${i}`));
    return { rate: run.rate, cpu: cpuPerKey(cpu), elu: performance.eventLoopUtilization(elu).utilization.toFixed(2) };
  }

  /** One replicated run of N imports through A's gateway, until B applied them all. */
  async function replicatedRun(round, profile) {
    const bodies = Array.from({ length: N }, p256Body);
    // Group-commit statistics are read only in-process, and when the build has them (compare older builds).
    const commitsBefore = IN_PROCESS ? [a, b].map((s) => s.daemon.ctx.store.groupCommitStats) : [];
    const profiler = profile ? new Session() : undefined;
    if (profiler) {
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
    }
    const cpu = cpuNow();
    const elu = performance.eventLoopUtilization();
    const firstWall = Date.now();
    // Process mode: B's apply window sampled from its /metrics every 100 ms while the run lasts (min / median / max).
    const windows = [];
    const sampler = IN_PROCESS ? undefined : setInterval(() => void gaugeOf(healthB, 'stream_apply_window').then((v) => v !== undefined && windows.push(v), () => undefined), 100);
    const id = (i) => `k${round}_${i}`;
    const rep = await load(N, C, RATE, (i) => gw.importKey(bodies[i], id(i)));
    const ids = new Set(Array.from({ length: N }, (_, i) => id(i)));
    const applied = await appliedAtB(ids, firstWall);
    const spent = cpuPerKey(cpu);
    if (sampler) clearInterval(sampler);
    const loop = performance.eventLoopUtilization(elu).utilization.toFixed(2);
    if (profiler) {
      const { profile: cpuProfile } = await profiler.post('Profiler.stop');
      await writeFile(profile, JSON.stringify(cpuProfile));
      profiler.disconnect();
    }
    const commits = commitsBefore.map((was, i) => {
      const now = [a, b][i].daemon.ctx.store.groupCommitStats;
      return now && was && { commits: now.commits - was.commits, writes: now.writes - was.writes, syncs: now.syncs - was.syncs, syncMs: now.syncMs - was.syncMs };
    });
    const windowAtB = IN_PROCESS
      ? (await b.daemon.ctx.metrics.streamApplyWindow?.get())?.values.find((v) => v.labels.namespace === 'alpha')?.value
      : windows.length > 0
        ? (windows.sort((x, y) => x - y), `${windows[0]}–${windows[Math.floor(windows.length / 2)]}–${windows.at(-1)}`)
        : await gaugeOf(healthB, 'stream_apply_window');
    const lags = Float64Array.from({ length: N }, (_, i) => Math.max(0, applied.get(id(i)) - rep.endedWall[i])).sort();
    const lastApplied = Math.max(...applied.values());
    const firstApplied = Math.min(...applied.values());
    const atB = new Set(await op.listKeys({ prefix: `k${round}_` }));
    return {
      held: rep.rate,
      throughputB: N / ((lastApplied - firstWall) / 1000),
      applyRate: N > 1 ? (N - 1) / ((lastApplied - firstApplied) / 1000) : NaN,
      lags,
      missing: [...ids].filter((k) => !atB.has(k)).length,
      bySnapshot: applied.bySnapshot,
      cpu: spent,
      elu: loop,
      commits,
      windowAtB,
    };
  }

  const op = new NetHsmClient({ url: b.sim.url, tls: { fingerprint256: b.sim.fingerprint256 }, auth: { username: 'alpha~operator', password: LAB_PASSPHRASES.nsOperator } });
  closers.push(op);
  // Each round measures the direct run and then the replicated run, back to back, so a ratio compares two runs under
  // the same machine load; the summary takes the median of the rounds.
  /**
   * One partition round: a steady stream at STREAM_RATE through A's gateway for LEAD s, B cut off from A for PARTITION
   * s while A keeps importing, then TAIL s more after the heal. B's apply window is read from its /metrics every 100 ms.
   * B's daemon is started afresh first (its limit learnt from nothing but this round).
   */
  async function partitionRun(round) {
    // A fresh daemon at B, so its apply limit is learnt from this round's steady stream alone (not from the warm-up's
    // bursts or an earlier round's drain), as at a replica that has only ever followed a sub-capacity stream.
    await stopDaemons[1]();
    stopDaemons[1] = await spawnDaemon(b);
    const total = Math.round(STREAM_RATE * (LEAD + PARTITION + TAIL));
    const bodies = Array.from({ length: total }, p256Body);
    const id = (i) => `p${round}_${i}`;
    const windows = []; // [Date.now(), window at B]
    const sampler = setInterval(() => void gaugeOf(healthB, 'stream_apply_window').then((v) => v !== undefined && windows.push([Date.now(), v]), () => undefined), 100);
    const firstWall = Date.now();
    let cutAt = 0;
    let healAt = 0;
    const cutTimer = setTimeout(() => ((cutAt = Date.now()), proxy.cut()), LEAD * 1000);
    const healTimer = setTimeout(() => ((healAt = Date.now()), proxy.heal()), (LEAD + PARTITION) * 1000);
    const rep = await load(total, C, STREAM_RATE, (i) => gw.importKey(bodies[i], id(i)));
    clearTimeout(cutTimer);
    clearTimeout(healTimer);
    if (healAt === 0) throw new Error('the stream ended before the partition healed: raise --tail');
    const applied = await appliedAtB(new Set(Array.from({ length: total }, (_, i) => id(i))), firstWall);
    clearInterval(sampler);
    // The backlog: keys A acknowledged before the heal and B applied after it.
    const at = (i) => applied.get(id(i));
    const all = Array.from({ length: total }, (_, i) => i);
    const backlog = all.filter((i) => rep.endedWall[i] <= healAt && at(i) > healAt);
    const firstAfter = Math.min(...all.map(at).filter((t) => t > healAt));
    const drainEnd = Math.max(...backlog.map(at));
    const lagsOf = (is) => Float64Array.from(is, (i) => Math.max(0, at(i) - rep.endedWall[i])).sort();
    const after = lagsOf(all.filter((i) => rep.endedWall[i] > healAt));
    const before = lagsOf(all.filter((i) => rep.endedWall[i] < cutAt));
    const range = (from, to) => {
      const xs = windows.filter(([t]) => t >= from && t < to).map(([, v]) => v).sort((x, y) => x - y);
      return xs.length === 0 ? '–' : `${xs[0]}–${xs[Math.floor(xs.length / 2)]}–${xs.at(-1)}`;
    };
    // The window as the drain starts: the first reading after B's first record since the heal (the gauge moves on records).
    const atDrain = windows.find(([t]) => t > firstAfter)?.[1];
    const timeline = windows.filter(([t]) => t >= healAt - 500 && t <= drainEnd + 500).map(([t, v]) => `${((t - healAt) / 1000).toFixed(1)}:${v}`);
    return {
      held: rep.rate,
      backlog: backlog.length,
      reconnectMs: firstAfter - healAt,
      drainMs: drainEnd - firstAfter,
      drainRate: backlog.length / Math.max(0.001, (drainEnd - firstAfter) / 1000),
      before: `${[50, 99].map((p) => percentile(before, p).toFixed(0)).join(' / ')}`,
      after: after.length ? `${[50, 99].map((p) => percentile(after, p).toFixed(0)).join(' / ')}` : '–',
      windowLead: range(firstWall, cutAt),
      windowAtDrain: atDrain ?? '–',
      windowDrain: range(firstAfter, drainEnd + 1),
      timeline,
      bySnapshot: applied.bySnapshot,
    };
  }

  if (PARTITION > 0) {
    console.log(`partition rounds: ${LEAD} s steady at ${STREAM_RATE} keys/s (concurrency ${C}), B cut off from A for ${PARTITION} s, ${TAIL} s more after the heal`);
    const rows = [];
    for (let round = 0; round < ROUNDS; round++) rows.push(await partitionRun(round));
    console.log('');
    console.log('| round | held at A keys/s | lag before the cut p50 / p99 ms | window at B before the cut (min–median–max) | backlog at the heal | heal → B\'s first apply ms | drain ms (first apply → last backlog key) | drain changes/s | window as the drain starts | window during the drain (min–median–max) | lag after the heal p50 / p99 ms |');
    console.log('|---|---|---|---|---|---|---|---|---|---|---|');
    rows.forEach((r, i) => console.log(`| ${i + 1} | ${r.held.toFixed(1)} | ${r.before} | ${r.windowLead} | ${r.backlog} | ${r.reconnectMs} | ${r.drainMs} | ${r.drainRate.toFixed(1)} | ${r.windowAtDrain} | ${r.windowDrain} | ${r.after} |`));
    console.log('');
    console.log('B\'s apply window from 0.5 s before the heal to 0.5 s after the drain (s since the heal : window), per round:');
    rows.forEach((r, i) => console.log(`  round ${i + 1}: ${r.timeline.join(' ')}`));
    const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)];
    console.log(`median drain: ${median(rows.map((r) => r.drainMs))} ms, ${median(rows.map((r) => r.drainRate)).toFixed(1)} changes/s (rounds ${rows.map((r) => r.drainRate.toFixed(1)).join(', ')})`);
    if (rows.some((r) => r.bySnapshot > 0)) console.log(`keys that reached B by a snapshot sync, per round: ${rows.map((r) => r.bySnapshot).join(', ')}`);
    console.log(`daemon log lines at warn or above: ${warnings.size === 0 ? 'none' : [...warnings].map(([m, n]) => `${n} × ${m}`).join('; ')}`);
  } else {
    const rows = [];
    for (let round = 0; round < ROUNDS; round++) {
      const d = await directRun(round);
      const r = await replicatedRun(round, IN_PROCESS && round === ROUNDS - 1 ? PROFILE : undefined);
      rows.push({ d, r, ratio: r.throughputB / d.rate, heldRatio: r.held / d.rate, p99: percentile(r.lags, 99) });
    }

    const groups = (c) => (c ? `${c.commits} × ${(c.writes / Math.max(1, c.commits)).toFixed(1)}, ${c.syncs} syncs of ${(c.syncMs / Math.max(1, c.syncs)).toFixed(1)} ms` : '–');
    console.log('');
    console.log(`| round | direct at B keys/s | held at A keys/s | replicated at B keys/s | apply rate at B | lag p50 / p90 / p99 / max ms | missing | ELU (bench) direct / replicated | group commits A / B (× writes, WAL syncs) | window at B (min–median–max) | ratio B / direct | ratio A / direct |`);
    console.log(`|---|---|---|---|---|---|---|---|---|---|---|---|`);
    rows.forEach(({ d, r, ratio, heldRatio }, i) => {
      const lag = `${[50, 90, 99].map((p) => percentile(r.lags, p).toFixed(0)).join(' / ')} / ${r.lags[N - 1].toFixed(0)}`;
      console.log(
        `| ${i + 1} | ${d.rate.toFixed(1)} | ${r.held.toFixed(1)} | ${r.throughputB.toFixed(1)} | ${r.applyRate.toFixed(1)} | ${lag} | ${r.missing} | ${d.elu} / ${r.elu} | ${r.commits.length ? r.commits.map(groups).join(' / ') : '–'} | ${r.windowAtB ?? '–'} | ${ratio.toFixed(2)} | ${heldRatio.toFixed(2)} |`,
      );
    });
    console.log('');
    console.log('CPU ms per key (user + system), per round:');
    rows.forEach(({ d, r }, i) => console.log(`  round ${i + 1}: direct ${d.cpu.text}; replicated ${r.cpu.text}`));
    console.log('Waiting for a CPU (runnable, not running; main threads), ms per key, per round:');
    rows.forEach(({ d, r }, i) => console.log(`  round ${i + 1}: direct ${d.cpu.wait.text}; replicated ${r.cpu.wait.text}`));
    const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)];
    console.log('');
    console.log(`median of ${ROUNDS} rounds: direct ${median(rows.map((x) => x.d.rate)).toFixed(1)} keys/s, replicated at B ${median(rows.map((x) => x.r.throughputB)).toFixed(1)} keys/s`);
    console.log(`ratio replicated throughput at B / direct import rate at B: ${median(rows.map((x) => x.ratio)).toFixed(2)} (target ≥ 0.9; rounds ${rows.map((x) => x.ratio.toFixed(2)).join(', ')})`);
    console.log(`ratio rate held at A / direct import rate at B: ${median(rows.map((x) => x.heldRatio)).toFixed(2)}`);
    console.log(`lag p99: ${median(rows.map((x) => x.p99)).toFixed(0)} ms (target < 1000 ms; rounds ${rows.map((x) => x.p99.toFixed(0)).join(', ')})`);
    console.log(`CPU ms/key, median: direct ${median(rows.map((x) => x.d.cpu.total)).toFixed(2)}, replicated ${median(rows.map((x) => x.r.cpu.total)).toFixed(2)}`);
    console.log(`keys missing at B: ${rows.reduce((n, x) => n + x.r.missing, 0)}`);
    const bySnapshot = rows.map((x) => x.r.bySnapshot);
    if (bySnapshot.some((n) => n > 0)) console.log(`keys that reached B by a snapshot sync, not the stream (their apply time: when the bench saw B's position pass them), per round: ${bySnapshot.join(', ')}`);
    if (!IN_PROCESS) console.log(`daemon log lines at warn or above: ${warnings.size === 0 ? 'none' : [...warnings].map(([m, n]) => `${n} × ${m}`).join('; ')}`);
  }
} finally {
  for (const c of closers) await c.close().catch(() => undefined);
  for (const stop of stopDaemons) await stop().catch(() => undefined);
  await lab.close();
}
