#!/usr/bin/env node
// Streaming replication under a sustained import load: two lab sites on loopback (simulators with appliance-like
// latency, two daemons, A's gateway), N EC P-256 JSON imports through A's gateway at concurrency C (optionally paced
// to R keys/s), and for each key the time from A's 2xx to its apply at B. The baseline is the rate of importing the
// same kind of keys directly into B's simulator at the same concurrency, into a namespace of its own (`bench`).
// Usage: npm run build && node bench/stream.mjs [--keys 300] [--concurrency 8] [--rate R] [--latency import=50ms,...]
// Everything runs in this process on 127.0.0.1 and is torn down at the end. Figures go to docs/benchmarks.md.
import { generateKeyPairSync } from 'node:crypto';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { Lab, LAB_PASSPHRASES } from '../dist/lab/lab.js';
import { NetHsmClient } from '../dist/nethsm/client.js';
import { parseLatencySpec } from '../dist/sim/latency.js';

// Appliance-like defaults: a key import and a private-key operation take tens of ms on a NetHSM; reads are cheap.
// `decrypt` is what the replica pays to unwrap each envelope's key with its transport key (RSA-OAEP).
const DEFAULT_LATENCY = 'import=50ms,sign=40ms,decrypt=40ms,key-get=2ms,key-list=2ms,key-delete=20ms,key-update=20ms';

const { values } = parseArgs({
  options: {
    keys: { type: 'string', default: '300' },
    concurrency: { type: 'string', short: 'c', default: '8' },
    rate: { type: 'string', default: '0' },
    latency: { type: 'string', default: DEFAULT_LATENCY },
  },
});
const N = positiveInt(values.keys, '--keys');
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

const lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], gateway: true, latency: LATENCY });
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
  console.log(`N=${N} EC P-256 JSON imports, concurrency ${C}, ${RATE > 0 ? `paced at ${RATE} keys/s` : 'unpaced'}`);

  // Baseline: the same imports straight into B's simulator (same device, latency, TLS server and process load as the
  // replicated run), as the Administrator of a namespace of its own, so the replica namespace is left untouched.
  const root = b.client();
  closers.push(root);
  await root.createUser({ realName: 'bench admin', role: 'Administrator', passphrase: LAB_PASSPHRASES.nsAdmin }, 'bench~admin');
  await root.createNamespace('bench');
  const direct = new NetHsmClient({ url: b.sim.url, tls: { fingerprint256: b.sim.fingerprint256 }, auth: { username: 'bench~admin', password: LAB_PASSPHRASES.nsAdmin }, connections: C });
  closers.push(direct);
  await direct.listKeys(); // connection warm-up
  const directBodies = Array.from({ length: N }, p256Body);
  const base = await load(N, C, RATE, (i) => direct.importKey(directBodies[i], `direct${i}`));
  console.log(`direct import into B's simulator: ${base.rate.toFixed(1)} keys/s`);

  // Replicated: the same load through A's gateway; B's apply times come from B's applied_changes (applied_at is
  // written in the transaction that follows the 2xx of B's NetHSM, i.e. when the key has just become usable at B).
  const gw = new NetHsmClient({ url: `https://127.0.0.1:${a.daemon.ports.gateway}`, tls: { caPem: lab.caPem }, auth: { username: 'alpha~admin', password: LAB_PASSPHRASES.nsAdmin }, connections: C });
  closers.push(gw);
  await gw.listKeys();
  const bodies = Array.from({ length: N }, p256Body);
  const firstWall = Date.now();
  const rep = await load(N, C, RATE, (i) => gw.importKey(bodies[i], `k${i}`));
  const ids = new Set(Array.from({ length: N }, (_, i) => `k${i}`));
  const applied = new Map();
  const query = b.daemon.ctx.store.db.prepare("SELECT key_id AS id, applied_at AS at FROM applied_changes WHERE namespace = 'alpha' AND kind = 'key-imported'");
  await eventually(
    () => {
      for (const r of query.all()) if (ids.has(r.id)) applied.set(r.id, r.at);
      return applied.size === N;
    },
    600_000,
    'B to apply every import',
  );
  const lags = Float64Array.from({ length: N }, (_, i) => Math.max(0, applied.get(`k${i}`) - rep.endedWall[i])).sort();
  const lastApplied = Math.max(...applied.values());
  const firstApplied = Math.min(...applied.values());
  const throughputB = N / ((lastApplied - firstWall) / 1000);
  const applyRate = N > 1 ? (N - 1) / ((lastApplied - firstApplied) / 1000) : NaN;
  const op = new NetHsmClient({ url: b.sim.url, tls: { fingerprint256: b.sim.fingerprint256 }, auth: { username: 'alpha~operator', password: LAB_PASSPHRASES.nsOperator } });
  closers.push(op);
  const atB = new Set(await op.listKeys());
  const missing = [...ids].filter((id) => !atB.has(id)).length;

  console.log('');
  console.log('| measure | value |');
  console.log('|---|---|');
  console.log(`| direct import rate at B (C=${C}) | ${base.rate.toFixed(1)} keys/s |`);
  console.log(`| rate held at A's gateway (C=${C}) | ${rep.rate.toFixed(1)} keys/s |`);
  console.log(`| replicated throughput at B (N / first request at A → last apply at B) | ${throughputB.toFixed(1)} keys/s |`);
  console.log(`| apply rate at B (first → last apply) | ${applyRate.toFixed(1)} keys/s |`);
  console.log(`| lag A 2xx → applied at B, p50 / p90 / p99 / max | ${[50, 90, 99].map((p) => percentile(lags, p).toFixed(0)).join(' / ')} / ${lags[N - 1].toFixed(0)} ms |`);
  console.log(`| keys missing at B (device listing) | ${missing} |`);
  console.log('');
  console.log(`ratio replicated throughput at B / direct import rate at B: ${(throughputB / base.rate).toFixed(2)} (target ≥ 0.9)`);
  console.log(`ratio rate held at A / direct import rate at B: ${(rep.rate / base.rate).toFixed(2)}`);
  console.log(`lag p99: ${percentile(lags, 99).toFixed(0)} ms (target < 1000 ms)`);
} finally {
  for (const c of closers) await c.close().catch(() => undefined);
  await lab.close();
}
