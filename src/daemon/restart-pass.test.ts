import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AntiEntropyPrimaryTooOldError, AntiEntropySourceReplayingError, PeerUnreachableError } from '../errors.js';
import { capturingLogger } from '../gateway/test-support.js';
import { silentLogger } from '../log.js';
import type { AntiEntropyResult } from '../namespaces/antientropy.js';
import { StateStore } from '../state/store.js';
import type { NamespaceStreamStatus } from '../stream/service.js';
import { waitFor } from '../../test/helpers/wait.js';
import { RestartPasses } from './restart-pass.js';

const RESULT = { diff: { missing: [], extra: [], differs: [] }, plan: { viaApi: [], needsSnapshot: false, reasons: [] }, repaired: 0, needsSnapshot: false } as AntiEntropyResult;
const settle = (ms = 60) => new Promise((r) => setTimeout(r, ms));

/** A replica's stream status at `position` that heard heartbeats announcing `head` (at `beatAt`). */
const streamAt = (position: number, head: number, beatAt: number | null): NamespaceStreamStatus => ({
  state: 'streaming',
  head: { epoch: 1, seq: head },
  lastHeartbeatAt: beatAt,
  lastError: null,
  pendingCatchup: null,
  onDevice: null,
  position: { epoch: 1, seq: position },
  changesBehind: head - position,
  lagSeconds: 0,
});

describe('RestartPasses: the anti-entropy pass queued after a primary restarted', () => {
  let dir: string;
  let store: StateStore;
  let passes: RestartPasses;
  let ran: string[];
  let stream: NamespaceStreamStatus | null;
  let deferred: { namespace: string; primary: string; cause: string }[];
  let answer: () => Promise<AntiEntropyResult | undefined>;
  let running: boolean;
  /** What `snapshotInstead` says (undefined: the pass runs), and the snapshot syncs run. */
  let instead: string | undefined;
  let synced: string[];

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-restart-pass-'));
    store = StateStore.inDir(dir).open();
    store.roles.insert({ namespace: 'alpha', role: 'replica', epoch: 1, primarySite: 'a' });
    ran = [];
    stream = null;
    deferred = [];
    running = false;
    instead = undefined;
    synced = [];
    answer = async () => RESULT;
    passes = newPasses();
  });
  /** The queue as a daemon (re)started on `store` makes it. */
  const newPasses = (log = silentLogger) =>
    new RestartPasses({
      store,
      log,
      timing: () => ({ retryIntervalMs: 20, heartbeatIntervalMs: 1_000_000 }),
      pass: async (ns) => {
        ran.push(ns);
        return answer();
      },
      running: () => running,
      stream: () => stream,
      defer: (namespace, primary, cause) => deferred.push({ namespace, primary, cause }),
      snapshotInstead: () => instead,
      sync: async (ns) => {
        synced.push(ns);
        return undefined;
      },
    });
  afterEach(() => {
    passes.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("waits until the stream applied the head the primary announced after the queueing, then runs once", async () => {
    // A heartbeat from before the queueing does not count: its head may predate the restart.
    stream = streamAt(5, 5, Date.now() - 1_000);
    passes.queue('alpha', 'a');
    passes.queue('alpha', 'a'); // queued once
    await settle(300);
    expect(ran).toEqual([]);
    stream = streamAt(5, 9, Date.now());
    await settle(300);
    expect(ran).toEqual([]);
    stream = streamAt(9, 9, Date.now());
    await waitFor(() => passes.pending().length === 0, 'the pass to run');
    expect(ran).toEqual(['alpha']);
  });

  it('does not wait for a stream with no position yet (it starts with a snapshot)', async () => {
    stream = { ...streamAt(0, 0, null), position: null };
    passes.queue('alpha', 'a');
    await waitFor(() => passes.pending().length === 0, 'the pass to run');
    expect(ran).toEqual(['alpha']);
  });

  it('waits for a pass of the namespace still running, then runs its own', async () => {
    running = true;
    passes.queue('alpha', 'a');
    await settle(300);
    expect(ran).toEqual([]);
    running = false;
    await waitFor(() => passes.pending().length === 0, 'the pass to run');
    expect(ran).toEqual(['alpha']);
  });

  it('retries a pass that could not run or failed, showing it as deferred with the cause, until one completes', async () => {
    const answers: (() => Promise<AntiEntropyResult | undefined>)[] = [
      async () => undefined,
      async () => {
        throw new PeerUnreachableError('a did not answer', { site: 'a' });
      },
      async () => {
        throw new AntiEntropySourceReplayingError('a is re-applying', { namespace: 'alpha', site: 'a' });
      },
      async () => RESULT,
    ];
    answer = () => answers.shift()!();
    passes.queue('alpha', 'a');
    await waitFor(() => passes.pending().length === 0, 'the pass to complete');
    expect(ran).toEqual(['alpha', 'alpha', 'alpha', 'alpha']);
    // The replaying refusal is shown by the pass itself (Daemon.antiEntropy); the other two here.
    expect(deferred.map((d) => d.cause)).toEqual([
      expect.stringMatching(/queued after the primary a's daemon restarted has not completed \(the primary a or this site's NetHSM is not available/),
      expect.stringMatching(/has not completed \(NHR_ERR_PEER_UNREACHABLE: a did not answer\)/),
    ]);
  });

  it('is dropped when this site no longer replicates the namespace from that primary, and waits while it is paused', async () => {
    store.roles.setPaused('alpha', true);
    passes.queue('alpha', 'a');
    await settle(100);
    expect(ran).toEqual([]);
    expect(passes.pending()).toEqual(['alpha']);
    store.roles.setPaused('alpha', false);
    expect(store.roles.compareAndSet({ namespace: 'alpha', role: 'replica', epoch: 1, primarySite: 'a' }, { role: 'primary', epoch: 2, primarySite: 'b' })).toBe(true);
    await waitFor(() => passes.pending().length === 0, 'the pass to be dropped');
    expect(ran).toEqual([]);
  });

  it('is dropped when a pass that started after the stream caught up completes (a scheduled one), not for an earlier one', async () => {
    running = true; // a scheduled pass runs: the queued one waits for it
    passes.queue('alpha', 'a');
    // Its heartbeat after the queueing (set before, it may fall in the same millisecond or not: a flaky wait).
    stream = streamAt(9, 9, Date.now() + 1);
    await settle(100);
    // That pass started before the stream caught up: it does not cover the queued one.
    passes.completed('alpha', Date.now() - 60_000);
    expect(passes.pending()).toEqual(['alpha']);
    // One that started since does.
    passes.completed('alpha', Date.now());
    expect(passes.pending()).toEqual([]);
    running = false;
    await settle(300);
    expect(ran).toEqual([]);
  });

  it('is not dropped by completions while the stream has not caught up', async () => {
    stream = streamAt(5, 9, Date.now() + 1);
    passes.queue('alpha', 'a');
    await settle(100);
    passes.completed('alpha', Date.now());
    expect(passes.pending()).toEqual(['alpha']);
    stream = streamAt(9, 9, Date.now() + 1);
    await waitFor(() => passes.pending().length === 0, 'the pass to run');
    expect(ran).toEqual(['alpha']);
  });

  // Before: kept in memory only. At the next start the primary answers as a member that never went down (no restart
  // seen again), so a stop before the pass completed left the namespace with neither the pass nor a snapshot.
  it('is not forgotten by a stop before it completed: the next start queues it again, and a completed one is not', async () => {
    stream = streamAt(5, 9, Date.now()); // not caught up: the pass waits
    passes.queue('alpha', 'a');
    await settle(100);
    expect(ran).toEqual([]);
    passes.close();
    store.close();
    store = StateStore.inDir(dir).open();
    passes = newPasses();
    passes.resume();
    expect(passes.pending()).toEqual(['alpha']);
    stream = streamAt(9, 9, Date.now() + 1);
    await waitFor(() => passes.pending().length === 0, 'the pass to run');
    expect(ran).toEqual(['alpha']);
    // Completed: nothing left for a later start.
    passes.close();
    passes = newPasses();
    passes.resume();
    expect(passes.pending()).toEqual([]);
  });

  it('queues again a record whose time was edited by hand into no time, without failing the start', async () => {
    store.restartPasses.put('alpha', 'a');
    store.db.prepare("UPDATE restart_passes SET queued_at = 'yesterday'").run();
    expect(store.restartPasses.list()).toEqual([{ namespace: 'alpha', primarySite: 'a', queuedAt: null }]);
    passes.resume();
    expect(passes.pending()).toEqual(['alpha']);
  });

  it('forgets the record of a pass it drops (this site no longer replicates the namespace from that primary)', async () => {
    stream = streamAt(5, 9, Date.now());
    passes.queue('alpha', 'a');
    expect(store.roles.compareAndSet({ namespace: 'alpha', role: 'replica', epoch: 1, primarySite: 'a' }, { role: 'primary', epoch: 2, primarySite: 'b' })).toBe(true);
    await waitFor(() => passes.pending().length === 0, 'the pass to be dropped');
    passes.close();
    passes = newPasses();
    passes.resume();
    expect(passes.pending()).toEqual([]);
    expect(ran).toEqual([]);
  });

  // Before: queueing again while the pass ran was ignored, and that pass's completion dropped the queue: writes made
  // around the second restart, after the running pass had read the primary's side, were never looked for.
  it('runs once more when the primary restarts again while its pass runs', async () => {
    let finish: (r: AntiEntropyResult) => void = () => undefined;
    answer = () => new Promise((r) => (finish = r));
    passes.queue('alpha', 'a');
    stream = streamAt(9, 9, Date.now() + 1); // a heartbeat after the queueing, the stream at its head
    await waitFor(() => ran.length === 1, 'the pass to start');
    passes.queue('alpha', 'a'); // the primary restarted again meanwhile
    answer = async () => RESULT;
    finish(RESULT);
    stream = streamAt(9, 9, Date.now() + 1_000); // the primary's heartbeats go on
    await waitFor(() => passes.pending().length === 0, 'the passes to run');
    expect(ran).toEqual(['alpha', 'alpha']);
    passes.close();
    passes = newPasses();
    passes.resume();
    expect(passes.pending()).toEqual([]);
  });

  // Before: a second restart left the queue as it was, caught up since the first: a scheduled pass that started
  // before the second restart (so before the writes around it) covered it and dropped it.
  it('waits afresh after a second restart: a pass started before it does not cover the queued one', async () => {
    running = true; // a scheduled pass runs: the queued one waits for it
    passes.queue('alpha', 'a');
    stream = streamAt(9, 9, Date.now() + 1);
    await settle(100);
    const startedBefore = Date.now();
    await settle(20);
    passes.queue('alpha', 'a');
    passes.completed('alpha', startedBefore);
    expect(passes.pending()).toEqual(['alpha']);
    running = false;
    stream = streamAt(9, 9, Date.now() + 1);
    await waitFor(() => passes.pending().length === 0, 'the pass to run');
    expect(ran).toEqual(['alpha']);
  });

  // Before: a warn line at every retry (every recovery.retryInterval while the primary stayed down).
  it('logs a retry for the same reason at debug, at warn only when it first fails and when the reason changes', async () => {
    const { logger, lines } = capturingLogger();
    passes.close();
    passes = newPasses(logger);
    const answers: (() => Promise<AntiEntropyResult | undefined>)[] = [
      async () => undefined,
      async () => undefined,
      async () => undefined,
      async () => {
        throw new PeerUnreachableError('a did not answer', { site: 'a' });
      },
      async () => RESULT,
    ];
    answer = () => answers.shift()!();
    passes.queue('alpha', 'a');
    await waitFor(() => passes.pending().length === 0, 'the pass to complete');
    const failures = lines.map((l) => JSON.parse(l) as { level: string; msg: string }).filter((l) => /did not complete/.test(l.msg));
    expect(failures.map((l) => l.level)).toEqual(['warn', 'debug', 'debug', 'warn']);
  });

  it('says in its view what it waits for, until it completes', async () => {
    expect(passes.view('alpha')).toBeUndefined();
    stream = streamAt(5, 9, Date.now() - 1_000);
    passes.queue('alpha', 'a');
    await settle(100);
    expect(passes.view('alpha')).toMatchObject({ primary: 'a', state: "waiting for the primary's first heartbeat after its restart" });
    stream = streamAt(5, 9, Date.now() + 1);
    await settle(300);
    expect(passes.view('alpha')?.state).toBe('waiting for the stream to apply 1.9');
    let finish!: () => void;
    answer = () => new Promise((r) => (finish = () => r(RESULT)));
    stream = streamAt(9, 9, Date.now() + 1);
    await waitFor(() => passes.view('alpha')?.state === 'running', 'the pass to run');
    finish();
    await waitFor(() => passes.view('alpha') === undefined, 'the pass to complete');
  });

  // Before: a pass the primary cannot serve (an older primary's one-answer inventory beyond its cap) was retried every
  // recovery.retryInterval forever, each time asking the primary for its whole namespace.
  it('does not retry a pass its primary cannot serve until upgraded: it waits, says why, and runs at the next queueing', async () => {
    const tooOld = new AntiEntropyPrimaryTooOldError('the primary a serves no inventory ranges (…): no anti-entropy pass of it can run against that primary', { namespace: 'alpha', site: 'a' });
    answer = async () => {
      throw tooOld;
    };
    passes.queue('alpha', 'a');
    await waitFor(() => ran.length === 1, 'the pass to run');
    await settle(200); // ten retry intervals
    expect(ran).toEqual(['alpha']);
    expect(passes.pending()).toEqual(['alpha']);
    expect(passes.view('alpha')?.state).toBe(`not retried: ${tooOld.message}; queued again at the primary's next restart (its upgrade)`);
    // The primary restarts (its upgrade): queued again, it runs.
    answer = async () => RESULT;
    passes.queue('alpha', 'a');
    await waitFor(() => passes.pending().length === 0, 'the pass to run again');
    expect(ran).toEqual(['alpha', 'alpha']);
  });

  // Before: with afterPrimaryRestart: snapshot a namespace paused when the primary came back was skipped: nothing ran
  // after its resume (the daemon queued nothing; here: the queue ran the pass, not the snapshot the setting asks for).
  it('runs a snapshot sync in place of the pass where the daemon says one stands in, once the namespace is resumed', async () => {
    instead = 'replication.afterPrimaryRestart: snapshot';
    store.roles.setPaused('alpha', true);
    stream = streamAt(5, 9, Date.now() - 1_000); // the stream is not waited for: the snapshot brings everything
    passes.queue('alpha', 'a');
    await settle(100);
    expect(synced).toEqual([]);
    expect(passes.view('alpha')).toMatchObject({ action: 'snapshot sync', state: 'waiting: the namespace is paused here; runs once it is resumed (replication.afterPrimaryRestart: snapshot)' });
    store.roles.setPaused('alpha', false);
    await waitFor(() => passes.pending().length === 0, 'the snapshot sync to run');
    expect(synced).toEqual(['alpha']);
    expect(ran).toEqual([]);
    passes.close();
    passes = newPasses();
    passes.resume();
    expect(passes.pending()).toEqual([]);
  });
});
