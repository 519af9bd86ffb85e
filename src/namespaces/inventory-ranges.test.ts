import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AntiEntropySourceReplayingError, PeerMessageInvalidError, PeerRefusedError } from '../errors.js';
import { NetHsmClient, type PublicKey } from '../nethsm/client.js';
import { PackedIds } from '../nethsm/packed-ids.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { CompactInventory } from './compact-inventory.js';
import { inventoryItem, readInventory, type KeyInventoryItem } from './inventory.js';
import {
  DEFAULT_RANGE_SIZE,
  itemLines,
  MAX_INVENTORY_LINE_BYTES,
  MAX_ITEM_RANGES,
  parseItemsRequest,
  parseRangeSize,
  RangeHasher,
  rangeDigestLines,
  readItemLines,
  readRangeDigests,
  type IdRange,
} from './inventory-ranges.js';

const ED_PUBLIC = Buffer.alloc(32, 1).toString('base64');
const key = (over: Partial<PublicKey> = {}): PublicKey => ({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], restrictions: {}, public: { data: ED_PUBLIC }, operations: 0, ...over });
const item = (id: string, over: Partial<PublicKey> = {}): KeyInventoryItem => inventoryItem(id, key(over), null);
const ctx = { namespace: 'ns' };

async function* from(lines: string[]): AsyncGenerator<string> {
  yield* lines;
}

const digestOf = (items: KeyInventoryItem[]): string => {
  const h = new RangeHasher();
  for (const i of items) h.add(i.id, i.digest);
  return h.take();
};

// ---- ranges ----------------------------------------------------------------------------------------

const rHead = (o: object = {}) => JSON.stringify({ kind: 'head', namespace: 'ns', takenAt: 1, rangeSize: 2, ...o });
const rLine = (upTo: string | null, items: KeyInventoryItem[], o: object = {}) => JSON.stringify({ kind: 'range', upTo, count: items.length, digest: digestOf(items), ...o });
const rEnd = (ranges: number, keys: number, o: object = {}) => JSON.stringify({ kind: 'end', ranges, keys, ...o });

async function rangesRefusal(lines: string[]): Promise<string> {
  const err = await readRangeDigests(from(lines), { ...ctx, rangeSize: 2 }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(PeerMessageInvalidError);
  return (err as Error).message;
}

describe('readRangeDigests', () => {
  const [a, b, c] = [item('a'), item('b'), item('c')];

  it('accepts a well-formed answer', async () => {
    const r = await readRangeDigests(from([rHead(), rLine('b', [a, b]), rLine(null, [c]), rEnd(2, 3)]), { ...ctx, rangeSize: 2 });
    expect(r.ranges.map((x) => [x.upTo, x.count])).toEqual([['b', 2], [null, 1]]);
    expect(r.keys).toBe(3);
  });

  it.each([
    ['another namespace', [rHead({ namespace: 'other' })], /line 1 is of namespace "other", not "ns"/],
    ['another range size', [rHead({ rangeSize: 3 })], /line 1 has range size 3, not the 2 asked for/],
    ['a line that is not JSON', [rHead(), '{"kind":'], /line 2 is not JSON/],
    ['an unknown kind', [rHead(), '{"kind":"item"}'], /line 2 has kind "item"; expected range/],
    ['an unknown field', [rHead(), rLine(null, [], { extra: 1 })], /inventory ranges line 2: \(root\): Unrecognized key: "extra"/],
    ['a malformed digest', [rHead(), rLine(null, [], { digest: 'ABC' })], /line 2: digest: must be 64 lowercase hex digits/],
    ['a bad id as bound', [rHead(), rLine('-x', [])], /line 2: upTo: must be a NetHSM id/],
    ['a range over the range size', [rHead(), rLine('c', [a, b, c])], /line 2 has 3 keys in one range, over the range size 2/],
    ['bounds not increasing', [rHead(), rLine('b', [a]), rLine('a', [])], /line 3 has a range bound not after the previous one/],
    ['totals that disagree', [rHead(), rLine(null, [a]), rEnd(1, 2)], /line 3 says 1 ranges and 2 keys; the answer had 1 and 1/],
    ['a line after the last range that is not the end', [rHead(), rLine(null, [a]), rLine(null, [a])], /line 3 has kind "range"; expected end/],
    ['no end line (truncated)', [rHead(), rLine('b', [a])], /ended after line 2 without its end line \(truncated\)/],
    ['an oversized line', [rHead(), 'x'.repeat(MAX_INVENTORY_LINE_BYTES + 1)], /line 2 is over 1048576 bytes/],
  ])('refuses %s, naming it', async (_what, lines, message) => {
    expect(await rangesRefusal(lines as string[])).toMatch(message);
  });
});

// ---- items -----------------------------------------------------------------------------------------

const iHead = (o: object = {}) => JSON.stringify({ kind: 'head', namespace: 'ns', takenAt: 1, ...o });
const iLine = (i: KeyInventoryItem | object) => JSON.stringify({ kind: 'item', item: i });
const iEnd = (items: KeyInventoryItem[], o: object = {}) => JSON.stringify({ kind: 'end', keys: items.length, digest: digestOf(items), ...o });
const ALL: IdRange[] = [{ after: null, upTo: null }];

async function itemsRefusal(lines: string[], ranges: IdRange[] = ALL): Promise<{ message: string; before: string[] }> {
  const before: string[] = [];
  try {
    for await (const i of readItemLines(from(lines), ranges, ctx)) before.push(i.id);
  } catch (err) {
    expect(err).toBeInstanceOf(PeerMessageInvalidError);
    return { message: (err as Error).message, before };
  }
  throw new Error('accepted');
}

describe('readItemLines', () => {
  const [a, b, c] = [item('a'), item('b', { label: 'x' }), item('c')];

  it('yields the items of a well-formed answer', async () => {
    const out: KeyInventoryItem[] = [];
    for await (const i of readItemLines(from([iHead(), iLine(a), iLine(c), iEnd([a, c])]), [{ after: null, upTo: 'a' }, { after: 'b', upTo: null }], ctx)) out.push(i);
    expect(out).toEqual([a, c]);
  });

  it.each([
    ['another namespace', [iHead({ namespace: 'x' })], /line 1 is of namespace "x", not "ns"/],
    ['an item whose digest does not match its fields', [iHead(), iLine({ ...b, label: 'y' })], /line 2: item\.digest: does not match the item's fields/],
    ['an unknown field in an item', [iHead(), iLine({ ...a, secret: 'k' })], /line 2: item: Unrecognized key: "secret"/],
    ['an unknown field in the line', [iHead(), JSON.stringify({ kind: 'item', item: a, more: 1 })], /line 2: \(root\): Unrecognized key: "more"/],
    ['a repeated id', [iHead(), iLine(a), iLine(a)], /line 3 repeats id "a"/],
    ['ids out of order', [iHead(), iLine(b), iLine(a)], /line 3 has id "a" out of order/],
    ['totals that disagree', [iHead(), iLine(a), iEnd([a, b])], /line 3 says 2 keys with digest .*; the items sent were 1 with digest/],
    ['a line after the end', [iHead(), iLine(a), iEnd([a]), iLine(b)], /line 4 comes after the end line/],
    ['no end line (truncated)', [iHead(), iLine(a)], /ended after line 2 without its end line \(truncated\)/],
  ])('refuses %s, naming it', async (_what, lines, message) => {
    expect((await itemsRefusal(lines as string[])).message).toMatch(message);
  });

  it('refuses an item outside the ranges asked for, after yielding those before it', async () => {
    const r = await itemsRefusal([iHead(), iLine(a), iLine(b), iEnd([a, b])], [{ after: null, upTo: 'a' }, { after: 'b', upTo: null }]);
    expect(r.message).toMatch(/line 3 has id "b", outside the ranges asked for/);
    expect(r.before).toEqual(['a']);
  });
});

// ---- an answer the primary cuts off -----------------------------------------------------------------

describe('an error line in place of the rest of an answer', () => {
  const a = item('a');
  const replaying = JSON.stringify({ kind: 'error', code: 'NHR_ERR_ANTIENTROPY_SOURCE_REPLAYING', message: 'inventory of namespace ns not served by p: a restore there erased writes to it while the answer was being read' });
  const site = { ...ctx, site: 'p' };
  const items = async (lines: string[]) => {
    const got: string[] = [];
    const err = await (async () => {
      for await (const i of readItemLines(from(lines), ALL, site)) got.push(i.id);
    })().catch((e: unknown) => e);
    return { err, got };
  };

  it('refuses the whole answer with the primary\'s reason, wherever it comes (nothing after it is believed)', async () => {
    for (const lines of [[rHead(), replaying], [rHead(), rLine('b', [a]), replaying], [rHead(), rLine(null, [a]), replaying]]) {
      const err = await readRangeDigests(from(lines), { ...site, rangeSize: 2 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AntiEntropySourceReplayingError);
      expect(err).toMatchObject({ namespace: 'ns', site: 'p', retryable: true });
      expect((err as Error).message).toMatch(/the primary p cut its inventory ranges off at line \d: .*while the answer was being read/);
    }
    const r = await items([iHead(), iLine(a), replaying, iEnd([a])]);
    expect(r.err).toBeInstanceOf(AntiEntropySourceReplayingError);
    expect(r.got).toEqual(['a']);
  });

  it('refuses another code as a refusal of the peer, and a malformed error line as invalid', async () => {
    const other = await items([iHead(), JSON.stringify({ kind: 'error', code: 'NHR_ERR_INTERNAL', message: 'x' })]);
    expect(other.err).toBeInstanceOf(PeerRefusedError);
    expect(other.err).toMatchObject({ remoteCode: 'NHR_ERR_INTERNAL', retryable: true });
    const bad = await items([iHead(), JSON.stringify({ kind: 'error', code: 'oops', message: 'x' })]);
    expect(bad.err).toBeInstanceOf(PeerMessageInvalidError);
    expect((bad.err as Error).message).toMatch(/inventory items line 2: code:/);
  });
});

describe('parseItemsRequest and parseRangeSize', () => {
  it('accepts sorted, disjoint ranges', () => {
    expect(parseItemsRequest({ ranges: [{ after: null, upTo: 'b' }, { after: 'b', upTo: 'd' }, { after: 'x', upTo: null }] })).toHaveLength(3);
  });

  it.each([
    ['no ranges', { ranges: [] }, /ranges: Too small/],
    ['too many ranges', { ranges: Array.from({ length: MAX_ITEM_RANGES + 1 }, (_, i) => ({ after: `k${String(i).padStart(4, '0')}`, upTo: `k${String(i).padStart(4, '0')}z` })) }, /must hold at most 128 ranges/],
    ['an empty range', { ranges: [{ after: 'b', upTo: 'a' }] }, /ranges\[0\]: after must come before upTo/],
    ['overlapping ranges', { ranges: [{ after: null, upTo: 'c' }, { after: 'b', upTo: null }] }, /ranges\[1\]: ranges must be sorted and must not overlap/],
    ['a range after an unbounded one', { ranges: [{ after: 'a', upTo: null }, { after: 'b', upTo: 'c' }] }, /ranges\[1\]: ranges must be sorted/],
    ['an unknown field', { ranges: [{ after: null, upTo: null, from: 'a' }] }, /Unrecognized key: "from"/],
    ['a bad id', { ranges: [{ after: '../x', upTo: null }] }, /ranges\[0\]\.after: must be a NetHSM id/],
  ])('refuses %s', (_what, body, message) => {
    expect(() => parseItemsRequest(body)).toThrow(message);
  });

  it('reads the range size, with a default', () => {
    expect(parseRangeSize(null)).toBe(DEFAULT_RANGE_SIZE);
    expect(parseRangeSize('16')).toBe(16);
    for (const bad of ['0', '65537', 'ten', '1e3', '-1', '']) expect(() => parseRangeSize(bad)).toThrow(/size must be a whole number from 1 to 65536/);
  });
});

describe('range digests and items read from the simulator', () => {
  let sim: ProvisionedSimulator;
  let base: NetHsmClient;
  let admin: NetHsmClient;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns', 'empty'] });
    base = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
    admin = base.withAuth(sim.nsUsers['ns']!.admin.username, sim.nsUsers['ns']!.admin.password);
    for (let i = 0; i < 11; i++) await admin.importKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: randomBytes(32).toString('base64') } }, `k${String(i).padStart(2, '0')}`);
    await admin.putCert('k03', Buffer.from('cert'));
    await admin.addKeyTag('k07', 'blue');
  });

  afterAll(async () => {
    await base?.close();
    await sim?.close();
  });

  it('cuts the ids into ranges whose digests a CompactInventory of the same keys reproduces', async () => {
    const r = await readRangeDigests(rangeDigestLines(admin, 'ns', 4), { ...ctx, rangeSize: 4 });
    expect(r.ranges.map((x) => [x.upTo, x.count])).toEqual([['k03', 4], ['k07', 4], [null, 3]]);
    const keys = (await readInventory(admin, 'ns')).keys;
    const dir = mkdtempSync(path.join(tmpdir(), 'nhr-ranges-'));
    const local = new CompactInventory(PackedIds.of(keys.map((k) => k.id)), dir);
    try {
      for (const i of keys) local.push(i);
      local.seal();
      let after: string | null = null;
      for (const x of r.ranges) {
        const [from, to] = local.indices({ after, upTo: x.upTo });
        expect([to - from, local.digestOf(from, to)]).toEqual([x.count, x.digest]);
        after = x.upTo;
      }
    } finally {
      local.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sends one range for an empty namespace, and the items of the ranges asked for only', async () => {
    const items: string[] = [];
    const ranges = [{ after: null, upTo: 'k01' }, { after: 'k06', upTo: 'k08' }];
    for await (const i of readItemLines(itemLines(admin, 'ns', ranges), ranges, ctx)) items.push(i.id);
    expect(items).toEqual(['k00', 'k01', 'k07', 'k08']);
    const emptyAdmin = base.withAuth(sim.nsUsers['empty']!.admin.username, sim.nsUsers['empty']!.admin.password);
    const empty = await readRangeDigests(rangeDigestLines(emptyAdmin, 'empty', 4), { namespace: 'empty', rangeSize: 4 });
    expect(empty.ranges).toEqual([{ upTo: null, count: 0, digest: new RangeHasher().take() }]);
  });
});
