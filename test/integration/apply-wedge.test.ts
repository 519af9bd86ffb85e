/**
 * Applies never wedge (data-safety issue, case 5, and the peer-blame part of case 10). Two sites, gateway at A, B a
 * replica of alpha. B's NetHSM is Locked, or refuses B's root Operator credential, while A streams an import:
 * - B's `status` shows the cause within a bound and exits 2 (needs attention), naming the cause;
 * - a manual `sync` at B is answered by the daemon before the admin client's own timeout, with the cause, and within
 *   its bound while another (slow) sync runs, saying what that one is doing;
 * - the scheduled job keeps running (it is not skipped forever);
 * - after unlocking / fixing the credential, the stream catches up with nothing lost;
 * - failures at B (a Locked NetHSM, writers racing a sync on B's device) are never counted against the peer A.
 * Before the fix, the apply window kept a failed import's device hold and the namespace's lock until the next change
 * arrived (heartbeats did not release it), so every sync waited out the drain timeout (60 s), failed with
 * NHR_ERR_GATEWAY_DRAIN_TIMEOUT, marked A unreachable, and the stream never caught up after the unlock. Each test
 * here failed on that code.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminClient } from '../../src/admin/client.js';
import { statusExitCode, statusProblems } from '../../src/cli/status.js';
import type { DaemonStatus } from '../../src/daemon/status.js';
import { NamespaceSync } from '../../src/daemon/sync.js';
import { AdminRemoteError, SyncBusyError, SyncRaceError } from '../../src/errors.js';
import { capturingLogger } from '../../src/gateway/test-support.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import { caughtUp, diffInventories, eventually, importBody, inventory, streamReady } from './stream-helpers.js';
import { use } from '../helpers/clients.js';

const NS = 'alpha';
/** The admin client's timeout in these tests: the daemon must answer a manual sync before it. */
const CLIENT_TIMEOUT_MS = 30_000;

async function importAt(a: LabSite, id: string): Promise<void> {
  await use(a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin), (c) => c.importKey(importBody('EC_P256', ['ECDSA_Signature']), id));
}

async function compare(a: LabSite, b: LabSite): Promise<{ missing: string[]; extra: string[]; differ: string[] }> {
  return diffInventories(
    await use(a.nsAdmin(NS), inventory),
    await use(b.client(`${NS}~replicator`, LAB_PASSPHRASES.replicator), inventory),
  );
}

function admin(site: LabSite): AdminClient {
  return new AdminClient({ socketPath: site.config.admin.socket, timeoutMs: CLIENT_TIMEOUT_MS });
}

/** Waits until B's status (as the CLI reads it) shows the stream failing with `code` and exits 2. */
async function statusShows(b: LabSite, code: string, message: RegExp): Promise<DaemonStatus> {
  let last: DaemonStatus | undefined;
  await eventually(
    async () => {
      last = await admin(b).status<DaemonStatus>();
      return last.namespaces.find((n) => n.name === NS)?.stream?.lastErrorCode === code;
    },
    20_000,
    `B's status to show ${code}`,
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}; last status: ${JSON.stringify(last?.namespaces)}`);
  });
  expect(statusExitCode(last!)).toBe(2);
  expect(statusProblems(last!).join('\n')).toMatch(message);
  return last!;
}

/** A manual sync through the admin API; resolves with the answer or the error, and how long it took. */
async function manualSync(b: LabSite): Promise<{ answer?: Record<string, unknown>; error?: unknown }> {
  try {
    return { answer: await admin(b).namespaceAction<Record<string, unknown>>(NS, 'sync', { actor: 'operator@b' }) };
  } catch (error) {
    return { error };
  }
}

function peerNotBlamed(b: LabSite): void {
  expect(b.daemon!.ctx.monitor.get('a')).toMatchObject({ status: 'ok', consecutiveFailures: 0 });
}

describe('applies never wedge', () => {
  let lab: Lab;
  /** Simulator latencies per site, read at every call: tests slow backups at B (the sync race) or A (a slow snapshot). */
  const latency: Record<string, Record<string, number>> = { a: {}, b: {} };
  const latencyAtB = latency.b!;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: NS, primary: 'a' }], gateway: true, latency: (site) => latency[site]! });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    await lab.site('b').daemon!.syncer.sync(NS, { actor: 'test' });
    await importAt(lab.site('a'), 'before');
    await caughtUp(lab.site('a'), lab.site('b'), NS);
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('a Locked NetHSM at the replica: the cause is shown, sync answers with it, nothing is lost after the unlock', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    await use(b.client(), (c) => c.lock());
    try {
      await importAt(a, 'while-locked');
      await statusShows(b, 'NHR_ERR_NETHSM_NOT_OPERATIONAL', /Locked/);
      const { error } = await manualSync(b);
      expect(error).toBeInstanceOf(AdminRemoteError);
      expect(error).toMatchObject({ code: 'NHR_ERR_NETHSM_LOCKED' });
      expect((error as Error).message).toMatch(/NetHSM is Locked/);
      peerNotBlamed(b);
    } finally {
      await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    }
    await caughtUp(a, b, NS, 60_000);
    expect(await compare(a, b)).toEqual({ missing: [], extra: [], differ: [] });
    await eventually(async () => statusExitCode(await admin(b).status<DaemonStatus>()) === 0, 20_000, "B's status to be all ok again");
    peerNotBlamed(b);
  }, 180_000);

  it('a refused root Operator credential at the replica: the cause is shown, sync answers, the stream resumes once fixed', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    // B's NetHSM no longer accepts the Operator passphrase B's daemon is configured with. The restart empties B's cache
    // of unwrapped envelope keys, so the next import needs the NetHSM to unwrap.
    await use(b.client(), (c) => c.setUserPassphrase('operator', 'not-the-configured-passphrase'));
    try {
      await b.stopDaemon();
      await b.startDaemon();
      await importAt(a, 'operator-refused-1');
      await statusShows(b, 'NHR_ERR_NETHSM_CREDENTIAL_REFUSED', /nethsm\.credentials\.operator/);
      // A snapshot sync needs no Operator: it runs, and its answer names the stream's failure.
      const { answer, error } = await manualSync(b);
      expect(error).toBeUndefined();
      expect(answer).toMatchObject({ outcome: 'applied' });
      expect(String(answer!.streamLastError)).toMatch(/nethsm\.credentials\.operator/);
      peerNotBlamed(b);
      await importAt(a, 'operator-refused-2');
      await statusShows(b, 'NHR_ERR_NETHSM_CREDENTIAL_REFUSED', /nethsm\.credentials\.operator/);
    } finally {
      await use(b.client(), (c) => c.setUserPassphrase('operator', LAB_PASSPHRASES.operator));
    }
    await caughtUp(a, b, NS, 60_000);
    expect(await compare(a, b)).toEqual({ missing: [], extra: [], differ: [] });
    await eventually(async () => statusExitCode(await admin(b).status<DaemonStatus>()) === 0, 20_000, "B's status to be all ok again");
    peerNotBlamed(b);
  }, 180_000);

  // Before the fix an operator's sync waited for any running sync however long it took, then ran its own.
  it("answers an operator's sync within its bound while a slow sync runs, saying what runs", async () => {
    const b = lab.site('b');
    const syncer = new NamespaceSync(b.daemon!.ctx, async () => undefined, { busyWaitMs: 300, answerWithinMs: 600 });
    latency.a!.backup = 2_000;
    try {
      const scheduled = syncer.sync(NS, { actor: 'schedule' });
      await eventually(() => syncer.progressOf(NS)?.step === 'fetching the snapshot from a', 10_000, 'the sync to fetch the snapshot');
      const queued = await syncer.sync(NS, { actor: 'operator@b', manual: true }).catch((e: unknown) => e);
      expect(queued).toBeInstanceOf(SyncBusyError);
      expect((queued as Error).message).toMatch(/a sync started by schedule .* is still running \(fetching the snapshot from a, for \d+ s\)/);
      expect((await scheduled).outcome).toBe('applied');
      await eventually(() => !syncer.isBusy(NS), 20_000, 'the sync queued behind it to end');
      const own = await syncer.sync(NS, { actor: 'operator@b', manual: true }).catch((e: unknown) => e);
      expect(own).toBeInstanceOf(SyncBusyError);
      expect((own as Error).message).toMatch(/a sync started by operator@b .* is still running/);
      await eventually(() => !syncer.isBusy(NS), 20_000, 'the sync to end');
      expect(b.daemon!.ctx.store.positions.get(NS, 'a')?.lastSyncOutcome).toBe('ok');
    } finally {
      delete latency.a!.backup;
    }
  }, 120_000);

  // Before the fix the snapshot set the position back but the changes the stream had applied meanwhile stayed
  // recorded: replayed, they were skipped as duplicates (their effect, undone by the restore, was lost), and the next
  // new change was refused as out of order at every reconnect: the stream never caught up again.
  it('applies again the stream changes a snapshot undid, and goes on streaming', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    latency.a!.backup = 1_500;
    let sync: Promise<unknown> | undefined;
    try {
      sync = b.daemon!.syncer.sync(NS, { actor: 'test' });
      await eventually(() => b.daemon!.syncer.progressOf(NS)?.step === 'fetching the snapshot from a', 10_000, 'the sync to fetch the snapshot');
      // A takes the snapshot's backup slowly; meanwhile A takes imports, and B applies them from the stream.
      for (let i = 0; i < 3; i++) await importAt(a, `during-snapshot-${i}`);
      const head = a.daemon!.ctx.store.changelog.head(NS, 1).seq;
      await eventually(() => (b.daemon!.ctx.store.positions.get(NS, 'a')?.seq ?? 0) >= head || !b.daemon!.syncer.isBusy(NS), 20_000, 'B to apply them');
    } finally {
      delete latency.a!.backup;
    }
    expect(await sync).toMatchObject({ outcome: 'applied' });
    await importAt(a, 'after-snapshot');
    await caughtUp(a, b, NS, 60_000);
    expect(await compare(a, b)).toEqual({ missing: [], extra: [], differ: [] });
  }, 120_000);

  it('writes made straight to the replica NetHSM during a sync fail it with SYNC_RACE, not counted against the peer', async () => {
    const b = lab.site('b');
    // A site whose clients write straight to its NetHSM says so (`replication.directWriters`): only then does the held
    // sequence re-check with a second backup (without it, that backup inside the hold is current for every write
    // made through the daemon, and direct writes are documented as lost).
    const ctx = b.daemon!.ctx;
    const configured = ctx.config;
    ctx.config = { ...configured, replication: { ...configured.replication, directWriters: true } };
    latencyAtB.backup = 200;
    let writing = true;
    const pause = () => new Promise((r) => setTimeout(r, 20));
    // Writes through the daemon's barrier race every backup and merge outside the hold, so the sync falls back to
    // merging inside it (last resort); there only the re-check sees the direct writer, and it keeps racing.
    const viaBarrier = use(b.client(), async (c) => {
      for (let i = 0; writing; i++) {
        await b.daemon!.ctx.barrier.shared(() => c.generateKey({ id: `daemon${i}`, type: 'Generic', mechanisms: ['AES_Encryption_CBC'], length: 128 }), { wait: 'unbounded' });
        await pause();
      }
    });
    const writer = use(b.client(), async (c) => {
      for (let i = 0; writing; i++) {
        await c.generateKey({ id: `direct${i}`, type: 'Generic', mechanisms: ['AES_Encryption_CBC'], length: 128 });
        await pause();
      }
    });
    try {
      const err = await b.daemon!.syncer.sync(NS, { actor: 'test' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SyncRaceError);
    } finally {
      writing = false;
      delete latencyAtB.backup;
      ctx.config = configured;
      await Promise.all([writer, viaBarrier]);
    }
    peerNotBlamed(b);
    expect(b.daemon!.ctx.monitor.available('a')).toBe(true);
  }, 120_000);
});

describe('applies never wedge: the schedule', () => {
  let lab: Lab;
  let lines: string[] = [];

  beforeAll(async () => {
    lab = await Lab.create({
      namespaces: [{ name: NS, primary: 'a' }],
      gateway: true,
      schedule: '*/2 * * * * *',
      logger: (site) => {
        const c = capturingLogger();
        if (site === 'b') lines = c.lines;
        return c.logger;
      },
    });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    await lab.site('b').daemon!.syncer.sync(NS, { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('keeps running the scheduled sync through a Locked NetHSM, and it succeeds once unlocked', async () => {
    const [a, b] = [lab.site('a'), lab.site('b')];
    await use(b.client(), (c) => c.lock());
    try {
      await importAt(a, 'while-locked');
      // B has received the import and its NetHSM is known to be Locked.
      await eventually(() => {
        const st = b.daemon!.stream.status(NS);
        return !b.daemon!.ctx.monitor.available('nethsm') && !!st?.head && !!st.position && st.head.seq > st.position.seq;
      }, 20_000, 'B to receive the import while Locked');
    } finally {
      await use(b.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    }
    const from = lines.length;
    const scheduledOk = () =>
      lines.slice(from).some((l) => {
        const o = JSON.parse(l) as { msg?: string; actor?: string };
        return o.msg === 'namespace synced' && o.actor === 'schedule';
      });
    await eventually(scheduledOk, 30_000, 'a scheduled sync to succeed at B after the unlock');
    // Where its time went, step by step (the log line an operator reads for a slow sync).
    const synced = lines
      .slice(from)
      .map((l) => JSON.parse(l) as { msg?: string; actor?: string; stepsMs?: Record<string, number> })
      .find((o) => o.msg === 'namespace synced' && o.actor === 'schedule')!;
    expect(Object.keys(synced.stepsMs ?? {})).toEqual(expect.arrayContaining(['check', 'fetch', 'backup', 'restore']));
    for (const ms of Object.values(synced.stepsMs!)) expect(Number.isInteger(ms) && ms >= 0).toBe(true);
    await caughtUp(a, b, NS, 60_000);
    expect(await compare(a, b)).toEqual({ missing: [], extra: [], differ: [] });
    peerNotBlamed(b);
  }, 180_000);
});
