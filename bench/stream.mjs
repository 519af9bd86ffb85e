#!/usr/bin/env node
// Streaming replication under a sustained import load: two lab sites on loopback (simulators with appliance-like
// latency, two daemons, A's gateway), N EC P-256 JSON imports through A's gateway at concurrency C (optionally paced
// to R keys/s), and for each key the time from A's 2xx to its apply at B. The baseline is the rate of importing the
// same kind of keys directly into B's simulator at the same concurrency, into a namespace of its own (`bench`).
// Each of --rounds rounds (default 3) measures a direct run and then a replicated run back to back, so each ratio
// compares two runs under the same machine load; the summary is the median of the rounds. Before the first round,
// --warmup imports of the same kind per path (default 300, not measured) bring both paths to their steady state: V8's compiled code, the connection pools, and the daemons' SQLite WAL at its working size (a fresh WAL
// grows with every commit, and an fdatasync that extends a file costs a journal commit, ~10× one that overwrites; the
// WAL is reused from its start after each checkpoint, so a running daemon overwrites).
// Usage: npm run build && node bench/stream.mjs [--keys 300] [--concurrency 8] [--rate R] [--latency import=50ms,...]
//        [--warmup 300] [--rounds 3]
//        [--profile out.cpuprofile]  (a V8 CPU profile of the last replicated run, for chrome://inspect or speedscope)
// Everything runs in this process on 127.0.0.1 and is torn down at the end. Figures go to docs/benchmarks.md.
import { generateKeyPairSync } from 'node:crypto';
import { cpus } from 'node:os';
import { Session } from 'node:inspector/promises';
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { Lab, LAB_PASSPHRASES } from '../dist/lab/lab.js';
import { NetHsmClient } from '../dist/nethsm/client.js';
import { parseLatencySpec } from '../dist/sim/latency.js';
import { prepare } from '../dist/state/sqlite.js';

// Appliance-like defaults: a key import and a private-key operation take tens of ms on a NetHSM; reads are cheap.
// `decrypt` is what the replica pays to unwrap each envelope's key with its transport key (RSA-OAEP).
const DEFAULT_LATENCY = 'import=50ms,sign=40ms,decrypt=40ms,key-get=2ms,key-list=2ms,key-delete=20ms,key-update=20ms';

const { values } = parseArgs({
  options: {
    keys: { type: 'string', default: '300' },
    warmup: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', short: 'c', default: '8' },
    rate: { type: 'string', default: '0' },
    latency: { type: 'string', default: DEFAULT_LATENCY },
    profile: { type: 'string' },
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
const LATENCY = { ...parseLatencySpec(DEFAULT_LATENCY), ...parseLatencySpec(values.latency) };

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

/** Process CPU time and event-loop utilisation from now until the returned function is called. */
function startCost() {
  const cpu = process.cpuUsage();
  const elu = performance.eventLoopUtilization();
  return () => {
    const used = process.cpuUsage(cpu);
    const loop = performance.eventLoopUtilization(elu);
    return { cpuMsPerKey: (n) => ((used.user + used.system) / 1000 / n).toFixed(2), elu: loop.utilization.toFixed(2) };
  };
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

// The simulators keep their state in memory: a NetHSM does not write to the daemons' disk (a persisting simulator
// rewrites its whole store every 50 ms under writes, which slows the daemons' WAL syncs on the same disk).
const lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], gateway: true, latency: LATENCY, simPersistence: false });
const closers = [];
try {
  const a = lab.site('a');
  const b = lab.site('b');
  await lab.startDaemons();
  // Both transport keys published and known to the peer, so every import travels in an envelope (not as a catch-up).
  for (const s of [a, b]) await s.daemon.stream.publicTransportKey();
  await eventually(async () => (await a.daemon.stream.recipients.refresh('b')) !== undefined, 60_000, "A to know B's transport key");
  await b.daemon.syncer.sync('alpha', { actor: 'bench' }); // the stream starts from the first snapshot's position

  const latencyText = Object.entries(LATENCY).map(([k, v]) => `${k}=${v}ms`).join(', ');
  console.log(`node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}; everything in one process on 127.0.0.1`);
  console.log(`simulator latency (both sites): ${latencyText}`);
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
  const gw = new NetHsmClient({ url: `https://127.0.0.1:${a.daemon.ports.gateway}`, tls: { caPem: lab.caPem }, auth: { username: 'alpha~admin', password: LAB_PASSPHRASES.nsAdmin }, connections: C });
  closers.push(gw);
  await gw.listKeys();
  const appliedQuery = prepare(b.daemon.ctx.store.db, "SELECT key_id AS id, applied_at AS at FROM applied_changes WHERE namespace = 'alpha' AND kind = 'key-imported'");
  /** Waits until B applied every key of `ids`; resolves with their applied_at times. */
  const appliedAtB = async (ids) => {
    const applied = new Map();
    await eventually(
      () => {
        for (const r of appliedQuery.all()) if (ids.has(r.id)) applied.set(r.id, r.at);
        return applied.size === ids.size;
      },
      600_000,
      'B to apply every import',
    );
    return applied;
  };
  if (WARMUP > 0) {
    const warm = Array.from({ length: WARMUP }, p256Body);
    await load(WARMUP, C, 0, (i) => gw.importKey(warm[i], `w${i}`));
    await appliedAtB(new Set(warm.map((_, i) => `w${i}`)));
  }

  /** One direct run of N imports into B's simulator. */
  async function directRun(round) {
    const bodies = Array.from({ length: N }, p256Body);
    const cost = startCost();
    const run = await load(N, C, RATE, (i) => direct.importKey(bodies[i], `direct${round}_${i}`));
    return { rate: run.rate, cost: cost() };
  }

  /** One replicated run of N imports through A's gateway, until B applied them all. */
  async function replicatedRun(round, profile) {
    const bodies = Array.from({ length: N }, p256Body);
    // Group-commit statistics and the apply-window gauge are read only when the build has them (compare older builds).
    const commitsBefore = [a, b].map((s) => s.daemon.ctx.store.groupCommitStats);
    const profiler = profile ? new Session() : undefined;
    if (profiler) {
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
    }
    const cost = startCost();
    const firstWall = Date.now();
    const id = (i) => `k${round}_${i}`;
    const rep = await load(N, C, RATE, (i) => gw.importKey(bodies[i], id(i)));
    const ids = new Set(Array.from({ length: N }, (_, i) => id(i)));
    const applied = await appliedAtB(ids);
    const spent = cost();
    if (profiler) {
      const { profile: cpuProfile } = await profiler.post('Profiler.stop');
      await writeFile(profile, JSON.stringify(cpuProfile));
      profiler.disconnect();
    }
    const commits = [a, b].map((s, i) => {
      const now = s.daemon.ctx.store.groupCommitStats;
      const was = commitsBefore[i];
      return now && { commits: now.commits - was.commits, writes: now.writes - was.writes, syncs: now.syncs - was.syncs, syncMs: now.syncMs - was.syncMs };
    });
    const windowAtB = (await b.daemon.ctx.metrics.streamApplyWindow?.get())?.values.find((v) => v.labels.namespace === 'alpha')?.value;
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
      cost: spent,
      commits,
      windowAtB,
    };
  }

  const op = new NetHsmClient({ url: b.sim.url, tls: { fingerprint256: b.sim.fingerprint256 }, auth: { username: 'alpha~operator', password: LAB_PASSPHRASES.nsOperator } });
  closers.push(op);
  // Each round measures the direct run and then the replicated run, back to back, so a ratio compares two runs under
  // the same machine load; the summary takes the median of the rounds.
  const rows = [];
  for (let round = 0; round < ROUNDS; round++) {
    const d = await directRun(round);
    const r = await replicatedRun(round, round === ROUNDS - 1 ? values.profile : undefined);
    rows.push({ d, r, ratio: r.throughputB / d.rate, heldRatio: r.held / d.rate, p99: percentile(r.lags, 99) });
  }

  const groups = (c) => (c ? `${c.commits} × ${(c.writes / Math.max(1, c.commits)).toFixed(1)}, ${c.syncs} syncs of ${(c.syncMs / Math.max(1, c.syncs)).toFixed(1)} ms` : '–');
  console.log('');
  console.log(`| round | direct at B keys/s | held at A keys/s | replicated at B keys/s | apply rate at B | lag p50 / p90 / p99 / max ms | missing | CPU ms/key direct / replicated | ELU direct / replicated | group commits A / B (× writes, WAL syncs) | window at B | ratio B / direct | ratio A / direct |`);
  console.log(`|---|---|---|---|---|---|---|---|---|---|---|---|---|`);
  rows.forEach(({ d, r, ratio, heldRatio }, i) => {
    const lag = `${[50, 90, 99].map((p) => percentile(r.lags, p).toFixed(0)).join(' / ')} / ${r.lags[N - 1].toFixed(0)}`;
    console.log(
      `| ${i + 1} | ${d.rate.toFixed(1)} | ${r.held.toFixed(1)} | ${r.throughputB.toFixed(1)} | ${r.applyRate.toFixed(1)} | ${lag} | ${r.missing} | ${d.cost.cpuMsPerKey(N)} / ${r.cost.cpuMsPerKey(N)} | ${d.cost.elu} / ${r.cost.elu} | ${r.commits.map(groups).join(' / ')} | ${r.windowAtB ?? '–'} | ${ratio.toFixed(2)} | ${heldRatio.toFixed(2)} |`,
    );
  });
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)];
  console.log('');
  console.log(`median of ${ROUNDS} rounds: direct ${median(rows.map((x) => x.d.rate)).toFixed(1)} keys/s, replicated at B ${median(rows.map((x) => x.r.throughputB)).toFixed(1)} keys/s`);
  console.log(`ratio replicated throughput at B / direct import rate at B: ${median(rows.map((x) => x.ratio)).toFixed(2)} (target ≥ 0.9; rounds ${rows.map((x) => x.ratio.toFixed(2)).join(', ')})`);
  console.log(`ratio rate held at A / direct import rate at B: ${median(rows.map((x) => x.heldRatio)).toFixed(2)}`);
  console.log(`lag p99: ${median(rows.map((x) => x.p99)).toFixed(0)} ms (target < 1000 ms; rounds ${rows.map((x) => x.p99.toFixed(0)).join(', ')})`);
  console.log(`keys missing at B: ${rows.reduce((n, x) => n + x.r.missing, 0)}`);
} finally {
  for (const c of closers) await c.close().catch(() => undefined);
  await lab.close();
}
