#!/usr/bin/env node
// What a primary's daemon restart costs its replica: a lab (src/lab/lab.ts, in-process daemons and simulators) with A
// primary of namespace `alpha`, B its replica, both simulators filled with the same --keys keys (`sim --fill`, so no
// sync carries them), B synced once. Per round, for each of B's `replication.afterPrimaryRestart` settings (`stream`,
// the default; `snapshot`, the behaviour before), interleaved: A's daemon stops, B marks it down, A's daemon starts
// again, and the bench waits until B is quiet (A ok, no sync running, no pass queued). It prints what that cost:
// device backups at A and B and restores at B (counted by the simulators), the time from A's start until B is quiet,
// anti-entropy device requests at each site (`nethsm_replicator_anti_entropy_device_requests_total`), and the longest
// time B's gateway writes were held (the `hold` and `restore` steps of B's `namespace synced` lines). Anti-entropy runs at the
// daemon's default pace (`antiEntropy.maxRequestsPerSecond` 200 per site). Figures go to docs/benchmarks.md
// ("A primary's restart").
// Usage: npm run build && node bench/primary-restart.mjs [--keys 20000] [--rounds 1]
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs } from './lib/args.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(pathToFileURL(path.join(ROOT, 'dist', p)).href);
if (!existsSync(path.join(ROOT, 'dist', 'daemon', 'restart-pass.js'))) {
  console.error('dist/ is missing or old: run `npm run build` first');
  process.exit(1);
}
const { Lab } = await dist('lab/lab.js');
const { createLogger } = await dist('log.js');

const { values } = benchArgs(import.meta.url, { options: { keys: { type: 'string', default: '20000' }, rounds: { type: 'string', default: '1' } } });
const KEYS = Number(values.keys);
const ROUNDS = Number(values.rounds);
if (!Number.isInteger(KEYS) || KEYS < 1) throw new Error('--keys must be a positive integer');
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds must be a positive integer');
const NS = 'alpha';

const until = async (cond, what, ms = 1_800_000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

/** B's log lines (parsed), for the hold of each sync. */
const bLines = [];
const lab = await Lab.create({
  namespaces: [{ name: NS, primary: 'a' }],
  retryInterval: '500ms',
  gateway: true,
  logger: (site) => createLogger({ level: site === 'b' ? 'info' : 'silent', destination: { write: (s) => void (site === 'b' && bLines.push(JSON.parse(s))) } }),
});
try {
  const [a, b] = [lab.site('a'), lab.site('b')];
  const filled = await Promise.all([a.sim.fill({ namespace: NS, count: KEYS, seed: 'restart' }), b.sim.fill({ namespace: NS, count: KEYS, seed: 'restart' })]);
  console.log(`filled ${NS} with ${KEYS} keys at both simulators (${filled.map((f) => `${Math.round(f.ms)} ms`).join(', ')})`);
  await lab.startDaemons();
  await b.daemon.stream.publicTransportKey();
  await b.daemon.syncer.sync(NS, { actor: 'bench' });
  await b.daemon.syncer.drain();

  const counter = async (site, name) => (await site.registry.getSingleMetric(name)?.get())?.values.reduce((s, v) => s + v.value, 0) ?? 0;
  const aeRequests = (site) => counter(site, 'nethsm_replicator_anti_entropy_device_requests_total');
  const quiet = () => b.daemon.ctx.monitor.get('a')?.status === 'ok' && !b.daemon.syncer.isBusy(NS) && b.daemon.restartPasses.pending().length === 0;

  const restart = async (mode) => {
    // B's setting, through a restart of B's daemon (untimed), then a quiet lab.
    await b.stopDaemon();
    b.config = { ...b.config, replication: { ...b.config.replication, afterPrimaryRestart: mode } };
    await b.startDaemon();
    await lab.settle(1_800_000);
    await b.daemon.syncer.drain();
    const before = { backupsA: a.sim.backups, backupsB: b.sim.backups, restoresB: b.sim.restores, lines: bLines.length };
    // A's requests are counted by A's daemon, which restarts: its counter starts at 0.
    const aeB0 = await aeRequests(b);
    await a.stopDaemon();
    await until(() => b.daemon.ctx.monitor.get('a')?.status === 'unreachable', 'B to mark A down', 60_000);
    const started = Date.now();
    await a.startDaemon();
    await until(() => b.daemon.ctx.monitor.get('a')?.status === 'recovering' || b.daemon.ctx.monitor.get('a')?.status === 'ok', 'A to answer', 60_000);
    await new Promise((r) => setTimeout(r, 1_000));
    await until(quiet, 'B to be quiet');
    await b.daemon.syncer.drain();
    const ms = Date.now() - started;
    // Writes wait while the exclusive hold drains them and the restore runs.
    const holds = bLines.slice(before.lines).filter((l) => l.msg === 'namespace synced').map((l) => (l.stepsMs?.hold ?? 0) + (l.stepsMs?.restore ?? 0));
    return {
      mode,
      backupsA: a.sim.backups - before.backupsA,
      backupsB: b.sim.backups - before.backupsB,
      restoresB: b.sim.restores - before.restoresB,
      seconds: (ms / 1000).toFixed(1),
      aeRequestsA: await aeRequests(a),
      aeRequestsB: (await aeRequests(b)) - aeB0,
      syncsB: holds.length,
      maxHoldMs: holds.length ? Math.max(...holds) : 0,
    };
  };

  const rows = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const mode of ['stream', 'snapshot']) {
      const r = await restart(mode);
      rows.push({ round, ...r });
      console.log(JSON.stringify({ round, ...r }));
    }
  }
  console.log(`\n| round | afterPrimaryRestart | backups at A | backups at B | restores at B | syncs at B | longest write hold at B ms | anti-entropy device requests A / B | A's start → B quiet s |`);
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.round} | ${r.mode} | ${r.backupsA} | ${r.backupsB} | ${r.restoresB} | ${r.syncsB} | ${r.maxHoldMs} | ${r.aeRequestsA} / ${r.aeRequestsB} | ${r.seconds} |`);
} finally {
  await lab.close();
}
