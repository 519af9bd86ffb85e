import { readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DeviceBarrier } from '../concurrency/barrier.js';
import { NetHsmClient } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { listBackupContents } from '../backup/contents.js';
import { TEST_SCRYPT } from '../backup/format.js';
import { BackupNamespaceNotFoundError } from '../errors.js';
import { Device } from './device.js';
import { streamSnapshot, type SnapshotSourceDeps } from './snapshot-source.js';
import { WorkDir } from './workdir.js';
import { checkSnapshot } from './snapshot-check.js';

const REPLICATION = 'replication passphrase for the test';

describe('streamSnapshot: the snapshot read while it is taken', () => {
  let sim: ProvisionedSimulator;
  let dir: string;
  let pool: NetHsmClient;
  let work: WorkDir;
  let device: Device;
  const deps = (over: Partial<SnapshotSourceDeps> = {}): SnapshotSourceDeps => ({
    site: 'a',
    device,
    work,
    deviceOpen: { passphrase: sim.backupPassphrase, scrypt: TEST_SCRYPT },
    replicationPassphrase: REPLICATION,
    scrypt: TEST_SCRYPT,
    ...over,
  });
  const workFiles = () => readdirSync(path.dirname(work.temp('x')));

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns1'] });
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-snapshot-source-'));
    pool = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
    device = new Device(
      { backup: pool.withAuth(sim.users.backup.username, sim.users.backup.password), admin: pool.withAuth(sim.users.admin.username, sim.users.admin.password) },
      new DeviceBarrier(),
      sim.backupPassphrase,
    );
    work = new WorkDir(dir);
    await work.prepare();
  });
  afterAll(async () => {
    await pool?.close();
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('streams a whole snapshot, equal to what the extract reports, and removes its spool file after', async () => {
    const before = workFiles();
    // Two requested together share one device backup: the second reads the finished file (a joiner), and streams too.
    const [one, two] = await Promise.all([streamSnapshot(deps(), 'ns1', 5), streamSnapshot(deps(), 'ns1', 5)]);
    expect(workFiles().filter((f) => f.startsWith('snapshot-ns1-')).length, 'one spool per streamed snapshot').toBe(2);
    for (const [i, snap] of [one, two].entries()) {
      const parts: Buffer[] = [];
      for await (const c of snap.body) parts.push(c);
      const done = await snap.done;
      const bytes = Buffer.concat(parts);
      expect(bytes.length).toBe(done.bytes);
      const file = path.join(dir, `received-${i}`);
      await writeFile(file, bytes, { mode: 0o600 });
      const contents = await listBackupContents(file, { input: { passphrase: REPLICATION, scrypt: TEST_SCRYPT } });
      expect(contents.manifest?.namespace).toBe('ns1');
      expect(contents.manifest?.meta).toMatchObject({ epoch: 5, site: 'a' });
      await rm(file);
    }
    // The spool is removed once the stream's end reaches the extract (a few ticks; longer on a loaded machine).
    await vi.waitFor(() => expect(workFiles()).toEqual(before), { timeout: 10_000, interval: 10 });
  });

  it('checks a snapshot from its bytes as they come (checkSnapshot), and refuses one altered or cut short', async () => {
    const snap = await streamSnapshot(deps(), 'ns1', 6);
    const parts: Buffer[] = [];
    for await (const c of snap.body) parts.push(c);
    const bytes = Buffer.concat(parts);
    const open = { passphrase: REPLICATION, scrypt: TEST_SCRYPT };
    const from = (b: Buffer) => (async function* () {
      for (let i = 0; i < b.length; i += 1000) yield b.subarray(i, i + 1000);
    })();
    const ok = await checkSnapshot(from(bytes), open, 'ns1');
    expect(ok.meta).toMatchObject({ epoch: 6, site: 'a' });
    expect(ok.contents.manifest?.namespace).toBe('ns1');
    const altered = Buffer.from(bytes);
    altered[altered.length - 60] = altered[altered.length - 60]! ^ 0xff;
    await expect(checkSnapshot(from(altered), open, 'ns1')).rejects.toThrow();
    await expect(checkSnapshot(from(bytes.subarray(0, bytes.length - 30)), open, 'ns1')).rejects.toThrow();
    await expect(checkSnapshot(from(bytes), open, 'other')).rejects.toThrow();
  });

  it('refuses a namespace the device lacks before any byte, leaving no file', async () => {
    const before = workFiles();
    await expect(streamSnapshot(deps(), 'nosuch', 1)).rejects.toBeInstanceOf(BackupNamespaceNotFoundError);
    expect(workFiles()).toEqual(before);
  });

  it('fails the body with the extract error when the device backup does not open, and removes the spool', async () => {
    const before = workFiles();
    const snap = await streamSnapshot(deps({ deviceOpen: { passphrase: 'not the device backup passphrase', scrypt: TEST_SCRYPT } }), 'ns1', 1);
    const got = await (async () => {
      for await (const _ of snap.body) return 'a byte';
      return 'a clean end';
    })().catch((e: unknown) => e);
    expect(got).toBeInstanceOf(Error);
    await expect(snap.done).rejects.toBe(got);
    // The spool is removed once the stream's end reaches the extract (a few ticks; longer on a loaded machine).
    await vi.waitFor(() => expect(workFiles()).toEqual(before), { timeout: 10_000, interval: 10 });
  });

  it('removes the spool of a body never read, once the extract is over', async () => {
    const before = workFiles();
    const snap = await streamSnapshot(deps(), 'ns1', 1);
    await snap.done;
    await snap.body[Symbol.asyncIterator]().return?.();
    // The spool is removed once the stream's end reaches the extract (a few ticks; longer on a loaded machine).
    await vi.waitFor(() => expect(workFiles()).toEqual(before), { timeout: 10_000, interval: 10 });
  });
});
