import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { NetHsmClient } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { Device } from './device.js';
import { listBackupContents } from '../backup/contents.js';
import { TEST_SCRYPT } from '../backup/format.js';
import { removeFiles, WorkDir } from './workdir.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('Device: backups and the barrier', () => {
  let sim: ProvisionedSimulator;
  let dir: string;
  let pool: NetHsmClient;
  beforeAll(async () => {
    sim = await startProvisionedSimulator();
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-device-'));
    pool = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
  });
  afterAll(async () => {
    await pool?.close();
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  function device(barrier: DeviceBarrier, onRestore?: (namespaces?: readonly string[]) => void): Device {
    return new Device(
      { backup: pool.withAuth(sim.users.backup.username, sim.users.backup.password), admin: pool.withAuth(sim.users.admin.username, sim.users.admin.password) },
      barrier,
      sim.backupPassphrase,
      undefined,
      onRestore,
    );
  }

  /** A device on a barrier of its own, a prepared work dir, and a stop signal with its reason. */
  async function stopping() {
    const barrier = new DeviceBarrier();
    const work = new WorkDir(dir);
    await work.prepare();
    return { barrier, d: device(barrier), work, stop: new AbortController(), reason: new Error('the daemon is stopping') };
  }

  /**
   * Two callers of one shared backup: the starter reads the bytes as they arrive (its reader must not wait for bytes
   * that never come), the joiner the file. Each settles with its value or its error.
   */
  function sharers(d: Device, work: WorkDir, signal: AbortSignal): { starter: Promise<unknown>; joiner: Promise<unknown> } {
    const starter = d.withSharedBackup(work, () => ({}), async (source) => {
      for await (const _ of source as AsyncIterable<Buffer>) void _;
      return 'read';
    }, signal).catch((e: unknown) => e);
    const joiner = d.withSharedBackup(work, () => ({}), async () => 'read').catch((e: unknown) => e);
    return { starter, joiner };
  }

  // The certificate table (key-certs-repo.ts) forgets on both sides of a restore, also one that fails: the namespaces
  // the restore names, or everything when it names none.
  it('calls onRestore before and after a restore, whatever its outcome, with the namespaces it names', async () => {
    const calls: (readonly string[] | undefined)[] = [];
    const d = device(new DeviceBarrier(), (ns) => calls.push(ns));
    const work = new WorkDir(dir);
    await work.prepare();
    const file = work.temp('for-restore');
    await d.backupTo(file);
    await d.restore(file);
    expect(calls).toEqual([undefined, undefined]);
    await d.restore(file, ['x', 'y']);
    expect(calls.slice(2)).toEqual([['x', 'y'], ['x', 'y']]);
    await expect(d.restore(path.join(dir, 'no-such-backup'), ['x'])).rejects.toThrow();
    expect(calls.slice(4)).toEqual([['x'], ['x']]);
    await expect(d.restore(path.join(dir, 'no-such-backup'))).rejects.toThrow();
    expect(calls.slice(6)).toEqual([undefined, undefined]);
  });

  // The caller whose request started a shared backup reads it as it arrives (its extract overlaps the download); its
  // own failure must not fail the backup the others joined.
  it('lets the caller that started a shared backup fail alone: a caller that joined gets the whole file', async () => {
    const d = device(new DeviceBarrier());
    const work = new WorkDir(dir);
    await work.prepare();
    const starter = d.withSharedBackup(work, () => ({}), async (source) => {
      expect(typeof source).not.toBe('string');
      for await (const _ of source as AsyncIterable<Buffer>) throw new Error('the extract failed');
      return 0;
    });
    const joiner = d.withSharedBackup(work, () => ({}), async (source) => {
      expect(typeof source).toBe('string');
      return (await listBackupContents(source as string, { input: { passphrase: sim.backupPassphrase, scrypt: TEST_SCRYPT } })).entryCount;
    });
    await expect(starter).rejects.toThrow('the extract failed');
    expect(await joiner).toBeGreaterThan(3);
  });

  // Found by the fault suite (a demote hung): a shared backup requested while an exclusive hold was pending waits for
  // that hold; the holder's own snapshot (the demote hand-off) joined it and so waited for itself, for good.
  // Before: a backup took no signal, so the daemon's stop waited for it (minutes on a large device).
  it('cuts a shared backup when the stop signal aborts: every sharer gets the reason (no device fault), no file, the hold released', async () => {
    const { barrier, d, work, stop, reason } = await stopping();
    const hold = sim.hold({ method: 'POST', path: /\/system\/backup$/ });
    try {
      const { starter, joiner } = sharers(d, work, stop.signal);
      await hold.waitFor(1);
      expect(barrier.inFlight).toBe(1);
      stop.abort(reason);
      expect(await starter).toBe(reason);
      expect(await joiner).toBe(reason);
      // Released as any failure: nothing waits on the cut backup, an exclusive hold gets in at once.
      expect(barrier.inFlight).toBe(0);
      await expect(barrier.exclusive([], async () => 'in')).resolves.toBe('in');
      expect(await readdir(work.work)).toEqual([]);
      // Already aborted: its turn comes and the device is not asked.
      const before = sim.backups;
      await expect(d.backupForReading(work.temp('late'), { signal: stop.signal })).rejects.toBe(reason);
      expect(sim.backups).toBe(before);
      expect(await readdir(work.work)).toEqual([]);
    } finally {
      hold.close();
    }
  });

  // Before: the signal reached the backup only once it was admitted, so a stop waited for the exclusive hold to end.
  it('cuts a shared backup still waiting for its barrier hold behind an exclusive one: the device never asked, nothing left', async () => {
    const { barrier, d, work, stop, reason } = await stopping();
    const restore = deferred();
    const inside = deferred();
    const held = barrier.exclusive([], async () => {
      inside.resolve();
      await restore.promise;
    });
    await inside.promise;
    const before = sim.backups;
    try {
      const { starter, joiner } = sharers(d, work, stop.signal);
      expect(barrier.waiting).toBe(1);
      stop.abort(reason);
      // It left the barrier's queue at once, not admitted.
      expect(barrier.waiting).toBe(0);
      expect(await starter).toBe(reason);
      expect(await joiner).toBe(reason);
      expect(barrier.inFlight).toBe(0);
      expect(await readdir(work.work)).toEqual([]);
    } finally {
      restore.resolve();
      await held;
    }
    expect(sim.backups).toBe(before);
  });

  // Before: a backup admitted waited for its turn at the device (behind another backup, e.g. a restore's check B3, not cut)
  // whatever the stop; only then did it see the signal.
  it('cuts a backup waiting for its turn at the device behind another one: the device never asked for it', async () => {
    const { barrier, d, work, stop, reason } = await stopping();
    const hold = sim.hold({ method: 'POST', path: /\/system\/backup$/ });
    const before = sim.backups;
    try {
      const first = d.backupForReading(work.temp('first'));
      await hold.waitFor(1);
      const second = d.backupForReading(work.temp('second'), { signal: stop.signal }).catch((e: unknown) => e);
      // Both admitted (shared): the second waits for the device.
      expect(barrier.inFlight).toBe(2);
      stop.abort(reason);
      const bound = new Promise((r) => setTimeout(() => r('still waiting for the first backup'), 10_000));
      expect(await Promise.race([second, bound])).toBe(reason);
      expect(barrier.inFlight).toBe(1);
      hold.close();
      await first;
    } finally {
      hold.close();
    }
    expect(sim.backups).toBe(before + 1);
    await removeFiles(...(await readdir(work.work)).map((f) => path.join(work.work, f)));
  });

  it('never makes an exclusive holder join a shared backup still waiting for admission', async () => {
    const barrier = new DeviceBarrier();
    const d = device(barrier);
    const work = new WorkDir(dir);
    await work.prepare();
    const inside = deferred();
    const release = deferred();
    const held = barrier.exclusive([], async () => {
      inside.resolve();
      await release.promise;
      // Inside the hold: the hand-off snapshot's backup.
      return d.withSharedBackup(work, () => ({}), async (source) => typeof source === 'string' && existsSync(source));
    });
    await inside.promise;
    // A peer's snapshot request arrives meanwhile: its backup waits for the exclusive hold to end.
    // It started the backup: it reads the bytes as they arrive.
    const outside = d.withSharedBackup(work, () => ({}), async (source) => typeof source !== 'string');
    await new Promise((r) => setTimeout(r, 50));
    release.resolve();
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('deadlock: the holder waited for a backup that waits for it')), 15_000));
    await expect(Promise.race([held, timeout])).resolves.toBe(true);
    await expect(outside).resolves.toBe(true);
  });
});
