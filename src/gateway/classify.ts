/**
 * What a NetHSM API call does, decided from its method and path alone (FACTS §2): the gateway's one source of truth for
 * which calls change a namespace's state. Pure; never throws.
 *
 * Kinds:
 * - `read`: reads namespace state (key list, key, public.pem, cert, users, user tags). Never held or refused.
 * - `crypto`: uses a key without changing what replication carries (sign, decrypt, encrypt, csr.pem, random).
 *   The NetHSM's per-key operations counter moves, but it is not replicated. Never held or refused.
 * - `mutation`: changes namespace state (keys, certificates, tags, labels, users). Refused for replica namespaces,
 *   held during a merge-restore, observed for primary namespaces.
 * - `device-read`: device-level reads (info, health, metrics, config GETs, system info, backup, namespace list).
 * - `device-write`: device-level changes (provision, unlock, lock, config, system, namespaces, cluster).
 *
 * Fails closed: an unknown call under `/keys` or `/users` with a method other than GET/HEAD is a `mutation`; an unknown
 * call elsewhere with such a method is a `device-write`.
 */

export type RequestKind = 'read' | 'crypto' | 'mutation' | 'device-read' | 'device-write';

export interface Classification {
  kind: RequestKind;
  /** The operation as a template, e.g. `POST /keys/{id}/sign`; unknown calls keep their literal path. */
  operation: string;
  /** The key the call addresses, when the path names one (not for `POST /keys`, `/keys/generate`, prefix lists). */
  keyId?: string;
  /** A namespace named by the path: `ns` of a `/users/ns~id` target, or `/namespaces/{ns}`. */
  pathNamespace?: string;
}

type Entry = [method: string, pattern: string, kind: RequestKind];

/** `{id}` matches one segment; `{prefix*}` one segment ending in `*`. First match wins, so statics come first. */
const TABLE: readonly Entry[] = [
  // keys (namespace state)
  ['GET', '/keys', 'read'],
  ['POST', '/keys', 'mutation'],
  ['POST', '/keys/generate', 'mutation'],
  ['GET', '/keys/{prefix*}', 'read'],
  ['GET', '/keys/{id}', 'read'],
  ['PUT', '/keys/{id}', 'mutation'],
  ['DELETE', '/keys/{id}', 'mutation'],
  ['PUT', '/keys/{id}/label', 'mutation'],
  ['DELETE', '/keys/{id}/label', 'mutation'],
  ['GET', '/keys/{id}/public.pem', 'read'],
  ['POST', '/keys/{id}/csr.pem', 'crypto'],
  ['POST', '/keys/{id}/decrypt', 'crypto'],
  ['POST', '/keys/{id}/encrypt', 'crypto'],
  ['POST', '/keys/{id}/sign', 'crypto'],
  ['GET', '/keys/{id}/cert', 'read'],
  ['PUT', '/keys/{id}/cert', 'mutation'],
  ['DELETE', '/keys/{id}/cert', 'mutation'],
  ['POST', '/keys/{id}/move', 'mutation'],
  ['PUT', '/keys/{id}/restrictions/tags/{tag}', 'mutation'],
  ['DELETE', '/keys/{id}/restrictions/tags/{tag}', 'mutation'],
  ['POST', '/random', 'crypto'],
  // users (namespace state)
  ['GET', '/users', 'read'],
  ['POST', '/users', 'mutation'],
  ['GET', '/users/{user}', 'read'],
  ['PUT', '/users/{user}', 'mutation'],
  ['POST', '/users/{user}', 'mutation'],
  ['DELETE', '/users/{user}', 'mutation'],
  ['POST', '/users/{user}/passphrase', 'mutation'],
  ['GET', '/users/{user}/tags', 'read'],
  ['PUT', '/users/{user}/tags/{tag}', 'mutation'],
  ['DELETE', '/users/{user}/tags/{tag}', 'mutation'],
  // device level
  ['GET', '/info', 'device-read'],
  ['GET', '/health/{check}', 'device-read'],
  ['GET', '/metrics', 'device-read'],
  ['POST', '/provision', 'device-write'],
  ['POST', '/unlock', 'device-write'],
  ['POST', '/lock', 'device-write'],
  ['POST', '/config/tls/csr.pem', 'device-read'],
  ['POST', '/config/tls/generate', 'device-write'],
  ['GET', '/system/info', 'device-read'],
  ['POST', '/system/backup', 'device-read'],
  ['POST', '/system/restore', 'device-write'],
  ['POST', '/system/factory-reset', 'device-write'],
  ['GET', '/namespaces', 'device-read'],
  ['PUT', '/namespaces/{ns}', 'device-write'],
  ['DELETE', '/namespaces/{ns}', 'device-write'],
  ['GET', '/cluster/members', 'device-read'],
];

function matches(pattern: string[], segments: readonly string[]): boolean {
  if (pattern.length !== segments.length) return false;
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    const s = segments[i]!;
    if (p === '{prefix*}') {
      if (!s.endsWith('*')) return false;
    } else if (p.startsWith('{')) {
      if (s.endsWith('*')) return false;
    } else if (p !== s) {
      return false;
    }
  }
  return true;
}

interface Compiled {
  pattern: string;
  parts: string[];
  kind: RequestKind;
  /** `${method} ${pattern}`, made once rather than per request. */
  operation: string;
}

/** The table by method, in table order (first match wins), so a call is matched against its method's rows only. */
const BY_METHOD = new Map<string, Compiled[]>();
for (const [method, pattern, kind] of TABLE) {
  const rows = BY_METHOD.get(method) ?? [];
  rows.push({ pattern, parts: pattern.split('/').filter(Boolean), kind, operation: `${method} ${pattern}` });
  BY_METHOD.set(method, rows);
}

/** Every operation of the table (`${method} ${pattern}`): a call that matched none keeps its literal path instead. */
const KNOWN_OPERATIONS = new Set(TABLE.map(([method, pattern]) => `${method} ${pattern}`));

/**
 * Whether `operation` (a Classification's) is one of the NetHSM calls this table knows, not the fail-closed fallback of
 * an unknown call (whose literal path can never equal a template: a template's own text matches its row).
 */
export function isKnownOperation(operation: string): boolean {
  return KNOWN_OPERATIONS.has(operation);
}

function lookup(method: string, segments: readonly string[]): Compiled | undefined {
  const rows = BY_METHOD.get(method);
  if (rows === undefined) return undefined;
  for (const row of rows) if (matches(row.parts, segments)) return row;
  return undefined;
}

/** Classifies a call. `method` is the HTTP method as received (HEAD counts as GET); `segments` come from parseTarget. */
export function classify(method: string, segments: readonly string[]): Classification {
  const upper = method.toUpperCase();
  const m = upper === 'HEAD' ? 'GET' : upper;
  const hit = lookup(m, segments);
  const out: Classification = hit
    ? { kind: hit.kind, operation: hit.operation }
    : { kind: fallbackKind(m, segments), operation: `${m} /${segments.join('/')}` };
  const keyId = keyIdOf(segments, hit?.pattern);
  if (keyId !== undefined) out.keyId = keyId;
  const ns = pathNamespaceOf(segments);
  if (ns !== undefined) out.pathNamespace = ns;
  return out;
}

function fallbackKind(method: string, segments: readonly string[]): RequestKind {
  const first = segments[0];
  const read = method === 'GET';
  if (first === 'keys' || first === 'users') return read ? 'read' : 'mutation';
  return read ? 'device-read' : 'device-write';
}

function keyIdOf(segments: readonly string[], pattern: string | undefined): string | undefined {
  if (segments[0] !== 'keys' || segments.length < 2) return undefined;
  const id = segments[1]!;
  if (id.endsWith('*')) return undefined;
  if (pattern === '/keys/generate') return undefined;
  return id;
}

function pathNamespaceOf(segments: readonly string[]): string | undefined {
  const [first, second] = segments;
  if (second === undefined) return undefined;
  if (first === 'namespaces') return second;
  if (first === 'users') {
    const tilde = second.indexOf('~');
    return tilde > 0 ? second.slice(0, tilde) : undefined;
  }
  return undefined;
}

/**
 * Whether a mutation's body may carry what the change stream needs (key material, certificate, new id, label):
 * the key-changing calls that have a body. All are capped at 1 MiB by the NetHSM.
 */
export function isKeyBodyOperation(operation: string): boolean {
  return KEY_BODY_OPERATIONS.has(operation);
}

const KEY_BODY_OPERATIONS = new Set([
  'POST /keys',
  'POST /keys/generate',
  'PUT /keys/{id}',
  'PUT /keys/{id}/cert',
  'PUT /keys/{id}/label',
  'POST /keys/{id}/move',
]);
