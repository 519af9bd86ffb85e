/**
 * One anti-entropy pass by ranges, at a replica (docs/anti-entropy.md, "Streamed ranges"):
 *
 * 1. Both sites read at once: the replica reads its own keys into a CompactInventory while the primary streams the
 *    digests of its ranges. No key crosses the wire for a range whose digests agree.
 * 2. For the ranges that differ, the replica asks the primary for their items. That request starts only after the
 *    replica's own read has ended, so a key the primary created and streamed to the replica before the replica read
 *    it is in the primary's answer: a key is called *extra* (and deleted) only if the primary lacks it in a read that
 *    began after the replica saw it. Missing and differing keys are likewise judged against the primary's newer read.
 * 3. Inside `exclusive` (the caller's barrier and namespace lock, so no stream apply or restore runs meanwhile) the
 *    replica re-reads its keys that differ, plans the repair (antientropy.ts) and applies it.
 *
 * Memory: the replica's ids (CompactInventory; its digests are in an unlinked file in `workDir`; both released before
 * the repair), the primary's range digests, and the items of keys that differ, at most MAX_DIFFERS_HELD of them per
 * pass (beyond that they are counted, and repaired by later passes).
 */
import type { NetHsmClient } from '../nethsm/client.js';
import type { KeyCertsRepo } from '../state/key-certs-repo.js';
import { unlimited, type Limiter } from '../util/rate-limiter.js';
import { applyRepair, planRepair, type AntiEntropyResult, type CertFetcher } from './antientropy.js';
import { CertRead, type CertReadCounts } from './cert-read.js';
import { CompactInventory } from './compact-inventory.js';
import { diffInventories, inventoryDigest, type InventoryDiff, type KeyInventoryItem, type NamespaceInventory } from './inventory.js';
import { MAX_ITEM_RANGES, type IdRange, type RangeDigest } from './inventory-ranges.js';
import { compareIds, listIds, readItems } from './inventory-reader.js';

/** Differing keys whose items one pass holds and repairs. */
export const MAX_DIFFERS_HELD = 10_000;

export interface RangePassOptions {
  namespace: string;
  /** A client of the replica's NetHSM as the namespace's replication account. */
  replica: NetHsmClient;
  /** The primary's range digests, validated (PeerClient.inventoryRanges + readRangeDigests). */
  primaryRanges: (signal: AbortSignal) => Promise<{ ranges: RangeDigest[] }>;
  /** The primary's items inside `ranges`, validated as they arrive (PeerClient.inventoryItems + readItemLines). */
  primaryItems: (ranges: IdRange[]) => AsyncIterable<KeyInventoryItem>;
  fetchCert: CertFetcher;
  /** An existing folder for the replica's digests' file, unlinked at once (the state directory's `work/`). */
  workDir: string;
  setDrift: (c: { missing: number; extra: number; differs: number }) => void;
  /** Whether replication wrote this key id of the namespace here (planRepair: extras it never wrote are not deleted). */
  knownKey?: (id: string) => boolean;
  /** Runs the re-read and repair with no stream apply or restore of the namespace alongside; default: just runs it. */
  exclusive?: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Paces the replica's device requests. */
  limiter?: Limiter;
  concurrency?: number;
  /**
   * The replica's certificate table: its own read asks the device for the certificate only of keys the table does not
   * vouch for (./cert-read.ts); keys the repair writes are forgotten before and after. Absent: every key in full.
   */
  certs?: CertTableUse;
  /**
   * The daemon's stop: the pass's waits at the limiter give up, its device reads stop at their next request (one in
   * flight ends first), and once `exclusive` admitted it, no repair starts after it (the pass rejects with the signal's
   * reason). A repair already begun runs to its end: its writes were decided under the caller's fencing token, and one
   * cut half-way would leave a key re-created without its certificate or tags (docs/anti-entropy.md, "The daemon's stop").
   */
  signal?: AbortSignal;
}

/** A site's certificate table and its scrub setting (`antiEntropy.certScrubPasses`). */
export interface CertTableUse {
  repo: KeyCertsRepo;
  scrubPasses: number;
}

export interface RangePassResult extends AntiEntropyResult {
  /** Ranges compared, and how many differed (and had their items sent). */
  ranges: number;
  rangesDiffering: number;
  /** Differing keys over MAX_DIFFERS_HELD: counted in the drift, repaired by a later pass. */
  deferred: number;
  /** How the replica's own read got its keys' certificates (with a certificate table only). */
  certReads?: CertReadCounts;
}

/** Runs one pass; throws what the reads throw (device, peer) and retryable errors of the repair. */
export async function rangePass(o: RangePassOptions): Promise<RangePassResult> {
  const limiter = o.limiter ?? unlimited();
  const readOpts = { limiter, ...(o.concurrency === undefined ? {} : { concurrency: o.concurrency }) };
  const { rangeCount, differing, found, certReads } = await readAndCompare(o, readOpts);
  return (o.exclusive ?? ((fn) => fn()))(async () => {
    const replicaItems: KeyInventoryItem[] = [];
    for await (const item of readItems(o.replica, found.candidates.map((c) => c.id), { ...readOpts, ...(o.signal ? { signal: o.signal } : {}) })) replicaItems.push(item);
    // The last point at which the stop abandons the pass: past it, the repair is planned and applied whole.
    o.signal?.throwIfAborted();
    const primaryInv = partial(o.namespace, found.candidates);
    const replicaInv = partial(o.namespace, replicaItems);
    const again = diffInventories(primaryInv, replicaInv);
    const diff: InventoryDiff = { missing: mergeSorted(found.missing, again.missing), extra: found.extra, differs: again.differs };
    o.setDrift({ missing: diff.missing.length, extra: diff.extra.length, differs: diff.differs.length + found.deferred });
    const plan = planRepair(diff, primaryInv, replicaInv, o.knownKey);
    const touched = plan.viaApi.filter((st) => st.kind === 'cert-set' || st.kind === 'cert-remove' || st.kind === 'delete-extra').map((st) => st.id);
    o.certs?.repo.forget(o.namespace, touched);
    let res: Awaited<ReturnType<typeof applyRepair>> | { applied: number };
    try {
      res = plan.viaApi.length > 0 ? await applyRepair(plan, o.replica, o.fetchCert) : { applied: 0 };
    } finally {
      o.certs?.repo.forget(o.namespace, touched);
    }
    return {
      diff,
      plan,
      repaired: res.applied,
      needsSnapshot: plan.needsSnapshot,
      ...('failed' in res && res.failed ? { failed: res.failed } : {}),
      ranges: rangeCount,
      rangesDiffering: differing.length,
      deferred: found.deferred,
      ...(certReads ? { certReads } : {}),
    };
  });
}

interface Compared {
  rangeCount: number;
  differing: IdRange[];
  found: Found;
  certReads: CertReadCounts | undefined;
}

/**
 * Steps 1 and 2: both sites' reads, then the items of the ranges that differ. The replica's CompactInventory (its ids,
 * and its digests' file) is closed on every way out of here, so none of it is held during the repair.
 */
async function readAndCompare(o: RangePassOptions, readOpts: { limiter: Limiter; concurrency?: number }): Promise<Compared> {
  const abort = new AbortController();
  // Cut by the first failure of either site's read, or by the daemon's stop.
  const signal = o.signal ? AbortSignal.any([abort.signal, o.signal]) : abort.signal;
  let local: CompactInventory | undefined;
  let certReads: CertReadCounts | undefined;
  const readLocal = async (): Promise<CompactInventory> => {
    const ids = await listIds(o.replica, readOpts.limiter, signal);
    // The pass may have failed meanwhile (the primary's side): then nothing may be opened that no one would close.
    signal.throwIfAborted();
    const inv = (local = new CompactInventory(ids, o.workDir));
    const certs = o.certs ? new CertRead(o.certs.repo, o.namespace, o.certs.scrubPasses) : undefined;
    certReads = certs?.counts;
    try {
      for await (const item of readItems(o.replica, ids, { ...readOpts, signal, ...(certs ? { certs } : {}) })) inv.push(item);
      return inv.seal();
    } finally {
      certs?.end();
    }
  };
  try {
    let primary: { ranges: RangeDigest[] };
    let mine: CompactInventory;
    try {
      [primary, mine] = await Promise.all([o.primaryRanges(signal), readLocal()]);
    } catch (err) {
      abort.abort(err);
      throw err;
    }
    const differing = differingRanges(primary.ranges, mine);
    const found = await compareItems(o, differing, mine);
    return { rangeCount: primary.ranges.length, differing, found, certReads };
  } finally {
    local?.close();
  }
}

/** The primary's ranges whose count or digest differ at the replica, as id ranges. */
function differingRanges(ranges: readonly RangeDigest[], local: CompactInventory): IdRange[] {
  const out: IdRange[] = [];
  let after: string | null = null;
  for (const r of ranges) {
    const range: IdRange = { after, upTo: r.upTo };
    const [from, to] = local.indices(range);
    if (to - from !== r.count || local.digestOf(from, to) !== r.digest) out.push(range);
    after = r.upTo;
  }
  return out;
}

interface Found {
  missing: string[];
  extra: string[];
  /** The primary's items of keys at both sites whose digests differ (at most MAX_DIFFERS_HELD). */
  candidates: KeyInventoryItem[];
  deferred: number;
}

/** Merges the primary's items of the differing ranges with the replica's ids there, batch by batch. */
async function compareItems(o: RangePassOptions, ranges: readonly IdRange[], local: CompactInventory): Promise<Found> {
  const found: Found = { missing: [], extra: [], candidates: [], deferred: 0 };
  for (let b = 0; b < ranges.length; b += MAX_ITEM_RANGES) {
    o.signal?.throwIfAborted();
    const batch = ranges.slice(b, b + MAX_ITEM_RANGES);
    const mine = batch.flatMap((r) => {
      const [from, to] = local.indices(r);
      return Array.from({ length: to - from }, (_, k) => from + k);
    });
    let j = 0;
    for await (const p of o.primaryItems(batch)) {
      while (j < mine.length && compareIds(local.idAt(mine[j]!), p.id) < 0) found.extra.push(local.idAt(mine[j++]!));
      if (j < mine.length && local.idAt(mine[j]!) === p.id) {
        if (local.digestAt(mine[j]!) !== p.digest) {
          if (found.candidates.length < MAX_DIFFERS_HELD) found.candidates.push(p);
          else found.deferred++;
        }
        j++;
      } else {
        found.missing.push(p.id);
      }
    }
    while (j < mine.length) found.extra.push(local.idAt(mine[j++]!));
  }
  return found;
}

function partial(namespace: string, keys: KeyInventoryItem[]): NamespaceInventory {
  return { namespace, takenAt: Date.now(), keys, digest: inventoryDigest(keys) };
}

function mergeSorted(a: string[], b: string[]): string[] {
  if (b.length === 0) return a;
  return [...a, ...b].sort(compareIds);
}
