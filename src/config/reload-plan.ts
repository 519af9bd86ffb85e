/**
 * What a config reload (SIGHUP) can change in a running daemon, and what needs a restart. Pure.
 *
 * Reloadable: how the daemon trusts its NetHSM's certificate (`nethsm.tls`), the peers' certificate pins
 * (`peers[].tls.fingerprint256`, of peers already configured), the namespaces' snapshot schedules
 * (`namespaces[].schedule`), `antiEntropy.schedule`, `antiEntropy.certScrubPasses` (read by each pass),
 * `replication.afterPrimaryRestart` (read at each recovery of a primary) and `logging.level`. Everything else (listeners, sites, peers and
 * namespaces added or removed, accounts and secrets, paths, limits) is wired into parts at start and takes a restart.
 */
import type { ReplicatorConfig } from './schema.js';

export interface ReloadPlan {
  /** The config to run with after the reload: the file's value for every reloadable setting, the running one for the rest. */
  effective: ReplicatorConfig;
  /** Reloadable settings the reload changes, as paths in the file (`namespaces[0].schedule`). */
  changed: string[];
  /** Settings whose value in the file differs from the running one and that only a restart applies (`peerApi.listen`). */
  restartNeededFor: string[];
}

/** Paths (in the file's words) a reload applies; `[]` stands for any index. */
const RELOADABLE = [/^nethsm\.tls$/, /^peers\[\d+\]\.tls\.fingerprint256$/, /^namespaces\[\d+\]\.schedule$/, /^antiEntropy\.schedule$/, /^antiEntropy\.certScrubPasses$/, /^replication\.afterPrimaryRestart$/, /^logging\.level$/];

/** Plans a reload from the `running` config to `next` (both validated by parseConfig). */
export function planReload(running: ReplicatorConfig, next: ReplicatorConfig): ReloadPlan {
  const differing = differences(running, next, []);
  const changed = differing.filter((p) => RELOADABLE.some((r) => r.test(p)));
  const restartNeededFor = differing.filter((p) => !changed.includes(p));
  const nextPeer = new Map(next.peers.map((p) => [p.name, p]));
  const nextNs = new Map(next.namespaces.map((n) => [n.name, n]));
  const effective: ReplicatorConfig = {
    ...running,
    nethsm: { ...running.nethsm, tls: next.nethsm.tls },
    peers: running.peers.map((p) => {
      const n = nextPeer.get(p.name);
      if (!n) return p;
      const { fingerprint256: _old, ...rest } = p;
      return n.fingerprint256 === undefined ? rest : { ...rest, fingerprint256: n.fingerprint256 };
    }),
    namespaces: running.namespaces.map((ns) => ({ ...ns, schedule: nextNs.get(ns.name)?.schedule ?? ns.schedule })),
    // The limiter is built at start: maxRequestsPerSecond stays the running one (a restart applies it).
    antiEntropy: { ...running.antiEntropy, schedule: next.antiEntropy.schedule, certScrubPasses: next.antiEntropy.certScrubPasses },
    replication: { ...running.replication, afterPrimaryRestart: next.replication.afterPrimaryRestart },
    logging: next.logging,
  };
  // A renamed or reordered peer or namespace shows as a restart above; its pin or schedule was applied by name.
  return { effective, changed: differences(running, effective, []), restartNeededFor };
}

/** File words for the shape parseConfig builds: durations lose their `Ms`, a peer's pin sits under `tls`. */
function fileKey(parent: readonly (string | number)[], key: string): string[] {
  if (parent.length === 2 && parent[0] === 'peers' && key === 'fingerprint256') return ['tls', 'fingerprint256'];
  return [key.endsWith('Ms') ? key.slice(0, -2) : key];
}

function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : out === '' ? seg : `.${seg}`;
  return out;
}

/**
 * Paths where `a` and `b` differ. Lists that change length differ as a whole (`peers`); secret references, listen
 * addresses and the NetHSM trust are compared as one value each.
 */
function differences(a: unknown, b: unknown, path: (string | number)[]): string[] {
  if (sameValue(a, b)) return [];
  const whole = [formatPath(path)];
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return whole;
    return a.flatMap((v, i) => differences(v, b[i], [...path, i]));
  }
  if (!isPlainObject(a) || !isPlainObject(b) || isLeaf(a, path) || isLeaf(b, path)) return whole;
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  return keys.flatMap((k) => differences(a[k], b[k], [...path, ...fileKey(path, k)]));
}

function isLeaf(v: Record<string, unknown>, path: readonly (string | number)[]): boolean {
  return 'kind' in v || ('host' in v && 'port' in v) || formatPath(path) === 'nethsm.tls';
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Deep equality over own properties, enumerable or not (an inline secret's value is not enumerable). */
function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Reflect.ownKeys(a);
  const kb = Reflect.ownKeys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => kb.includes(k) && sameValue((a as Record<PropertyKey, unknown>)[k], (b as Record<PropertyKey, unknown>)[k]));
}
