#!/usr/bin/env node
// Hot key and the exclusive hold (issue 11, lock order: docs/concurrency.md): how long an exclusive hold (a
// merge-restore) requested right after the device was busy waits for a gateway's writes to ONE key to drain. In one
// process: an in-process simulator with one device slot (`deviceSlots: 1`: operations queue FIFO, as on an appliance)
// and `--label-ms` per key update, a GatewayServer with the real ChangeCapture (namespace `alpha` primary here), and a
// pacer writing `PUT /keys/probe/label` at `--rate` per second through the gateway. Each round: a `sign` of `--busy-ms`
// under a read-only shared hold occupies the device (a base backup: the hot key's writes queue meanwhile), then an
// exclusive hold of `--hold-ms` is requested at once. Printed per round: drain = request to start of the exclusive
// hold, and the writes committed meanwhile; at the end the hot key's write latency (p50, max) and failed writes.
// With --baseline DIR the same runs with another checkout's dist/ (e.g. main), interleaved run by run.
// Usage: npm run build && node bench/hot-key.mjs [--rounds 6] [--runs 2] [--rate 50] [--label-ms 8] [--busy-ms 600] [--hold-ms 200] [--baseline DIR]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { Agent, request } from 'undici';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = benchArgs(import.meta.url, {
  options: {
    rounds: { type: 'string', default: '6' },
    runs: { type: 'string', default: '2' },
    rate: { type: 'string', default: '50' },
    'label-ms': { type: 'string', default: '8' },
    'busy-ms': { type: 'string', default: '600' },
    'hold-ms': { type: 'string', default: '200' },
    baseline: { type: 'string' },
  },
});
const num = (name) => {
  const v = Number(values[name]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number, got "${values[name]}"`);
  return v;
};
const [ROUNDS, RUNS, RATE, LABEL_MS, BUSY_MS, HOLD_MS] = ['rounds', 'runs', 'rate', 'label-ms', 'busy-ms', 'hold-ms'].map(num);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function load(root) {
  const dist = (p) => import(pathToFileURL(path.join(root, 'dist', p)).href);
  return {
    ...(await dist('sim/fixture.js')),
    ...(await dist('state/store.js')),
    ...(await dist('stream/capture.js')),
    ...(await dist('stream/recipients.js')),
    ...(await dist('gateway/server.js')),
    ...(await dist('log.js')),
    ...(await dist('tls/index.js')),
  };
}

async function run(m) {
  const sim = await m.startProvisionedSimulator({ namespaces: ['alpha'], latency: { 'key-update': LABEL_MS, sign: BUSY_MS }, deviceSlots: 1 });
  const dir = mkdtempSync(path.join(tmpdir(), 'nhr-hotkey-bench-'));
  const store = m.StateStore.inDir(dir).open();
  store.roles.insert({ namespace: 'alpha', role: 'primary', epoch: 1, primarySite: 'a' });
  const capture = new m.ChangeCapture({
    store,
    log: m.silentLogger,
    recipients: new m.Recipients({ store, peers: new Map(), log: m.silentLogger }),
    primaryEpoch: () => 1,
    committed: () => undefined,
    resolve: async () => 'unknown',
  });
  const cert = await m.createSelfSignedCertificate();
  const gw = new m.GatewayServer({
    site: 'a',
    tls: { certPem: cert.certPem, keyPem: cert.keyPem },
    nethsm: { url: sim.url, tls: { caPem: sim.certPem } },
    roles: { roleOf: (ns) => (ns === 'alpha' ? { role: 'primary', epoch: 1, primarySite: 'a' } : undefined) },
    observer: capture,
  });
  await gw.start();
  const { admin, operator } = sim.nsUsers.alpha;
  const toGw = new Agent({ connect: { ca: cert.certPem }, connections: 512 });
  const toSim = new Agent({ connect: { ca: sim.certPem } });
  const call = async (base, agent, method, p, cred, json) => {
    const res = await request(`${base}/api/v1${p}`, {
      method,
      dispatcher: agent,
      headers: { authorization: 'Basic ' + Buffer.from(`${cred.username}:${cred.password}`).toString('base64'), 'content-type': 'application/json' },
      body: JSON.stringify(json),
    });
    await res.body.text();
    return res.statusCode;
  };
  try {
    for (const id of ['probe', 'signer']) {
      const s = await call(sim.url, toSim, 'POST', '/keys/generate', admin, { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id });
      if (s !== 201) throw new Error(`generate ${id}: ${s}`);
    }
    const committed = () => store.changelog.head('alpha', 1).seq;
    const writes = [];
    let stop = false;
    const pacer = (async () => {
      const t0 = performance.now();
      const all = [];
      for (let i = 0; !stop; i++) {
        const wait = t0 + (i * 1000) / RATE - performance.now();
        if (wait > 0) await sleep(wait);
        const s0 = performance.now();
        const done = (status) => writes.push({ ms: performance.now() - s0, status });
        all.push(call(gw.url, toGw, 'PUT', '/keys/probe/label', admin, { label: `p${i % 1000}` }).then(done, () => done(0)));
      }
      await Promise.all(all);
    })();
    const rounds = [];
    await sleep(1000);
    for (let r = 0; r < ROUNDS; r++) {
      await gw.gate.shared(() => call(sim.url, toSim, 'POST', '/keys/signer/sign', operator, { mode: 'EdDSA', message: 'bQ==' }), { readOnly: true });
      const asked = performance.now();
      const before = committed();
      let started = 0;
      let drained = 0;
      await gw.gate.exclusive([], async () => {
        started = performance.now();
        drained = committed() - before;
        await sleep(HOLD_MS);
      });
      rounds.push({ drainMs: Math.round(started - asked), drained });
      await sleep(1500);
    }
    stop = true;
    await pacer;
    const lat = writes.map((w) => w.ms).sort((a, b) => a - b);
    return { rounds, writes: writes.length, failed: writes.filter((w) => w.status !== 204).length, p50: lat[lat.length >> 1], max: lat.at(-1) };
  } finally {
    await Promise.all([toGw.close(), toSim.close()]);
    await gw.close();
    capture.close();
    store.close();
    await sim.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const sides = [{ name: 'this', m: await load(ROOT) }];
if (values.baseline) sides.unshift({ name: 'base', m: await load(path.resolve(values.baseline)) });
console.log(`hot key: ${RATE} label writes/s to one key, ${LABEL_MS} ms each at a one-slot device; per round the device busy ${BUSY_MS} ms, then an exclusive hold of ${HOLD_MS} ms`);
console.log('| side | run | drain ms per round (writes drained) | hot-key write p50 / max ms | writes | failed |');
console.log('|---|---|---|---|---|---|');
for (let i = 1; i <= RUNS; i++) {
  for (const side of sides) {
    const r = await run(side.m);
    const per = r.rounds.map((x) => `${x.drainMs} (${x.drained})`).join(', ');
    console.log(`| ${side.name} | ${i} | ${per} | ${Math.round(r.p50)} / ${Math.round(r.max)} | ${r.writes} | ${r.failed} |`);
  }
}
