/**
 * `npm run faults -- --seed N --minutes M [--sites 2|3] [--keep] [--out DIR] [--converge-timeout S] [--workers N]`
 * `npm run faults -- --etcd [--scenario K[,K…]] …`: automatic failover through a real etcd cluster (test/faults/etcd.ts),
 * with the etcd scenarios in the mix (`--failover automatic` says the same); `--scenario` runs only the named kinds
 * (`etcd`: the four etcd scenarios), a deterministic schedule per seed.
 * `npm run faults -- --check DIR`: judges a finished run again from its `history.jsonl` and `observation.json`.
 *
 * A Jepsen-style run: real sites (simulator and daemon processes), a workload writing through the gateways, a seeded
 * nemesis, then heal everything, wait for convergence (bounded), inspect, check. Exit 0 when the checker finds nothing,
 * 1 when it finds something, 2 when the run itself could not be carried out (bad flags, setup failed). The last line
 * printed is the one-line summary. Everything listens on 127.0.0.1; every process is killed on exit, also on SIGINT.
 */
import { randomInt } from 'node:crypto';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { check, formatReport, summaryLine } from './checker.js';
import { killAllChildren } from './child.js';
import { Cluster } from './cluster.js';
import { ETCD_LEASE_TTL_MS, ETCD_SAFETY_MARGIN_MS } from './etcd.js';
import { ALL_FAULT_KINDS, ETCD_FAULT_KINDS, FAULT_KINDS, HistoryWriter, readHistory, type FaultKind } from './history.js';
import { inspect, type Observation } from './inspection.js';
import { Nemesis, planFaults } from './nemesis.js';
import { Prng } from './prng.js';
import { StatusSampler } from './sampler.js';
import { Workload } from './workload.js';

export const MECHANISM = 'userland TCP proxy per directed link, black-hole mode (bytes held, connections hang; nothing refused). iptables: not used';

export interface RunFlags {
  seed: number;
  minutes: number;
  sites: 2 | 3;
  keep: boolean;
  out: string | undefined;
  convergeTimeoutS: number;
  workersPerSite: number;
  /** Re-check a finished run's output directory instead of running. */
  check: string | undefined;
  /** Automatic failover through a real etcd cluster. */
  etcd: boolean;
  /** Only these fault kinds (`--scenario`); undefined: the full mix of the mode. */
  scenario: FaultKind[] | undefined;
}

/** `--scenario` value: comma-separated kinds; `etcd` stands for the four etcd scenarios. */
function parseScenario(v: string | undefined): FaultKind[] {
  const kinds = (v ?? '').split(',').flatMap((k) => (k.trim() === 'etcd' ? [...ETCD_FAULT_KINDS] : [k.trim() as FaultKind]));
  const bad = kinds.filter((k) => !ALL_FAULT_KINDS.includes(k));
  if (v === undefined || v.trim() === '' || bad.length > 0) throw new Error(`--scenario takes fault kinds separated by commas (or "etcd"), got ${v === undefined ? 'nothing' : `"${v}"`}; kinds: ${ALL_FAULT_KINDS.join(', ')}`);
  return [...new Set(kinds)];
}

/** Parses the command line; throws an Error naming the bad flag. */
export function parseFlags(argv: string[]): RunFlags {
  const flags: RunFlags = { seed: randomInt(1, 2 ** 31), minutes: 2, sites: 2, keep: false, out: undefined, convergeTimeoutS: 90, workersPerSite: 2, check: undefined, etcd: false, scenario: undefined };
  const num = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || v.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new Error(`${name} must be a number from ${min} to ${max}, got ${v === undefined ? 'nothing' : `"${v}"`}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--seed') flags.seed = Math.floor(num('--seed', argv[++i], 0, 2 ** 32 - 1));
    else if (a === '--minutes') flags.minutes = num('--minutes', argv[++i], 0.1, 24 * 60);
    else if (a === '--sites') flags.sites = num('--sites', argv[++i], 2, 3) === 3 ? 3 : 2;
    else if (a === '--keep') flags.keep = true;
    else if (a === '--out') flags.out = argv[++i] ?? '';
    else if (a === '--converge-timeout') flags.convergeTimeoutS = num('--converge-timeout', argv[++i], 5, 3600);
    else if (a === '--workers') flags.workersPerSite = Math.floor(num('--workers', argv[++i], 1, 16));
    else if (a === '--check') flags.check = argv[++i] ?? '';
    else if (a === '--etcd') flags.etcd = true;
    else if (a === '--failover') {
      const v = argv[++i];
      if (v !== 'automatic' && v !== 'manual') throw new Error(`--failover must be automatic or manual, got ${v === undefined ? 'nothing' : `"${v}"`}`);
      flags.etcd = v === 'automatic';
    } else if (a === '--scenario') flags.scenario = parseScenario(argv[++i]);
    else throw new Error(`unknown argument "${a}" (flags: --seed N --minutes M [--sites 2|3] [--keep] [--out DIR] [--converge-timeout S] [--workers N] [--etcd | --failover automatic] [--scenario K,…])`);
  }
  const etcdOnly = flags.scenario?.filter((k) => (ETCD_FAULT_KINDS as readonly FaultKind[]).includes(k)) ?? [];
  if (etcdOnly.length > 0 && !flags.etcd) throw new Error(`--scenario ${etcdOnly.join(',')} needs --etcd (automatic failover through etcd)`);
  if (flags.out === '') throw new Error('--out needs a directory');
  if (flags.check === '') throw new Error('--check needs the output directory of a run');
  return flags;
}

function say(line: string): void {
  process.stdout.write(`[faults ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

async function run(flags: RunFlags): Promise<number> {
  const out = flags.out ?? (await mkdtemp(path.join(tmpdir(), `nhr-faults-${flags.seed}-`)));
  await mkdir(path.join(out, 'logs'), { recursive: true });
  say(`seed ${flags.seed}, ${flags.minutes} min, ${flags.sites} sites${flags.etcd ? ', automatic failover through etcd' : ''}; output in ${out}`);
  say(`partition mechanism: ${MECHANISM}`);
  const siteNames = ['a', 'b', 'c'].slice(0, flags.sites);
  const cluster = await Cluster.create(siteNames, path.join(out, 'logs'), say, { etcd: flags.etcd });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await cluster.close(flags.keep);
    if (flags.keep) say(`kept the lab in ${cluster.lab.dir}`);
  };
  onInterrupt = close;
  try {
    const history = new HistoryWriter(path.join(out, 'history.jsonl'));
    history.append({ type: 'meta', seed: flags.seed, minutes: flags.minutes, sites: siteNames, namespaces: cluster.namespaces, mechanism: MECHANISM, startedAt: Date.now(),
      ...(flags.etcd ? { failover: 'automatic' as const, leaseTtlMs: ETCD_LEASE_TTL_MS, safetyMarginMs: ETCD_SAFETY_MARGIN_MS } : {}),
    });
    const sampler = new StatusSampler(cluster, history);
    await sampler.sampleOnce();
    sampler.start();
    const workload = new Workload(cluster, history, sampler, {
      workersPerSite: flags.workersPerSite,
      requestTimeoutMs: 3_000,
      maxOpsPerWorker: Math.ceil(flags.minutes * 60 * 10),
      thinkMs: 150,
    });
    const nemesis = new Nemesis(cluster, history, sampler, workload, say);
    const short = flags.minutes <= 2;
    const plan = planFaults(flags.seed, {
      holdMs: short ? [1_500, 3_000] : [2_000, 8_000],
      gapMs: short ? [300, 1_000] : [500, 3_000],
      cycles: Math.ceil((flags.minutes * 60) / 30) + 1,
      kinds: flags.scenario ?? (flags.etcd ? [...FAULT_KINDS, ...ETCD_FAULT_KINDS] : FAULT_KINDS),
    });
    say(`plan (first cycle): ${plan.slice(0, 14).map((f) => f.kind).join(', ')}`);
    const deadline = Date.now() + flags.minutes * 60_000;
    const writing = workload.run(new Prng(flags.seed).fork('workload'));
    await nemesis.run(plan, deadline);
    workload.stop();
    await writing;
    await workload.close();
    say('workload and nemesis stopped; healing everything');
    const healed = await cluster.healAll();
    say(healed.length ? `final heal: ${healed.join(', ')}` : 'final heal: nothing left to heal');
    await sampler.stop();
    const obs = await inspect(cluster, flags.convergeTimeoutS * 1000, say);
    await writeFile(path.join(out, 'observation.json'), JSON.stringify(obs, null, 1));
    const report = check(readHistory(history.file), obs);
    await writeFile(path.join(out, 'report.json'), JSON.stringify(report, null, 1));
    process.stdout.write(`${formatReport(report)}\n`);
    say(`history ${history.file}, report ${path.join(out, 'report.json')}, logs ${path.join(out, 'logs')}`);
    await close();
    process.stdout.write(`${summaryLine(report)}\n`);
    return report.findings.length === 0 ? 0 : 1;
  } finally {
    await close().catch(() => undefined);
  }
}

/** `--check DIR`: the checker again over a finished run's files. */
async function recheck(dir: string): Promise<number> {
  const obs = JSON.parse(await readFile(path.join(dir, 'observation.json'), 'utf8')) as Observation;
  const report = check(readHistory(path.join(dir, 'history.jsonl')), obs);
  process.stdout.write(`${formatReport(report)}\n`);
  return report.findings.length === 0 ? 0 : 1;
}

let onInterrupt: (() => Promise<void>) | undefined;

async function main(): Promise<void> {
  let flags: RunFlags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`Error: ${(err as Error).message}\n`);
    process.exit(2);
  }
  process.on('exit', killAllChildren);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      say(`${sig}: stopping every process`);
      killAllChildren();
      void Promise.race([onInterrupt?.(), new Promise((r) => setTimeout(r, 5_000))]).finally(() => process.exit(130));
    });
  }
  try {
    process.exitCode = flags.check !== undefined ? await recheck(flags.check) : await run(flags);
  } catch (err) {
    say(`the run could not be carried out: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.stdout.write(`faults seed=${flags.seed} minutes=${flags.minutes} ERROR run not carried out\n`);
    process.exitCode = 2;
  }
  // Undici pools and timers of the run must not keep the process alive once it is done.
  setTimeout(() => process.exit(), 1_000).unref();
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
