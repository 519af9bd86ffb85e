/**
 * Namespace inventories: what the NetHSM API shows of each key of a namespace (public part, type, mechanisms, tags,
 * label, certificate), reduced to digests that carry no secret, so two sites can compare their copies of a namespace
 * key by key (anti-entropy, `./antientropy.ts`) and a peer's answer can be checked before it is believed.
 *
 * Left out on purpose: `operations` (counts uses at each site, so it differs by design) and anything private
 * (the API never shows private key material).
 */
import { createHash, hash } from 'node:crypto';
import { z } from 'zod';
import { NetHsmResponseInvalidError, PeerMessageInvalidError } from '../errors.js';
import type { NetHsmClient, PublicKey } from '../nethsm/client.js';
import { isValidId } from '../nethsm/ids.js';
import { KEY_MECHANISMS } from '../nethsm/mechanisms.js';
import { listIds, readItems } from './inventory-reader.js';

/** One key as the API shows it: everything replication must carry, nothing secret. */
export interface KeyInventoryItem {
  id: string;
  /** sha256 hex over the canonical JSON of `{ type, mechanisms, public, tags, label, cert }` of this item. */
  digest: string;
  type: string;
  /** As the NetHSM sorts them: in `KeyMechanism` declaration order (unknown ones after, by code unit). */
  mechanisms: string[];
  /** sha256 hex over the canonical JSON of the public data (base64 normalised); '' when the key has none (Generic). */
  public: string;
  /** Sorted, no duplicates. */
  tags: string[];
  /** '' when the key has none. */
  label: string;
  hasCert: boolean;
  /** sha256 hex over `<content type>\n<certificate bytes>`; '' when there is no certificate. */
  cert: string;
  /** The certificate's content type; '' when there is none. */
  certType: string;
}

export interface NamespaceInventory {
  namespace: string;
  /** ms since the epoch when reading started. */
  takenAt: number;
  /** Sorted by id (code unit order, which is byte order for valid ids), ids unique. */
  keys: KeyInventoryItem[];
  /** sha256 hex over `<id> <item digest>\n` of every item in order: equal key sets give equal digests. */
  digest: string;
}

export type InventoryField = 'public' | 'type' | 'mechanisms' | 'tags' | 'label' | 'cert';

export interface InventoryDiff {
  /** At the primary, not at the replica. */
  missing: string[];
  /** At the replica only. */
  extra: string[];
  differs: { id: string; fields: InventoryField[] }[];
}

/** Cap of the old one-answer route only (one JSON string); the streamed ranges (`./inventory-ranges.ts`) have none. */
export const MAX_INVENTORY_KEYS = 1_000_000;
const MAX_TAGS = 4096;
const MAX_MECHANISMS = 64;
const LABEL_MAX_BYTES = 32;

const MECHANISM_RANK = new Map<string, number>(KEY_MECHANISMS.map((m, i) => [m, i]));

function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The NetHSM's mechanism order; mechanisms of a newer firmware sort after the known ones, by code unit. */
export function compareMechanisms(a: string, b: string): number {
  const ra = MECHANISM_RANK.get(a) ?? KEY_MECHANISMS.length;
  const rb = MECHANISM_RANK.get(b) ?? KEY_MECHANISMS.length;
  return ra !== rb ? ra - rb : compareCodeUnits(a, b);
}

/** JSON with object keys sorted at every level: the one byte form the digests are taken over. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort(compareCodeUnits);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * One-shot: `crypto.hash` makes no Hash object. A pass digests every key (two or three times); a million Hash objects,
 * each held by a weak native handle, outlive the young generation and grew the old one by ~150 MB of garbage.
 */
function sha256Hex(data: string | Buffer): string {
  return hash('sha256', data, 'hex');
}

/** Digest of an item's fields (everything but `id` and `digest`). */
export function itemDigest(i: Omit<KeyInventoryItem, 'id' | 'digest' | 'hasCert' | 'certType'>): string {
  return sha256Hex(canonicalJson({ type: i.type, mechanisms: i.mechanisms, public: i.public, tags: i.tags, label: i.label, cert: i.cert }));
}

/** Digest of a whole inventory (its items in order). */
export function inventoryDigest(keys: readonly Pick<KeyInventoryItem, 'id' | 'digest'>[]): string {
  const h = createHash('sha256');
  for (const k of keys) h.update(`${k.id} ${k.digest}\n`);
  return h.digest('hex');
}

function publicDigest(pub: PublicKey['public'], operation: string): string {
  if (pub === undefined) return '';
  if (pub === null || typeof pub !== 'object') throw new NetHsmResponseInvalidError('key answer has a malformed public part', { operation });
  const normalised: Record<string, string> = {};
  for (const [k, v] of Object.entries(pub)) {
    if (typeof v !== 'string') throw new NetHsmResponseInvalidError(`key answer's public.${k} is not a string`, { operation });
    // Re-encode so that equal bytes give equal digests whatever the base64 spelling (line breaks, padding).
    normalised[k] = Buffer.from(v.replace(/\s+/g, ''), 'base64').toString('base64');
  }
  return sha256Hex(canonicalJson(normalised));
}

/** The certificate digest: content type and bytes. */
export function certDigest(contentType: string, data: Buffer): string {
  return hash('sha256', Buffer.concat([Buffer.from(`${contentType}\n`), data]), 'hex');
}

/** Builds one item from the API's answers; the key's shape is checked here (the NetHSM is outside input too). */
export function inventoryItem(id: string, key: PublicKey, cert: { contentType: string; data: Buffer } | null): KeyInventoryItem {
  return itemOfKnownCert(id, key, cert ? { cert: certDigest(cert.contentType, cert.data), certType: cert.contentType } : null);
}

/** As inventoryItem, with the certificate given by its digest and content type (as the certificate table holds it). */
export function itemOfKnownCert(id: string, key: PublicKey, known: { cert: string; certType: string } | null): KeyInventoryItem {
  const operation = `GET /keys/${id}`;
  const tagsRaw: unknown = (key.restrictions as { tags?: unknown } | undefined)?.tags ?? [];
  if (!Array.isArray(tagsRaw) || !tagsRaw.every((t) => typeof t === 'string')) {
    throw new NetHsmResponseInvalidError('key answer has malformed restrictions.tags', { operation });
  }
  if (!key.mechanisms.every((m) => typeof m === 'string')) throw new NetHsmResponseInvalidError('key answer has malformed mechanisms', { operation });
  const fields = {
    type: String(key.type),
    mechanisms: [...new Set<string>(key.mechanisms)].sort(compareMechanisms),
    public: publicDigest(key.public, operation),
    tags: [...new Set<string>(tagsRaw as string[])].sort(compareCodeUnits),
    label: typeof key.label === 'string' ? key.label : '',
    cert: known?.cert ?? '',
  };
  return { id, digest: itemDigest(fields), ...fields, hasCert: known !== null, certType: known?.certType ?? '' };
}

/**
 * Reads the namespace's keys through the API with a client of that namespace (the replication account at a replica,
 * any Administrator or Operator of the namespace at the primary; a root account sees no namespaced key).
 * At most `concurrency` (default 8) keys are read at once, two requests per key (`./inventory-reader.ts`). A key deleted
 * while the inventory is read is left out; one created meanwhile may be missing: the inventory is as of some moment
 * during the read, per key. Holds every item in memory: the old one-answer route (`GET …/inventory`) and tests; the
 * pass itself streams (`./inventory-ranges.ts`).
 * Throws what the client throws (NetHsmHttpError, NetHsmUnreachableError, …) and NetHsmResponseInvalidError.
 */
export async function readInventory(client: NetHsmClient, namespace: string, opts: { concurrency?: number; signal?: AbortSignal } = {}): Promise<NamespaceInventory> {
  const takenAt = Date.now();
  const ids = await listIds(client, undefined, opts.signal);
  const keys: KeyInventoryItem[] = [];
  for await (const item of readItems(client, ids, opts)) keys.push(item);
  return { namespace, takenAt, keys, digest: inventoryDigest(keys) };
}

/**
 * Pure: compares a replica's inventory with its primary's. Both must be sorted by id (as `readInventory` and the schema
 * guarantee). `differs` lists, per key present at both, the fields that differ, in the order of {@link InventoryField}.
 */
export function diffInventories(primary: NamespaceInventory, replica: NamespaceInventory): InventoryDiff {
  const diff: InventoryDiff = { missing: [], extra: [], differs: [] };
  const p = primary.keys;
  const r = replica.keys;
  let i = 0;
  let j = 0;
  while (i < p.length || j < r.length) {
    const a = p[i];
    const b = r[j];
    const c = a && b ? compareCodeUnits(a.id, b.id) : a ? -1 : 1;
    if (c < 0) {
      diff.missing.push(a!.id);
      i++;
    } else if (c > 0) {
      diff.extra.push(b!.id);
      j++;
    } else {
      const fields = differingFields(a!, b!);
      if (fields.length > 0) diff.differs.push({ id: a!.id, fields });
      i++;
      j++;
    }
  }
  return diff;
}

function differingFields(a: KeyInventoryItem, b: KeyInventoryItem): InventoryField[] {
  if (a.digest === b.digest && a.certType === b.certType) return [];
  const out: InventoryField[] = [];
  if (a.public !== b.public) out.push('public');
  if (a.type !== b.type) out.push('type');
  if (a.mechanisms.join(',') !== b.mechanisms.join(',')) out.push('mechanisms');
  if (a.tags.join(',') !== b.tags.join(',')) out.push('tags');
  if (a.label !== b.label) out.push('label');
  if (a.cert !== b.cert || a.certType !== b.certType) out.push('cert');
  return out;
}

// ---- validation of a peer's inventory -----------------------------------------------------------

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits');
const hex64OrEmpty = z.string().regex(/^([0-9a-f]{64})?$/, "must be 64 lowercase hex digits or ''");
const keyId = z.string().refine(isValidId, 'must be a NetHSM id (1..128 of [a-zA-Z0-9_.-], not starting with _ . -)');
const token = z.string().regex(/^[A-Za-z0-9_]{1,64}$/, 'must be 1..64 of [A-Za-z0-9_]');

function strictlyIncreasing<T>(xs: readonly T[], cmp: (a: T, b: T) => number): number {
  for (let k = 1; k < xs.length; k++) if (cmp(xs[k - 1]!, xs[k]!) >= 0) return k;
  return -1;
}

/** One item from a peer: strict, bounded, sorted fields, digest recomputed and checked. */
export const itemSchema = z
  .strictObject({
    id: keyId,
    digest: hex64,
    type: token,
    mechanisms: z.array(token).min(1).max(MAX_MECHANISMS),
    public: hex64OrEmpty,
    tags: z.array(keyId).max(MAX_TAGS),
    label: z.string().refine((s) => Buffer.byteLength(s, 'utf8') <= LABEL_MAX_BYTES, `must be at most ${LABEL_MAX_BYTES} bytes of UTF-8`),
    hasCert: z.boolean(),
    cert: hex64OrEmpty,
    certType: z.string().regex(/^[\x21-\x7e][\x20-\x7e]{0,254}$|^$/, 'must be a printable ASCII content type of at most 255 characters'),
  })
  .superRefine((i, ctx) => {
    if (strictlyIncreasing(i.mechanisms, compareMechanisms) >= 0) ctx.addIssue({ code: 'custom', path: ['mechanisms'], message: 'must be unique and in the NetHSM order' });
    if (strictlyIncreasing(i.tags, compareCodeUnits) >= 0) ctx.addIssue({ code: 'custom', path: ['tags'], message: 'must be unique and sorted' });
    if (i.hasCert !== (i.cert !== '') || i.hasCert !== (i.certType !== '')) {
      ctx.addIssue({ code: 'custom', path: ['hasCert'], message: 'must agree with cert and certType' });
    }
    if (i.digest !== itemDigest(i)) ctx.addIssue({ code: 'custom', path: ['digest'], message: "does not match the item's fields" });
  });

// The length is checked before any element is looked at, so an oversized answer is refused without parsing it.
const keysSchema = z
  .array(z.unknown())
  .max(MAX_INVENTORY_KEYS, `must hold at most ${MAX_INVENTORY_KEYS} keys`)
  .pipe(z.array(itemSchema))
  .superRefine((keys, ctx) => {
    const k = strictlyIncreasing(keys, (a, b) => compareCodeUnits(a.id, b.id));
    if (k >= 0) {
      const dup = keys[k - 1]!.id === keys[k]!.id;
      ctx.addIssue({ code: 'custom', path: [k, 'id'], message: dup ? `duplicate id ${JSON.stringify(keys[k]!.id)}` : 'ids must be sorted' });
    }
  });

/** A peer's inventory: strict (no unknown fields), bounded, sorted, unique ids, every digest recomputed and checked. */
export const namespaceInventorySchema: z.ZodType<NamespaceInventory> = z
  .strictObject({
    namespace: keyId,
    takenAt: z.number().int().nonnegative(),
    keys: keysSchema,
    digest: hex64,
  })
  .superRefine((inv, ctx) => {
    if (inv.digest !== inventoryDigest(inv.keys)) ctx.addIssue({ code: 'custom', path: ['digest'], message: 'does not match the keys' });
  });

/**
 * Validates a peer's inventory answer. Throws PeerMessageInvalidError naming the first problems (path and reason),
 * e.g. `keys[3].id: duplicate id "k1"`.
 */
export function parseNamespaceInventory(input: unknown, context: { namespace?: string; site?: string } = {}): NamespaceInventory {
  const r = namespaceInventorySchema.safeParse(input);
  if (r.success) {
    if (context.namespace !== undefined && r.data.namespace !== context.namespace) {
      throw new PeerMessageInvalidError(`inventory is of namespace ${JSON.stringify(r.data.namespace)}, not ${JSON.stringify(context.namespace)}`, context);
    }
    return r.data;
  }
  const issues = r.error.issues;
  const shown = issues.slice(0, 5).map((i) => `${formatPath(i.path)}: ${i.message}`);
  const more = issues.length > shown.length ? ` (and ${issues.length - shown.length} more)` : '';
  throw new PeerMessageInvalidError(`invalid namespace inventory: ${shown.join('; ')}${more}`, context);
}

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out || '(root)';
}
