/**
 * Anti-entropy for one namespace at a replica: compare its inventory with the primary's, repair through the API what
 * the API can carry (tags, labels, certificates, keys that exist only at the replica), and say when only a snapshot
 * can (a key missing, or one whose key material, type or mechanisms differ: the API cannot write key material it
 * did not import, and the daemon never sees a primary's private keys). See docs/anti-entropy.md.
 */
import { InputInvalidError, isRetryable, NetHsmHttpError } from '../errors.js';
import type { NetHsmClient } from '../nethsm/client.js';
import { diffInventories, readInventory, type InventoryDiff, type KeyInventoryItem, type NamespaceInventory } from './inventory.js';

export type RepairStep =
  | { kind: 'tag-add' | 'tag-remove'; id: string; tag: string }
  | { kind: 'label-set'; id: string; label: string }
  | { kind: 'label-remove'; id: string }
  | { kind: 'cert-set'; id: string }
  | { kind: 'cert-remove'; id: string }
  | { kind: 'delete-extra'; id: string };

export interface RepairPlan {
  /** In the order they must run. */
  viaApi: RepairStep[];
  needsSnapshot: boolean;
  /** Why a snapshot is needed, one line per cause; empty when it is not. */
  reasons: string[];
}

export type CertFetcher = (id: string) => Promise<{ contentType: string; data: Buffer } | null>;

/** The only certificate content type `PUT /keys/{id}/cert` stores (FACTS §5.7). */
const API_CERT_TYPE = 'application/octet-stream';
const LISTED = 10;

function listIds(ids: readonly string[]): string {
  const shown = ids.slice(0, LISTED).join(', ');
  return ids.length > LISTED ? `${shown}, … (${ids.length - LISTED} more)` : shown;
}

/**
 * Pure: what the replica can fix through the API and what needs a snapshot.
 * Order of steps, chosen so the replica is never less restricted than both the old and the new state: keys that exist
 * only at the replica are deleted first; per key, tags are added before any is removed (a key whose last tag goes is
 * usable by every Operator of the namespace); a certificate that differs is removed, then set. Tags, labels and
 * certificates are repaired even on keys that also wait for a snapshot, because tags restrict who may use the key.
 * Keys only at the replica are deleted through the API only when `knownKey` says replication wrote them (a change
 * this site applied or logged names them; absent: every key is taken as replication's): one it never wrote was written
 * straight to the replica's NetHSM, and deleting it would lose it. For those the plan asks for a snapshot, whose
 * restore saves them to quarantine first (src/replicator/foreign.ts).
 * Throws InputInvalidError when the three arguments do not belong together (namespace, or an id in `diff` unknown).
 */
export function planRepair(diff: InventoryDiff, primary: NamespaceInventory, replica: NamespaceInventory, knownKey?: (id: string) => boolean): RepairPlan {
  if (primary.namespace !== replica.namespace) {
    throw new InputInvalidError(`inventories of different namespaces: ${primary.namespace} and ${replica.namespace}`, { namespace: replica.namespace });
  }
  const atPrimary = new Map(primary.keys.map((k) => [k.id, k]));
  const atReplica = new Map(replica.keys.map((k) => [k.id, k]));
  const foreign = knownKey ? diff.extra.filter((id) => !knownKey(id)) : [];
  const viaApi: RepairStep[] = diff.extra.filter((id) => !knownKey || knownKey(id)).map((id) => ({ kind: 'delete-extra', id }));
  const reasons: string[] = [];
  if (foreign.length > 0) {
    reasons.push(`${foreign.length} key(s) at the replica that replication never wrote (written straight to its NetHSM?), saved to quarantine by the snapshot before it removes them: ${listIds(foreign)}`);
  }
  if (diff.missing.length > 0) reasons.push(`${diff.missing.length} key(s) missing at the replica: ${listIds(diff.missing)}`);
  const material: string[] = [];
  const certTypes: string[] = [];
  for (const d of diff.differs) {
    const p = atPrimary.get(d.id);
    const r = atReplica.get(d.id);
    if (!p || !r) throw new InputInvalidError(`key ${d.id} of the diff is not in both inventories`, { namespace: replica.namespace });
    if (d.fields.some((f) => f === 'public' || f === 'type' || f === 'mechanisms')) material.push(`${d.id} (${d.fields.filter((f) => f === 'public' || f === 'type' || f === 'mechanisms').join(', ')})`);
    if (d.fields.includes('tags')) viaApi.push(...tagSteps(p, r));
    if (d.fields.includes('label')) viaApi.push(p.label === '' ? { kind: 'label-remove', id: d.id } : { kind: 'label-set', id: d.id, label: p.label });
    if (d.fields.includes('cert')) {
      if (p.hasCert && p.certType !== API_CERT_TYPE) {
        certTypes.push(`${d.id} (${p.certType})`);
      } else {
        if (r.hasCert) viaApi.push({ kind: 'cert-remove', id: d.id });
        if (p.hasCert) viaApi.push({ kind: 'cert-set', id: d.id });
      }
    }
  }
  if (material.length > 0) reasons.push(`${material.length} key(s) whose key material, type or mechanisms differ: ${listIds(material)}`);
  if (certTypes.length > 0) reasons.push(`${certTypes.length} certificate(s) of a content type the API cannot store: ${listIds(certTypes)}`);
  return { viaApi, needsSnapshot: reasons.length > 0, reasons };
}

function tagSteps(p: KeyInventoryItem, r: KeyInventoryItem): RepairStep[] {
  const have = new Set(r.tags);
  const want = new Set(p.tags);
  return [
    ...p.tags.filter((t) => !have.has(t)).map((tag): RepairStep => ({ kind: 'tag-add', id: p.id, tag })),
    ...r.tags.filter((t) => !want.has(t)).map((tag): RepairStep => ({ kind: 'tag-remove', id: p.id, tag })),
  ];
}

/**
 * Applies the API steps in order at the replica, with a client of the namespace's replication account (an
 * Administrator of the namespace). `fetchCert(id)` supplies the primary's certificate; when it answers null (the
 * primary dropped the certificate since its inventory) the step is skipped and the next pass settles it.
 * A removal whose object is already gone (404) counts as applied. Stops at the first other error: a retryable one
 * (NetHSM unreachable, timeout, 5xx) is thrown, any other is returned in `failed` with the steps applied before it.
 */
export async function applyRepair(
  plan: RepairPlan,
  replica: NetHsmClient,
  fetchCert: CertFetcher,
): Promise<{ applied: number; skipped: number; failed?: { step: RepairStep; error: string } }> {
  let applied = 0;
  let skipped = 0;
  for (const step of plan.viaApi) {
    try {
      if (await applyStep(step, replica, fetchCert)) applied++;
      else skipped++;
    } catch (err) {
      if (isRetryable(err)) throw err;
      if (err instanceof NetHsmHttpError && err.status === 404 && isRemoval(step)) {
        applied++;
        continue;
      }
      return { applied, skipped, failed: { step, error: err instanceof Error ? err.message : String(err) } };
    }
  }
  return { applied, skipped };
}

function isRemoval(step: RepairStep): boolean {
  return step.kind === 'delete-extra' || step.kind === 'cert-remove' || step.kind === 'tag-remove';
}

/** Runs one step; false when it was skipped. */
async function applyStep(step: RepairStep, c: NetHsmClient, fetchCert: CertFetcher): Promise<boolean> {
  switch (step.kind) {
    case 'tag-add':
      await c.addKeyTag(step.id, step.tag);
      return true;
    case 'tag-remove':
      await c.removeKeyTag(step.id, step.tag);
      return true;
    case 'label-set':
      await c.setKeyLabel(step.id, step.label);
      return true;
    case 'label-remove':
      await c.removeKeyLabel(step.id);
      return true;
    case 'cert-remove':
      await c.deleteCert(step.id);
      return true;
    case 'delete-extra':
      await c.deleteKey(step.id);
      return true;
    case 'cert-set': {
      const cert = await fetchCert(step.id);
      if (!cert) return false;
      await c.putCert(step.id, cert.data);
      return true;
    }
  }
}

export interface AntiEntropyPassOptions {
  namespace: string;
  /** The primary's inventory of the namespace, already validated (parseNamespaceInventory for a peer's answer). */
  primary: () => Promise<NamespaceInventory>;
  /** A client of the replica's NetHSM as the namespace's replication account. */
  replica: NetHsmClient;
  fetchCert: CertFetcher;
  setDrift: (c: { missing: number; extra: number; differs: number }) => void;
  /** Whether replication wrote this key id of the namespace here (planRepair: extras it never wrote are not deleted). */
  knownKey?: (id: string) => boolean;
  concurrency?: number;
  /**
   * The daemon's stop: the replica's reads stop at their next request and no repair starts after it (the pass rejects
   * with the signal's reason); a repair already begun runs to its end (docs/anti-entropy.md, "The daemon's stop").
   */
  signal?: AbortSignal;
}

export interface AntiEntropyResult {
  diff: InventoryDiff;
  plan: RepairPlan;
  /** API steps applied. */
  repaired: number;
  needsSnapshot: boolean;
  /** The step that failed with a non-retryable error, if any (steps after it did not run). */
  failed?: { step: RepairStep; error: string };
}

/**
 * One pass: read the replica's inventory, then the primary's (in that order: a key created at the primary and
 * streamed to the replica between the two reads shows as missing, never as extra, so it is never deleted), diff,
 * export the drift, plan, repair via the API, and say whether a snapshot is needed.
 * Not idempotent in effect (it repairs), but a second pass right after finds only what needs a snapshot.
 * The caller keeps it from running alongside a restore or stream apply of the same namespace.
 * Throws what reading the inventories throws, InputInvalidError when the primary's inventory is of another
 * namespace, and retryable errors of the repair.
 */
export async function antiEntropyPass(o: AntiEntropyPassOptions): Promise<AntiEntropyResult> {
  const replicaInv = await readInventory(o.replica, o.namespace, { ...(o.concurrency === undefined ? {} : { concurrency: o.concurrency }), ...(o.signal ? { signal: o.signal } : {}) });
  const primaryInv = await o.primary();
  o.signal?.throwIfAborted();
  if (primaryInv.namespace !== o.namespace) {
    throw new InputInvalidError(`the primary's inventory is of namespace ${primaryInv.namespace}, not ${o.namespace}`, { namespace: o.namespace });
  }
  const diff = diffInventories(primaryInv, replicaInv);
  o.setDrift({ missing: diff.missing.length, extra: diff.extra.length, differs: diff.differs.length });
  const plan = planRepair(diff, primaryInv, replicaInv, o.knownKey);
  const res = plan.viaApi.length > 0 ? await applyRepair(plan, o.replica, o.fetchCert) : { applied: 0 };
  return { diff, plan, repaired: res.applied, needsSnapshot: plan.needsSnapshot, ...('failed' in res && res.failed ? { failed: res.failed } : {}) };
}
