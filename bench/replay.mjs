#!/usr/bin/env node
// The log replay alone (docs/benchmarks.md, "Busy site: the racing writes re-applied faster"): N imports logged through
// a real gateway and capture with their own envelopes (as while a sync runs), the device restored to a backup taken
// before them, then re-applied from the change log (LogReplay.replay), timed; restored and replayed again per pass.
// Two ways, interleaved per pass:
//   before: the replay 8 keys wide (a client pool of 8: the old fixed width) and a receiving cache that never saw the
//           capture's window key (the NetHSM unwraps it: one decrypt per replay);
//   after:  as wide as a pool of --connections (32, the default of nethsm.connections) and the window key remembered
//           from the capture (no unwrap).
// Usage: npm run build && node bench/replay.mjs [--changes 100] [--passes 5] [--connections 32]
//        [--latency import=20ms,decrypt=50ms]   (simulator latency: a stand-in for an appliance; default none)
// The simulator runs in this process (as in the tests); the figure to read is the ratio after / before of one pass.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { benchArgs } from './lib/args.mjs';
import { generateKeyPairSync } from 'node:crypto';
import { DeviceBarrier } from '../dist/concurrency/barrier.js';
import { GatewayServer } from '../dist/gateway/server.js';
import { httpsCaller } from '../dist/gateway/test-support.js';
import { silentLogger } from '../dist/log.js';
import { NetHsmClient } from '../dist/nethsm/client.js';
import { parseLatencySpec } from '../dist/sim/latency.js';
import { startProvisionedSimulator } from '../dist/sim/fixture.js';
import { StateStore } from '../dist/state/store.js';
import { ChangeCapture } from '../dist/stream/capture.js';
import { UnwrappedKeyCache } from '../dist/stream/envelope-keys.js';
import { LogReplay } from '../dist/stream/log-replay.js';
import { Recipients } from '../dist/stream/recipients.js';
import { TransportKey } from '../dist/stream/transport-key.js';
import { createSelfSignedCertificate } from '../dist/tls/index.js';

const { values } = benchArgs(import.meta.url, {
  options: { changes: { type: 'string', default: '100' }, passes: { type: 'string', default: '5' }, connections: { type: 'string', default: '32' }, latency: { type: 'string' } },
});
const N = Number(values.changes);
const PASSES = Number(values.passes);
const WIDE = Number(values.connections);
for (const [k, v] of [['--changes', N], ['--passes', PASSES], ['--connections', WIDE]]) if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${k} must be a positive integer`);
const latency = values.latency ? parseLatencySpec(values.latency) : {};

const body = () => {
  const d = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }).d;
  return { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: Buffer.from(d, 'base64url').toString('base64') } };
};

const sim = await startProvisionedSimulator({ namespaces: ['beta'], latency });
const dir = mkdtempSync(path.join(tmpdir(), 'nhr-replay-bench-'));
const tls = { fingerprint256: sim.fingerprint256 };
const root = new NetHsmClient({ url: sim.url, tls, connections: WIDE });
const admin = sim.nsUsers.beta.admin;
const pools = { before: new NetHsmClient({ url: sim.url, tls, connections: 8 }), after: new NetHsmClient({ url: sim.url, tls, connections: WIDE }) };
const tk = new TransportKey({ site: 'b', admin: root.withAuth(sim.users.admin.username, sim.users.admin.password), operator: root.withAuth(sim.users.operator.username, sim.users.operator.password), bits: 3072 });
await tk.ensure();
const info = tk.publicInfo();
const store = StateStore.inDir(dir).open();
store.roles.insert({ namespace: 'beta', role: 'primary', epoch: 1, primarySite: 'b' });
const barrier = new DeviceBarrier();
const remembered = new UnwrappedKeyCache();
const capture = new ChangeCapture({
  store,
  log: silentLogger,
  recipients: new Recipients({ store, peers: new Map(), log: silentLogger }),
  primaryEpoch: () => 1,
  committed: () => undefined,
  resolve: async () => 'unknown',
  own: { site: 'b', recipient: () => ({ keyId: info.keyId, publicKeyPem: info.publicKeyPem }), remember: (w, k) => remembered.remember(w, k) },
});
const cert = await createSelfSignedCertificate();
const gw = new GatewayServer({
  site: 'b',
  tls: { certPem: cert.certPem, keyPem: cert.keyPem },
  nethsm: { url: sim.url, tls: { caPem: sim.certPem } },
  roles: { roleOf: (ns) => (ns === 'beta' ? { role: 'primary', epoch: 1, primarySite: 'b' } : undefined) },
  gate: barrier,
  observer: capture,
});
await gw.start();
const via = httpsCaller(gw.url, cert.certPem);

const backup = path.join(dir, 'before.bin');
await root.withAuth(sim.users.backup.username, sim.users.backup.password).backupToFile(backup);
const from = store.changelog.head('beta', 1).seq + 1;
let next = 0;
await Promise.all(
  Array.from({ length: 8 }, async () => {
    while (next < N) {
      const i = next++;
      const r = await via.call('PUT', `/keys/r${i}`, { auth: admin, json: body() });
      if (r.status !== 204) throw new Error(`import r${i}: ${r.status} ${r.body}`);
    }
  }),
);
const replayer = (way) => {
  const cache = way === 'after' ? remembered : new UnwrappedKeyCache();
  const client = pools[way].withAuth(admin.username, admin.password);
  return new LogReplay({
    store,
    site: 'b',
    client: () => client,
    transportKey: () => ({ keyId: info.keyId, fingerprint: info.fingerprint, unwrap: (w) => cache.unwrap(w, (x) => tk.unwrap(x)) }),
  });
};
const rootAdmin = root.withAuth(sim.users.admin.username, sim.users.admin.password);
const nsAdmin = root.withAuth(admin.username, admin.password);
const rows = [];
for (let p = 0; p < PASSES; p++) {
  const row = {};
  for (const way of p % 2 === 0 ? ['before', 'after'] : ['after', 'before']) {
    await rootAdmin.restore(backup, {});
    if ((await nsAdmin.listKeys()).length !== 0) throw new Error('the restore left keys');
    const t0 = performance.now();
    const made = await replayer(way).replay('beta', from);
    row[way] = performance.now() - t0;
    if (made !== N || (await nsAdmin.listKeys()).length !== N) throw new Error(`${way}: replayed ${made} of ${N}`);
  }
  rows.push(row);
  console.log(`pass ${p + 1}: before ${row.before.toFixed(0)} ms (${(row.before / N).toFixed(2)} ms/change), after ${row.after.toFixed(0)} ms (${(row.after / N).toFixed(2)} ms/change), after / before ${(row.after / row.before).toFixed(2)}`);
}
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`\n${N} imports, latency ${values.latency ?? 'none'}, ${PASSES} passes: median before ${med(rows.map((r) => r.before)).toFixed(0)} ms, after ${med(rows.map((r) => r.after)).toFixed(0)} ms, after / before ${med(rows.map((r) => r.after / r.before)).toFixed(2)}`);
await via.close();
await gw.close();
capture.close();
remembered.clear();
await Promise.all([root.close(), pools.before.close(), pools.after.close()]);
store.close();
await sim.close();
rmSync(dir, { recursive: true, force: true });
