#!/usr/bin/env node
// The scale benchmark (issue 11): how snapshot sync, the write hold, the stream, anti-entropy, `status` and GET /keys
// behave as a namespace grows to 1k, 10k and 100k keys (1M with --big). Two sites, every part its own process: two
// simulators (`nethsm-replicator sim`) and two daemons (`nethsm-replicator daemon --config …`, configs in a temp dir);
// this process is the operator and the applications. Site A is primary for `alpha` (the namespace that grows) and for
// `gamma` (1,000 keys: the stream's reference), B for `beta` (one key, the probe writes); B is the replica that syncs
// `alpha` and `gamma`.
//
// It drives the daemons only through public surfaces (the admin socket that `sync` and `status` use, SIGHUP with a
// rewritten config, the daemon's JSON log, the gateway, the simulators' NetHSM API and /metrics), so it keeps working
// when snapshot sync and anti-entropy change inside.
//
// Per size n (the namespace is filled up to n keys straight at A's NetHSM, EC P-256 imports reusing 64 key pairs under
// distinct ids; the sizes build on each other):
//   sync    --rounds × (raw: backup A + backup B + restore B, each call timed; then `sync alpha` at B while --busy
//           keeps B busy at --busy-rate writes/s from 1 s before the sync to its end: `label` (default) label writes
//           to beta's key through B's gateway, `import` JSON EC key imports into beta through B's gateway, `generate`
//           POST /keys/generate into beta through B's gateway (`generate: device`), `stream` imports into gamma through
//           A's gateway (B applies them from the stream while it syncs), `none` nothing). Printed: sync / raw, the hold
//           (the longest busy write that overlapped the sync; stream: the stand-still, below) and hold / raw restore,
//           the writes made during the sync and how many failed, acknowledged keys missing at B's NetHSM afterwards
//           (lost), and from daemon B's log whether the sync took the held sequence.
//           The stream stand-still: B's gamma `onDevice` (its `status`, polled every 25 ms: the highest change whose
//           effect reached B's NetHSM; a daemon without the field: the position, which then trails the device by at most
//           a record's group commit) marks a new change on B's
//           device when it shows a seq above every seq it showed before; the stand-still is the longest time between
//           two such marks that overlaps the sync. A merge-restore of alpha whose restore erases gamma's changes applied
//           during its backup and merge moves gamma's position back (the rewind) and the stream applies them again
//           after the hold: neither the move back nor the climb over those erased changes is a new change, so the
//           stand-still runs from the last new change before the hold to the first change past the position the
//           rewind started from (the hold + the re-apply of the erased span + one apply). Until 2026-11-29 19:30 any
//           move of the position ended a stand-still, so the climb counted as progress and the figure was about the
//           hold alone (still printed: "any move of the position"). Since 2026-11-29 21:45 new changes may reach the
//           device before the erased span's records (read-ahead, docs/streaming.md "Rewind"), so the stand-still by the
//           recorded position is printed beside it ("by the recorded position"). From daemon B's log the round line also prints the
//           rewind's parts (src/stream/rewind-trace.ts): how many changes were re-read, erased and made again, and when
//           (ms after the rewind) the stream reconnected, was first admitted (the hold's end), first recorded and
//           regained its position. --keep also writes each round's polled positions and writes (trace-*.json).
//           With --busy (not none) each raw round is taken twice, quiet and then under a second instance of the same
//           load at the same rate (its own key prefix) into scratch twins that no sync or check reads: delta (B
//           primary) for label/import/generate, epsilon (A primary, applied at B from the stream) for stream. The raw
//           restore of B's own backup erases the load's writes to B's device made after that backup (what a raw
//           restore does at a busy site); they are not counted as lost (only the sync rounds' acknowledged writes are
//           checked). In beta or gamma that erasure would leave B's change log or applied position naming keys B's
//           device lacks under the later sync rounds; the twins cost the host the same without it. Also printed:
//           sync / raw under load and hold / raw restore under load.
//   stream  --rounds × (--changes EC imports through A's gateway into gamma, then as many into alpha; 8 in flight,
//           each run until B's status shows them applied): ms per change; alpha / gamma (side by side, the reference
//           always at 1k keys) is the stream cost ratio.
//   ae      one anti-entropy pass at B, started by a cron expression for a second 3 s ahead (config rewritten,
//           SIGHUP): the pass time is the `anti-entropy pass` log line's time minus that second; device requests per
//           key from both simulators' `http response total` (/metrics), both daemons' peak RSS during the pass.
//   status  20 `status` calls at B over the admin socket (what the CLI sends): p50 and max.
//   keys    GET /keys of alpha as its Operator, straight to A's NetHSM and through A's gateway, interleaved, 5 rounds.
//   rss     both daemons' RSS after the size's measurements.
// Then it fits time = a + b·n (least squares over the sizes) for each figure and projects it to 1M and 3M keys.
//
// Usage: npm run build && node bench/scale.mjs [--sizes 1000,10000,100000] [--big] [--only sync,stream,ae,status,keys]
//        [--rounds 2] [--changes 200] [--latency key-get=2ms,…] [--json] [--keep]
//        [--busy label|import|generate|stream|none] [--busy-rate 50]
//   --fill api|restore|auto: how alpha grows: imports through the NetHSM API (16 in flight, a few hundred to 2k keys/s)
//   or one restore of A's own backup with the new keys' records added by our codec (see fillByRestore); auto (the
//   default) restores for sizes above 100k.
//   --daemon-node-options OPTS: the daemons' NODE_OPTIONS; --daemon-env NAME=VALUE (repeatable): more of their
//   environment (the unit's: --daemon-node-options=--max-semi-space-size=8 --daemon-env MALLOC_ARENA_MAX=2).
//   --big: adds 1,000,000 to the sizes. --json: one JSON object on stdout (progress stays on stderr);
//   --from-json FILE: print the tables of such a saved run again (nothing measured).
//   --latency: `sim --latency` for both simulators (default: none, the simulator's own pace). --keep: keep the temp
//   dir (configs, state, each site's daemon.log and sim.log); it is kept anyway when the run fails.
// Figures go to docs/benchmarks.md ("Scale").
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { AdminClient } from '../dist/admin/client.js';
import { openBackup } from '../dist/backup/reader.js';
import { compareBackupPaths, createBackupWriter } from '../dist/backup/writer.js';
import { deriveSubKey, gcmOpen, gcmSeal, kdf, TEST_KDF } from '../dist/sim/crypto.js';
import { NetHsmClient } from '../dist/nethsm/client.js';
import { WorkDir } from '../dist/replicator/workdir.js';
import { createCa, issueCert } from '../dist/tls/index.js';
import { fitLinear, median, percentile, project } from '../dist/util/stats.js';
import { overlap, rates } from './lib/pass-timeline.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin', 'nethsm-replicator');
const ALL = ['sync', 'stream', 'ae', 'status', 'keys'];
const PASS = {
  unlock: 'scale-unlock-passphrase',
  admin: 'scale-admin-passphrase',
  backupUser: 'scale-backup-user-passphrase',
  metrics: 'scale-metrics-passphrase',
  operator: 'scale-root-operator-passphrase',
  backup: 'scale-device-backup-passphrase',
  replication: 'scale-replication-passphrase',
  nsAdmin: 'scale-namespace-admin-passphrase',
  nsOperator: 'scale-namespace-operator-passphrase',
  replicator: 'scale-replicator-passphrase',
};
const YEARLY = '0 0 1 1 *';
const LONG = 30 * 60_000;

const { values } = benchArgs(import.meta.url, {
  options: {
    sizes: { type: 'string', default: '1000,10000,100000' },
    big: { type: 'boolean', default: false },
    only: { type: 'string', default: ALL.join(',') },
    rounds: { type: 'string', default: '2' },
    changes: { type: 'string', default: '200' },
    latency: { type: 'string' },
    json: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    fill: { type: 'string', default: 'auto' },
    'ae-rate': { type: 'string' },
    'ae-passes': { type: 'string', default: '1' },
    'ae-window': { type: 'string', default: '0' },
    drift: { type: 'string', default: '0' },
    'daemon-node-options': { type: 'string' },
    'daemon-env': { type: 'string', multiple: true, default: [] },
    'from-json': { type: 'string' },
    busy: { type: 'string', default: 'label' },
    'busy-rate': { type: 'string', default: '50' },
  },
});
const SIZES = [...new Set([...values.sizes.split(',').map((s) => positiveInt(s.trim(), '--sizes')), ...(values.big ? [1_000_000] : [])])].sort((x, y) => x - y);
const ONLY = new Set(values.only.split(',').map((s) => s.trim()));
for (const o of ONLY) if (!ALL.includes(o)) throw new Error(`--only: unknown part "${o}" (parts: ${ALL.join(', ')})`);
if (!['auto', 'api', 'restore', 'sim'].includes(values.fill)) throw new Error('--fill must be auto, api, restore or sim');
const AE_RATE = values['ae-rate'] === undefined ? undefined : positiveInt(values['ae-rate'], '--ae-rate');
const AE_PASSES = positiveInt(values['ae-passes'], '--ae-passes');
const AE_WINDOW_S = nonNegativeInt(values['ae-window'], '--ae-window');
const DRIFT = nonNegativeInt(values.drift, '--drift');
/** `--daemon-env NAME=VALUE` (repeatable): set in the daemons' environment only, as the unit's `Environment=` lines. */
const DAEMON_ENV = Object.fromEntries(
  values['daemon-env'].map((kv) => {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(kv);
    if (!m) throw new Error(`--daemon-env: expected NAME=VALUE, got ${JSON.stringify(kv)}`);
    return [m[1], m[2]];
  }),
);
if (DRIFT > 0 && values.fill !== 'sim') throw new Error('--drift needs --fill sim (it tags fill keys at B)');
const ROUNDS = positiveInt(values.rounds, '--rounds');
const BUSY_MODES = ['label', 'import', 'generate', 'stream', 'none'];
if (!BUSY_MODES.includes(values.busy)) throw new Error(`--busy must be one of ${BUSY_MODES.join(', ')}, got "${values.busy}"`);
const BUSY = values.busy;
const BUSY_RATE = positiveInt(values['busy-rate'], '--busy-rate');
const CHANGES = positiveInt(values.changes, '--changes');
const say = (line) => process.stderr.write(`[scale ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

function nonNegativeInt(v, name) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a whole number, got "${v}"`);
  return n;
}

function positiveInt(v, name) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be positive integers, got "${v}"`);
  return n;
}

// ---- processes ---------------------------------------------------------------------------------------

/** A `bin/nethsm-replicator` child; keeps its output's tail and hands each output line to the current watchers. */
class Child {
  constructor(name, args, env, logFile) {
    this.name = name;
    this.args = args;
    this.env = env;
    this.logFile = logFile;
    this.tail = '';
    this.watchers = new Set();
  }

  start(ready, timeoutMs = 60_000) {
    const child = spawn(process.execPath, [BIN, ...this.args], { env: { ...process.env, ...this.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const log = createWriteStream(this.logFile, { flags: 'a' });
    child.once('close', () => log.end());
    let partial = '';
    const onData = (b) => {
      log.write(b);
      const text = partial + b.toString();
      const lines = text.split('\n');
      partial = lines.pop();
      this.tail = (this.tail + text.slice(0, text.length - partial.length)).slice(-20_000);
      for (const line of lines) for (const w of this.watchers) w(line);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    return this.waitFor((line) => ready.exec(line), timeoutMs, 'to start');
  }

  /** Resolves with `match(line)`'s first truthy result for a line printed from now on. */
  waitFor(match, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const done = (fn, v) => {
        this.watchers.delete(w);
        clearTimeout(timer);
        this.child.off('exit', onExit);
        fn(v);
      };
      const w = (line) => {
        const m = match(line);
        if (m) done(resolve, m);
      };
      const onExit = (code) => done(reject, new Error(`${this.name} exited (${code}) waiting ${what}:\n${this.tail}`));
      const timer = setTimeout(() => done(reject, new Error(`${this.name}: timed out waiting ${what}:\n${this.tail.slice(-4000)}`)), timeoutMs);
      this.watchers.add(w);
      this.child.once('exit', onExit);
    });
  }

  get pid() {
    return this.child?.pid;
  }

  async stop() {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  }
}

/** RSS and its peak (VmHWM) of a process, in MB (Linux /proc). */
function rssOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const nowRfc3339 = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

// ---- the two sites -----------------------------------------------------------------------------------

class Site {
  constructor(name, dir) {
    this.name = name;
    this.dir = dir;
    // --fill sim: each size is one `--fill` of the simulator, applied on SIGUSR2 (the same spec at both: same keys).
    const fills = values.fill === 'sim' ? SIZES.flatMap((n) => ['--fill', `alpha:${n}:scale`]) : [];
    const simArgs = ['sim', '--port', '0', '--test-scrypt', ...(values.latency ? ['--latency', values.latency] : []), ...fills];
    this.sim = new Child(`sim ${name}`, simArgs, { NHR_LOG_LEVEL: 'warn' }, path.join(dir, 'sim.log'));
    const daemonEnv = { NHR_UNSAFE_TEST_SCRYPT: '1', NHR_LOG_LEVEL: 'info', ...(values['daemon-node-options'] ? { NODE_OPTIONS: values['daemon-node-options'] } : {}), ...DAEMON_ENV };
    this.daemon = new Child(`daemon ${name}`, ['daemon', '--config', this.configPath], daemonEnv, path.join(dir, 'daemon.log'));
    this.clients = [];
  }

  get configPath() {
    return path.join(this.dir, 'config.yaml');
  }

  get stateDir() {
    return path.join(this.dir, 'state');
  }

  async startSim() {
    // `listening on <url>` comes before `fingerprint <…>`: once the second is printed, the first is in the tail.
    this.fingerprint = (await this.sim.start(/fingerprint (\S+)/))[1];
    this.simUrl = /listening on (\S+)/.exec(this.sim.tail)[1];
  }

  /** A client of the NetHSM as `user` (default its root Administrator); closed at the end. */
  client(user = 'admin', password = PASS.admin, connections = 16) {
    const c = new NetHsmClient({ url: this.simUrl, tls: { fingerprint256: this.fingerprint }, auth: { username: user, password }, connections, timeoutMs: LONG });
    this.clients.push(c);
    return c;
  }

  gatewayClient(user, password, caPem, connections = 16) {
    const c = new NetHsmClient({ url: `https://127.0.0.1:${this.ports.gateway}`, tls: { caPem }, auth: { username: user, password }, connections, timeoutMs: LONG });
    this.clients.push(c);
    return c;
  }

  get admin() {
    return new AdminClient({ socketPath: path.join(this.stateDir, 'admin.sock'), timeoutMs: LONG });
  }

  /** The NetHSM's count of answered API requests (the firmware's `http response total`; this call not yet counted). */
  async requests() {
    this.metricsClient ??= this.client('metrics', PASS.metrics, 1);
    return Number((await this.metricsClient.metrics())['http response total'] ?? 0);
  }

  async close() {
    for (const c of this.clients) await c.close().catch(() => undefined);
    await this.daemon.stop();
    await this.sim.stop();
  }
}

/** Root users, the backup passphrase, and a namespace with its admin, operator and replication account. */
async function createNamespace(root, ns) {
  await root.createUser({ realName: `${ns} admin`, role: 'Administrator', passphrase: PASS.nsAdmin }, `${ns}~admin`);
  await root.createUser({ realName: `${ns} operator`, role: 'Operator', passphrase: PASS.nsOperator }, `${ns}~operator`);
  await root.createUser({ realName: `${ns} replicator`, role: 'Administrator', passphrase: PASS.replicator }, `${ns}~replicator`);
  await root.createNamespace(ns);
}

/**
 * A provisioned, B joined from A's backup (as init-replica does), alpha and gamma at A, beta at B; and the scratch
 * namespaces of the raw rounds' load (see startBusy): epsilon at A (gamma's twin), delta at B (beta's twin).
 */
async function bootstrap(dir, a, b) {
  const rootA = a.client();
  await rootA.provision({ unlockPassphrase: PASS.unlock, adminPassphrase: PASS.admin, systemTime: nowRfc3339() });
  await rootA.createUser({ realName: 'Backup', role: 'Backup', passphrase: PASS.backupUser }, 'backup');
  await rootA.createUser({ realName: 'Metrics', role: 'Metrics', passphrase: PASS.metrics }, 'metrics');
  await rootA.createUser({ realName: 'Operator', role: 'Operator', passphrase: PASS.operator }, 'operator');
  await rootA.setBackupPassphrase(PASS.backup, '');
  await createNamespace(rootA, 'alpha');
  await createNamespace(rootA, 'gamma');
  await createNamespace(rootA, 'epsilon');
  const file = path.join(dir, 'bootstrap.bin');
  await a.client('backup', PASS.backupUser).backupToFile(file);
  const fresh = new NetHsmClient({ url: b.simUrl, tls: { fingerprint256: b.fingerprint }, timeoutMs: LONG });
  await fresh.restore(file, { backupPassphrase: PASS.backup, systemTime: nowRfc3339() });
  await fresh.unlock(PASS.unlock);
  await fresh.close();
  await createNamespace(b.client(), 'beta');
  await createNamespace(b.client(), 'delta');
  await new WorkDir(b.stateDir).recordBootstrap(['alpha', 'gamma', 'epsilon'], a.name);
  await rm(file);
}

/**
 * `aeRate`: `antiEntropy.maxRequestsPerSecond` (default `--ae-rate`; null: left out, the daemon's default).
 * What --busy needs is all here: every namespace streams (the root Operator at both sites unwraps envelopes: beta's
 * imports at A, gamma's at B), and beta keeps `generate: device` (the default, the users' practice) for `--busy generate`.
 */
function configYaml(site, peer, aeSchedule, aeRate = AE_RATE) {
  const q = JSON.stringify;
  const ns = (name, primary) => `  - name: ${name}
    primary: ${primary}
    schedule: "${YEARLY}"
    maxLagForPromote: 24h
    replicationUser: { user: "${name}~replicator", passphrase: ${q(PASS.replicator)} }`;
  return `site: ${site.name}
insecureInline: true
nethsm:
  url: ${site.simUrl}
  tls: { fingerprint256: "${site.fingerprint}" }
  credentials:
    backup: { user: backup, passphrase: ${q(PASS.backupUser)} }
    admin: { user: admin, passphrase: ${q(PASS.admin)} }
    metrics: { user: metrics, passphrase: ${q(PASS.metrics)} }
    operator: { user: operator, passphrase: ${q(PASS.operator)} }
peers:
  - { name: ${peer.name}, url: "https://127.0.0.1:${peer.ports.peer}" }
tls:
  certFile: ${path.join(site.dir, 'peer.crt')}
  keyFile: ${path.join(site.dir, 'peer.key')}
  caFile: ${path.join(site.dir, '..', 'ca.pem')}
peerApi: { listen: "127.0.0.1:${site.ports.peer}" }
health: { listen: "127.0.0.1:0" }
gateway: { listen: "127.0.0.1:${site.ports.gateway}", certFile: ${path.join(site.dir, 'gateway.crt')}, keyFile: ${path.join(site.dir, 'gateway.key')} }
stateDir: ${site.stateDir}
replication:
  passphrase: ${q(PASS.replication)}
  backupPassphrase: ${q(PASS.backup)}
namespaces:
${ns('alpha', 'a')}
${ns('gamma', 'a')}
${ns('beta', 'b')}
${ns('epsilon', 'a')}
${ns('delta', 'b')}
antiEntropy: { schedule: "${aeSchedule}"${aeRate == null ? '' : `, maxRequestsPerSecond: ${aeRate}`} }
stream: { heartbeatInterval: 1s, catchupDebounce: 100ms }
logging: { level: info }
`;
}

async function writeCerts(dir, sites) {
  const ca = await createCa({ commonName: 'nethsm-replicator scale bench CA' });
  await writeFile(path.join(dir, 'ca.pem'), ca.certPem);
  for (const s of sites) {
    const leaf = await issueCert(ca, { commonName: s.name, usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
    await writeFile(path.join(s.dir, 'peer.crt'), leaf.certPem);
    await writeFile(path.join(s.dir, 'peer.key'), leaf.keyPem, { mode: 0o600 });
    const gw = await issueCert(ca, { commonName: `${s.name}-gateway`, usages: ['serverAuth'], ipAddresses: ['127.0.0.1'] });
    await writeFile(path.join(s.dir, 'gateway.crt'), gw.certPem);
    await writeFile(path.join(s.dir, 'gateway.key'), gw.keyPem, { mode: 0o600 });
  }
  return ca.certPem;
}

// ---- helpers ---------------------------------------------------------------------------------------

/** 64 EC P-256 import bodies, reused under distinct ids (the simulator keeps each copy as its own key). */
const BODIES = Array.from({ length: 64 }, () => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const d = Buffer.from(privateKey.export({ format: 'jwk' }).d, 'base64url');
  return { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: d.toString('base64') } };
});

const keyId = (i) => `s${String(i).padStart(8, '0')}`;

/**
 * Fills alpha at A from `from` to `to` keys in one restore (`--fill restore`): A's backup is read with our codec, the
 * first 64 key records are opened with A's key-store key and sealed again under the new ids (a NetHSM seals each
 * record with its path as associated data, so a copy must be sealed for its own path), and the backup with the new
 * entries merged in, in the firmware's order, is restored onto A (an operational restore as its root Administrator;
 * same domain key, so A stays Operational). The key-store key is derived as the firmware does: the unlock passphrase
 * and the backup's unlock salt open the locked domain key from the backup's header. Needs the first 64 keys made by
 * the API (`from` ≥ 64). Holds A's current entries in memory (fine to a few million).
 */
async function fillByRestore(env, from, to) {
  const src = path.join(env.dir, 'fill-source.bin');
  const out = path.join(env.dir, 'fill-restore.bin');
  await env.backupA.backupToFile(src);
  const reader = await openBackup(src, { passphrase: PASS.backup });
  const h = reader.header;
  const backupKey = Buffer.from(reader.backupKey);
  const configStoreKey = Buffer.from(h.configStoreKey);
  const entries = [];
  for await (const e of reader.entries()) entries.push([e.path, Buffer.from(e.value)]);
  const scrypt = reader.scrypt;
  await reader.close();
  const saltPath = `/local/${h.deviceId}/config/unlock-salt`;
  const salt = gcmOpen(configStoreKey, saltPath, entries.find(([p]) => p === saltPath)[1]);
  const domainKey = gcmOpen(await kdf(PASS.unlock, salt, TEST_KDF), 'passphrase', h.lockedDomainKey);
  const store = deriveSubKey(domainKey, 'key_store');
  const byPath = new Map(entries);
  const records = Array.from({ length: 64 }, (_, i) => gcmOpen(store, `/key/.alpha/${keyId(i)}`, byPath.get(`/key/.alpha/${keyId(i)}`)));
  const header = { backupKey, salt: h.salt, scrypt, lockedDomainKey: h.lockedDomainKey, deviceId: h.deviceId, configStoreKey };
  const writer = await createBackupWriter(createWriteStream(out), header);
  let next = from;
  const newPath = () => `/key/.alpha/${keyId(next)}`;
  for (const [p, v] of entries) {
    for (; next < to && compareBackupPaths(newPath(), p) < 0; next++) await writer.writeEntry(newPath(), gcmSeal(store, newPath(), records[next % 64]));
    await writer.writeEntry(p, v);
  }
  if (next !== to) throw new Error(`fill by restore: ${to - next} new keys found no place in the backup`);
  await writer.finish();
  for (const k of [backupKey, configStoreKey, h.configStoreKey, domainKey, store, ...records]) k.fill(0);
  await env.rootA.restore(out, { backupPassphrase: PASS.backup });
  if ((await env.rootA.healthState()) === 'Locked') await env.rootA.unlock(PASS.unlock);
  await Promise.all([rm(src), rm(out)]);
  // The NetHSM must read the new records as keys: all listed, and the last one opens.
  const listed = (await env.opA.listKeys({ prefix: 's0' })).length;
  const last = await env.opA.getKey(keyId(to - 1));
  if (listed !== to || last.type !== 'EC_P256') throw new Error(`fill by restore: A lists ${listed} of ${to} keys, the last one is ${JSON.stringify(last)}`);
}

/** The i-th key of a simulator's `--fill` (src/sim/fill.ts). */
const fillKeyId = (i) => `f${String(i).padStart(8, '0')}`;

/**
 * `--fill sim`: both simulators apply their next `--fill alpha:<n>:scale` at once (SIGUSR2), so both devices hold the
 * same n fill keys (same ids, same key material) without a sync. Resolves with the fill times and the simulators' RSS.
 */
async function fillBySim(env) {
  const sites = [env.a, env.b];
  const done = sites.map((s) =>
    s.sim.waitFor((line) => (/^filled alpha: (\d+) keys added, (\d+) kept, in (\d+) ms/.exec(line) ? line : /^fill of alpha waits/.test(line) ? `error: ${line}` : undefined), LONG, 'to fill'),
  );
  for (const s of sites) process.kill(s.sim.pid, 'SIGUSR2');
  const lines = await Promise.all(done);
  const bad = lines.find((l) => l.startsWith('error: '));
  if (bad) throw new Error(`fill by the simulators: ${bad}`);
  const ms = lines.map((l) => Number(/in (\d+) ms/.exec(l)[1]));
  return { fillMs: { a: ms[0], b: ms[1] }, simRss: { a: rssOf(env.a.sim.pid), b: rssOf(env.b.sim.pid) } };
}

/**
 * `--drift K`: K fill keys, spread over the namespace, get the tag `d<tag>` straight at B's NetHSM (around the
 * replicator, as a foreign write would): the pass must find exactly K differing keys and repair them through the API.
 */
async function makeDrift(env, tag) {
  if (DRIFT === 0) return;
  const fills = env.fillCount;
  await pool(0, DRIFT, 8, (j) => env.adminB.addKeyTag(fillKeyId(Math.floor((j * fills) / DRIFT)), `d${tag}`));
}

/** Runs op(i) for i in [from, to) with `concurrency` in flight. */
async function pool(from, to, concurrency, op) {
  let next = from;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < to) await op(next++);
    }),
  );
}

async function eventually(check, timeoutMs, what, everyMs = 50) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

async function timed(fn) {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

const nsStatus = async (site, ns) => (await site.admin.status()).namespaces.find((n) => n.name === ns);

/** Waits until every replica namespace of both sites streams. */
async function streaming(sites) {
  await eventually(
    async () => {
      for (const [s, ns] of sites) if ((await nsStatus(s, ns))?.stream?.state !== 'streaming') return false;
      return true;
    },
    120_000,
    'every replica to stream',
    200,
  );
}

async function sync(site, ns) {
  const r = await site.admin.namespaceAction(ns, 'sync', { actor: 'scale-bench' });
  if (r.outcome !== 'applied' && r.outcome !== 'requested') throw new Error(`sync ${ns} at ${site.name}: ${JSON.stringify(r)}`);
  return r;
}

// ---- the measurements ----------------------------------------------------------------------------

/** Raw device work of one sync: backup A, backup B, restore B (B's own backup: the device is left as it was). */
async function rawRound(env, tag) {
  const { dir } = env;
  const fa = path.join(dir, `raw-a-${tag}.bin`);
  const fb = path.join(dir, `raw-b-${tag}.bin`);
  const backupA = await timed(() => env.backupA.backupToFile(fa));
  const backupB = await timed(() => env.backupB.backupToFile(fb));
  const restoreB = await timed(() => env.rootB.restore(fb, { backupPassphrase: PASS.backup }));
  await Promise.all([rm(fa), rm(fb)]);
  return { backupA: backupA.ms, backupB: backupB.ms, restoreB: restoreB.ms, total: backupA.ms + backupB.ms + restoreB.ms, bytes: backupA.value };
}

/**
 * One raw round under the --busy load (startBusy's scratch instance, same rate, from 1 s before the round to its end):
 * the raw work at a busy site. The writes its restore erases are not counted as lost (not checked at all): a raw
 * restore loses them, which is why the daemon exists; only the sync rounds' acknowledged writes are checked.
 */
async function loadedRawRound(env, tag) {
  const busy = startBusy(env, tag, true);
  await sleep(1000); // the load's pace before the round, as before a sync
  const raw = await rawRound(env, `l${tag}`);
  const { writes, errors } = await busy.stop();
  return { raw, writes: writes.length, failed: writes.filter((w) => !w.ok).length, errors: [...new Set(errors)].slice(0, 3) };
}

/** Most writes of the busy load in flight at once: past it the pacer waits (only a hold over 256 / rate s reaches it). */
const BUSY_MAX_IN_FLIGHT = 256;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The load that keeps B busy while it syncs alpha (--busy), --busy-rate writes per second paced by the clock (write i
 * starts at i / rate s, however long the earlier ones take; at most BUSY_MAX_IN_FLIGHT in flight):
 *   label     PUT /keys/probe/label in beta (B primary) through B's gateway;
 *   import    PUT /keys/{id} with a JSON EC P-256 private key into beta through B's gateway (keys made outside the HSM);
 *   generate  POST /keys/generate (EC P-256) into beta through B's gateway (beta has `generate: device`, the default);
 *   stream    PUT /keys/{id} into gamma through A's gateway: B, gamma's replica, applies them from the stream.
 * `stop()` ends the pacing, waits for the writes in flight and resolves with each write's { s0, s1, ok, id }.
 *
 * `scratch`: the same load for the raw rounds (a separate instance, its own key prefix), into the scratch twins no sync
 * and no check reads: delta (B primary, streamed to A) instead of beta, epsilon (A primary, applied at B from the
 * stream) instead of gamma. The host pays the same (B's gateway, capture, sealing, both simulators, the peer's stream
 * apply), but the raw restore of B's own backup, which erases every write to B's device made after that backup (what
 * a raw restore does at a busy site), erases only scratch keys: in beta or gamma it would leave B's change log (beta)
 * or applied position (gamma) naming keys B's device lacks, and the label mode's probe with a label older than the
 * one A holds, under the later sync rounds that are measured and checked for lost writes.
 */
function startBusy(env, tag, scratch = false) {
  const prefix = `${scratch ? 'rz' : 'bz'}${tag}x`;
  const writes = [];
  const errors = [];
  const atB = scratch ? env.scratchB : env.busyB;
  const atA = scratch ? env.scratchA : env.busyA;
  const op = {
    label: (i) => atB.setKeyLabel('probe', `p${i % 1000}`),
    import: (i) => atB.importKey(BODIES[i % BODIES.length], `${prefix}${i}`),
    generate: (i) => atB.generateKey({ id: `${prefix}${i}`, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }),
    stream: (i) => atA.importKey(BODIES[i % BODIES.length], `${prefix}${i}`),
  }[BUSY];
  let stopped = false;
  let inFlight = 0;
  let wake;
  const run = (async () => {
    const all = [];
    const t0 = performance.now();
    for (let i = 0; !stopped; i++) {
      const wait = t0 + (i * 1000) / BUSY_RATE - performance.now();
      if (wait > 0) await sleep(wait);
      while (inFlight >= BUSY_MAX_IN_FLIGHT && !stopped) await new Promise((r) => (wake = r));
      if (stopped) break;
      inFlight++;
      const s0 = performance.now();
      const done = (ok) => () => {
        writes.push({ s0, s1: performance.now(), ok, id: `${prefix}${i}` });
        inFlight--;
        wake?.();
      };
      all.push(
        op(i).then(done(true), (err) => {
          errors.push(`${err.code ?? ''} ${err.message}`.trim());
          done(false)();
        }),
      );
    }
    await Promise.all(all);
  })();
  return {
    prefix,
    stop: async () => {
      stopped = true;
      wake?.();
      await run;
      return { writes, errors };
    },
  };
}

/**
 * Polls B's applied stream position of `ns` every 25 ms until `stop()`: resolves with the times it moved (back or
 * forth); `samples` keeps every poll ({ t: wall-clock ms, p: performance.now(), seq }) for `newHighs`.
 */
function watchPosition(site, ns) {
  const moves = [];
  const samples = [];
  let stopped = false;
  const run = (async () => {
    let last = -1;
    while (!stopped) {
      const stream = (await nsStatus(site, ns))?.stream;
      const seq = stream?.position?.seq ?? -1;
      const t = performance.now();
      if (seq !== last) moves.push(t);
      // `dev`: the highest change whose effect reached B's device (status `onDevice`; a daemon without it: the position).
      samples.push({ t: Date.now(), p: t, seq, dev: stream?.onDevice?.seq ?? seq });
      last = seq;
      await sleep(25);
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await run;
      return moves;
    },
    samples,
  };
}

/**
 * The times (performance.now()) the polled position first showed a change beyond every one it showed before: a new
 * change on B's device. A position moved back (a rewind) and climbing again over changes it showed before is not one:
 * those are changes the restore erased, made again.
 */
function newHighs(samples, key = 'dev') {
  const highs = [];
  let high = -Infinity;
  for (const x of samples) {
    if (x[key] > high) {
      if (high !== -Infinity) highs.push(x.p);
      high = x[key];
    }
  }
  return highs;
}

/**
 * From daemon B's log during a round: the rewind of `ns` (the merge-restore moved its position back before the changes
 * its restore erased) and the puller's line once the position is back where it was (rewind-trace.ts): how far back,
 * how many of the re-read changes were erased, and the parts in ms after the rewind.
 */
function rewindFromLog(lines, ns) {
  const back = lines.find((j) => j.namespace === ns && /^stream position moved back/.test(j.msg ?? ''));
  const regained = lines.find((j) => j.namespace === ns && /^stream position back where it was/.test(j.msg ?? ''));
  if (!back) return undefined;
  // The rewind line names positions as epoch.seq.
  const rewoundTo = Number(String(back.rewoundTo).split('.').at(-1));
  return { rewoundTo, ...(regained ? { regained: regained.regained, applied: regained.applied, present: regained.present, ms: regained.ms, applyLimit: regained.applyLimit } : {}) };
}

/** Collects daemon `child`'s JSON log lines until the returned function is called (which resolves with them). */
function watchLog(child) {
  const lines = [];
  const w = (line) => {
    if (!line.startsWith('{')) return;
    try {
      lines.push(JSON.parse(line));
    } catch {
      // a line cut by the pipe: not one of ours
    }
  };
  child.watchers.add(w);
  return () => {
    child.watchers.delete(w);
    return lines;
  };
}

/**
 * From daemon B's log during one `sync alpha`: whether it took the held sequence (backup and merge inside the
 * exclusive hold), how (at once: a recent sync raced; after racing attempts), and how many attempts writes raced.
 */
function heldFromLog(lines) {
  const synced = lines.find((j) => j.msg === 'namespace synced' && j.namespace === 'alpha');
  const raced = lines.filter((j) => /passed the device barrier during the backup and merge; merging again/.test(j.msg ?? '')).length;
  const atOnce = lines.some((j) => /^merging inside the exclusive hold at once/.test(j.msg ?? ''));
  const after = lines.find((j) => /merging inside the exclusive hold/.test(j.msg ?? '') && !/at once/.test(j.msg));
  const held = synced?.heldMerge ?? (atOnce || after !== undefined);
  const how = !held ? (raced ? `no (${raced} raced attempts)` : 'no') : atOnce ? 'at once (held mode)' : after ? `after ${raced} raced attempts (last: ${after.writes} writes)` : 'yes';
  return { held, how, racedAttempts: raced, remerges: synced?.remerges };
}

/** Which of the acknowledged writes' keys B's NetHSM lacks after the sync (imports, generates, streamed imports). */
async function lostAtB(env, busy, writes) {
  const acked = writes.filter((w) => w.ok).map((w) => w.id);
  if (BUSY === 'label') return undefined; // a label overwrites the last: nothing to count
  if (acked.length === 0) return [];
  if (BUSY === 'stream') {
    const head = (await nsStatus(env.a, 'gamma'))?.stream?.position?.seq ?? -1;
    await eventually(async () => ((await nsStatus(env.b, 'gamma'))?.stream?.position?.seq ?? -1) >= head, 120_000, 'B to apply gamma up to A', 50);
  }
  const present = new Set(await (BUSY === 'stream' ? env.gammaB : env.betaB).listKeys({ prefix: busy.prefix }));
  return acked.filter((id) => !present.has(id));
}

/**
 * `sync alpha` at B while the --busy load runs (from 1 s before the sync to its end). The hold is the longest write
 * of the load that overlapped the sync (stream: the longest time B's gamma position stood still while A kept writing).
 */
async function syncRound(env, tag) {
  await env.adminA.importKey(BODIES[0], `x${tag}`); // a change the stream does not carry: each sync has work to do
  const busy = BUSY === 'none' ? undefined : startBusy(env, tag);
  const position = BUSY === 'stream' ? watchPosition(env.b, 'gamma') : undefined;
  await sleep(1000); // the load's pace before the sync
  const log = watchLog(env.b.daemon);
  const roundLog = position ? watchLog(env.b.daemon) : undefined;
  const t0 = performance.now();
  const s = await timed(() => sync(env.b, 'alpha'));
  const t1 = performance.now();
  const held = heldFromLog(log());
  const { writes, errors } = busy ? await busy.stop() : { writes: [], errors: [] };
  const lost = busy ? await lostAtB(env, busy, writes) : undefined;
  const moves = position ? await position.stop() : [];
  const rewind = roundLog ? rewindFromLog(roundLog(), 'gamma') : undefined;
  if (position && values.keep) {
    // --keep: the round's trace, for breaking a stand-still into its parts against daemon B's log (wall-clock ms).
    const wall = (p) => Math.round(p - performance.now() + Date.now());
    const trace = { syncStart: wall(t0), syncEnd: wall(t1), positions: position.samples, writes: writes.map((w) => ({ s0: wall(w.s0), s1: wall(w.s1), ok: w.ok, id: w.id })) };
    await writeFile(path.join(env.dir, `trace-${env.n}-${tag}.json`), JSON.stringify(trace));
  }
  const overlaps = (a, b) => b >= t0 && a <= t1;
  const during = writes.filter((w) => overlaps(w.s0, w.s1));
  let lat = during.map((w) => w.s1 - w.s0);
  let before = writes.filter((w) => w.s1 < t0).map((w) => w.s1 - w.s0);
  let moveMax;
  let recordMax;
  if (position) {
    // The stand-still: the longest time between two new changes on B's device (newHighs) that overlaps the sync.
    const gapsOf = (ts) => ts.slice(1).map((m, j) => [ts[j], m]);
    const gaps = gapsOf(newHighs(position.samples));
    lat = gaps.filter(([a, b]) => overlaps(a, b)).map(([a, b]) => b - a);
    // The same measured on the stored position (new changes recorded, which go in order behind the erased span).
    const recorded = gapsOf(newHighs(position.samples, 'seq')).filter(([a, b]) => overlaps(a, b)).map(([a, b]) => b - a);
    recordMax = recorded.length ? Math.max(...recorded) : NaN;
    before = gaps.filter(([, b]) => b < t0).map(([a, b]) => b - a);
    // The measure before: any move of the position, back or forth, ended a stand-still (a rewind and the climb over the
    // erased changes counted as progress). Kept for comparison with older figures.
    const moved = gapsOf(moves).filter(([a, b]) => overlaps(a, b)).map(([a, b]) => b - a);
    moveMax = moved.length ? Math.max(...moved) : NaN;
  }
  return {
    ms: s.ms,
    probeMax: lat.length ? Math.max(...lat) : NaN,
    probeP99: lat.length ? percentile(lat, 99) : NaN,
    probeP50Before: before.length ? median(before) : NaN,
    probes: during.length,
    probeFailures: writes.filter((w) => !w.ok).length,
    writesTotal: writes.length,
    failedDuring: during.filter((w) => !w.ok).length,
    errors: [...new Set(errors)].slice(0, 3),
    lost: lost?.length,
    lostSample: lost?.slice(0, 5) ?? [],
    held,
    ...(position ? { moveMax, recordMax, rewind } : {}),
  };
}

/** The stand-still's parts from daemon B's log (rewindFromLog). */
function describeRewind(r) {
  if (r.ms === undefined) return `gamma rewound to ${r.rewoundTo} (not regained while watched)`;
  const m = r.ms;
  return (
    `gamma rewound ${r.regained - r.rewoundTo} changes (${r.applied} erased, made again; ${r.present} still there): ` +
    `after the rewind reconnected +${m.reconnected} ms, first admitted (the hold's end) +${m.admitted}, ` +
    (m.firstEffect === undefined ? '' : `first effect on the device +${m.firstEffect} (it took ${m.firstEffectMs} ms, its envelope unwrap ${m.firstUnwrapMs ?? '–'}), first new change on the device +${m.firstNew}, `) +
    `first record +${m.firstRecord}, position regained +${m.regained} (the adaptive apply limit at the rewind ${r.applyLimit?.atRewind}, at the regain ${r.applyLimit?.atRegain})`
  );
}

/** The mean of two raw rounds, field by field: the raw work around a sync, one taken before it and one after. */
function meanRaw(x, y) {
  return Object.fromEntries(Object.keys(x).map((k) => [k, (x[k] + y[k]) / 2]));
}

/** The quiet raw round and, under --busy, the loaded one (quiet first, then loaded; `loaded` undefined without load). */
async function rawRounds(env, tag) {
  const quiet = await rawRound(env, tag);
  const loaded = BUSY === 'none' ? undefined : await loadedRawRound(env, tag);
  return { quiet, loaded };
}

async function measureSync(env) {
  const rounds = [];
  // Raw rounds before the first sync and after each: a round's raw is the mean of the two around its sync (a single
  // restore of a 20k-key device takes 0.1–0.8 s on the shared machine, too noisy to divide the hold by alone). Under
  // --busy each of them is a quiet raw round then one under the load (loadedRawRound): sync / raw divides by the
  // quiet one (as before), sync / loaded raw by the one that shares the host with the same load as the sync.
  let before = await rawRounds(env, `${env.n}-0`);
  for (let r = 0; r < ROUNDS; r++) {
    const s = await syncRound(env, `${env.n}r${r}`);
    const after = await rawRounds(env, `${env.n}-${r + 1}`);
    const raw = meanRaw(before.quiet, after.quiet);
    const loaded = before.loaded && {
      raw: meanRaw(before.loaded.raw, after.loaded.raw),
      writes: before.loaded.writes + after.loaded.writes,
      failed: before.loaded.failed + after.loaded.failed,
      errors: [...new Set([...before.loaded.errors, ...after.loaded.errors])].slice(0, 3),
    };
    before = after;
    rounds.push({ raw, sync: s, ...(loaded ? { loadedRaw: loaded.raw, loadedWrites: loaded.writes, loadedFailed: loaded.failed } : {}) });
    const lr = loaded?.raw;
    say(
      `  sync round ${r + 1} (busy ${BUSY}${BUSY === 'none' ? '' : ` ${BUSY_RATE}/s`}): raw ${(raw.total / 1000).toFixed(1)} s (backup A ${(raw.backupA / 1000).toFixed(1)}, backup B ${(raw.backupB / 1000).toFixed(1)}, restore B ${(raw.restoreB / 1000).toFixed(1)}), ` +
        (lr
          ? `raw under load ${(lr.total / 1000).toFixed(1)} s (backup A ${(lr.backupA / 1000).toFixed(1)}, backup B ${(lr.backupB / 1000).toFixed(1)}, restore B ${(lr.restoreB / 1000).toFixed(1)}; ` +
            `scratch writes ${loaded.writes}, failed ${loaded.failed}${loaded.errors.length ? ` (${loaded.errors.join(' | ')})` : ''}, those after B's backup erased by its restore, not counted), `
          : '') +
        `sync ${(s.ms / 1000).toFixed(1)} s = ${(s.ms / raw.total).toFixed(2)} × raw` +
        (lr ? ` = ${(s.ms / lr.total).toFixed(2)} × raw under load, ` : ', ') +
        (BUSY === 'none'
          ? 'no load; '
          : `hold ${s.probeMax.toFixed(0)} ms = ${(s.probeMax / raw.restoreB).toFixed(2)} × raw restore = ${(s.probeMax / lr.restoreB).toFixed(2)} × raw restore under load (p50 before the sync ${s.probeP50Before.toFixed(0)} ms); `) +
        (s.rewind ? `${describeRewind(s.rewind)}; by the recorded position ${s.recordMax.toFixed(0)} ms = ${(s.recordMax / raw.restoreB).toFixed(2)} × raw restore; any move of the position (the measure before) ${s.moveMax.toFixed(0)} ms; ` : '') +
        `writes during the sync ${s.probes} (failed ${s.failedDuring}; in the round ${s.writesTotal}, failed ${s.probeFailures}, lost ${s.lost ?? '–'}); held sequence: ${s.held.how}` +
        (s.errors.length ? `; errors: ${s.errors.join(' | ')}` : '') +
        (s.lost > 0 ? `; lost e.g. ${s.lostSample.join(', ')}` : ''),
    );
  }
  const m = (f) => median(rounds.map(f));
  return {
    busy: BUSY,
    busyRate: BUSY === 'none' ? 0 : BUSY_RATE,
    rounds,
    rawS: m((x) => x.raw.total) / 1000,
    rawRestoreS: m((x) => x.raw.restoreB) / 1000,
    backupBytes: m((x) => x.raw.bytes),
    syncS: m((x) => x.sync.ms) / 1000,
    ratio: m((x) => x.sync.ms / x.raw.total),
    holdMaxS: m((x) => x.sync.probeMax) / 1000,
    holdP99S: m((x) => x.sync.probeP99) / 1000,
    holdRatio: m((x) => x.sync.probeMax / x.raw.restoreB),
    // Under --busy: the same against the raw rounds under the same load (undefined with --busy none).
    ...(BUSY === 'none'
      ? {}
      : {
          loadedRawS: m((x) => x.loadedRaw.total) / 1000,
          loadedRawRestoreS: m((x) => x.loadedRaw.restoreB) / 1000,
          loadedRatio: m((x) => x.sync.ms / x.loadedRaw.total),
          loadedHoldRatio: m((x) => x.sync.probeMax / x.loadedRaw.restoreB),
          loadedFailed: rounds.reduce((t, x) => t + x.loadedFailed, 0),
        }),
    probeFailures: rounds.reduce((t, x) => t + x.sync.probeFailures, 0),
    lost: rounds.some((x) => x.sync.lost !== undefined) ? rounds.reduce((t, x) => t + (x.sync.lost ?? 0), 0) : undefined,
  };
}

/** `ids` imports into `ns` through A's gateway, 8 in flight, until B's status shows the stream at A's head. */
async function streamRun(env, ns, ids, tag) {
  const head = async () => (await nsStatus(env.a, ns))?.stream?.position?.seq ?? -1;
  const at = async () => (await nsStatus(env.b, ns))?.stream?.position?.seq ?? -1;
  const t0 = performance.now();
  await pool(0, ids, 8, (i) => env.gw[ns].importKey(BODIES[i % BODIES.length], `st${tag}x${i}`));
  const sent = performance.now();
  const target = await head();
  await eventually(async () => (await at()) >= target, 600_000, 'B to apply the stream', 20);
  const ms = performance.now() - t0;
  return { changes: ids, msPerChange: ms / ids, acceptedMsPerChange: (sent - t0) / ids };
}

/** Rounds of (gamma run, alpha run), back to back: alpha's cost per change and its ratio to gamma's (1k keys). */
async function measureStream(env) {
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const ref = await streamRun(env, 'gamma', CHANGES, `g${env.n}r${r}`);
    const big = await streamRun(env, 'alpha', CHANGES, `${env.n}r${r}`);
    rounds.push({ gammaMs: ref.msPerChange, alphaMs: big.msPerChange, ratio: big.msPerChange / ref.msPerChange });
  }
  return { changes: CHANGES, rounds, msPerChange: median(rounds.map((x) => x.alphaMs)), refMsPerChange: median(rounds.map((x) => x.gammaMs)), ratio: median(rounds.map((x) => x.ratio)) };
}

/** Pauses `ns` at B for the duration of `fn` (so an anti-entropy pass at B reads alpha only). */
async function pausedAtB(env, ns, fn) {
  await env.b.admin.namespaceAction(ns, 'pause', { actor: 'scale-bench' });
  try {
    return await fn();
  } finally {
    await env.b.admin.namespaceAction(ns, 'resume', { actor: 'scale-bench' });
  }
}

/** A 6-field cron expression (seconds first) for the local time `d`: fires at that second once a year. */
function cronAt(d) {
  return `${d.getSeconds()} ${d.getMinutes()} ${d.getHours()} ${d.getDate()} ${d.getMonth() + 1} *`;
}

async function reschedule(env, schedule, rate = AE_RATE) {
  await writeFile(env.b.configPath, configYaml(env.b, env.a, schedule, rate), { mode: 0o600 });
  process.kill(env.b.daemon.pid, 'SIGHUP');
}

/**
 * Fires one anti-entropy pass of alpha at B (a cron second 3 s ahead, SIGHUP) and samples both simulators' answered
 * requests every `everyMs` (a timeline [s since the fire, requests A, requests B]) and both daemons' RSS every 200 ms,
 * until `until(logged)` resolves. Returns the samples; the timeline's own /metrics reads are counted in `reads`.
 */
async function firePass(env, rate, everyMs, until) {
  const { a, b } = env;
  const fire = new Date(Math.ceil(Date.now() / 1000) * 1000 + 3000);
  const logged = b.daemon.waitFor(
    (line) => {
      // The pass's own line, or the scheduler's when the pass threw (e.g. the primary's inventory timed out).
      if (!line.includes('"anti-entropy pass"') && !line.includes('"scheduled job failed"')) return undefined;
      const rec = JSON.parse(line);
      return rec.namespace === 'alpha' || rec.job === 'anti-entropy:alpha' ? rec : undefined;
    },
    6 * 3600_000,
    'for the anti-entropy pass',
  );
  await reschedule(env, cronAt(fire), rate);
  const peak = { a: 0, b: 0 };
  const sampler = setInterval(() => {
    peak.a = Math.max(peak.a, rssOf(a.daemon.pid).rss);
    peak.b = Math.max(peak.b, rssOf(b.daemon.pid).rss);
  }, 200);
  const timeline = [];
  let reads = 0;
  let sampling = Promise.resolve();
  const tick = setInterval(() => {
    sampling = sampling.then(async () => {
      const [ra, rb] = [await a.requests(), await b.requests()];
      reads++;
      timeline.push([(Date.now() - fire.getTime()) / 1000, ra, rb]);
      // A long pass says how it goes every ~60 s (so a run cut short still leaves its figures in the log).
      if (timeline.length % Math.max(1, Math.round(60_000 / everyMs)) === 0) {
        const [t, a1, b1] = timeline.at(-1);
        const [, a0, b0] = timeline[0];
        say(`  … ${t.toFixed(0)} s: requests since the start A ${a1 - a0} / B ${b1 - b0}, daemon RSS now ${rssOf(a.daemon.pid).rss.toFixed(0)} / ${rssOf(b.daemon.pid).rss.toFixed(0)} MB (peak ${peak.a.toFixed(0)} / ${peak.b.toFixed(0)})`);
      }
    });
  }, everyMs);
  let rec;
  try {
    rec = await until(logged);
  } finally {
    clearInterval(sampler);
    clearInterval(tick);
    await sampling;
  }
  return { fire, rec, peak, timeline, reads };
}

/** The daemons' own polling of their NetHSMs (health, metrics) in requests per second, from 2 quiet seconds. */
async function idleRates(env) {
  const { a, b } = env;
  const quiet0 = [await a.requests(), await b.requests()];
  await new Promise((r) => setTimeout(r, 2000));
  const [ra, rb] = [await a.requests(), await b.requests()];
  return { idle: { a: Math.max(0, (ra - quiet0[0] - 1) / 2), b: Math.max(0, (rb - quiet0[1] - 1) / 2) }, ra, rb };
}

/** One anti-entropy pass of alpha at B: time, device requests at both sites, peak RSS of both daemons. */
async function measureAntiEntropy(env) {
  const { a, b } = env;
  const { idle, ra, rb } = await idleRates(env);
  const counted = performance.now();
  const everyMs = env.n >= 100_000 ? 5000 : 1000;
  const { fire, rec, peak, timeline, reads } = await firePass(env, AE_RATE, everyMs, (logged) => logged);
  const passS = (Date.parse(rec.time) - fire.getTime()) / 1000;
  // The second /metrics read counts the first; the daemons' idle polling over the same time is taken off.
  const [ea, eb] = [await a.requests(), await b.requests()];
  const s = (performance.now() - counted) / 1000;
  const [da, db] = [Math.round(ea - ra - 1 - reads - idle.a * s), Math.round(eb - rb - 1 - reads - idle.b * s)];
  await reschedule(env, YEARLY);
  const found = { missing: rec.missing, extra: rec.extra, differs: rec.differs };
  if (rec.job) found.failed = rec.err?.message ?? 'failed';
  const rs = rates(timeline, idle);
  return {
    passS,
    requestsA: da,
    requestsB: db,
    requestsPerKey: (da + db) / env.n,
    perKeyA: da / env.n,
    perKeyB: db / env.n,
    ratePerSiteA: da / passS,
    ratePerSiteB: db / passS,
    idleRequestsPerS: idle,
    rssPeakA: peak.a,
    rssPeakB: peak.b,
    found,
    repaired: rec.repaired,
    certs: rec.certs,
    concurrency: overlap(rs, passS),
    timeline: rs.map((r) => [Math.round(r.t), Math.round(r.a), Math.round(r.b)]),
  };
}

/**
 * `--ae-window S`: both daemons restarted with the default pace (no `maxRequestsPerSecond` in their configs: 200 per
 * site), one pass fired at B and watched for S seconds: each site's requests per second, then both daemons restarted
 * with the bench's config again (which ends that pass).
 */
async function measureWindow(env, seconds) {
  const { a, b } = env;
  const restart = async (rate) => {
    await writeFile(a.configPath, configYaml(a, b, YEARLY, rate), { mode: 0o600 });
    await writeFile(b.configPath, configYaml(b, a, YEARLY, rate), { mode: 0o600 });
    // B stops first and starts last: a replica that sees its primary restart takes a snapshot from it (daemon.ts,
    // resumeMember), which at a million keys is a sync of minutes and empties B's certificate table.
    await b.daemon.stop();
    await a.daemon.stop();
    await a.daemon.start(/"msg":"daemon started"/, 600_000);
    await b.daemon.start(/"msg":"daemon started"/, 600_000);
    // Streaming again means B sees A and its NetHSM as available (else a pass is skipped). gamma stays paused at B.
    await streaming([[b, 'alpha'], [a, 'beta']]);
  };
  await restart(null);
  const { idle } = await idleRates(env);
  const ended = new Promise((r) => setTimeout(r, 3000 + seconds * 1000));
  const { timeline, peak, rec } = await firePass(env, null, 5000, (logged) => Promise.race([logged, ended]));
  if (rec) say(`  window: the pass ended within the window (${JSON.stringify(rec)})`);
  const rs = rates(timeline, idle).filter((r) => r.t > 10); // from 10 s after the fire: the listing is done
  const mean = (k) => rs.reduce((t, r) => t + r[k] * r.dt, 0) / rs.reduce((t, r) => t + r.dt, 0);
  await restart(AE_RATE);
  return { seconds, ratePerSiteA: mean('a'), ratePerSiteB: mean('b'), maxA: Math.max(...rs.map((r) => r.a)), maxB: Math.max(...rs.map((r) => r.b)), rssPeakA: peak.a, rssPeakB: peak.b, timeline: rs.map((r) => [Math.round(r.t), Math.round(r.a), Math.round(r.b)]) };
}

async function measureStatus(env) {
  const ms = [];
  for (let i = 0; i < 20; i++) ms.push((await timed(() => env.b.admin.status())).ms);
  return { p50: median(ms), max: Math.max(...ms) };
}

async function measureKeys(env) {
  const paths = { direct: { client: env.opA, ms: [] }, gateway: { client: env.gwOpA, ms: [] } };
  // A path that fails (e.g. a listing too large for it) is reported with its error and not tried again.
  for (let r = 0; r < 5; r++) {
    for (const p of Object.values(paths)) {
      if (p.error) continue;
      let t0 = performance.now();
      try {
        // A pooled connection the server closed while idle fails at once ("other side closed"): one retry.
        const ids = await p.client.listKeys().catch((err) => {
          if (performance.now() - t0 > 1000) throw err;
          t0 = performance.now();
          return p.client.listKeys();
        });
        p.ms.push(performance.now() - t0);
        p.listed = ids.length;
      } catch (err) {
        p.error = `${err.message} after ${((performance.now() - t0) / 1000).toFixed(1)} s`;
        say(`  GET /keys ${p === paths.direct ? 'direct' : 'through the gateway'} failed: ${p.error}`);
      }
    }
  }
  const [d, g] = [median(paths.direct.ms), median(paths.gateway.ms)];
  const out = { directMs: d, gatewayMs: g, ratio: g / d, listed: paths.direct.listed ?? paths.gateway.listed };
  if (paths.direct.error) out.directError = paths.direct.error;
  if (paths.gateway.error) out.gatewayError = paths.gateway.error;
  return out;
}

// ---- main ----------------------------------------------------------------------------------------

/** Builds the sites, runs every size, tears everything down; resolves with one row per size. */
async function measureAll() {
  const dir = await mkdtemp(path.join(tmpdir(), 'nhr-scale-'));
  const a = new Site('a', path.join(dir, 'a'));
  const b = new Site('b', path.join(dir, 'b'));
  const results = [];
  let failed = false;
  try {
    for (const s of [a, b]) {
      await mkdir(s.dir, { recursive: true, mode: 0o700 });
      s.ports = { peer: await freePort(), gateway: await freePort() };
    }
    const caPem = await writeCerts(dir, [a, b]);
    await Promise.all([a.startSim(), b.startSim()]);
    await bootstrap(dir, a, b);
    for (const [s, peer] of [[a, b], [b, a]]) await writeFile(s.configPath, configYaml(s, peer, YEARLY), { mode: 0o600 });
    await a.daemon.start(/"msg":"daemon started"/);
    await b.daemon.start(/"msg":"daemon started"/);
    say(`sites up in ${dir}: sim a pid ${a.sim.pid}, sim b pid ${b.sim.pid}, daemon a pid ${a.daemon.pid}, daemon b pid ${b.daemon.pid}`);
    await sync(b, 'alpha');
    await sync(b, 'gamma');
    await sync(a, 'beta');
    await sync(b, 'epsilon');
    await sync(a, 'delta');
    await streaming([[b, 'alpha'], [b, 'gamma'], [a, 'beta'], [b, 'epsilon'], [a, 'delta']]);
    const env = {
      a,
      b,
      dir,
      n: 0,
      adminA: a.client('alpha~admin', PASS.nsAdmin, 16),
      // The replication account: a replica's snapshot keeps it (a foreign write as the account anyone could misuse).
      adminB: b.client('alpha~replicator', PASS.replicator, 8),
      opA: a.client('alpha~operator', PASS.nsOperator, 1),
      backupA: a.client('backup', PASS.backupUser, 1),
      backupB: b.client('backup', PASS.backupUser, 1),
      rootA: a.client(),
      rootB: b.client(),
      gw: { alpha: a.gatewayClient('alpha~admin', PASS.nsAdmin, caPem, 8), gamma: a.gatewayClient('gamma~admin', PASS.nsAdmin, caPem, 8) },
      gwOpA: a.gatewayClient('alpha~operator', PASS.nsOperator, caPem, 1),
      probeB: b.gatewayClient('beta~admin', PASS.nsAdmin, caPem, 1),
      // The --busy load: beta through B's gateway (label, import, generate) or gamma through A's (stream); what it
      // wrote is then looked for straight at B's NetHSM (gamma as its replication account, the one a replica keeps).
      busyB: b.gatewayClient('beta~admin', PASS.nsAdmin, caPem, 16),
      busyA: a.gatewayClient('gamma~admin', PASS.nsAdmin, caPem, 16),
      betaB: b.client('beta~admin', PASS.nsAdmin, 1),
      // The raw rounds' instance of the load: the scratch twins delta (B primary) and epsilon (A primary; see startBusy).
      scratchB: b.gatewayClient('delta~admin', PASS.nsAdmin, caPem, 16),
      scratchA: a.gatewayClient('epsilon~admin', PASS.nsAdmin, caPem, 16),
      gammaB: b.client('gamma~replicator', PASS.replicator, 1),
    };
    await env.probeB.importKey(BODIES[0], 'probe');
    await env.scratchB.importKey(BODIES[0], 'probe'); // the raw rounds' label load writes delta's own probe
    // Warm-up of the stream (transport keys known, pools and JIT warm): 20 imports through A's gateway, applied at B.
    // The stream's reference: gamma at 1,000 keys (straight at A), synced to B.
    const gammaAdmin = a.client('gamma~admin', PASS.nsAdmin, 16);
    await pool(0, 1000, 16, (i) => gammaAdmin.importKey(BODIES[i % BODIES.length], keyId(i)));
    await sync(b, 'gamma');
    await streaming([[b, 'gamma']]);
    for (const ns of ['gamma', 'alpha']) await streamRun(env, ns, 20, `warm${ns}`);
    let filled = 0;
    for (const n of SIZES) {
      const bySim = values.fill === 'sim';
      const byRestore = values.fill === 'restore' || (values.fill === 'auto' && n > 100_000);
      const api = (from, to) => pool(from, to, 16, (i) => env.adminA.importKey(BODIES[i % BODIES.length], keyId(i)));
      const fill = await timed(async () => {
        if (bySim) return fillBySim(env);
        if (!byRestore) return api(filled, n);
        if (filled < 64) await api(filled, Math.min(n, 64));
        if (n > 64) await fillByRestore(env, Math.max(filled, 64), n);
      });
      const how = bySim ? `by both simulators' --fill (${JSON.stringify(fill.value)})` : byRestore ? 'at A by a restore' : 'at A by the API';
      say(`n=${n}: filled ${n - filled} keys ${how} in ${(fill.ms / 1000).toFixed(1)} s (${(((n - filled) * 1000) / fill.ms).toFixed(0)} keys/s)`);
      filled = n;
      // With --fill sim alpha also holds the 20 warm-up keys of the stream.
      env.n = bySim ? n + 20 : n;
      env.fillCount = n;
      // B holds the namespace at this size before sync, stream or anti-entropy is measured (status and keys need not);
      // with --fill sim it already does (both devices were filled alike).
      if (!bySim && ['sync', 'stream', 'ae'].some((p) => ONLY.has(p))) {
        const warm = await timed(() => sync(b, 'alpha'));
        say(`n=${n}: first sync at this size ${(warm.ms / 1000).toFixed(1)} s`);
      }
      const row = { n, fillKeysPerS: ((n - (results.at(-1)?.n ?? 0)) * 1000) / fill.ms, ...(bySim ? { simFill: fill.value } : {}) };
      if (ONLY.has('sync')) row.sync = await measureSync(env);
      if (ONLY.has('stream')) {
        row.stream = await measureStream(env);
        say(`  stream: ${row.stream.msPerChange.toFixed(2)} ms per change, ${row.stream.ratio.toFixed(2)} × gamma's (1k keys)`);
      }
      if (ONLY.has('ae')) {
        row.aePasses = [];
        for (let p = 0; p < AE_PASSES; p++) {
          await makeDrift(env, `${n}p${p}`);
          const ae = await pausedAtB(env, 'gamma', () => measureAntiEntropy(env));
          row.aePasses.push(ae);
          say(
            `  anti-entropy pass ${p + 1}: ${ae.passS.toFixed(1)} s, ${ae.requestsPerKey.toFixed(3)} requests per key (A ${ae.perKeyA.toFixed(3)}, B ${ae.perKeyB.toFixed(3)}; ` +
              `${ae.ratePerSiteA.toFixed(0)} / ${ae.ratePerSiteB.toFixed(0)} per s), found ${JSON.stringify(ae.found)}, repaired ${ae.repaired}, certs ${JSON.stringify(ae.certs)}, ` +
              `peak RSS A ${ae.rssPeakA.toFixed(0)} / B ${ae.rssPeakB.toFixed(0)} MB, both sites reading ${ae.concurrency.bothS.toFixed(0)} s of ${ae.passS.toFixed(0)} (A busy ${ae.concurrency.busyAS.toFixed(0)} s, B ${ae.concurrency.busyBS.toFixed(0)} s)`,
          );
          say(`  timeline [s, req/s A, req/s B]: ${JSON.stringify(ae.timeline)}`);
        }
        row.ae = row.aePasses[0];
        if (AE_WINDOW_S > 0) {
          row.aeWindow = await pausedAtB(env, 'gamma', () => measureWindow(env, AE_WINDOW_S));
          const w = row.aeWindow;
          say(`  default-pace window (${w.seconds} s): ${w.ratePerSiteA.toFixed(1)} / ${w.ratePerSiteB.toFixed(1)} requests/s at A / B (max of a 5-s interval ${w.maxA.toFixed(0)} / ${w.maxB.toFixed(0)}), peak RSS ${w.rssPeakA.toFixed(0)} / ${w.rssPeakB.toFixed(0)} MB`);
          say(`  window timeline: ${JSON.stringify(w.timeline)}`);
        }
      }
      if (ONLY.has('status')) row.status = await measureStatus(env);
      if (ONLY.has('keys')) row.keys = await measureKeys(env);
      row.rss = { a: rssOf(a.daemon.pid), b: rssOf(b.daemon.pid) };
      results.push(row);
    }
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await a.close().catch((e) => say(`closing a: ${e.message}`));
    await b.close().catch((e) => say(`closing b: ${e.message}`));
    if (values.keep || failed) say(`kept ${dir} (configs, state, daemon.log and sim.log per site)`);
    else await rm(dir, { recursive: true, force: true });
  }
  return results;
}

const machine = { node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model ?? '?', memGB: Math.round(totalmem() / 2 ** 30) };
// --from-json: the report of an earlier `--json` run (its own machine line), without measuring again.
const saved = values['from-json'] ? JSON.parse(readFileSync(values['from-json'], 'utf8')) : undefined;
const results = saved ? saved.results : await measureAll();

// ---- report ----------------------------------------------------------------------------------------


/** Figures fitted as y = a + b·n, by name → how to read them from a row. */
const FIGURES = {
  'raw s (backup A + backup B + restore B)': (r) => r.sync?.rawS,
  'sync s': (r) => r.sync?.syncS,
  'raw restore s': (r) => r.sync?.rawRestoreS,
  'raw s under the --busy load': (r) => r.sync?.loadedRawS,
  'write hold (probe max) s': (r) => r.sync?.holdMaxS,
  'anti-entropy pass s': (r) => (r.ae?.found.failed ? undefined : r.ae?.passS),
  'anti-entropy device requests': (r) => (r.ae ? r.ae.requestsA + r.ae.requestsB : undefined),
  'daemon B peak RSS in a pass MB': (r) => r.ae?.rssPeakB,
  'GET /keys direct ms': (r) => r.keys?.directMs,
  'GET /keys gateway ms': (r) => r.keys?.gatewayMs,
};
const models = {};
for (const [name, get] of Object.entries(FIGURES)) {
  const pts = results.map((r) => [r.n, get(r)]).filter(([, y]) => Number.isFinite(y));
  if (new Set(pts.map(([x]) => x)).size < 2) continue;
  const f = fitLinear(pts);
  models[name] = { ...f, at1M: project(f, 1e6), at3M: project(f, 3e6) };
}

const shown = saved ?? { machine, rounds: ROUNDS, changes: CHANGES, latency: values.latency ?? null };
if (values.json) {
  process.stdout.write(JSON.stringify({ ...shown, sizes: results.map((r) => r.n), results, models }, null, 2) + '\n');
} else {
  const f1 = (v, d = 1) => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
  const m = shown.machine;
  console.log(`node ${m.node}, ${m.cpus} × ${m.cpu}, ${m.memGB} GB; simulators and daemons as separate processes on 127.0.0.1; simulator latency: ${shown.latency ?? 'none'}`);
  const busy = results.find((r) => r.sync)?.sync;
  const load = !busy ? '' : busy.busy === 'none' ? '; B quiet during the syncs (--busy none)' : `; B busy during the syncs: --busy ${busy.busy} at ${busy.busyRate}/s`;
  console.log(`${shown.rounds} rounds of raw then sync, and of gamma then alpha streamed, per size (medians); ${shown.changes} streamed changes per run${load}\n`);
  console.log('| keys | sync s | raw s (bkp A + bkp B + restore B) | sync / raw | raw restore s | hold: probe max / p99 s | hold / raw restore | probe errors | stream ms/change | stream vs 1k (side by side) | AE pass s | AE requests/key | RSS MB A / B (AE peak) | status p50 / max ms | GET /keys direct / gateway ms | gw / direct |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    const s = r.sync;
    const ae = r.ae;
    console.log(
      `| ${r.n} | ${f1(s?.syncS)} | ${f1(s?.rawS)} | ${f1(s?.ratio, 2)} | ${f1(s?.rawRestoreS, 2)} | ${s ? `${f1(s.holdMaxS, 2)} / ${f1(s.holdP99S, 2)}` : '–'} | ${f1(s?.holdRatio, 2)} | ${s?.probeFailures ?? '–'} | ` +
        `${f1(r.stream?.msPerChange, 2)} | ${f1(r.stream?.ratio, 2)} | ${f1(ae?.passS)}${ae?.found.failed ? ' (failed)' : ''} | ${f1(ae?.requestsPerKey, 2)} | ` +
        `${f1(r.rss.a.rss, 0)} / ${f1(r.rss.b.rss, 0)}${ae ? ` (${f1(ae.rssPeakA, 0)} / ${f1(ae.rssPeakB, 0)})` : ''} | ${r.status ? `${f1(r.status.p50)} / ${f1(r.status.max)}` : '–'} | ` +
        `${r.keys ? `${r.keys.directError ? 'failed' : f1(r.keys.directMs)} / ${r.keys.gatewayError ? 'failed' : f1(r.keys.gatewayMs)}` : '–'} | ${f1(r.keys?.ratio, 2)} |`,
    );
  }
  if (busy) {
    console.log('\nsync rounds: hold = the longest busy write that overlapped the sync (stream: the longest time between two new changes on B\'s gamma, a rewind\'s re-apply included); held sequence from daemon B\'s log');
    // Sync / raw under load and hold / raw restore under load: against the raw rounds run under the same load (runs
    // saved before they existed show –); their scratch writes are not checked (the raw restore erases some).
    console.log('| keys | round | busy | sync / raw | hold s | hold / raw restore | writes during the sync | failed | lost | held sequence | sync / raw under load | hold / raw restore under load |');
    console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const r of results) {
      for (const [i, x] of (r.sync?.rounds ?? []).entries()) {
        const s = x.sync;
        const rate = r.sync.busy === 'none' ? 'none' : `${r.sync.busy} ${r.sync.busyRate}/s`;
        // No load (--busy none): no hold (a saved run's JSON holds null for it).
        const hold = (v) => (s.probeMax == null ? '–' : f1(v, 2));
        const lost = s.lost === undefined ? '–' : s.lostSample.length ? `**${s.lost}** (${s.lostSample.join(', ')})` : s.lost;
        const failed = s.failedDuring ? `**${s.failedDuring}** (${s.errors.join(' \\| ')})` : (s.failedDuring ?? '–');
        const lr = x.loadedRaw;
        console.log(
          `| ${r.n} | ${i + 1} | ${rate} | ${f1(s.ms / x.raw.total, 2)} | ${hold(s.probeMax / 1000)} | ${hold(s.probeMax / x.raw.restoreB)} | ${s.probes ?? '–'} | ${failed} | ${lost} | ${s.held?.how ?? '–'} | ` +
            `${lr ? f1(s.ms / lr.total, 2) : '–'} | ${lr ? hold(s.probeMax / lr.restoreB) : '–'} |`,
        );
      }
    }
    if (results.some((r) => r.sync?.loadedRawS !== undefined)) {
      console.log(
        '\nsync against raw work under the same load (medians of the rounds): raw under load = backup A + backup B + restore B while a second instance of the --busy load ' +
          'writes at the same rate into scratch namespaces (delta at B, epsilon at A) that no sync reads; its writes after B\'s backup are erased by the raw restore and not counted as lost',
      );
      console.log('| keys | sync s | raw s quiet | raw s under load | sync / raw quiet | sync / raw under load | raw restore s quiet / under load | hold / raw restore quiet | hold / raw restore under load | scratch writes failed |');
      console.log('|---|---|---|---|---|---|---|---|---|---|');
      for (const r of results) {
        const s = r.sync;
        if (s?.loadedRawS === undefined) continue;
        console.log(
          `| ${r.n} | ${f1(s.syncS)} | ${f1(s.rawS)} | ${f1(s.loadedRawS)} | ${f1(s.ratio, 2)} | ${f1(s.loadedRatio, 2)} | ${f1(s.rawRestoreS, 2)} / ${f1(s.loadedRawRestoreS, 2)} | ${f1(s.holdRatio, 2)} | ${f1(s.loadedHoldRatio, 2)} | ${s.loadedFailed} |`,
        );
      }
    }
  }
  if (Object.keys(models).length > 0) {
    console.log('\nmodel y = a + b·n (least squares over the sizes), projected:');
    console.log('| figure | a | b per 1k keys | r² | at 1M | at 3M |');
    console.log('|---|---|---|---|---|---|');
    for (const [name, m] of Object.entries(models)) {
      console.log(`| ${name} | ${m.a.toPrecision(3)} | ${(m.b * 1000).toPrecision(3)} | ${f1(m.r2, 3)} | ${m.at1M.toPrecision(3)} | ${m.at3M.toPrecision(3)} |`);
    }
  }
}
