/**
 * Key records in the KV store: `/key/<id>` (root) and `/key/.<ns>/<id>` (namespaced), sealed with the key store key,
 * value = the firmware's key JSON (simkeys' `encodeKeyRecord`).
 *
 * The operations counter behaves as the firmware's: increments live in RAM and reach the stored record only when the
 * key is rewritten, on lock, on close, and hourly — so a backup may lag behind `GET /keys/{id}` (FACTS §5.2).
 */
import { decodeKeyRecord, encodeKeyRecord } from './keys/record.js';
import type { KeyRecord } from './keys/types.js';
import type { Device } from './device.js';

export function keyPath(ns: string | undefined, id: string): string {
  return ns === undefined ? `/key/${id}` : `/key/.${ns}/${id}`;
}

export class KeyStore {
  private readonly pendingOps = new Map<string, number>();

  constructor(private readonly device: Device) {}

  /** The record (with in-RAM operations added), or undefined. Throws when the stored value does not open or parse. */
  get(ns: string | undefined, id: string): KeyRecord | undefined {
    const p = keyPath(ns, id);
    const v = this.device.getSealed(p, 'key_store');
    if (v === undefined) return undefined;
    const r = decodeKeyRecord(v);
    r.operations += this.pendingOps.get(p) ?? 0;
    return r;
  }

  exists(ns: string | undefined, id: string): boolean {
    return this.device.kv.has(keyPath(ns, id));
  }

  /** Writes the record as given (its `operations` is taken as the current total). */
  put(ns: string | undefined, id: string, r: KeyRecord): void {
    const p = keyPath(ns, id);
    this.pendingOps.delete(p);
    this.device.setSealed(p, 'key_store', encodeKeyRecord(r));
  }

  delete(ns: string | undefined, id: string): boolean {
    const p = keyPath(ns, id);
    this.pendingOps.delete(p);
    return this.device.kv.delete(p);
  }

  /** Key ids of one namespace (root = undefined), sorted; root listing skips the `.`-prefixed namespace folders. */
  list(ns: string | undefined): string[] {
    const prefix = ns === undefined ? '/key/' : `/key/.${ns}/`;
    return this.device.kv
      .pathsUnder(prefix)
      .map((p) => p.slice(prefix.length))
      .filter((id) => !id.startsWith('.') && !id.includes('/'))
      .sort();
  }

  /** Deletes every key of a namespace (namespace deletion). */
  deleteNamespace(ns: string): void {
    const paths = this.device.kv.pathsUnder(`/key/.${ns}/`);
    for (const p of paths) this.pendingOps.delete(p);
    this.device.kv.batch([], paths);
  }

  countOperation(ns: string | undefined, id: string): void {
    const p = keyPath(ns, id);
    this.pendingOps.set(p, (this.pendingOps.get(p) ?? 0) + 1);
  }

  /** Writes pending operation counts into the records (needs the domain key). Idempotent. */
  flushOperations(): void {
    if (!this.device.hasDomainKey()) return;
    for (const [p, n] of [...this.pendingOps]) {
      this.pendingOps.delete(p);
      const v = this.device.getSealed(p, 'key_store');
      if (v === undefined || n === 0) continue;
      const r = decodeKeyRecord(v);
      r.operations += n;
      this.device.setSealed(p, 'key_store', encodeKeyRecord(r));
    }
  }

  /** Forgets pending counts (after a restore replaced the keys). */
  dropPendingOperations(): void {
    this.pendingOps.clear();
  }
}
