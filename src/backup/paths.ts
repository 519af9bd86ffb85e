/**
 * Classification of NetHSM KV paths as they appear in backup files (FACTS §4, §6.4).
 *
 * Pure functions; none throws. A path belongs to namespace N only through an exact segment match:
 * `/namespace/N`, `/key/.N/<id>`, `/authentication/N~<id>`. A namespace whose name merely starts with N
 * (e.g. `N2`, `N.x`, `N-a`) is a different namespace and never matches.
 */
import { isValidId, splitUserId } from '../nethsm/ids.js';

/**
 * The reserved path of the manifest entry of namespace and key backups (see manifest.ts).
 * It starts with `~`, which sorts after every letter, so the manifest is the last entry in the firmware's order
 * and an extract can write it after it has seen (and counted) every entry, in one pass.
 */
export const MANIFEST_PATH = '/~nethsm-replicator/manifest';

export type PathClass =
  /** `/namespace/N`: the namespace record. */
  | { kind: 'namespace'; namespace: string }
  /** `/key/.N/<id>`: a key of namespace N. */
  | { kind: 'namespace-key'; namespace: string; keyId: string }
  /** `/authentication/N~<id>`: a user of namespace N. */
  | { kind: 'namespace-user'; namespace: string; userId: string }
  /** `/key/<id>`: a root key. */
  | { kind: 'root-key'; keyId: string }
  /** `/authentication/<id>`: a root user. */
  | { kind: 'root-user'; userId: string }
  /** `/key/.version`, `/authentication/.version`, `/namespace/.version`: a store's format version. */
  | { kind: 'store-version'; store: 'key' | 'authentication' | 'namespace' }
  /** `/config/…`, `/local/…`, `/domain-key/…`, `/.initialized`: device and configuration entries. */
  | { kind: 'config' }
  /** Our own manifest entry (namespace and key backups only). */
  | { kind: 'manifest' }
  /** Anything else (a path this version does not know); kept as it is by every operation. */
  | { kind: 'other' };

const CONFIG_ROOTS = new Set(['config', 'local', 'domain-key', '.initialized']);

/** Classifies one KV path (with its leading `/`). Malformed ids classify as `other`, never as a namespace's entry. */
export function classifyPath(path: string): PathClass {
  if (path === MANIFEST_PATH) return { kind: 'manifest' };
  if (!path.startsWith('/')) return { kind: 'other' };
  const segs = path.slice(1).split('/');
  const [top, second, third] = segs;
  if (top === undefined) return { kind: 'other' };
  if (CONFIG_ROOTS.has(top)) return { kind: 'config' };
  if (segs.length === 2 && second === '.version' && (top === 'key' || top === 'authentication' || top === 'namespace')) {
    return { kind: 'store-version', store: top };
  }
  if (top === 'namespace' && segs.length === 2 && second !== undefined && isValidId(second)) {
    return { kind: 'namespace', namespace: second };
  }
  if (top === 'key') {
    if (segs.length === 2 && second !== undefined && isValidId(second)) return { kind: 'root-key', keyId: second };
    if (segs.length === 3 && second?.startsWith('.') && third !== undefined) {
      const ns = second.slice(1);
      if (isValidId(ns) && isValidId(third)) return { kind: 'namespace-key', namespace: ns, keyId: third };
    }
    return { kind: 'other' };
  }
  if (top === 'authentication' && segs.length === 2 && second !== undefined) {
    const user = splitUserId(second);
    if (user === undefined) return { kind: 'other' };
    return user.namespace === undefined
      ? { kind: 'root-user', userId: user.id }
      : { kind: 'namespace-user', namespace: user.namespace, userId: user.id };
  }
  return { kind: 'other' };
}

/** The namespace a path belongs to (namespace record, key or user of it), or undefined. */
export function namespaceOfPath(path: string): string | undefined {
  const c = classifyPath(path);
  return c.kind === 'namespace' || c.kind === 'namespace-key' || c.kind === 'namespace-user' ? c.namespace : undefined;
}

/** Per namespace, the prefixes its entries' paths start with (isNamespacePath runs several times per entry of a merge). */
const prefixCache = new Map<string, { key: string; record: string; user: string; valid: boolean }>();

function prefixesOf(ns: string): { key: string; record: string; user: string; valid: boolean } {
  let p = prefixCache.get(ns);
  if (!p) {
    // Bounded: a daemon asks about its few configured namespaces; anything else just refills it.
    if (prefixCache.size >= 1024) prefixCache.clear();
    p = { key: `/key/.${ns}/`, record: `/namespace/${ns}`, user: `/authentication/${ns}~`, valid: isValidId(ns) };
    prefixCache.set(ns, p);
  }
  return p;
}

/** Whether `path` is an entry of namespace `ns` (exact match; `N2` is not `N`): what namespaceOfPath says, faster. */
export function isNamespacePath(path: string, ns: string): boolean {
  const p = prefixesOf(ns);
  // A namespace's keys (nearly all its entries): `/key/.<ns>/<id>` with both ids valid and nothing after the id, as
  // classifyPath decides, without splitting the path.
  if (path.startsWith(p.key)) {
    const id = path.slice(p.key.length);
    return p.valid && !id.includes('/') && isValidId(id);
  }
  if (!(path === p.record || path.startsWith(p.user))) return false;
  return namespaceOfPath(path) === ns;
}

/** `/key/<id>` for a root key (`ns` undefined), `/key/.<ns>/<id>` otherwise. Callers validate the ids first. */
export function keyPath(ns: string | undefined, keyId: string): string {
  return ns === undefined ? `/key/${keyId}` : `/key/.${ns}/${keyId}`;
}

/** `/namespace/<ns>`. */
export function namespacePath(ns: string): string {
  return `/namespace/${ns}`;
}

/** `/authentication/<id>` or `/authentication/<ns>~<id>`. */
export function userPath(ns: string | undefined, userId: string): string {
  return ns === undefined ? `/authentication/${userId}` : `/authentication/${ns}~${userId}`;
}
