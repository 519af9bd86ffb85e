/**
 * Reads a namespace's keys from a NetHSM as inventory items, streamed in id order: at most `concurrency` keys in
 * flight, every device request paced by a limiter, nothing but the window in memory. A full read is two requests per
 * key (`GET /keys/{id}/cert`, then `GET /keys/{id}`): the firmware answers 404 to the first both for "no certificate"
 * and "no such key", and the second tells them apart (404: the key was deleted meanwhile, and is left out). With a
 * CertRead (`./cert-read.ts`), a key whose certificate the table vouches for costs one (`GET /keys/{id}`).
 */
import { NetHsmHttpError } from '../errors.js';
import type { NetHsmClient } from '../nethsm/client.js';
import { PackedIds } from '../nethsm/packed-ids.js';
import type { Limiter } from '../util/rate-limiter.js';
import { unlimited } from '../util/rate-limiter.js';
import type { CertRead } from './cert-read.js';
import { inventoryItem, itemOfKnownCert, type KeyInventoryItem } from './inventory.js';

export interface ReadItemsOptions {
  /** Keys read at once; default 8. */
  concurrency?: number;
  /** Paces every device request; default: none. */
  limiter?: Limiter;
  signal?: AbortSignal;
  /** The certificate table for this read; absent: every key is read in full. */
  certs?: CertRead;
}

/** The code unit order inventories are sorted in (byte order for valid ids). */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Ids a read walks through in order: a string array or a PackedIds. */
export interface IdList {
  readonly length: number;
  at(i: number): string | undefined;
}

/** The namespace's key ids, sorted and unique, packed: one device request, parsed as it arrives (ids only). */
export async function listIds(client: NetHsmClient, limiter: Limiter = unlimited(), signal?: AbortSignal): Promise<PackedIds> {
  await limiter.take(signal);
  const ids = await client.listKeyIds();
  // The firmware sends them sorted: check in place instead of copying a million ids into a Set and sorting.
  return ids.strictlyIncreasing() ? ids : PackedIds.of([...new Set(ids)].sort(compareIds));
}

/**
 * One key's item, or null when the key does not exist (any more). Throws what the client throws (other than that
 * 404) and NetHsmResponseInvalidError for a malformed key answer.
 */
export async function readItem(client: NetHsmClient, id: string, limiter: Limiter = unlimited(), signal?: AbortSignal, certs?: CertRead): Promise<KeyInventoryItem | null> {
  try {
    const known = certs?.known(id);
    if (known) {
      await limiter.take(signal);
      const key = await client.getKey(id);
      // A daemon write of the key since the row was loaded: the row may predate the key just read, so read in full.
      if (certs!.stillTrusted(id, known.mark)) return itemOfKnownCert(id, key, known.cert);
    }
    const mark = certs?.mark() ?? 0;
    await limiter.take(signal);
    const cert = await client.readCert(id);
    await limiter.take(signal);
    const key = await client.getKey(id);
    const item = inventoryItem(id, key, cert);
    certs?.learnt(item, mark);
    return item;
  } catch (err) {
    if (err instanceof NetHsmHttpError && err.status === 404) return null;
    throw err;
  }
}

/**
 * The items of `ids` (sorted), in that order, skipping keys that no longer exist. The window of reads in flight
 * is bounded by `concurrency`; a consumer that stops early (return/throw) stops the reads. The first read error is
 * thrown when its item's turn comes.
 */
export async function* readItems(client: NetHsmClient, ids: IdList, o: ReadItemsOptions = {}): AsyncGenerator<KeyInventoryItem> {
  const limit = Math.max(1, o.concurrency ?? 8);
  const limiter = o.limiter ?? unlimited();
  const window: Promise<KeyInventoryItem | null>[] = [];
  let next = 0;
  const fill = (): void => {
    while (window.length < limit && next < ids.length) {
      const p = readItem(client, ids.at(next++)!, limiter, o.signal, o.certs);
      p.catch(() => undefined); // observed when its turn comes; no unhandled rejection meanwhile
      window.push(p);
    }
  };
  fill();
  while (window.length > 0) {
    const item = await window.shift()!;
    fill();
    if (item) yield item;
  }
}
