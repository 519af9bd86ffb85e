/**
 * The one namespace a gateway write provably stays inside: its `scope` at the device barrier (SharedOptions.scope).
 * A snapshot apply's verification leaves the namespaces written since its restore out of its comparison and skips
 * itself only for unscoped writes (docs/concurrency.md, "Snapshot sync"), so every write this can confine keeps the
 * restores of the other namespaces verified. Pure; never throws.
 *
 * A namespace N's entries are `/key/.N/<id>`, `/authentication/N~<id>` and `/namespace/N` (src/backup/paths.ts), and
 * the NetHSM confines callers by their user id (FACTS §3.3, §4):
 * - a key call writes the caller's namespace's keys: `N~user` → N; a root caller's keys are root keys → unscoped;
 * - a user call naming `N~id` writes `/authentication/N~id` → N, whoever calls (a namespaced caller of another
 *   namespace is refused by the NetHSM; unscoped anyway, fail closed); `POST /users` by `N~user` creates `N~<hex>` → N;
 *   a root user target or a root caller's `POST /users` → unscoped;
 * - anything else stays unscoped (may touch anything): device writes (namespace create/delete, config, system),
 *   calls without readable credentials, and calls this version does not know (`isKnownOperation`).
 */
import { isValidId } from '../nethsm/ids.js';
import type { CallerIdentity } from './basic-auth.js';
import { isKnownOperation, type Classification } from './classify.js';

/** The namespace the write `c` by `caller` is confined to, or undefined when it may touch anything. */
export function writeScope(c: Classification, caller: CallerIdentity): string | undefined {
  if (c.kind !== 'mutation' || caller.kind !== 'user' || !isKnownOperation(c.operation)) return undefined;
  const own = caller.namespace;
  const path = c.operation.slice(c.operation.indexOf(' ') + 1);
  if (path === '/keys' || path.startsWith('/keys/')) return own;
  if (path === '/users') return own;
  // `/users/{user}…`: the target user's own namespace, and only when the caller could be of it.
  const target = c.pathNamespace;
  if (target === undefined || !isValidId(target)) return undefined;
  return own === undefined || own === target ? target : undefined;
}
