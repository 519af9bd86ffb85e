/**
 * The primary's change feed and its change-log identity: a replica whose position is in another log (or in none) is
 * told to take a snapshot before any change is sent; every line names the log; a replica that sends no `log` parameter
 * (older than log ids) gets lines without it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.js';
import { StateStore } from '../state/store.js';
import { ChangeFeed } from './feed.js';
import { parseLine } from './protocol.js';

const OTHER_LOG = 'a9b8c7d6-e5f4-4321-9abc-def012345678';
const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';

let dir: string;
let store: StateStore;
let feed: ChangeFeed;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nhr-feed-'));
  store = StateStore.inDir(dir).open();
  store.roles.insert({ namespace: 'ns', role: 'primary', epoch: 1, primarySite: 'a' });
  for (const k of ['k1', 'k2', 'k3']) store.changelog.append('ns', 1, { kind: 'key-deleted', keyId: k, ref: REF, detail: {} });
  feed = new ChangeFeed({ site: 'a', store, heartbeatIntervalMs: 60_000, log: silentLogger });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The first `n` lines the feed sends, parsed (the stream is cut after them). */
async function first(n: number, after: { epoch: number; seq: number } | undefined, log?: string | null): Promise<Record<string, unknown>[]> {
  const abort = new AbortController();
  const out: Record<string, unknown>[] = [];
  for await (const text of feed.open('b', 'ns', after, abort.signal, log)) {
    const parsed = parseLine(text);
    expect(parsed.ok, text).toBe(true);
    out.push(JSON.parse(text) as Record<string, unknown>);
    if (out.length >= n) abort.abort();
  }
  return out;
}

describe('change feed: change-log identity', () => {
  it('names its log on every line for a replica whose position is in it', async () => {
    const log = store.changelog.logId('ns');
    const lines = await first(3, { epoch: 1, seq: 1 }, log);
    expect(lines.map((l) => [l.type, l.seq ?? null, l.log])).toEqual([
      ['change', 2, log],
      ['change', 3, log],
      ['heartbeat', null, log],
    ]);
  });

  it('asks a replica whose position is in another log, or in none, for a snapshot before sending any change', async () => {
    const log = store.changelog.logId('ns');
    // Seq 2 exists here too: served, it would be taken as the change after the replica's 1.1, and its 1.2 and 1.3 lost.
    expect(await first(1, { epoch: 1, seq: 1 }, OTHER_LOG)).toEqual([
      { type: 'snapshot-required', reason: `position 1.1 is in change log ${OTHER_LOG}; this site's change log of ns is ${log}`, head: { epoch: 1, seq: 3 }, log },
    ]);
    expect(await first(1, { epoch: 1, seq: 3 }, null)).toEqual([
      { type: 'snapshot-required', reason: `position 1.3 names no change log; this site's change log of ns is ${log}`, head: { epoch: 1, seq: 3 }, log },
    ]);
    expect(await first(1, undefined, log)).toMatchObject([{ type: 'snapshot-required', reason: 'the replica has no position yet', log }]);
  });

  it('sends lines without a log id to a replica older than log ids', async () => {
    const lines = await first(2, { epoch: 1, seq: 2 });
    expect(lines.map((l) => [l.type, 'log' in l])).toEqual([
      ['change', false],
      ['heartbeat', false],
    ]);
  });
});

describe('change feed: reading the log', () => {
  // Before: after every short batch the feed read the log once more, found it empty and only then waited: two queries
  // (and two role reads) per commit at a primary taking one write at a time.
  it('waits for the next commit after a short batch instead of reading the log again, and misses no change', async () => {
    const log = store.changelog.logId('ns');
    const abort = new AbortController();
    const lines = feed.open('b', 'ns', { epoch: 1, seq: 3 }, abort.signal, log)[Symbol.asyncIterator]();
    expect(JSON.parse((await lines.next()).value as string)).toMatchObject({ type: 'heartbeat', head: { seq: 3 } });
    const reads: number[] = [];
    const after = store.changelog.after.bind(store.changelog);
    store.changelog.after = (ns, epoch, afterSeq, limit) => {
      const got = after(ns, epoch, afterSeq, limit);
      reads.push(got.length);
      return got;
    };
    const turns = () => new Promise((r) => setTimeout(r, 50));
    try {
      const pending = lines.next();
      await turns();
      for (const k of ['k4', 'k5']) store.changelog.append('ns', 1, { kind: 'key-deleted', keyId: k, ref: REF, detail: {} });
      feed.notify('ns');
      expect(JSON.parse((await pending).value as string)).toMatchObject({ type: 'change', seq: 4 });
      expect(JSON.parse((await lines.next()).value as string)).toMatchObject({ type: 'change', seq: 5 });
      const next = lines.next();
      await turns();
      // Rows per read: none at the head, then woken, the heartbeat's check (1: not at the head any more), the batch.
      // The batch was short: no read after it until the next wake.
      expect(reads).toEqual([0, 1, 2]);
      // A change committed meanwhile (its notify comes after it is durable) is sent, not slept through.
      store.changelog.append('ns', 1, { kind: 'key-deleted', keyId: 'k6', ref: REF, detail: {} });
      feed.notify('ns');
      expect(JSON.parse((await next).value as string)).toMatchObject({ type: 'change', seq: 6 });
      const last = lines.next();
      await turns();
      expect(reads).toEqual([0, 1, 2, 1]);
      abort.abort();
      expect((await last).done).toBe(true);
    } finally {
      store.changelog.after = after;
    }
  });
});
