/**
 * A backup of a large device streams through the client in chunks: the client's live memory stays far below the
 * file size. Memory is sampled after a forced GC, so the figure is what is retained, not garbage awaiting collection.
 */
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { NetHsmClient } from './client.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const KEYS = 2000;
const CERT_KEYS = 40;
const CERT_BYTES = 1024 * 1024 - 1024; // the NetHSM's certificate limit is 1 MiB

function liveBytes(): number {
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

async function inParallel<T>(items: T[], width: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

let sim: ProvisionedSimulator;
let client: NetHsmClient;

beforeAll(async () => {
  sim = await startProvisionedSimulator();
  client = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, connections: 16 });
  const admin = client.withAuth(sim.users.admin.username, sim.users.admin.password);
  // One fixed key material under many ids, and large certificates on some, make a backup of tens of MiB quickly.
  const body = { type: 'Generic' as const, mechanisms: ['AES_Encryption_CBC' as const], private: { data: randomBytes(32).toString('base64') } };
  await inParallel(Array.from({ length: KEYS }, (_, i) => `bulk${i}`), 16, (id) => admin.importKey(body, id));
  const cert = randomBytes(CERT_BYTES);
  await inParallel(Array.from({ length: CERT_KEYS }, (_, i) => `bulk${i}`), 8, (id) => admin.putCert(id, cert));
}, 120_000);

afterAll(async () => {
  await client?.close();
  await sim?.close();
});

describe('streamed backup of a large device', () => {
  it('arrives in many chunks while the client retains far less than the file size', async () => {
    const backup = client.withAuth(sim.users.backup.username, sim.users.backup.password);
    const baseline = liveBytes();
    const stream = await backup.backup();
    let total = 0;
    let chunks = 0;
    let largestChunk = 0;
    let peak = 0;
    let tail = Buffer.alloc(0);
    for await (const c of stream) {
      const chunk = c as Buffer;
      total += chunk.length;
      chunks++;
      largestChunk = Math.max(largestChunk, chunk.length);
      tail = Buffer.concat([tail, chunk]).subarray(-19);
      if (chunks % 64 === 0) peak = Math.max(peak, liveBytes() - baseline);
    }
    peak = Math.max(peak, liveBytes() - baseline);
    const expectedMin = CERT_KEYS * CERT_BYTES;
    expect(total).toBeGreaterThan(expectedMin);
    expect(tail.toString()).toBe('_NETHSM_BACKUP_END_');
    expect(chunks).toBeGreaterThan(100);
    expect(largestChunk).toBeLessThan(2 * 1024 * 1024);
    // Generous: the simulator's in-flight entries (1 MiB each) share this process and, on a loaded machine, run ahead of
    // the reader for a while (once seen just over total / 4). A client buffering the file would retain more than total.
    expect(peak).toBeLessThan(total / 2);
    console.log(`backup ${(total / 1048576).toFixed(1)} MiB in ${chunks} chunks; peak retained growth ${(peak / 1048576).toFixed(1)} MiB`);
  });
});
