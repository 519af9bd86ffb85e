/**
 * Which keys a merge-restore may change, per namespace of its batch: what the certificate table must forget for it
 * (src/state/key-certs-repo.ts `forgetRestored`), so that the keys it writes back as they were keep their rows and the
 * namespace's next anti-entropy pass stays warm for them (docs/anti-entropy.md, "What a restore forgets").
 *
 * A key is unchanged when the merged file holds, at its path, the same stored write as the base (the device's backup
 * the merge started from): equal value heads and lengths (reader.ts valueHead: the value's own random GCM nonce). Every
 * other key of the namespace in either file is listed: written with another value, added, or removed. Past
 * MAX_CHANGED_KEYS_LISTED in one namespace the list gives way to `'all'` (forget the namespace whole), which bounds the
 * memory of a first sync of a large namespace, where nearly every key differs (a streamed key is written by each site's
 * NetHSM with its own nonce, so it matches only once a snapshot brought it).
 */
import { classifyPath } from '../backup/paths.js';

/** Ids listed per namespace at most; beyond, the namespace is forgotten whole. */
export const MAX_CHANGED_KEYS_LISTED = 50_000;

/** Per namespace of a batch: the ids of the keys its restore may change, or 'all'. Every namespace of the batch has an entry. */
export type ChangedKeys = ReadonlyMap<string, ReadonlySet<string> | 'all'>;

export class ChangedKeysCollector {
  readonly #byNamespace = new Map<string, Set<string> | 'all'>();

  constructor(namespaces: readonly string[]) {
    for (const ns of namespaces) this.#byNamespace.set(ns, new Set());
  }

  /** Notes a path the restore may change (only the batch's namespaced keys are listed; anything else is ignored). */
  note(path: string): void {
    const c = classifyPath(path);
    if (c.kind !== 'namespace-key') return;
    const ids = this.#byNamespace.get(c.namespace);
    if (ids === undefined || ids === 'all') return;
    ids.add(c.keyId);
    if (ids.size > MAX_CHANGED_KEYS_LISTED) this.#byNamespace.set(c.namespace, 'all');
  }

  get result(): ChangedKeys {
    return this.#byNamespace;
  }
}
