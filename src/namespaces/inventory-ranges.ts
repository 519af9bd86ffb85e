/**
 * The streamed, range-compared inventory of the peer API (docs/anti-entropy.md, "Streamed ranges"). Two NDJSON routes
 * served by a namespace's primary:
 *
 * - `GET …/inventory/ranges?size=R`: the primary lists its ids, cuts them into ranges of R ids (range i holds the ids
 *   in `(upTo[i-1], upTo[i]]`, the last one has `upTo: null`, so the ranges cover every id), reads its keys and sends,
 *   per range, its key count and digest (SHA-256 over `<id> <item digest>\n` of its items in order). No key crosses
 *   the wire: equal ranges cost one line.
 * - `POST …/inventory/items` `{"ranges":[{"after","upTo"}]}`: the items of the ranges that differ.
 *
 * Lines: `{"kind":"head",…}` first, then `range` or `item` lines, then `{"kind":"end",…}` with totals; nothing after
 * it. A primary that cannot complete an answer it began sends `{"kind":"error","code","message"}` instead of the rest
 * (e.g. a restore there erased writes meanwhile: src/daemon/inventory-guard.ts); the replica refuses the answer. Each line is validated as it arrives (bounded size, strict objects, ids sorted and unique and inside the
 * announced ranges, every digest recomputed) and a stream without its end line is refused as truncated.
 */
import { createHash, type Hash } from 'node:crypto';
import { z } from 'zod';
import { AntiEntropySourceReplayingError, PeerMessageInvalidError, PeerRefusedError } from '../errors.js';
import type { NetHsmClient } from '../nethsm/client.js';
import type { KeyCertsRepo } from '../state/key-certs-repo.js';
import { isValidId } from '../nethsm/ids.js';
import type { Limiter } from '../util/rate-limiter.js';
import { CertRead } from './cert-read.js';
import { formatPath, itemSchema, type KeyInventoryItem } from './inventory.js';
import { compareIds, listIds, readItems } from './inventory-reader.js';

/**
 * Ids per range unless the replica asks otherwise. Small, because a range that differs costs the primary a re-read of
 * its keys (the items answer): 64 keeps that to ~6 % more device requests with 0.1 % of keys drifted, spread out,
 * while equal ranges still cost ~2 bytes a key on the wire (one ~130-byte line per 64 keys).
 */
export const DEFAULT_RANGE_SIZE = 64;
export const MAX_RANGE_SIZE = 65_536;
/** Ranges per items request: keeps the request body well under the peer API's 64 KiB. */
export const MAX_ITEM_RANGES = 128;
/** Largest inventory line: an item with 4096 tags of 128 characters fits. */
export const MAX_INVENTORY_LINE_BYTES = 1024 * 1024;
/** More ranges than this in one answer is refused (1,000 million keys at the largest range size). */
export const MAX_RANGES = 16_000_000;

/** Range i: the ids in `(previous upTo, upTo]`; `upTo: null` is unbounded above. */
export interface RangeDigest {
  upTo: string | null;
  count: number;
  digest: string;
}

/** A range asked for in an items request: ids in `(after, upTo]`, null bounds open. */
export interface IdRange {
  after: string | null;
  upTo: string | null;
}

export interface ItemOptions {
  concurrency?: number;
  limiter?: Limiter;
  signal?: AbortSignal;
}

/** The primary's certificate table for its ranges answer (./cert-read.ts); the items answer always reads in full. */
export interface RangeCertOptions {
  repo: KeyCertsRepo;
  scrubPasses: number;
}

/** SHA-256 over `<id> <digest>\n` per item, fed in order: the digest of a range (and of an items answer). */
export class RangeHasher {
  #h: Hash = createHash('sha256');
  count = 0;
  add(id: string, digest: string): void {
    this.#h.update(`${id} ${digest}\n`);
    this.count++;
  }
  /** The digest so far; the hasher starts over. */
  take(): string {
    const d = this.#h.digest('hex');
    this.#h = createHash('sha256');
    this.count = 0;
    return d;
  }
}

export function inRange(id: string, r: IdRange): boolean {
  return (r.after === null || compareIds(id, r.after) > 0) && (r.upTo === null || compareIds(id, r.upTo) <= 0);
}

// ---- the primary's side ---------------------------------------------------------------------------

/** The `ranges` answer's lines, read from the primary's device as they are sent. */
export async function* rangeDigestLines(client: NetHsmClient, namespace: string, rangeSize: number, o: ItemOptions & { certs?: RangeCertOptions } = {}): AsyncGenerator<string> {
  const takenAt = Date.now();
  const ids = await listIds(client, o.limiter);
  const bounds: (string | null)[] = [];
  for (let i = rangeSize - 1; i < ids.length - 1; i += rangeSize) bounds.push(ids.at(i)!);
  bounds.push(null);
  yield JSON.stringify({ kind: 'head', namespace, takenAt, rangeSize });
  const h = new RangeHasher();
  let r = 0;
  let keys = 0;
  const close = (): string => JSON.stringify({ kind: 'range', upTo: bounds[r++], count: h.count, digest: h.take() });
  const { certs: table, ...read } = o;
  const certs = table ? new CertRead(table.repo, namespace, table.scrubPasses) : undefined;
  try {
    for await (const item of readItems(client, ids, { ...read, ...(certs ? { certs } : {}) })) {
      while (bounds[r] !== null && compareIds(item.id, bounds[r]!) > 0) yield close();
      h.add(item.id, item.digest);
      keys++;
    }
  } finally {
    certs?.end();
  }
  while (r < bounds.length) yield close();
  yield JSON.stringify({ kind: 'end', ranges: bounds.length, keys });
}

/** The `items` answer's lines: the primary's keys inside `ranges` (validated by the caller with parseItemsRequest). */
export async function* itemLines(client: NetHsmClient, namespace: string, ranges: readonly IdRange[], o: ItemOptions = {}): AsyncGenerator<string> {
  const takenAt = Date.now();
  const ids: string[] = [];
  for (const id of await listIds(client, o.limiter)) if (ranges.some((r) => inRange(id, r))) ids.push(id);
  yield JSON.stringify({ kind: 'head', namespace, takenAt });
  const h = new RangeHasher();
  for await (const item of readItems(client, ids, o)) {
    h.add(item.id, item.digest);
    yield JSON.stringify({ kind: 'item', item });
  }
  const keys = h.count;
  yield JSON.stringify({ kind: 'end', keys, digest: h.take() });
}

const keyId = z.string().refine(isValidId, 'must be a NetHSM id (1..128 of [a-zA-Z0-9_.-], not starting with _ . -)');
const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits');
const count = z.number().int().nonnegative();

const itemsRequestSchema = z.strictObject({
  ranges: z
    .array(z.strictObject({ after: keyId.nullable(), upTo: keyId.nullable() }))
    .min(1)
    .max(MAX_ITEM_RANGES, `must hold at most ${MAX_ITEM_RANGES} ranges`)
    .superRefine((rs, ctx) => {
      for (let i = 0; i < rs.length; i++) {
        const r = rs[i]!;
        if (r.after !== null && r.upTo !== null && compareIds(r.after, r.upTo) >= 0) ctx.addIssue({ code: 'custom', path: [i], message: 'after must come before upTo' });
        const prev = rs[i - 1];
        if (prev && (prev.upTo === null || (r.after !== null && compareIds(r.after, prev.upTo) < 0) || r.after === null)) {
          ctx.addIssue({ code: 'custom', path: [i], message: 'ranges must be sorted and must not overlap' });
        }
      }
    }),
});

/** Validates an items request body; throws PeerMessageInvalidError naming the problem. */
export function parseItemsRequest(body: unknown): IdRange[] {
  const r = itemsRequestSchema.safeParse(body);
  if (!r.success) throw invalid('items request', r.error.issues);
  return r.data.ranges;
}

/** Parses `size` of a ranges request (default when absent); throws PeerMessageInvalidError. */
export function parseRangeSize(raw: string | null): number {
  if (raw === null) return DEFAULT_RANGE_SIZE;
  const n = Number(raw);
  if (!/^[0-9]{1,6}$/.test(raw) || n < 1 || n > MAX_RANGE_SIZE) throw new PeerMessageInvalidError(`size must be a whole number from 1 to ${MAX_RANGE_SIZE}, got ${JSON.stringify(raw.slice(0, 20))}`);
  return n;
}

// ---- the replica's side: validation line by line --------------------------------------------------

const rangesHead = z.strictObject({ kind: z.literal('head'), namespace: keyId, takenAt: count, rangeSize: z.number().int().min(1).max(MAX_RANGE_SIZE) });
const rangeLine = z.strictObject({ kind: z.literal('range'), upTo: keyId.nullable(), count, digest: hex64 });
const rangesEnd = z.strictObject({ kind: z.literal('end'), ranges: count, keys: count });
const itemsHead = z.strictObject({ kind: z.literal('head'), namespace: keyId, takenAt: count });
const itemLine = z.strictObject({ kind: z.literal('item'), item: itemSchema });
const itemsEnd = z.strictObject({ kind: z.literal('end'), keys: count, digest: hex64 });
/** A primary's refusal of an answer it began (any point after the status line). */
const errorLine = z.strictObject({ kind: z.literal('error'), code: z.string().regex(/^NHR_ERR_[A-Z0-9_]{1,64}$/), message: z.string().max(2000) });

interface Ctx {
  namespace: string;
  site?: string;
}

class LineReader {
  n = 0;
  constructor(
    private readonly what: string,
    private readonly ctx: Ctx,
  ) {}

  parse<S extends z.ZodType>(line: string, schemas: Record<string, S>): { kind: string; value: z.infer<S> } {
    this.n++;
    if (Buffer.byteLength(line, 'utf8') > MAX_INVENTORY_LINE_BYTES) this.fail(`is over ${MAX_INVENTORY_LINE_BYTES} bytes`);
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      this.fail('is not JSON');
    }
    const kind = (json as { kind?: unknown } | null)?.kind;
    if (kind === 'error') this.refused(json);
    const schema = typeof kind === 'string' && Object.hasOwn(schemas, kind) ? schemas[kind] : undefined;
    if (!schema) this.fail(`has kind ${JSON.stringify(kind)}; expected ${Object.keys(schemas).join(' or ')}`);
    const r = schema.safeParse(json);
    if (!r.success) throw invalid(`${this.what} line ${this.n}`, r.error.issues, this.ctx);
    return { kind: kind as string, value: r.data };
  }

  /** The primary cut its answer off with an error line: the answer is refused as a whole, with the primary's reason. */
  refused(json: unknown): never {
    const r = errorLine.safeParse(json);
    if (!r.success) throw invalid(`${this.what} line ${this.n}`, r.error.issues, this.ctx);
    const { code, message } = r.data;
    const from = `the primary${this.ctx.site ? ` ${this.ctx.site}` : ''} cut its ${this.what} off at line ${this.n}`;
    if (code === AntiEntropySourceReplayingError.code) throw new AntiEntropySourceReplayingError(`${from}: ${message}`, this.ctx);
    throw new PeerRefusedError(502, { code, message: `${from}: ${message}` }, this.ctx);
  }

  fail(message: string): never {
    throw new PeerMessageInvalidError(`invalid ${this.what}: line ${this.n} ${message}`, this.ctx);
  }
}

function invalid(what: string, issues: readonly z.core.$ZodIssue[], ctx: Partial<Ctx> = {}): PeerMessageInvalidError {
  const shown = issues.slice(0, 3).map((i) => `${formatPath(i.path)}: ${i.message}`);
  return new PeerMessageInvalidError(`invalid ${what}: ${shown.join('; ')}`, ctx);
}

/**
 * Reads a `ranges` answer: the head (its namespace and range size must be the ones asked for), then the ranges
 * (bounds strictly increasing, only the last unbounded, counts at most the range size), then the end line, whose
 * totals must agree. Throws PeerMessageInvalidError naming the line and the problem.
 */
export async function readRangeDigests(lines: AsyncIterable<string>, ctx: Ctx & { rangeSize: number }): Promise<{ takenAt: number; ranges: RangeDigest[]; keys: number }> {
  const rd = new LineReader('inventory ranges', ctx);
  const ranges: RangeDigest[] = [];
  let head: z.infer<typeof rangesHead> | undefined;
  let keys = 0;
  for await (const line of lines) {
    if (!head) {
      head = rd.parse(line, { head: rangesHead }).value as z.infer<typeof rangesHead>;
      if (head.namespace !== ctx.namespace) rd.fail(`is of namespace ${JSON.stringify(head.namespace)}, not ${JSON.stringify(ctx.namespace)}`);
      if (head.rangeSize !== ctx.rangeSize) rd.fail(`has range size ${head.rangeSize}, not the ${ctx.rangeSize} asked for`);
      continue;
    }
    const last = ranges.at(-1);
    if (last && last.upTo === null) {
      const end = rd.parse(line, { end: rangesEnd }).value as z.infer<typeof rangesEnd>;
      if (end.ranges !== ranges.length || end.keys !== keys) rd.fail(`says ${end.ranges} ranges and ${end.keys} keys; the answer had ${ranges.length} and ${keys}`);
      return { takenAt: head.takenAt, ranges, keys };
    }
    const r = rd.parse(line, { range: rangeLine }).value as z.infer<typeof rangeLine>;
    if (r.count > head.rangeSize) rd.fail(`has ${r.count} keys in one range, over the range size ${head.rangeSize}`);
    if (last && r.upTo !== null && compareIds(r.upTo, last.upTo!) <= 0) rd.fail('has a range bound not after the previous one');
    if (ranges.length >= MAX_RANGES) rd.fail(`makes more than ${MAX_RANGES} ranges`);
    ranges.push({ upTo: r.upTo, count: r.count, digest: r.digest });
    keys += r.count;
  }
  throw new PeerMessageInvalidError(`invalid inventory ranges: the answer ended after line ${rd.n} without its end line (truncated)`, ctx);
}

/**
 * Reads an `items` answer, yielding each item once validated: strict item schema with its digest recomputed, ids
 * strictly increasing and inside one of the `ranges` asked for, and the end line's count and digest agreeing with
 * the items sent. Throws PeerMessageInvalidError naming the line and the problem (after the items before it).
 */
export async function* readItemLines(lines: AsyncIterable<string>, ranges: readonly IdRange[], ctx: Ctx): AsyncGenerator<KeyInventoryItem> {
  const rd = new LineReader('inventory items', ctx);
  const h = new RangeHasher();
  let head = false;
  let prev: string | undefined;
  let r = 0;
  for await (const line of lines) {
    if (!head) {
      const v = rd.parse(line, { head: itemsHead }).value as z.infer<typeof itemsHead>;
      if (v.namespace !== ctx.namespace) rd.fail(`is of namespace ${JSON.stringify(v.namespace)}, not ${JSON.stringify(ctx.namespace)}`);
      head = true;
      continue;
    }
    const p = rd.parse(line, { item: itemLine, end: itemsEnd });
    if (p.kind === 'end') {
      const end = p.value as z.infer<typeof itemsEnd>;
      const keys = h.count;
      const digest = h.take();
      if (end.keys !== keys || end.digest !== digest) rd.fail(`says ${end.keys} keys with digest ${end.digest.slice(0, 12)}…; the items sent were ${keys} with digest ${digest.slice(0, 12)}…`);
      for await (const extra of lines) {
        void extra;
        rd.n++;
        rd.fail('comes after the end line');
      }
      return;
    }
    const item = (p.value as z.infer<typeof itemLine>).item as KeyInventoryItem;
    if (prev !== undefined && compareIds(item.id, prev) <= 0) rd.fail(item.id === prev ? `repeats id ${JSON.stringify(item.id)}` : `has id ${JSON.stringify(item.id)} out of order`);
    while (r < ranges.length && !inRange(item.id, ranges[r]!) && (ranges[r]!.upTo === null || compareIds(item.id, ranges[r]!.upTo!) > 0)) r++;
    if (r >= ranges.length || !inRange(item.id, ranges[r]!)) rd.fail(`has id ${JSON.stringify(item.id)}, outside the ranges asked for`);
    prev = item.id;
    h.add(item.id, item.digest);
    yield item;
  }
  throw new PeerMessageInvalidError(`invalid inventory items: the answer ended after line ${rd.n} without its end line (truncated)`, ctx);
}
