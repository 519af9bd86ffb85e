// Backup codec benchmark: `npm run build && node bench/backup.mjs [--entries 1000000] [--dir /tmp] [--keep]`.
//
// Writes a synthetic device backup (RSA-2048-sized key records ~2.2 KB, users, 8 namespaces) with the codec, then runs
// the CLI on it, one child process per step under /usr/bin/time -v (peak RSS of that process):
// validate (full read), inspect --json (full read + one output line per entry), extract-namespace, merge.
// Prints MB/s per step and its ratio to two bounds measured here: AES-256-GCM decryption of 2.2 KB fields in one
// thread (what a read must do per entry) and reading the file from the page cache.
import { spawnSync } from 'node:child_process';
import { createDecipheriv, createCipheriv, createSecretKey, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { benchArgs } from './lib/args.mjs';

const root = resolve(import.meta.dirname, '..');
if (!existsSync(join(root, 'dist', 'backup', 'synthetic.js'))) {
  console.error('dist/ is missing: run `npm run build` first');
  process.exit(1);
}
const { writeSyntheticDeviceBackup } = await import('../dist/backup/synthetic.js');
const { PRODUCTION_SCRYPT } = await import('../dist/backup/format.js');

const { values } = benchArgs(import.meta.url, {
  options: { entries: { type: 'string', default: '1000000' }, dir: { type: 'string' }, keep: { type: 'boolean', default: false } },
});
const total = Number(values.entries);
if (!Number.isInteger(total) || total < 100) throw new Error('--entries must be an integer >= 100');

// 8 namespaces share the keys (ns3 is the one extracted), 0.5 % of entries are users, a few root keys.
const NS = Array.from({ length: 8 }, (_, i) => `ns${i}`);
const users = Math.max(8, Math.floor(total * 0.005));
const rootKeys = Math.max(1, Math.floor(total * 0.001));
const fixed = 1 + 1 + 3 + 2 + 1 + 2 + 1 + NS.length; // .initialized, versions, config, local, namespace records
const keys = total - users - rootKeys - fixed - 10;
const spec = {
  namespaces: Object.fromEntries(NS.map((ns, i) => [ns, { keys: Math.floor(keys / NS.length) + (i === 0 ? keys % NS.length : 0), users: Math.floor(users / NS.length) }])),
  rootKeys,
  rootUsers: 10,
  keySize: 2200,
  userSize: 200,
  deviceId: 'BENCH0001',
};

const dir = values.dir ? resolve(values.dir) : await mkdtemp(join(tmpdir(), 'bench-backup-'));
const PASS = 'bench-backup-passphrase';
const passFile = join(dir, 'pass.txt');
await writeFile(passFile, `${PASS}\n`, { mode: 0o600 });
const device = join(dir, 'device.bin');
const nsb = join(dir, 'ns3.nsb');
const merged = join(dir, 'merged.bin');
for (const f of [nsb, merged]) await rm(f, { force: true });

const mb = (bytes) => bytes / 1e6;
const rows = [];

// 0. Write the synthetic device backup (in-process writer, production scrypt once).
{
  await rm(device, { force: true });
  const t0 = performance.now();
  const n = await writeSyntheticDeviceBackup(createWriteStream(device), spec, { passphrase: PASS, scrypt: PRODUCTION_SCRYPT });
  const s = (performance.now() - t0) / 1000;
  const size = statSync(device).size;
  console.log(`wrote ${n} entries, ${mb(size).toFixed(0)} MB in ${s.toFixed(1)} s (${(mb(size) / s).toFixed(0)} MB/s, in-process writer)`);
  rows.push({ step: 'write synthetic (codec writer, in-process)', bytes: size, s, rss: undefined });
}

// Bounds: single-thread AES-256-GCM open of 2.2 KB fields, and a page-cache read of the file.
function gcmBound() {
  const key = createSecretKey(randomBytes(32));
  const pt = randomBytes(2200);
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  const ct = Buffer.concat([c.update(pt), c.final()]);
  const tag = c.getAuthTag();
  const n = 200_000;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const d = createDecipheriv('aes-256-gcm', key, nonce);
    d.setAAD(Buffer.from('backup'));
    d.setAuthTag(tag);
    d.update(ct);
    try {
      d.final();
    } catch {
      // AAD differs from the sealing; the work is the same.
    }
  }
  return mb(n * 2231) / ((performance.now() - t0) / 1000);
}
async function readBound(file) {
  const t0 = performance.now();
  let bytes = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) bytes += chunk.length;
  return mb(bytes) / ((performance.now() - t0) / 1000);
}
const gcm = gcmBound();
await readBound(device); // warm the page cache
const disk = await readBound(device);

function cli(step, args, inputBytes) {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-v', process.execPath, join(root, 'bin', 'nethsm-replicator'), ...args, '--passphrase-file', passFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 1 << 30,
    encoding: 'utf8',
  });
  const s = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${step} failed: ${r.stderr}`);
  const rssKb = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)?.[1] ?? NaN);
  rows.push({ step, bytes: inputBytes, s, rss: rssKb / 1024 });
  console.log(`${step}: ${s.toFixed(1)} s, ${(mb(inputBytes) / s).toFixed(0)} MB/s, peak RSS ${(rssKb / 1024).toFixed(0)} MB`);
}

const devSize = statSync(device).size;
cli('backup validate (full read)', ['backup', 'validate', device], devSize);
cli('backup inspect --json (full read, 1 line per entry)', ['backup', 'inspect', device, '--json'], devSize);
cli('backup extract-namespace ns3', ['backup', 'extract-namespace', device, '--namespace', 'ns3', '-o', nsb], devSize);
const nsSize = statSync(nsb).size;
cli('backup merge (device + ns3 backup)', ['backup', 'merge', device, nsb, '-o', merged], devSize + nsSize);

console.log(`\nentries ${total}, device backup ${mb(devSize).toFixed(0)} MB, namespace backup ${mb(nsSize).toFixed(0)} MB`);
console.log(`bounds: AES-256-GCM open of 2.2 KB fields ${gcm.toFixed(0)} MB/s (1 thread); page-cache read ${disk.toFixed(0)} MB/s\n`);
console.log('| step | input MB | s | MB/s | vs AES-GCM | peak RSS MB |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  const rate = mb(r.bytes) / r.s;
  console.log(`| ${r.step} | ${mb(r.bytes).toFixed(0)} | ${r.s.toFixed(1)} | ${rate.toFixed(0)} | ${(rate / gcm).toFixed(2)} | ${r.rss === undefined ? '–' : r.rss.toFixed(0)} |`);
}
console.log(`\nNode ${process.version}, ${(await import('node:os')).cpus().length} CPUs (${(await import('node:os')).cpus()[0]?.model ?? '?'})`);
if (!values.keep && !values.dir) await rm(dir, { recursive: true, force: true });
