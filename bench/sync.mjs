#!/usr/bin/env node
// Snapshot sync cost: two simulators as separate processes (`bin/nethsm-replicator sim`), A primary of namespace
// `alpha`, B its replica, each device filled to --keys keys (half in `alpha`, half in a namespace `other` that the sync
// must keep). Filling is fast: a device backup of the provisioned simulator, merged with synthetic key records
// (src/backup/synthetic.ts; opaque values, which the simulator stores and backs up as they are) and restored.
// Per round, interleaved so every path sees the same machine load:
//   raw  = backup A + backup B + restore B (B's own backup restored; under B's exclusive barrier hold),
//   sync = the daemon's code: takeSnapshot at A (device backup + extract) + applySnapshot at B until it answers (the
//          restore recorded); its verification (B3 + compare), which the daemon runs after answering, is timed apart,
//   base = (with --baseline DIR) the same sync with the applySnapshot of another checkout's dist/ (e.g. the code
//          before a change), run as its caller ran it (inside one exclusive hold).
// While each runs, a probe writes keys at B one at a time through B's device barrier (what a stream apply does:
// scoped to `alpha`, or with --probe outside unscoped, as a gateway write to another namespace) and the bench prints
// the longest probe write during that run: the write hold. The snapshot transfer between sites (HTTPS) is left out of
// both sides. Figures go to docs/benchmarks.md ("Snapshot sync").
// With --two: `other` is replicated too, and each round compares two namespaces due at once at B: `separate` (two
// applySnapshot calls at once, as each sync ran before coalescing: each restore makes the other merge again) against
// `coalesced` (one applySnapshots: one B1, one merge, one restore, one verification). Snapshots are taken together (one
// device backup at A) in both.
// With --scrypt production, the simulators and the daemon's code derive backup keys with the firmware's KDF (test: cheap).
// The bench's start is the daemons' start: each side's key caches begin empty, so round 1 is the first sync after a
// start. This code's side then warms its caches as its daemon does at start (src/daemon/key-warmup.ts: A's and B's
// device backup keys for the salts their daemons remembered from their last life, read here from each device's setup
// backup; A's snapshot sealing key): with --warm ahead (default) the warm-up ends before round 1 (a first sync some
// seconds after the start), with --warm start it begins with round 1's sync (a sync at the very start, joining it),
// with --warm none not at all (as before). The baseline's code (main before the warm-up) has none.
// With --restart: each round restarts BOTH daemons before the sync, twice, interleaved with one raw: `kept` (this code:
// A's ring records its generation in a state database, migration 008, and resumes it) against `fresh` (the same ring
// without a record: a fresh salt at each start, as before). Each restart starts every key cache empty and runs the
// daemons' warm-up (key-warmup.ts) to its end before the sync: A's and B's device keys, A's ring prepared, and B's key
// for the salt of the snapshot it applied in its last life. Each variant's first life (before round 1) is untimed.
// Prints the derivations each sync ran on its path (kept: 0; fresh: B's key for the new salt).
// Usage: npm run build && node bench/sync.mjs [--keys 20000] [--rounds 3] [--baseline DIR] [--probe alpha|outside|none] [--two] [--restart] [--scrypt test|production] [--warm ahead|start|none]
import { startSim as startSimProcess } from './lib/sim.mjs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createWriteStream, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs } from './lib/args.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (root, p) => import(pathToFileURL(path.join(root, 'dist', p)).href);
const { NetHsmClient } = await dist(ROOT, 'nethsm/client.js');
const { DeviceBarrier } = await dist(ROOT, 'concurrency/barrier.js');
const { Device } = await dist(ROOT, 'replicator/device.js');
const { WorkDir } = await dist(ROOT, 'replicator/workdir.js');
const { takeSnapshot } = await dist(ROOT, 'replicator/snapshot-source.js');
const { applySnapshot, applySnapshots } = await dist(ROOT, 'replicator/snapshot-apply.js');
const { rewriteBackup } = await dist(ROOT, 'replicator/rewrite.js');
const { writeSyntheticDeviceBackup } = await dist(ROOT, 'backup/synthetic.js');
const { TEST_SCRYPT, PRODUCTION_SCRYPT } = await dist(ROOT, 'backup/format.js');

const { values } = benchArgs(import.meta.url, {
  options: {
    keys: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '3' },
    baseline: { type: 'string' },
    probe: { type: 'string', default: 'alpha' },
    two: { type: 'boolean', default: false },
    restart: { type: 'boolean', default: false },
    scrypt: { type: 'string', default: 'test' },
    warm: { type: 'string', default: 'ahead' },
  },
});
const KEYS = Number(values.keys);
const ROUNDS = Number(values.rounds);
if (!Number.isInteger(KEYS) || KEYS < 100) throw new Error('--keys must be an integer >= 100');
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds must be a positive integer');
if (!['alpha', 'outside', 'none'].includes(values.probe)) throw new Error('--probe must be alpha, outside or none');
if (!['test', 'production'].includes(values.scrypt)) throw new Error('--scrypt must be test or production');
if (!['ahead', 'start', 'none'].includes(values.warm)) throw new Error('--warm must be ahead, start or none');
// The firmware's KDF (production) costs about a second per derivation here; the simulators then use it too.
const SCRYPT = values.scrypt === 'production' ? PRODUCTION_SCRYPT : TEST_SCRYPT;
const old = values.baseline
  ? {
      DeviceBarrier: (await dist(values.baseline, 'concurrency/barrier.js')).DeviceBarrier,
      Device: (await dist(values.baseline, 'replicator/device.js')).Device,
      applySnapshot: (await dist(values.baseline, 'replicator/snapshot-apply.js')).applySnapshot,
      takeSnapshot: (await dist(values.baseline, 'replicator/snapshot-source.js')).takeSnapshot,
      // A baseline with deferred verification (and so the hold around the restore only) runs as the daemon runs it now.
      deferred: 'applySnapshots' in (await dist(values.baseline, 'replicator/snapshot-apply.js')),
    }
  : undefined;

const P = { unlock: 'bench-unlock-passphrase', admin: 'bench-admin-passphrase', backupUser: 'bench-backup-user-pass', backup: 'bench-device-backup-pass', ns: 'bench-namespace-passphrase', replication: 'bench-replication-pass' };
const open = { passphrase: P.backup, scrypt: SCRYPT };
// As each daemon does (src/daemon/daemon.ts): the device's backup key, derived once per site for the daemon's life (one
// backup salt per device). The baseline's code ignores the option, as it did.
const { KeyCache } = await dist(ROOT, 'backup/key-cache.js');
const openAt = { a: { ...open, keyCache: new KeyCache() }, b: { ...open, keyCache: new KeyCache() } };
// And, as the daemons do: A seals snapshots under a key of its ring, B keeps the keys of the latest few salts.
const { SnapshotKeyRing } = await dist(ROOT, 'replicator/snapshot-keys.js');
const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const dir = await mkdtemp(path.join(tmpdir(), 'nhr-bench-sync-'));
const children = [];

/** A simulator process (kept for the cleanup at the end); resolves with its URL and fingerprint once it listens. */
async function startSim() {
  const sim = await startSimProcess({ testScrypt: values.scrypt === 'test', env: { NHR_LOG_LEVEL: 'warn' } });
  children.push(sim.child);
  return sim;
}

const client = (sim, username, password) => new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, auth: { username, password } });

/**
 * A site's simulator: A provisioned with a Backup user, the namespaces and their users; B bootstrapped from A's
 * backup (as init-replica does: one domain key, so records restore across sites). Each is then filled to KEYS
 * synthetic keys.
 */
async function site(name, variant, from) {
  const sim = await startSim();
  const root = client(sim, 'admin', P.admin);
  if (from) {
    await root.restore(from, { backupPassphrase: P.backup, systemTime: now() });
    await root.unlock(P.unlock);
  } else {
    await root.provision({ unlockPassphrase: P.unlock, adminPassphrase: P.admin, systemTime: now() });
    await root.createUser({ realName: 'Backup', role: 'Backup', passphrase: P.backupUser }, 'backup');
    await root.setBackupPassphrase(P.backup, '');
    for (const ns of ['alpha', 'other']) {
      await root.createUser({ realName: `${ns} admin`, role: 'Administrator', passphrase: P.ns }, `${ns}~admin`);
      await root.createUser({ realName: `${ns} replicator`, role: 'Administrator', passphrase: P.ns }, `${ns}~replicator`);
      await root.createNamespace(ns);
    }
  }
  const backup = client(sim, 'backup', P.backupUser);
  const base = path.join(dir, `${name}-base.bin`);
  await backup.backupToFile(base);
  const synthetic = path.join(dir, `${name}-synthetic.bin`);
  const half = Math.floor(KEYS / 2);
  await writeSyntheticDeviceBackup(createWriteStream(synthetic), { namespaces: { alpha: { keys: half, users: 0 }, other: { keys: KEYS - half, users: 0 } }, rootKeys: 0, rootUsers: 0, variant }, { passphrase: P.backup, scrypt: SCRYPT });
  const filled = path.join(dir, `${name}-filled.bin`);
  const keys = (p) => p.startsWith('/key/.alpha/') || p.startsWith('/key/.other/');
  await rewriteBackup({ base: { source: base, open, keep: () => true }, overlay: { source: synthetic, open, select: keys }, out: filled });
  await root.restore(filled, { backupPassphrase: P.backup, systemTime: now() });
  await Promise.all([synthetic, filled].map((f) => rm(f)));
  const work = new WorkDir(path.join(dir, name));
  await work.prepare();
  return { name, sim, root, backup, work, base, replicator: client(sim, 'alpha~replicator', P.ns), other: client(sim, 'other~admin', P.ns) };
}

function deviceOf(s, Barrier = DeviceBarrier, DeviceClass = Device) {
  const barrier = new Barrier({ maxWaitMs: 600_000, drainTimeoutMs: 600_000 });
  return { barrier, device: new DeviceClass({ admin: s.root, backup: s.backup }, barrier, P.backup) };
}

const A = await site('a', 'a');
const B = await site('b', 'b', A.base);
const devA = deviceOf(A);
const snapDeps = { site: 'a', device: devA.device, work: A.work, deviceOpen: openAt.a, replicationPassphrase: P.replication, scrypt: SCRYPT, snapshotKeys: new SnapshotKeyRing(P.replication, SCRYPT) };

// The daemons' start-up warm-up (key-warmup.ts), for this code's side: the salts its daemons would have remembered
// (the device's backup-salt, the same in every backup of it), one derivation at a time as the daemon runs them.
const { readBackupSalt } = await dist(ROOT, 'backup/reader.js');
const salts = { a: await readBackupSalt(A.base), b: await readBackupSalt(B.base) };
const warmUp = async () => {
  const t0 = performance.now();
  await openAt.a.keyCache.warm(P.backup, salts.a, SCRYPT);
  await snapDeps.snapshotKeys.prepare();
  await openAt.b.keyCache.warm(P.backup, salts.b, SCRYPT);
  return performance.now() - t0;
};
let warming;
if (values.warm === 'ahead') console.log(`warm-up (ahead of round 1): ${((await warmUp()) / 1000).toFixed(2)} s`);
const oldDevA = old ? deviceOf(A, old.DeviceBarrier, old.Device) : undefined;
// A baseline that has the daemon's key caches (key-cache.js, snapshot-keys.js: main since a403b0c) gets its own, as its
// daemon would; an older one runs without, as it did.
const oldCaches = old && existsSync(path.join(values.baseline, 'dist', 'replicator', 'snapshot-keys.js'))
  ? { KeyCache: (await dist(values.baseline, 'backup/key-cache.js')).KeyCache, SnapshotKeyRing: (await dist(values.baseline, 'replicator/snapshot-keys.js')).SnapshotKeyRing }
  : undefined;
const oldOpenAt = oldCaches ? { a: { ...open, keyCache: new oldCaches.KeyCache() }, b: { ...open, keyCache: new oldCaches.KeyCache() } } : { a: open, b: open };
const oldSnapDeps = old
  ? { ...snapDeps, device: oldDevA.device, deviceOpen: oldOpenAt.a, snapshotKeys: oldCaches ? new oldCaches.SnapshotKeyRing(P.replication, SCRYPT) : undefined }
  : undefined;
const oldSnapshotOpen = { passphrase: P.replication, scrypt: SCRYPT, ...(oldCaches ? { keyCache: new oldCaches.KeyCache(8) } : {}) };
const snapshotOpen = { passphrase: P.replication, scrypt: SCRYPT, keyCache: new KeyCache(8) };
if (old) console.log(`baseline ${values.baseline}: ${oldCaches ? 'with its own key caches, as its daemon keeps them' : 'without key caches (it has none)'}`);

// ---- the probe: one write at a time at B through the barrier in use ----------------------------------------------
let probeBarrier;
let probeWrite = Promise.resolve();
let probeN = 0;
const probeErrors = [];
let probing = true;
const probeLog = [];
const probe = (async () => {
  if (values.probe === 'none') return;
  // alpha's administrators are stripped at the replica; its replication account stays (as the daemon's stream uses).
  const c = values.probe === 'alpha' ? B.replicator : B.other;
  const scope = values.probe === 'alpha' ? { scope: 'alpha' } : {};
  while (probing) {
    const barrier = probeBarrier;
    if (!barrier) {
      await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    const t0 = performance.now();
    const body = { id: `probe${probeN++}`, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] };
    probeWrite = barrier.shared(() => c.generateKey(body), { wait: 'unbounded', ...scope }).catch((err) => {
      probeErrors.push(`${err.message} ${err.nethsmMessage ?? ''}`.trim());
    });
    await probeWrite;
    probeLog.push({ start: t0, ms: performance.now() - t0 });
    await new Promise((r) => setTimeout(r, 20));
  }
})();

let verifyMs = 0;
let verifyCpu = 0;
/** The bench process's CPU seconds (user + system, all its threads) since `c` (process.cpuUsage()). */
const cpuSince = (c) => {
  const d = process.cpuUsage(c);
  return (d.user + d.system) / 1e6;
};

/** Runs `fn` with the probe on `barrier`; returns its duration and the longest probe write that started in it. */
async function measured(barrier, fn) {
  probeBarrier = barrier;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  verifyMs = 0;
  verifyCpu = 0;
  const detail = await fn();
  // The deferred verification is not part of the sync's answer; it is reported beside it.
  const ms = performance.now() - t0 - verifyMs;
  // The host's CPU for it (the daemon's code runs in this process; the simulators in their own): less sensitive to
  // other work on the machine than the wall time, which a loaded machine stretches on the device side too.
  const cpu = cpuSince(c0) - verifyCpu;
  probeBarrier = undefined;
  // The next run may use another barrier: the probe write still in flight on this one ends first.
  await probeWrite;
  const hold = Math.max(0, ...probeLog.filter((p) => p.start >= t0 && p.start < t0 + ms).map((p) => p.ms));
  probeLog.length = 0;
  const errors = probeErrors.splice(0);
  return { ms, cpu, hold, verify: verifyMs, detail: errors.length ? `${detail ?? ''} ${errors.length} probe writes failed: ${errors[0]}` : detail };
}

async function raw() {
  const { barrier } = deviceOf(B);
  const fa = A.work.temp('raw-a');
  const fb = B.work.temp('raw-b');
  return measured(barrier, async () => {
    await A.backup.backupToFile(fa);
    await B.backup.backupToFile(fb);
    await barrier.exclusive([], () => B.root.restore(fb, { backupPassphrase: P.backup, systemTime: now() }));
    await rm(fa);
    await rm(fb);
  });
}

async function sync(kind) {
  const d = kind === 'base' ? deviceOf(B, old.DeviceBarrier, old.Device) : deviceOf(B);
  return measured(d.barrier, async () => {
    const t0 = performance.now();
    if (kind === 'new' && values.warm === 'start' && !warming) warming = warmUp().then((ms) => console.log(`  warm-up (begun with the sync): ${(ms / 1000).toFixed(2)} s`), (err) => console.log(`  warm-up failed: ${err.message}`));
    const snap = kind === 'base' ? await old.takeSnapshot(oldSnapDeps, 'alpha', 1) : await takeSnapshot(snapDeps, 'alpha', 1);
    const phases = [`snapshot ${((performance.now() - t0) / 1000).toFixed(2)}`];
    let last = performance.now();
    const onPhase = (p) => {
      phases.push(`${p}@${((performance.now() - last) / 1000).toFixed(2)}`);
      last = performance.now();
    };
    // directWriters: false, as the daemon passes it by default (the held sequence then takes no B2; a baseline from
    // before the option ignores it).
    const deps = { device: d.device, work: B.work, deviceOpen: kind === 'base' ? oldOpenAt.b : openAt.b, snapshotOpen: kind === 'base' ? oldSnapshotOpen : snapshotOpen, replicationUserId: 'replicator', knownKey: () => true, directWriters: false };
    if (kind === 'base' && !old.deferred) {
      const r = await d.barrier.exclusive([], (guard) => old.applySnapshot({ ...deps, guard }, 'alpha', snap.file, { onExisting: 'adopt' }));
      return `remerges ${r.remerges}`;
    }
    // As the daemon runs it: the answer comes once the restore is recorded, the verification (B3 + compare) after it.
    let verify;
    const apply = kind === 'base' ? old.applySnapshot : applySnapshot;
    const r = await apply({ ...deps, onPhase, deferVerify: (v) => (verify = v) }, 'alpha', snap.file, { onExisting: 'adopt' });
    phases.push(`end@${((performance.now() - last) / 1000).toFixed(2)}`);
    // The new side's key derivations so far (cumulative; its warm-up's included): A device, A sealing, B device, B snapshot.
    const derived = kind === 'new' ? ` derivations ${[openAt.a.keyCache, snapDeps.snapshotKeys, openAt.b.keyCache, snapshotOpen.keyCache].map((c) => c.derivations).join('/')}` : '';
    if (process.env.BENCH_PHASES) console.log(`  ${kind}: ${phases.join(' ')}${derived}`);
    const tv = performance.now();
    const cv = process.cpuUsage();
    const verified = await verify();
    verifyMs = performance.now() - tv;
    verifyCpu = cpuSince(cv);
    return `remerges ${r.remerges}${r.heldMerge ? ', merged inside the hold' : ''}${verified ? '' : ', not verified'}`;
  });
}

/** Two namespaces due at once at B: two applies racing each other (`separate`) or one coalesced apply. */
async function two(kind) {
  const d = deviceOf(B);
  const NS = ['alpha', 'other'];
  return measured(d.barrier, async () => {
    const snaps = await Promise.all(NS.map((ns) => takeSnapshot(snapDeps, ns, 1)));
    let restores = 0;
    let remerges = 0;
    const verifies = [];
    const shared = { device: d.device, work: B.work, deviceOpen: openAt.b, snapshotOpen, onPhase: (p) => void (p === 'restore' && restores++), deferVerify: (v) => verifies.push(v) };
    const perNs = { replicationUserId: 'replicator', knownKey: () => true };
    if (kind === 'separate') {
      const rs = await Promise.all(snaps.map((snap, i) => applySnapshot({ ...shared, ...perNs }, NS[i], snap.file, { onExisting: 'adopt' })));
      remerges = rs.reduce((n, r) => n + r.remerges, 0);
    } else {
      const out = await applySnapshots(shared, snaps.map((snap, i) => ({ namespace: NS[i], snapshotFile: snap.file, options: { onExisting: 'adopt' }, ...perNs })));
      for (const o of out.values()) {
        if (!o.ok) throw o.error;
        remerges += o.result.remerges;
      }
    }
    const tv = performance.now();
    await Promise.all(verifies.map((v) => v()));
    verifyMs = performance.now() - tv;
    return `restores ${restores}, remerges ${remerges}`;
  });
}

// ---- --restart: both daemons restarted before each sync, with and without the recorded sealing generation -------
const { StateStore } = await dist(ROOT, 'state/store.js');
const { sealingGenerationRecord } = await dist(ROOT, 'daemon/sealing-generation.js');
const { silentLogger } = await dist(ROOT, 'log.js');
const keptState = values.restart ? StateStore.inDir(path.join(dir, 'kept-state')).open() : undefined;
/** Per variant: its daemons' current life (ring and caches) and the salt of the snapshot its B applied last. */
const lives = { kept: {}, fresh: {} };

/** Restarts both daemons of `variant`: empty caches, a new ring, the start-up warm-up run to its end (untimed). */
async function restart(variant) {
  const prev = lives[variant];
  prev.ring?.close();
  for (const c of Object.values(prev.caches ?? {})) c.clear();
  const record = variant === 'kept' ? sealingGenerationRecord(keptState, silentLogger) : undefined;
  const life = { ring: new SnapshotKeyRing(P.replication, SCRYPT, undefined, undefined, record), caches: { a: new KeyCache(), b: new KeyCache(), snap: new KeyCache(8) }, lastSalt: prev.lastSalt };
  await life.caches.a.warm(P.backup, salts.a, SCRYPT);
  await life.ring.prepare();
  await life.caches.b.warm(P.backup, salts.b, SCRYPT);
  if (life.lastSalt) await life.caches.snap.warm(P.replication, life.lastSalt, SCRYPT);
  lives[variant] = life;
  return life;
}

/** The first sync of `variant`'s current life, as sync('new') runs it. */
async function lifeSync(variant) {
  const life = lives[variant];
  const d = deviceOf(B);
  const derivations = () => life.caches.a.derivations + life.ring.derivations + life.caches.b.derivations + life.caches.snap.derivations;
  const before = derivations();
  return measured(d.barrier, async () => {
    const snap = await takeSnapshot({ ...snapDeps, deviceOpen: { ...open, keyCache: life.caches.a }, snapshotKeys: life.ring }, 'alpha', 1);
    const salt = await readBackupSalt(snap.file);
    const same = life.lastSalt?.equals(salt) ?? false;
    life.lastSalt = salt;
    let verify;
    const deps = { device: d.device, work: B.work, deviceOpen: { ...open, keyCache: life.caches.b }, snapshotOpen: { passphrase: P.replication, scrypt: SCRYPT, keyCache: life.caches.snap }, replicationUserId: 'replicator', knownKey: () => true, directWriters: false };
    const r = await applySnapshot({ ...deps, deferVerify: (v) => (verify = v) }, 'alpha', snap.file, { onExisting: 'adopt' });
    const onPath = derivations() - before;
    const tv = performance.now();
    const cv = process.cpuUsage();
    const verified = await verify();
    verifyMs = performance.now() - tv;
    verifyCpu = cpuSince(cv);
    return `derivations on its path ${onPath}, ${same ? 'salt of its last life' : 'new salt'}, remerges ${r.remerges}${verified ? '' : ', not verified'}`;
  });
}

const fmt = (x) => (x / 1000).toFixed(2).padStart(7);
console.log(`snapshot sync bench: ${KEYS} keys per device (alpha ${Math.floor(KEYS / 2)}), probe ${values.probe}, ${ROUNDS} rounds, scrypt ${values.scrypt}, warm-up ${values.warm}`);
const rows = [];
try {
  for (let i = 0; values.two && i < ROUNDS; i++) {
    const r = await raw();
    const sep = await two('separate');
    const co = await two('coalesced');
    rows.push({ r, sep, co });
    console.log(
      `round ${i + 1}: raw ${fmt(r.ms)} s | two separate ${fmt(sep.ms)} s = ${(sep.ms / r.ms).toFixed(2)}× raw, hold ${fmt(sep.hold)} s, then verify ${fmt(sep.verify)} s [${sep.detail}]` +
        ` | coalesced ${fmt(co.ms)} s = ${(co.ms / r.ms).toFixed(2)}× raw, hold ${fmt(co.hold)} s, then verify ${fmt(co.verify)} s [${co.detail}]`,
    );
  }
  if (values.two) {
    const med = (xs) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    console.log(
      `median: separate/raw ${med(rows.map((x) => x.sep.ms / x.r.ms)).toFixed(2)} (with verification ${med(rows.map((x) => (x.sep.ms + x.sep.verify) / x.r.ms)).toFixed(2)}), coalesced/raw ${med(rows.map((x) => x.co.ms / x.r.ms)).toFixed(2)} (with verification ${med(rows.map((x) => (x.co.ms + x.co.verify) / x.r.ms)).toFixed(2)}), coalesced/separate ${med(rows.map((x) => x.co.ms / x.sep.ms)).toFixed(2)}`,
    );
  }
  if (values.restart) {
    for (const v of ['kept', 'fresh']) {
      await restart(v);
      console.log(`first life of ${v} (untimed): [${(await lifeSync(v)).detail}]`);
    }
  }
  for (let i = 0; values.restart && i < ROUNDS; i++) {
    const r = await raw();
    const out = {};
    // Alternate which variant runs first, so neither always follows the raw run.
    for (const v of i % 2 === 0 ? ['kept', 'fresh'] : ['fresh', 'kept']) {
      await restart(v);
      out[v] = await lifeSync(v);
    }
    rows.push({ r, ...out });
    const part = (v) => `${v} ${fmt(out[v].ms)} s = ${(out[v].ms / r.ms).toFixed(2)}× raw, host cpu ${out[v].cpu.toFixed(2)} s [${out[v].detail}]`;
    console.log(`round ${i + 1}: raw ${fmt(r.ms)} s (host cpu ${r.cpu.toFixed(2)} s) | ${part('kept')} | ${part('fresh')}`);
  }
  if (values.restart) {
    const med = (xs) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    console.log(`median of the first syncs after a restart of both daemons: kept/raw ${med(rows.map((x) => x.kept.ms / x.r.ms)).toFixed(2)}, fresh/raw ${med(rows.map((x) => x.fresh.ms / x.r.ms)).toFixed(2)}, kept/fresh ${med(rows.map((x) => x.kept.ms / x.fresh.ms)).toFixed(2)}; host cpu kept/fresh ${med(rows.map((x) => x.kept.cpu / x.fresh.cpu)).toFixed(2)}`);
  }
  for (let i = 0; !values.two && !values.restart && i < ROUNDS; i++) {
    const r = await raw();
    const s = await sync('new');
    const b = old ? await sync('base') : undefined;
    rows.push({ r, s, b });
    console.log(
      `round ${i + 1}: raw ${fmt(r.ms)} s (restore hold ${fmt(r.hold)} s, host cpu ${r.cpu.toFixed(2)} s) | sync ${fmt(s.ms)} s = ${(s.ms / r.ms).toFixed(2)}× raw, hold ${fmt(s.hold)} s = ${(s.hold / Math.max(r.hold, 1)).toFixed(2)}×, host cpu ${s.cpu.toFixed(2)} s, then verify ${fmt(s.verify)} s [${s.detail}]` +
        (b ? ` | before ${fmt(b.ms)} s = ${(b.ms / r.ms).toFixed(2)}× raw, hold ${fmt(b.hold)} s = ${(b.hold / Math.max(r.hold, 1)).toFixed(2)}×, host cpu ${b.cpu.toFixed(2)} s [${b.detail}]` : '') +
        (r.detail ? ` (raw: ${r.detail})` : ''),
    );
  }
  const med = (xs) => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  if (!values.two && !values.restart) console.log(
    `median: sync/raw ${med(rows.map((x) => x.s.ms / x.r.ms)).toFixed(2)} (with its verification ${med(rows.map((x) => (x.s.ms + x.s.verify) / x.r.ms)).toFixed(2)}), hold/raw-restore-hold ${med(rows.map((x) => x.s.hold / Math.max(x.r.hold, 1))).toFixed(2)}` +
      (old ? ` | before: sync/raw ${med(rows.map((x) => x.b.ms / x.r.ms)).toFixed(2)}, hold ${med(rows.map((x) => x.b.hold / Math.max(x.r.hold, 1))).toFixed(2)}; host cpu sync/before ${med(rows.map((x) => x.s.cpu / x.b.cpu)).toFixed(2)}` : ''),
  );
} finally {
  probing = false;
  await probe.catch(() => undefined);
  for (const c of [A.root, A.backup, A.replicator, A.other, B.root, B.backup, B.replicator, B.other]) await c.close();
  for (const c of children) c.kill('SIGTERM');
  keptState?.close();
  await rm(dir, { recursive: true, force: true });
}
