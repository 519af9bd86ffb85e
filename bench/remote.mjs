#!/usr/bin/env node
// Remote serving's cost (docs/gateway.md, "Serving from a peer"): a sign served by the site's own gateway ("local":
// client → gateway B → NetHSM) against the same sign through a gateway whose NetHSM is down and that serves it from
// its peer ("remote": client → gateway A → gateway B → NetHSM, mutual TLS between the gateways), side by side,
// interleaved (local, remote, local, remote, …) so both see the same machine load, against one simulator. The
// simulator and the two gateways are separate processes; the clients run here. Everything is on 127.0.0.1: the added
// time is the second gateway's hop alone; between real sites add the link's round trip.
// Usage: npm run build && node bench/remote.mjs [--seconds 3] [--rounds 2] [--c 1,8,32] [--latency 40] [--only 0|40]
// Figures go to docs/benchmarks.md ("Remote serving").
import { fork } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { NetHsmClient } from '../dist/nethsm/client.js';
import { createCa, issueCert } from '../dist/tls/index.js';
import { startSim } from './lib/sim.mjs';
import { closedLoop, nearestRank } from './lib/load.mjs';

const HERE = fileURLToPath(import.meta.url);
const ADMIN = { username: 'admin', password: 'adminPassphrase' };
const NS_ADMIN = { username: 'alpha~admin', password: 'nsAdminPassphrase' };
const OPERATOR = { username: 'alpha~operator', password: 'operatorPassphrase' };

if (process.argv[2] === '--gateway-child') await gatewayChild(JSON.parse(process.argv[3]));
else await main();

/**
 * Site b's gateway (in front of the simulator; it serves both paths), or site a's (its NetHSM unreachable, serving
 * from b: its RemoteServing is told the NetHSM is down and sees b as alpha's primary).
 */
async function gatewayChild({ site, url, fingerprint256, certs, peerUrl }) {
  const { GatewayServer } = await import('../dist/gateway/index.js');
  const { RemoteServing } = await import('../dist/gateway/remote-serving.js');
  const role = { role: site === 'b' ? 'primary' : 'replica', epoch: 1, primarySite: 'b' };
  const common = {
    site,
    tls: { certPem: certs[`${site}Gateway`].certPem, keyPem: certs[`${site}Gateway`].keyPem },
    nethsm: { url, tls: { fingerprint256 } },
    roles: { roleOf: (ns) => (ns === 'alpha' ? role : undefined) },
    peerCaPem: certs.ca,
    primaryGateways: { tls: { caPem: certs.ca }, clientIdentity: { certPem: certs[`${site}Peer`].certPem, keyPem: certs[`${site}Peer`].keyPem } },
  };
  let remoteServing;
  if (peerUrl) {
    const view = { site: 'b', nethsm: 'ok', gateway: true, namespaces: [{ namespace: 'alpha', role: 'primary', epoch: 1, primarySite: 'b', lagSeconds: null }] };
    remoteServing = new RemoteServing({ peers: [{ name: 'b', gatewayUrl: peerUrl }], fetchView: async () => view, maxLagMs: 30_000, recoverAfter: 3, viewTtlMs: 2_000, routing: 'local-first' });
    remoteServing.observeLocal(true, 'unreachable: bench');
  }
  const gw = new GatewayServer({ ...common, ...(remoteServing ? { remoteServing } : {}) });
  await gw.start();
  process.on('message', (m) => {
    if (m === 'close') void gw.close().then(() => process.exit(0));
  });
  process.send({ url: gw.url });
}

async function main() {
  const { values } = benchArgs(import.meta.url, {
    options: {
      seconds: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '2' },
      c: { type: 'string', default: '1,8,32' },
      latency: { type: 'string', default: '40' },
      only: { type: 'string' },
    },
  });
  const SECONDS = Number(values.seconds);
  const ROUNDS = Number(values.rounds);
  const CONCURRENCY = values.c.split(',').map(Number);
  const LATENCIES = values.only === undefined ? [0, Number(values.latency)] : [Number(values.only)];
  const certs = await certificates();
  const children = [];
  const gateways = [];
  const clients = [];
  try {
    console.log(`node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`);
    console.log('simulator, gateways a and b and this client are separate processes on 127.0.0.1');
    console.log(`${SECONDS} s per run, ${ROUNDS} rounds of local, remote per row; ECDSA P-256 sign`);
    console.log('| device latency | in flight | local ops/s | remote ops/s | ratio | local p50/p99 ms | remote p50/p99 ms | added p50 ms |');
    console.log('|---|---|---|---|---|---|---|---|');
    for (const latency of LATENCIES) {
      const sim = await startSim({ latency: latency > 0 ? `sign=${latency}ms` : undefined });
      children.push(sim.child);
      const digest = await prepare(sim);
      const b = await startGateway({ site: 'b', url: sim.url, fingerprint256: sim.fingerprint256, certs });
      // a's NetHSM: nothing listens there; a serves every call from b.
      const a = await startGateway({ site: 'a', url: 'https://127.0.0.1:9', fingerprint256: sim.fingerprint256, certs, peerUrl: b.url });
      gateways.push(a.child, b.child);
      const client = (url) => new NetHsmClient({ url, tls: { caPem: certs.ca }, auth: OPERATOR, connections: Math.max(...CONCURRENCY) });
      const paths = [
        { name: 'local', client: client(b.url) },
        { name: 'remote', client: client(a.url) },
      ];
      clients.push(...paths.map((p) => p.client));
      const call = (c) => c.sign('p256', 'ECDSA', digest);
      for (const c of CONCURRENCY) {
        const [l, r] = await measureRow(paths, c, SECONDS, ROUNDS, call);
        console.log(
          `| ${latency} ms | ${c} | ${l.rate.toFixed(0)} | ${r.rate.toFixed(0)} | ${(r.rate / l.rate).toFixed(2)} | ` +
            `${pct(l.latencies, 50)} / ${pct(l.latencies, 99)} | ${pct(r.latencies, 50)} / ${pct(r.latencies, 99)} | ` +
            `${(nearestRank(r.latencies, 50) - nearestRank(l.latencies, 50)).toFixed(2)} |`,
        );
      }
    }
  } finally {
    for (const c of clients) await c.close().catch(() => {});
    await Promise.all(gateways.map((g) => new Promise((resolve) => g.once('exit', resolve).send('close'))));
    for (const child of children) child.kill('SIGTERM');
  }
}

/** One row: `rounds` × (each path in turn, warmed up first); latencies pooled over the rounds. */
async function measureRow(paths, c, seconds, rounds, call) {
  const out = paths.map(() => ({ latencies: [], count: 0, seconds: 0 }));
  for (let r = 0; r < rounds; r++) {
    for (const [i, p] of paths.entries()) {
      await closedLoop(c, 0.3, () => call(p.client));
      const res = await closedLoop(c, seconds, () => call(p.client));
      out[i].latencies.push(...res.latencies);
      out[i].count += res.count;
      out[i].seconds += res.seconds;
    }
  }
  return out.map((o) => ({ ...o, latencies: Float64Array.from(o.latencies).sort(), rate: o.count / o.seconds }));
}


function pct(sorted, p) {
  return nearestRank(sorted, p).toFixed(1);
}

/** The group CA, each gateway's server certificate and each site's peer certificate (client side of mutual TLS). */
async function certificates() {
  const ca = await createCa({ commonName: 'bench group CA' });
  const out = { ca: ca.certPem };
  for (const site of ['a', 'b']) {
    out[`${site}Gateway`] = await issueCert(ca, { commonName: `${site}-gateway`, usages: ['serverAuth'], ipAddresses: ['127.0.0.1'] });
    out[`${site}Peer`] = await issueCert(ca, { commonName: site, usages: ['serverAuth', 'clientAuth'] });
  }
  return out;
}

function startGateway(options) {
  const child = fork(HERE, ['--gateway-child', JSON.stringify(options)], { stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    const onExit = (code) => reject(new Error(`gateway ${options.site} exited with ${code}`));
    child.once('exit', onExit);
    child.once('message', (m) => {
      child.off('exit', onExit);
      resolve({ child, url: m.url });
    });
  });
}

/** Provisions the simulator with namespace alpha, its operator and a P-256 signing key; returns a digest to sign. */
async function prepare(sim) {
  const { createHash } = await import('node:crypto');
  const client = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
  try {
    await client.provision({ unlockPassphrase: 'unlockPassphrase', adminPassphrase: ADMIN.password, systemTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') });
    const admin = client.withAuth(ADMIN.username, ADMIN.password);
    await admin.createUser({ realName: 'alpha admin', role: 'Administrator', passphrase: NS_ADMIN.password }, NS_ADMIN.username);
    await admin.createNamespace('alpha');
    const nsAdmin = client.withAuth(NS_ADMIN.username, NS_ADMIN.password);
    await nsAdmin.createUser({ realName: 'alpha operator', role: 'Operator', passphrase: OPERATOR.password }, OPERATOR.username);
    await nsAdmin.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'p256' });
    return createHash('sha256').update('bench').digest();
  } finally {
    await client.close();
  }
}
