/**
 * The final inspection of a fault run, after every fault is healed: wait (bounded) for the sites to converge, then
 * read what the checker judges, straight from the sources of truth rather than through the gateways:
 * - each NetHSM's inventory per namespace (the namespace's Operator, directly at the simulator): key ids, the SHA-256
 *   of each public key's SPKI DER, restriction tags, the SHA-256 of the certificate;
 * - each daemon's status (admin API, as `status --json`) and role checks (`/primary/<ns>`, `/replica/<ns>`);
 * - each site's quarantine files (`backup inspect --json`): which keys a fenced former primary exported;
 * - each daemon's audit log (its SQLite state): when it held which role at which epoch.
 */
import { createHash, createPublicKey } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { DaemonStatus } from '../../src/daemon/status.js';
import { LAB_PASSPHRASES } from '../../src/lab/lab.js';
import { StateStore } from '../../src/state/store.js';
import type { Cluster } from './cluster.js';
import { cliError, runCli } from './cli.js';
import type { Site } from './site.js';

export interface KeyView {
  id: string;
  /** SHA-256 hex of the SPKI DER; undefined when it could not be read. */
  pub?: string;
  tags: string[];
  /** SHA-256 hex of the certificate; undefined when there is none. */
  cert?: string;
}

export interface RoleSpan {
  at: number;
  role: 'primary' | 'replica' | 'fenced';
  epoch: number;
  action: string;
  actor: string;
}

export interface QuarantineFile {
  file: string;
  ns: string;
  /** When the fenced site exported it (manifest `createdAt`), ms. */
  createdAt: number;
  keys: string[];
}

export interface Observation {
  at: number;
  converged: boolean;
  /** How long the wait for convergence took. */
  waitedMs: number;
  /** Why it is not converged (empty when converged). */
  problems: string[];
  statuses: Record<string, DaemonStatus | null>;
  /** site → ns → keys (null: the inventory could not be read). */
  inventories: Record<string, Record<string, KeyView[] | null>>;
  /** site → ns → HTTP status of `/primary/<ns>` and `/replica/<ns>` (0: no answer). */
  roleChecks: Record<string, Record<string, { primary: number; replica: number }>>;
  quarantine: Record<string, QuarantineFile[]>;
  /** ns → site → role changes from that site's audit log, oldest first. */
  roles: Record<string, Record<string, RoleSpan[]>>;
}

/** Waits up to `timeoutMs` for convergence, then reads everything. Never throws for a site that does not answer. */
export async function inspect(cluster: Cluster, timeoutMs: number, say: (line: string) => void): Promise<Observation> {
  const started = Date.now();
  let problems: string[] = ['not checked yet'];
  let statuses: Record<string, DaemonStatus | null> = {};
  let inventories: Observation['inventories'] = {};
  while (problems.length > 0 && Date.now() - started < timeoutMs) {
    statuses = await readStatuses(cluster);
    problems = statusProblems(cluster, statuses);
    if (problems.length === 0) {
      inventories = await readInventories(cluster);
      problems = inventoryProblems(cluster, statuses, inventories);
    }
    if (problems.length > 0) await new Promise((r) => setTimeout(r, 2_000));
  }
  const waitedMs = Date.now() - started;
  say(problems.length === 0 ? `converged after ${waitedMs} ms` : `NOT converged after ${waitedMs} ms: ${problems.slice(0, 5).join('; ')}`);
  if (problems.length > 0) {
    statuses = await readStatuses(cluster);
    inventories = await readInventories(cluster);
  }
  return {
    at: Date.now(),
    converged: problems.length === 0,
    waitedMs,
    problems,
    statuses,
    inventories,
    roleChecks: await readRoleChecks(cluster),
    quarantine: await readQuarantines(cluster),
    roles: readRoleHistories(cluster),
  };
}

async function readStatuses(cluster: Cluster): Promise<Record<string, DaemonStatus | null>> {
  const out: Record<string, DaemonStatus | null> = {};
  for (const s of cluster.sites) out[s.name] = await s.status(5_000).catch(() => null);
  return out;
}

/** The primary of `ns` by the statuses: the only site saying primary, which every other site names as primary. */
export function agreedPrimary(ns: string, statuses: Record<string, DaemonStatus | null>): string | undefined {
  const views = Object.entries(statuses).map(([site, st]) => ({ site, n: st?.namespaces.find((x) => x.name === ns) }));
  const primaries = views.filter((v) => v.n?.role === 'primary');
  if (primaries.length !== 1) return undefined;
  const p = primaries[0]!;
  return views.every((v) => v.n && v.n.epoch === p.n!.epoch && v.n.primarySite === p.site) ? p.site : undefined;
}

function statusProblems(cluster: Cluster, statuses: Record<string, DaemonStatus | null>): string[] {
  const problems: string[] = [];
  for (const [site, st] of Object.entries(statuses)) if (!st) problems.push(`site ${site}: no status`);
  for (const { name: ns } of cluster.namespaces) {
    const p = agreedPrimary(ns, statuses);
    if (!p) {
      const views = Object.entries(statuses).map(([s, st]) => {
        const n = st?.namespaces.find((x) => x.name === ns);
        return `${s}=${n ? `${n.role}/${n.epoch}/${n.primarySite}` : '?'}`;
      });
      problems.push(`${ns}: no agreed primary (${views.join(' ')})`);
      continue;
    }
    const head = statuses[p]!.namespaces.find((x) => x.name === ns)!.stream?.position;
    for (const [site, st] of Object.entries(statuses)) {
      const n = st?.namespaces.find((x) => x.name === ns);
      if (!n || site === p) continue;
      if (n.busy) problems.push(`${ns}@${site}: busy`);
      const pos = n.stream?.position;
      if (!head || !pos || pos.epoch !== head.epoch || pos.seq !== head.seq) {
        problems.push(`${ns}@${site}: stream at ${pos ? `${pos.epoch}.${pos.seq}` : '-'}, primary ${p} head ${head ? `${head.epoch}.${head.seq}` : '-'}`);
      }
    }
  }
  return problems;
}

function inventoryProblems(cluster: Cluster, statuses: Record<string, DaemonStatus | null>, inv: Observation['inventories']): string[] {
  const problems: string[] = [];
  for (const { name: ns } of cluster.namespaces) {
    const p = agreedPrimary(ns, statuses)!;
    const want = JSON.stringify(inv[p]?.[ns] ?? null);
    for (const s of cluster.sites) {
      if (s.name !== p && JSON.stringify(inv[s.name]?.[ns] ?? null) !== want) problems.push(`${ns}@${s.name}: inventory differs from ${p}'s`);
    }
  }
  return problems;
}

async function readInventories(cluster: Cluster): Promise<Observation['inventories']> {
  const out: Observation['inventories'] = {};
  for (const s of cluster.sites) {
    out[s.name] = {};
    for (const { name: ns } of cluster.namespaces) out[s.name]![ns] = await readInventory(s, ns).catch(() => null);
  }
  return out;
}

/** Every key of `ns` at `site`'s NetHSM, sorted by id, read as the namespace's Operator. */
export async function readInventory(site: Site, ns: string): Promise<KeyView[]> {
  const c = site.simClient(`${ns}~operator`, LAB_PASSPHRASES.nsOperator, 10_000);
  try {
    const ids = (await c.listKeys()).sort();
    const out: KeyView[] = [];
    for (let i = 0; i < ids.length; i += 8) {
      out.push(
        ...(await Promise.all(
          ids.slice(i, i + 8).map(async (id): Promise<KeyView> => {
            const [k, pem, cert] = await Promise.all([c.getKey(id), c.publicKeyPem(id).catch(() => undefined), c.getCert(id)]);
            const view: KeyView = { id, tags: [...(k.restrictions?.tags ?? [])].sort() };
            if (pem) view.pub = createHash('sha256').update(createPublicKey(pem).export({ type: 'spki', format: 'der' })).digest('hex');
            if (cert) view.cert = createHash('sha256').update(cert.data).digest('hex');
            return view;
          }),
        )),
      );
    }
    return out;
  } finally {
    await c.close();
  }
}

async function readRoleChecks(cluster: Cluster): Promise<Observation['roleChecks']> {
  const out: Observation['roleChecks'] = {};
  for (const s of cluster.sites) {
    out[s.name] = {};
    for (const { name: ns } of cluster.namespaces) out[s.name]![ns] = { primary: await s.health(`/primary/${ns}`), replica: await s.health(`/replica/${ns}`) };
  }
  return out;
}

/** Each quarantine file's keys, by `backup inspect --json` (the file opens with the replication passphrase). */
async function readQuarantines(cluster: Cluster): Promise<Record<string, QuarantineFile[]>> {
  const out: Record<string, QuarantineFile[]> = {};
  for (const s of cluster.sites) {
    out[s.name] = [];
    const files = (await readdir(s.quarantineDir).catch(() => [] as string[])).filter((f) => f.endsWith('.nsbackup')).sort();
    for (const f of files) {
      const file = path.join(s.quarantineDir, f);
      const r = await runCli(['backup', 'inspect', file, '--json', '--passphrase-env', 'NHR_FAULTS_REPLICATION'], 60_000, { NHR_FAULTS_REPLICATION: LAB_PASSPHRASES.replication });
      if (r.code !== 0) throw new Error(`backup inspect ${file}: ${cliError(r)}`);
      const parsed = JSON.parse(r.stdout) as { entries: { path: string }[]; manifest?: { namespace?: string | null; createdAt?: string } };
      const ns = parsed.manifest?.namespace ?? f.replace(/-epoch.*$/, '');
      const createdAt = Date.parse(parsed.manifest?.createdAt ?? '');
      if (!Number.isFinite(createdAt)) throw new Error(`backup inspect ${file}: no manifest createdAt`);
      const prefix = `/key/.${ns}/`;
      const keys = parsed.entries.filter((e) => e.path.startsWith(prefix)).map((e) => e.path.slice(prefix.length)).sort();
      out[s.name]!.push({ file, ns, createdAt, keys });
    }
  }
  return out;
}

/** Role changes per namespace and site, from each daemon's audit log (read from its state store while it runs). */
function readRoleHistories(cluster: Cluster): Observation['roles'] {
  const out: Observation['roles'] = {};
  for (const { name: ns } of cluster.namespaces) out[ns] = {};
  for (const s of cluster.sites) {
    const store = StateStore.inDir(s.stateDir).open();
    try {
      for (const { name: ns } of cluster.namespaces) {
        out[ns]![s.name] = store.audit
          .list({ namespace: ns, limit: 100_000 })
          .filter((e) => e.toRole !== undefined && e.toEpoch !== undefined)
          .map((e) => ({ at: e.at, role: e.toRole!, epoch: e.toEpoch!, action: e.action, actor: e.actor }));
      }
    } finally {
      store.close();
    }
  }
  return out;
}
