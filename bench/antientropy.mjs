#!/usr/bin/env node
// Anti-entropy at scale: `npm run build && node bench/antientropy.mjs [--keys 10000,100000] [--big] [--rate 200]
//   [--device-slots 4] [--sign-seconds 10] [--latency sign=40ms,key-get=2ms,...] [--passes ranges,ranges-table,…]
//   [--scrub-passes 8]`.
//
// Two simulators, each its own process (a primary and a replica of namespace `alpha`), filled with the same N keys
// (EC P-256 imported with the same private scalar at both, so their inventories agree), then a small drift made at
// the replica before each pass (0.1 % of keys, spread out, get a tag; one key deleted; one extra key; one new key at
// the primary). A range pass runs as two kinds of processes, as two daemons would: the replica's side (`--child pass`)
// and, per request, the primary's side (`--child primary`), whose NDJSON answer reaches the replica over a pipe and is
// validated there as over the peer API. The old one-answer pass runs both sides in one process (an upper bound).
// Per pass it prints: time, device requests per key at each simulator (counted by the simulator: the sum of its
// `http response <code>` counters, less the benchmark's own metrics reads and signatures), peak RSS of each side's
// process, and the signing p99 at the replica's simulator (2 signers) while the pass runs, next to the p99 of signing
// alone for --sign-seconds right before it (so both run under the same machine load), and their ratio. The
// simulators model a device of --device-slots operations in service at once (src/sim/device-slots.ts; 0: latency
// as a sleep without contention, as before), so a pass's reads queue with the signatures as at an appliance.
// Passes: `ranges` unpaced, `ranges-paced` at --rate requests/s per site (antiEntropy.maxRequestsPerSecond, whose
// default is 200), and `one
// answer` (the old pass: primary's whole inventory as one JSON value, read after the replica's) for comparison.
// `ranges-table`: unpaced, with a certificate table at each site (a state database per site, kept across the run, scrub
// slice --scrub-passes): its first pass in a run finds the tables cold, later ones warm
// (`--passes ranges,ranges-table,ranges-table`).
// `--memory 100000,1000000`: peak RSS of the replica's side at those sizes from synthetic data (no simulator), range
// pass against the old one-answer pass (see childMemory).
// Export: runAntiEntropyBench(options) and runMemoryBench(sizes) for bench/scale.mjs. Figures go to docs/benchmarks.md ("Anti-entropy").
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs } from './lib/args.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => pathToFileURL(join(root, 'dist', p)).href;
if (!existsSync(join(root, 'dist', 'namespaces', 'range-pass.js'))) {
  console.error('dist/ is missing: run `npm run build` first');
  process.exit(1);
}
const NS = 'alpha';
const DEFAULT_LATENCY = 'sign=40ms,import=0ms,key-get=2ms,key-list=2ms';

// ---- child: a provisioned simulator in its own process --------------------------------------------

async function childSim(spec) {
  const { latency, deviceSlots } = JSON.parse(spec);
  const { createServer } = await import('node:http');
  const { startProvisionedSimulator } = await import(dist('sim/fixture.js'));
  const { parseLatencySpec } = await import(dist('sim/latency.js'));
  // How long each signature waited for a device slot, handed out and reset by a small local HTTP endpoint.
  let signTimes = [];
  const slots = deviceSlots > 0 ? { deviceSlots, onSlotWait: (op, ms) => op === 'sign' && signTimes.push(ms) } : {};
  const sim = await startProvisionedSimulator({ namespaces: [NS], latency: parseLatencySpec(latency), ...slots });
  const stats = createServer((_req, res) => {
    res.end(JSON.stringify(signTimes));
    signTimes = [];
  }).listen(0, '127.0.0.1');
  await new Promise((r) => stats.once('listening', r));
  process.stdout.write(JSON.stringify({ url: sim.url, fingerprint256: sim.fingerprint256, users: sim.users, nsUsers: sim.nsUsers, statsPort: stats.address().port }) + '\n');
  process.on('SIGTERM', () => void sim.close().then(() => process.exit(0)));
}

// ---- child: the primary's side of a range pass (its answer on stdout, as over the peer API) ------------

/** The site's certificate table: a state database in `dir` (kept across passes), or undefined without one. */
async function certTable(table, site) {
  if (!table) return undefined;
  const { StateStore } = await import(dist('state/store.js'));
  const store = StateStore.inDir(join(table.dir, site)).open();
  if (!store.roles.get(NS)) store.roles.insert({ namespace: NS, role: 'replica', epoch: 1, primarySite: 'a' });
  process.once('exit', () => store.close());
  return { repo: store.keyCerts, scrubPasses: table.scrubPasses };
}

async function childPrimary(spec) {
  const { what, rate, primary, ranges, rangeSize, table } = JSON.parse(spec);
  const { NetHsmClient } = await import(dist('nethsm/client.js'));
  const { RateLimiter, unlimited } = await import(dist('util/rate-limiter.js'));
  const { itemLines, rangeDigestLines } = await import(dist('namespaces/inventory-ranges.js'));
  const atA = new NetHsmClient({ url: primary.url, tls: { fingerprint256: primary.fingerprint256 }, connections: 16 }).withAuth(primary.nsUsers[NS].admin.username, primary.nsUsers[NS].admin.password);
  const limiter = rate > 0 ? new RateLimiter({ perSecond: rate }) : unlimited();
  const certs = what === 'ranges' ? await certTable(table, 'a') : undefined;
  const lines = what === 'ranges' ? rangeDigestLines(atA, NS, rangeSize, { limiter, ...(certs ? { certs } : {}) }) : itemLines(atA, NS, ranges, { limiter });
  for await (const line of lines) if (!process.stdout.write(line + '\n')) await new Promise((r) => process.stdout.once('drain', r));
  process.stderr.write(`rss=${process.resourceUsage().maxRSS / 1024}\n`);
  process.stdout.end(() => process.exit(0));
}

/** Runs the primary's side in its own process; yields its answer's lines; records its peak RSS in `peak`. */
async function* primaryProcess(spec, peak) {
  const { ndjsonLines } = await import(dist('stream/lines.js'));
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', 'primary', JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c) => (err += c));
  const exited = new Promise((r) => child.once('exit', r));
  yield* ndjsonLines(child.stdout, 1024 * 1024);
  await exited;
  const m = /rss=([\d.]+)/.exec(err);
  if (!m) throw new Error(`primary side failed: ${err}`);
  peak.mb = Math.max(peak.mb, Number(m[1]));
}

// ---- child: one pass, the replica's side ------------------------------------------------------------

async function childPass(spec) {
  const { kind, rate, primary, replica, table } = JSON.parse(spec);
  const { NetHsmClient } = await import(dist('nethsm/client.js'));
  const { RateLimiter, unlimited } = await import(dist('util/rate-limiter.js'));
  const { rangePass } = await import(dist('namespaces/range-pass.js'));
  const { antiEntropyPass } = await import(dist('namespaces/antientropy.js'));
  const { parseNamespaceInventory, readInventory } = await import(dist('namespaces/inventory.js'));
  const { DEFAULT_RANGE_SIZE, readItemLines, readRangeDigests } = await import(dist('namespaces/inventory-ranges.js'));
  const client = (s) => new NetHsmClient({ url: s.url, tls: { fingerprint256: s.fingerprint256 }, connections: 16 }).withAuth(s.nsUsers[NS].admin.username, s.nsUsers[NS].admin.password);
  const atA = client(primary);
  const atB = client(replica);
  // One budget per site, as in the daemon (its passes and the inventory it serves share antiEntropy.maxRequestsPerSecond).
  const limit = () => (rate > 0 ? new RateLimiter({ perSecond: rate }) : unlimited());
  const limB = limit();
  const ctx = { namespace: NS };
  const t0 = performance.now();
  let r;
  const primaryPeak = { mb: 0 };
  if (kind === 'ranges') {
    const side = { rate, primary, rangeSize: DEFAULT_RANGE_SIZE, table };
    const certs = await certTable(table, 'b');
    r = await rangePass({
      namespace: NS,
      replica: atB,
      limiter: limB,
      ...(certs ? { certs } : {}),
      primaryRanges: async () => readRangeDigests(primaryProcess({ ...side, what: 'ranges' }, primaryPeak), { ...ctx, rangeSize: DEFAULT_RANGE_SIZE }),
      primaryItems: (ranges) => readItemLines(primaryProcess({ ...side, what: 'items', ranges }, primaryPeak), ranges, ctx),
      fetchCert: (id) => atA.getCert(id),
      setDrift: () => undefined,
    });
  } else {
    r = await antiEntropyPass({
      namespace: NS,
      // The old route: one JSON answer, parsed and validated whole.
      primary: async () => parseNamespaceInventory(JSON.parse(JSON.stringify(await readInventory(atA, NS))), ctx),
      replica: atB,
      fetchCert: (id) => atA.getCert(id),
      setDrift: () => undefined,
    });
  }
  const ms = performance.now() - t0;
  process.stdout.write(
    JSON.stringify({
      ms,
      rssMB: process.resourceUsage().maxRSS / 1024,
      primaryRssMB: primaryPeak.mb || undefined,
      missing: r.diff.missing.length,
      extra: r.diff.extra.length,
      differs: r.diff.differs.length,
      repaired: r.repaired,
      rangesDiffering: r.rangesDiffering,
      ranges: r.ranges,
    }) + '\n',
  );
  process.exit(0);
}

// ---- child: memory of one side at N keys, without a device ------------------------------------------

/**
 * What a side holds at N keys, built from synthetic data (no simulator: filling one with a million keys takes hours
 * here): `ranges` = the replica's side of a range pass (the listed ids as the client parses them, the CompactInventory
 * of their digests, the primary's N/64 range lines validated and compared); `one-answer` = the old pass's replica
 * side (N items read, the primary's N items as one JSON string, parsed and validated). Prints peak RSS.
 */
async function childMemory(spec) {
  const { n, mode } = JSON.parse(spec);
  const { hash } = await import('node:crypto');
  const { inventoryItem, inventoryDigest, parseNamespaceInventory } = await import(dist('namespaces/inventory.js'));
  const { CompactInventory } = await import(dist('namespaces/compact-inventory.js'));
  const { DEFAULT_RANGE_SIZE, RangeHasher, readRangeDigests } = await import(dist('namespaces/inventory-ranges.js'));
  // The `GET /keys` answer as the client receives it (chunks of 64 KiB) and parses it (KeyListParser, ids only).
  const { KeyListParser } = await import(dist('nethsm/key-list-parser.js'));
  const parser = new KeyListParser();
  const id = (i) => `key-${String(i).padStart(9, '0')}`;
  parser.push(Buffer.from('['));
  for (let i = 0; i < n; i += 2000) {
    const part = [];
    for (let j = i; j < Math.min(n, i + 2000); j++) part.push(`${j ? ',' : ''}{"id":"${id(j)}"}`);
    parser.push(Buffer.from(part.join('')));
  }
  parser.push(Buffer.from(']'));
  const ids = parser.end(); // PackedIds
  const pub = { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['app'] }, operations: 0 };
  const item = (id) => inventoryItem(id, { ...pub, public: { data: hash('sha256', id, 'base64') } }, null);
  const t0 = performance.now();
  if (mode === 'ranges') {
    const local = new CompactInventory(ids);
    for (let i = 0; i < n; i++) local.push(item(ids.at(i)));
    local.seal();
    async function* lines() {
      yield JSON.stringify({ kind: 'head', namespace: NS, takenAt: 1, rangeSize: DEFAULT_RANGE_SIZE });
      let count = 0;
      for (let from = 0; from < n; from += DEFAULT_RANGE_SIZE) {
        const to = Math.min(n, from + DEFAULT_RANGE_SIZE);
        const h = new RangeHasher();
        for (let i = from; i < to; i++) h.add(local.idAt(i), local.digestAt(i));
        count++;
        yield JSON.stringify({ kind: 'range', upTo: to === n ? null : local.idAt(to - 1), count: to - from, digest: h.take() });
      }
      yield JSON.stringify({ kind: 'end', ranges: count, keys: n });
    }
    const r = await readRangeDigests(lines(), { namespace: NS, rangeSize: DEFAULT_RANGE_SIZE });
    let after = null;
    let differ = 0;
    for (const x of r.ranges) {
      const [from, to] = local.indices({ after, upTo: x.upTo });
      if (to - from !== x.count || local.digestOf(from, to) !== x.digest) differ++;
      after = x.upTo;
    }
    if (differ !== 0) throw new Error('synthetic ranges differ');
  } else {
    const keys = [...ids].map(item);
    const mine = { namespace: NS, takenAt: 1, keys, digest: inventoryDigest(keys) };
    parseNamespaceInventory(JSON.parse(JSON.stringify(mine)), { namespace: NS });
  }
  const mu = process.memoryUsage();
  // heapMB / externalMB at the end: V8's heap as committed (its young generation included) and buffers outside it.
  process.stdout.write(JSON.stringify({ n, mode, rssMB: process.resourceUsage().maxRSS / 1024, seconds: (performance.now() - t0) / 1000, heapMB: Math.round(mu.heapTotal / 2 ** 20), externalMB: Math.round(mu.external / 2 ** 20) }) + '\n');
  process.exit(0);
}

/** Peak RSS of each side's data at each N (child processes, one per measurement). */
export async function runMemoryBench(sizes, log = console.error) {
  const rows = [];
  for (const n of sizes) {
    // V8 may grow its young generation (semi-spaces up to 64 MB in Node 24, and so RSS) under a fast allocation rate:
    // measured with its defaults and with semi-spaces of at most 8 MB.
    for (const [mode, flags] of [['ranges', []], ['ranges', ['--max-semi-space-size=8']], ['one-answer', []]]) {
      const c = spawnChild(['--child', 'memory', JSON.stringify({ n, mode })], flags);
      const row = await c.first.catch((e) => ({ n, mode, rssMB: NaN, error: e.message }));
      row.flags = flags.join(' ') || '(defaults)';
      rows.push(row);
      log(JSON.stringify(row));
    }
  }
  return rows;
}

// ---- parent --------------------------------------------------------------------------------------

function spawnChild(args, nodeFlags = []) {
  const child = spawn(process.execPath, [...nodeFlags, fileURLToPath(import.meta.url), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const first = new Promise((res, rej) => {
    const rl = createInterface({ input: child.stdout });
    rl.once('line', (l) => res(JSON.parse(l)));
    child.once('exit', (code) => rej(new Error(`child ${args.join(' ')} exited with ${code}`)));
  });
  return { child, first };
}

function p256() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const d = Buffer.from(privateKey.export({ format: 'jwk' }).d, 'base64url');
  return { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: d.toString('base64') } };
}

async function pool(n, concurrency, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) await fn(next++);
  }));
}

/** The replica simulator's slot waits of signatures since the last call (ms), then reset. */
async function deviceSignTimes(sim) {
  const res = await fetch(`http://127.0.0.1:${sim.statsPort}/`);
  return res.json();
}

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : NaN;
};

/**
 * Runs the benchmark for each size in `keys`; resolves to one row per (size, pass) with time, requests per key at each
 * site, peak RSS of the pass process and the signing p99 with and without the pass. `log` gets progress lines.
 */
export async function runAntiEntropyBench({ keys = [10_000], rate = 200, deviceSlots = 4, signSeconds = 10, signers = 2, latency = DEFAULT_LATENCY, passes = ['ranges', 'ranges-paced', 'one-answer'], scrubPasses = 8, log = console.error } = {}) {
  const { NetHsmClient } = await import(dist('nethsm/client.js'));
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const rows = [];
  for (const n of keys) {
    const table = { dir: mkdtempSync(join(tmpdir(), 'nhr-bench-certs-')), scrubPasses };
    const simSpec = JSON.stringify({ latency, deviceSlots });
    const signMs = /(?:^|,)sign=([\d.]+)ms/.exec(latency) ? Number(/(?:^|,)sign=([\d.]+)ms/.exec(latency)[1]) : 0;
    const sims = [spawnChild(['--child', 'sim', simSpec]), spawnChild(['--child', 'sim', simSpec])];
    const [A, B] = await Promise.all(sims.map((s) => s.first));
    const base = (s) => new NetHsmClient({ url: s.url, tls: { fingerprint256: s.fingerprint256 }, connections: 32 });
    const [baseA, baseB] = [base(A), base(B)];
    const adm = (b, s) => b.withAuth(s.nsUsers[NS].admin.username, s.nsUsers[NS].admin.password);
    const [admA, admB] = [adm(baseA, A), adm(baseB, B)];
    const opB = baseB.withAuth(B.nsUsers[NS].operator.username, B.nsUsers[NS].operator.password);
    const metrics = [baseA.withAuth('metrics', 'metricsPassphrase'), baseB.withAuth('metrics', 'metricsPassphrase')];
    const answered = async (m) => Object.entries(await m.metrics()).filter(([k]) => /^http response \d+$/.test(k)).reduce((s, [, v]) => s + Number(v), 0);
    try {
      const t0 = performance.now();
      const ids = Array.from({ length: n }, (_, i) => `k${String(i).padStart(7, '0')}`);
      await pool(n, 32, async (i) => {
        const body = p256();
        await Promise.all([admA.importKey(body, ids[i]), admB.importKey(body, ids[i])]);
      });
      const signer = p256();
      await Promise.all([admA.importKey(signer, 'signer'), admB.importKey(signer, 'signer')]);
      log(`filled ${n} keys at both sites in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      const drift = async (round) => {
        const some = ids.filter((_, i) => i % 1000 === 7 + round);
        for (const id of some) await admB.addKeyTag(id, 'rogue');
        await admB.importKey(p256(), `extra-${randomBytes(4).toString('hex')}`);
        await admB.deleteKey(some[0]).catch(() => undefined);
        await admA.importKey(p256(), `new-${randomBytes(4).toString('hex')}`);
      };
      const msg = Buffer.alloc(32, 1).toString('base64');
      const signFor = async (stop) => {
        const lat = [];
        await Promise.all(Array.from({ length: signers }, async () => {
          while (!stop()) {
            const t = performance.now();
            await opB.sign('signer', 'ECDSA', Buffer.from(msg, 'base64'));
            lat.push(performance.now() - t);
          }
        }));
        return lat;
      };
      for (const [round, pass] of passes.entries()) {
        await drift(round);
        // Signing alone, right before the pass: the two p99s compare runs under the same machine load.
        const idleEnd = performance.now() + signSeconds * 1000;
        await deviceSignTimes(B);
        const idle = await signFor(() => performance.now() > idleEnd);
        const p99idle = quantile(idle, 0.99);
        const deviceIdle = await deviceSignTimes(B);
        const before = await Promise.all(metrics.map(answered));
        let done = false;
        const spec = JSON.stringify({
          kind: pass === 'one-answer' ? 'one-answer' : 'ranges',
          rate: pass === 'ranges-paced' ? rate : 0,
          primary: A,
          replica: B,
          ...(pass === 'ranges-table' ? { table } : {}),
        });
        const run = spawnChild(['--child', 'pass', spec]);
        const signing = signFor(() => done);
        const res = await run.first.finally(() => (done = true));
        const lat = await signing;
        const deviceDuring = await deviceSignTimes(B);
        const after = await Promise.all(metrics.map(answered));
        // The two metrics reads of this measurement are counted too: subtract them.
        // The signatures made at the replica during the pass are not the pass's either.
        const perKey = after.map((a, i) => (a - before[i] - 1 - (i === 1 ? lat.length : 0)) / n);
        const row = {
          keys: n,
          pass: pass === 'ranges-paced' ? `ranges @${rate}/s` : pass,
          seconds: res.ms / 1000,
          reqPerKeyPrimary: perKey[0],
          reqPerKeyReplica: perKey[1],
          rssMB: res.rssMB,
          primaryRssMB: res.primaryRssMB ?? res.rssMB,
          signP99IdleMs: p99idle,
          signsIdle: idle.length,
          signP99DuringMs: quantile(lat, 0.99),
          signP99Ratio: quantile(lat, 0.99) / p99idle,
          // At the device model: the sign latency plus the p99 of the signatures' waits for a slot (what the pass's
          // requests add at the device, free of this machine's CPU load); NaN without --device-slots.
          deviceSignP99IdleMs: signMs + quantile(deviceIdle, 0.99),
          deviceSignP99DuringMs: signMs + quantile(deviceDuring, 0.99),
          deviceSignP99Ratio: (signMs + quantile(deviceDuring, 0.99)) / (signMs + quantile(deviceIdle, 0.99)),
          signs: lat.length,
          drift: `${res.missing}/${res.extra}/${res.differs}`,
          rangesDiffering: res.rangesDiffering ?? '-',
        };
        rows.push(row);
        log(JSON.stringify(row));
      }
    } finally {
      await Promise.all([baseA.close(), baseB.close()]);
      for (const s of sims) s.child.kill('SIGTERM');
      rmSync(table.dir, { recursive: true, force: true });
    }
  }
  return rows;
}

async function main() {
  const { values } = benchArgs(import.meta.url, {
    options: {
      child: { type: 'string' },
      keys: { type: 'string', default: '10000,100000' },
      big: { type: 'boolean', default: false },
      rate: { type: 'string', default: '200' },
      'device-slots': { type: 'string', default: '4' },
      'sign-seconds': { type: 'string', default: '10' },
      signers: { type: 'string', default: '2' },
      latency: { type: 'string', default: DEFAULT_LATENCY },
      passes: { type: 'string', default: 'ranges,ranges-paced,one-answer' },
      memory: { type: 'string' },
      'scrub-passes': { type: 'string', default: '8' },
    },
    allowPositionals: true,
    strict: false,
  });
  if (values.child === 'sim') return childSim(process.argv.at(-1));
  if (values.child === 'pass') return childPass(process.argv.at(-1));
  if (values.child === 'primary') return childPrimary(process.argv.at(-1));
  if (values.child === 'memory') return childMemory(process.argv.at(-1));
  if (values.memory) return console.table(await runMemoryBench(values.memory.split(',').map(Number)));
  const keys = values.keys.split(',').map(Number);
  if (values.big) keys.push(1_000_000);
  const rows = await runAntiEntropyBench({ keys, rate: Number(values.rate), deviceSlots: Number(values['device-slots']), signSeconds: Number(values['sign-seconds']), signers: Number(values.signers), latency: values.latency, passes: values.passes.split(','), scrubPasses: Number(values['scrub-passes']) });
  console.table(rows.map((r) => ({ ...r, seconds: r.seconds.toFixed(1), reqPerKeyPrimary: r.reqPerKeyPrimary.toFixed(3), reqPerKeyReplica: r.reqPerKeyReplica.toFixed(3), rssMB: r.rssMB.toFixed(0), primaryRssMB: r.primaryRssMB.toFixed(0), signP99IdleMs: r.signP99IdleMs.toFixed(1), signP99DuringMs: r.signP99DuringMs.toFixed(1), signP99Ratio: r.signP99Ratio.toFixed(2), deviceSignP99IdleMs: r.deviceSignP99IdleMs.toFixed(1), deviceSignP99DuringMs: r.deviceSignP99DuringMs.toFixed(1), deviceSignP99Ratio: r.deviceSignP99Ratio.toFixed(2) })));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
