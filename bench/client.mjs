#!/usr/bin/env node
// Client throughput against the simulator (no latency injected): N operations at concurrency C, for sign and import.
// Usage: npm run build && node bench/client.mjs [--n 2000] [--c 1,8,32]
// Prints ops/s and p50/p99 latency per operation and concurrency. Figures go to docs/benchmarks.md.
import { createHash, randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { benchArgs } from './lib/args.mjs';
import { NetHsmClient } from '../dist/nethsm/client.js';
import { startProvisionedSimulator } from '../dist/sim/fixture.js';

const { values } = benchArgs(import.meta.url, { options: { n: { type: 'string', default: '2000' }, c: { type: 'string', default: '1,8,32' } } });
const N = Number(values.n);
const CONCURRENCY = values.c.split(',').map(Number);

async function run(label, concurrency, op) {
  const latencies = new Float64Array(N);
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < N) {
        const i = next++;
        const t0 = performance.now();
        await op(i);
        latencies[i] = performance.now() - t0;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  latencies.sort();
  const pct = (p) => latencies[Math.min(N - 1, Math.floor((p / 100) * N))].toFixed(2);
  const row = `| ${label} | ${concurrency} | ${N} | ${Math.round(N / seconds)} | ${pct(50)} | ${pct(99)} |`;
  console.log(row);
  return row;
}

const sim = await startProvisionedSimulator();
const client = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, connections: Math.max(...CONCURRENCY) });
const admin = client.withAuth(sim.users.admin.username, sim.users.admin.password);
const operator = client.withAuth(sim.users.operator.username, sim.users.operator.password);
try {
  await admin.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'p256' });
  await admin.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'ed25519' });
  const digest = createHash('sha256').update('bench').digest();
  const aes = { type: 'Generic', mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'], private: { data: randomBytes(32).toString('base64') } };
  console.log(`node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}; simulator in-process, no latency`);
  console.log('| operation | concurrency | ops | ops/s | p50 ms | p99 ms |');
  console.log('|---|---|---|---|---|---|');
  for (const c of CONCURRENCY) {
    // Warm-up so connection set-up is not counted.
    await Promise.all(Array.from({ length: c }, () => operator.sign('p256', 'ECDSA', digest)));
    await run('sign ECDSA P-256', c, () => operator.sign('p256', 'ECDSA', digest));
    await run('sign EdDSA Ed25519', c, () => operator.sign('ed25519', 'EdDSA', Buffer.from('bench')));
    await run('import AES-256 (PUT /keys/{id})', c, (i) => admin.importKey(aes, `imp-${c}-${i}`));
  }
} finally {
  await client.close();
  await sim.close();
}
