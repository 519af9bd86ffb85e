#!/usr/bin/env node
// Checks the sync cost model (src/replicator/cost-model.ts) against real syncs: two lab sites (simulators and daemons
// in this process, no injected latency), namespace `alpha` primary at A. B's NetHSM is filled with K1 keys of a
// namespace of its own (`bench`, outside the replicated one: a merge-restore carries them all), B syncs alpha and the
// model learns from those syncs. Then B's device grows to K2 keys; the model's prediction for that size (its learnt
// per-byte figures times the size scaled by the key count) is compared with what the next syncs take.
// Usage: npm run build && node bench/sync-model.mjs [--small 5000] [--large 20000] [--syncs 2]
// Prints per size: device entries, the hold and whole-sync seconds measured (median of --syncs), the model's
// prediction, and measured / predicted. Figures go to docs/benchmarks.md ("Cost model").
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { benchArgs } from './lib/args.mjs';
import { Lab, LAB_PASSPHRASES } from '../dist/lab/lab.js';
import { NetHsmClient } from '../dist/nethsm/client.js';
import { estimateSync } from '../dist/replicator/cost-model.js';

const { values } = benchArgs(import.meta.url, { options: { small: { type: 'string', default: '5000' }, large: { type: 'string', default: '20000' }, syncs: { type: 'string', default: '2' } } });
const K1 = Number(values.small);
const K2 = Number(values.large);
const SYNCS = Number(values.syncs);
if (![K1, K2, SYNCS].every((n) => Number.isInteger(n) && n > 0) || K2 <= K1) throw new Error('--small < --large and --syncs must be positive whole numbers');

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function fill(client, from, to) {
  let next = from;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < to) {
        const i = next++;
        const body = { type: 'Generic', mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'], private: { data: randomBytes(32).toString('base64') } };
        await client.importKey(body, `fill${i}`);
      }
    }),
  );
}

/** `n` syncs of alpha at B; the median hold and whole sync, as the model recorded them. */
async function syncs(b, n) {
  const holds = [];
  const totals = [];
  for (let i = 0; i < n; i++) {
    await b.daemon.syncer.sync('alpha', { actor: 'bench' });
    const c = b.daemon.ctx.costModel.costOf('alpha');
    holds.push(c.observedHoldSeconds);
    totals.push(c.observedSyncSeconds);
  }
  return { hold: median(holds), sync: median(totals) };
}

const lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], simPersistence: false });
const closers = [];
try {
  await lab.startDaemons();
  const b = lab.site('b');
  const root = b.client();
  closers.push(root);
  await root.createUser({ realName: 'bench admin', role: 'Administrator', passphrase: LAB_PASSPHRASES.nsAdmin }, 'bench~admin');
  await root.createNamespace('bench');
  const direct = new NetHsmClient({ url: b.sim.url, tls: { fingerprint256: b.sim.fingerprint256 }, auth: { username: 'bench~admin', password: LAB_PASSPHRASES.nsAdmin }, connections: 16 });
  closers.push(direct);
  console.log(`node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}; sites, simulators and daemons in one process`);

  await fill(direct, 0, K1);
  await b.daemon.syncer.sync('alpha', { actor: 'bench' }); // the first sync (adopting the namespace) is not measured
  const small = await syncs(b, SYNCS);
  const f = b.daemon.ctx.costModel.figures;
  const entries1 = f.deviceBytes / f.bytesPerEntry;
  const fetch = b.daemon.ctx.costModel.costOf('alpha').fetchSeconds;
  console.log(`learnt at ${K1} keys: backup ${(f.backupSecondsPerByte * 1e9).toFixed(2)} ns/B, restore ${(f.restoreSecondsPerByte * 1e9).toFixed(2)} ns/B, merge ${(f.mergeSecondsPerByte * 1e9).toFixed(2)} ns/B, ${f.backupsPerSync} backups per sync, device ${(f.deviceBytes / 1e6).toFixed(1)} MB`);

  await fill(direct, K1, K2);
  // The model's prediction for the larger device: its figures at the size scaled by the key count (fetch unchanged:
  // A's device did not grow).
  const predicted = estimateSync(f, entries1 * (K2 / K1), fetch);
  const large = await syncs(b, SYNCS);

  console.log('| B device keys | hold s (measured) | hold s (model) | measured / model | sync s (measured) | sync s (model) | measured / model |');
  console.log('|---|---|---|---|---|---|---|');
  const fitted = estimateSync(f, entries1, fetch);
  const row = (k, m, p) => `| ${k} | ${m.hold.toFixed(2)} | ${p.holdSeconds.toFixed(2)} | ${(m.hold / p.holdSeconds).toFixed(2)} | ${m.sync.toFixed(2)} | ${p.syncSeconds.toFixed(2)} | ${(m.sync / p.syncSeconds).toFixed(2)} |`;
  console.log(row(K1, small, fitted));
  console.log(row(K2, large, predicted));
} finally {
  for (const c of closers) await c.close();
  await lab.close();
}
