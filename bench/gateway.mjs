#!/usr/bin/env node
// The gateway's cost: sign and decrypt straight to a simulator ("direct") and through a gateway in front of the same
// simulator, interleaved (direct, gateway, direct, gateway, …) so both see the same machine load, at several
// concurrencies, with and without device latency. The simulators (one with latency, one without) and the gateways (one
// per simulator) are separate processes; the clients run here. Per row: ops/s, p50/p99 of each path, the ratio
// gateway/direct, and the gateway process's CPU time per proxied request (process.cpuUsage over its runs / requests).
// Usage: npm run build && node bench/gateway.mjs [--seconds 3] [--rounds 2] [--c 1,8,32,64] [--latency 40] [--pool N]
//   [--only 0|40] [--baseline DIR] [--floor] [--floor-raw] [--prof DIR] [--gw-flags="--flag …"] [--rate R]
//   --pool: the gateway's connections to the NetHSM (default: the gateway's own default); --only: just the rows with
//   that device latency; --baseline: also run the gateway of another checkout (its dist/ built; e.g. the code before a
//   change) as a third path, interleaved with the other two; --floor: also a bare proxy (Node's HTTPS server and an
//   undici pool, no policy, no checks: the least any Node gateway of this shape costs); --floor-raw: two experiments
//   below that floor, "raw client" (Node's HTTPS server, a hand-written HTTP/1.1 client in place of undici) and "raw
//   both" (a TLS server parsing requests by hand too), and "gateway raw upstream" (this gateway, its NetHSM calls sent
//   through that hand-written client): what replacing undici, or both, would save; --prof: write the gateway
//   processes' CPU profiles (node --cpu-prof) into DIR; --gw-flags: Node flags for the gateway under test only (not
//   the baseline or bare proxy; with --baseline . the same code runs with and without them), e.g.
//   "--min-semi-space-size=16"; --rate: calls start at R per second (at most C at once) instead of back to
//   back, so every path sees the same arrivals: for comparing CPU per request (ratios of ops/s then say little).
// Figures go to docs/benchmarks.md ("Gateway").
import { fork } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs } from './lib/args.mjs';
import { NetHsmClient } from '../dist/nethsm/client.js';
import { startSim } from './lib/sim.mjs';
import { closedLoop, nearestRank, pacedLoop } from './lib/load.mjs';

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), '..');
const OPERATOR = { username: 'operator', password: 'operatorPassphrase' };
const ADMIN = { username: 'admin', password: 'adminPassphrase' };
const CLOCK_TICK_US = 10_000; // /proc/<pid>/stat counts in USER_HZ (100 on Linux)

if (process.argv[2] === '--gateway-child') await gatewayChild(JSON.parse(process.argv[3]));
else await main();

// ---- the gateway process -------------------------------------------------------------------------

/** Runs a gateway (from `root`'s dist/) in front of `url`; tells the parent its URL and certificate, then answers CPU queries. */
async function gatewayChild({ root, url, fingerprint256, pool, bare }) {
  const dist = (p) => pathToFileURL(path.join(root, 'dist', p)).href;
  const { GatewayServer } = await import(dist('gateway/index.js'));
  const { createSelfSignedCertificate } = await import(dist('tls/index.js'));
  const cert = await createSelfSignedCertificate();
  const { connectorFor, parseTrust } = await import(dist('nethsm/tls-trust.js'));
  const connect = () => connectorFor(parseTrust({ fingerprint256 }), 30_000);
  if (bare === 'lane') {
    // The gateway itself, its NetHSM calls sent through rawUpstream instead of undici (this process only).
    const { Upstream } = await import(dist('gateway/upstream.js'));
    const { Relay } = await import(dist('gateway/relay.js'));
    const up = rawUpstream(url, connect(), pool ?? 64);
    Upstream.prototype.relay = (r) => laneRelay(up, new Relay(), r);
  }
  const gw = bare === true ? await bareProxy(cert, url, connect(), pool ?? 64)
    : bare === 'raw-client' ? await bareProxy(cert, url, connect(), pool ?? 64, rawUpstream(url, connect(), pool ?? 64))
    : bare === 'raw' ? await rawProxy(cert, rawUpstream(url, connect(), pool ?? 64))
    : new GatewayServer({
    site: 'bench',
    tls: { certPem: cert.certPem, keyPem: cert.keyPem },
    nethsm: { url, tls: { fingerprint256 }, ...(pool ? { connections: pool } : {}) },
    // Nothing replicated: every call is forwarded, as for a namespace that is primary here (crypto is never held).
    roles: { roleOf: () => undefined },
  });
  await gw.start();
  process.on('message', (m) => {
    if (m === 'cpu') process.send({ cpu: process.cpuUsage() });
    if (m === 'close') void gw.close().then(() => process.exit(0));
  });
  process.send({ url: gw.url, caPem: cert.certPem });
}

/**
 * The floor: body read, forwarded with the client's raw headers, answer written as it comes; nothing checked. With
 * `raw` (`--floor-raw`), the upstream is rawUpstream below instead of an undici pool.
 */
async function bareProxy(cert, url, connect, connections, raw) {
  const https = await import('node:https');
  const { Pool } = await import('undici');
  const pool = new Pool(url, { connections, connect });
  const server = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const headers = req.rawHeaders.filter((_, i, a) => !/^(host|connection|keep-alive)$/i.test(a[i - (i % 2)]));
      if (raw) {
        let head = `${req.method} ${req.url} HTTP/1.1\r\nhost: ${raw.host}\r\n`;
        for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
        raw.send(head, chunks.length ? Buffer.concat(chunks) : null, (status, h, body) => res.writeHead(status, h).end(body), () => res.destroy());
        return;
      }
      pool.dispatch(
        { method: req.method, path: req.url, headers, body: chunks.length ? Buffer.concat(chunks) : null },
        {
          onRequestStart: () => {},
          onResponseStart: (_c, status, h) => res.writeHead(status, Object.entries(h).filter(([k]) => k !== 'connection' && k !== 'keep-alive').flat()),
          onResponseData: (_c, chunk) => void res.write(chunk),
          onResponseEnd: () => res.end(),
          onResponseError: () => res.destroy(),
        },
      );
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${server.address().port}`,
    start: async () => {},
    close: async () => {
      server.close();
      server.closeAllConnections();
      await pool.destroy();
    },
  };
}

/**
 * Experiment only (`--floor-raw`): the least an upstream of this shape costs. A keep-alive pool of TLS connections
 * (the same connector and trust check as the gateway's), each request written as one buffer, answers parsed by hand:
 * Content-Length framing only, no chunked bodies, no timeouts, no validation of what the device sends. Not safe for
 * anything but the simulator's sign and decrypt answers.
 */
function rawUpstream(url, connect, connections) {
  const u = new URL(url);
  const idle = [];
  const queue = [];
  let open = 0;
  const onData = function (chunk) {
    const st = this.st;
    st.buf = st.buf === null ? chunk : Buffer.concat([st.buf, chunk]);
    if (st.bodyAt < 0) {
      const end = st.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = st.buf.toString('latin1', 0, end).split('\r\n');
      st.status = Number(lines[0].slice(9, 12));
      st.headers = [];
      st.length = 0;
      for (let i = 1; i < lines.length; i++) {
        const c = lines[i].indexOf(':');
        const name = lines[i].slice(0, c).toLowerCase();
        const value = lines[i].slice(c + 1).trim();
        if (name === 'content-length') st.length = Number(value);
        if (name !== 'connection' && name !== 'keep-alive') st.headers.push(name, value);
      }
      st.bodyAt = end + 4;
    }
    if (st.buf.length < st.bodyAt + st.length) return;
    const body = st.buf.subarray(st.bodyAt, st.bodyAt + st.length);
    const done = st.done;
    st.buf = null;
    st.bodyAt = -1;
    st.done = undefined;
    st.fail = undefined;
    release(this);
    done(st.status, st.headers, body);
  };
  const release = (socket) => {
    const next = queue.shift();
    if (next) write(socket, next);
    else idle.push(socket);
  };
  const write = (socket, r) => {
    socket.st.done = r.done;
    socket.st.fail = r.fail;
    const head = r.body ? `${r.head}content-length: ${r.body.length}\r\n\r\n` : `${r.head}\r\n`;
    socket.write(r.body ? Buffer.concat([Buffer.from(head, 'latin1'), r.body]) : head);
  };
  return {
    host: u.host,
    send(head, body, done, fail) {
      const r = { head: body ? head.replace(/content-length: [^\r]*\r\n/i, '') : head, body, done, fail };
      const socket = idle.pop();
      if (socket) return write(socket, r);
      if (open >= connections) return void queue.push(r);
      open++;
      connect({ hostname: u.hostname, host: u.host, protocol: 'https:', port: u.port }, (err, s) => {
        if (err) {
          open--;
          return fail(err);
        }
        s.setNoDelay(true);
        s.st = { buf: null, bodyAt: -1 };
        s.on('data', onData);
        s.on('close', () => {
          open--;
          const i = idle.indexOf(s);
          if (i >= 0) idle.splice(i, 1);
          s.st.fail?.(new Error('closed'));
        });
        write(s, r);
      });
    },
  };
}

/**
 * Experiment only (`--floor-raw`): a gateway Relay fed by rawUpstream (no pause, resume or abort: the bench needs none).
 */
function laneRelay(up, relay, r) {
  if (r.body !== undefined && !Buffer.isBuffer(r.body)) throw new Error('rawUpstream takes bodies in hand only');
  const controller = { pause() {}, resume() {}, abort() {} };
  relay.onRequestStart(controller, {});
  let head = `${r.method} ${r.path} HTTP/1.1\r\nhost: ${up.host}\r\n`;
  for (let i = 0; i < r.headers.length; i += 2) head += `${r.headers[i]}: ${r.headers[i + 1]}\r\n`;
  const done = (status, flat, body) => {
    const headers = {};
    for (let i = 0; i < flat.length; i += 2) headers[flat[i]] = flat[i + 1];
    relay.onResponseStart(controller, status, headers);
    if (body.length > 0) relay.onResponseData(controller, body);
    relay.onResponseEnd(controller, {});
  };
  up.send(head, r.body ?? null, done, (err) => relay.onResponseError(controller, err));
  return relay;
}

/**
 * Experiment only (`--floor-raw`): no Node HTTP server either. A TLS server parsing request heads by hand
 * (Content-Length bodies only, no checks) in front of rawUpstream: what TLS both ways and the kernel cost alone.
 */
async function rawProxy(cert, up) {
  const tls = await import('node:tls');
  const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, (sock) => {
    sock.setNoDelay(true);
    let buf = null;
    sock.on('data', (chunk) => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const lines = buf.toString('latin1', 0, end).split('\r\n');
        const [method, target] = lines[0].split(' ');
        let head = `${method} ${target} HTTP/1.1\r\nhost: ${up.host}\r\n`;
        let length = 0;
        for (let i = 1; i < lines.length; i++) {
          const c = lines[i].indexOf(':');
          const name = lines[i].slice(0, c).toLowerCase();
          if (name === 'content-length') length = Number(lines[i].slice(c + 1));
          if (name !== 'host' && name !== 'connection' && name !== 'keep-alive' && name !== 'content-length') head += `${lines[i]}\r\n`;
        }
        if (buf.length < end + 4 + length) return;
        const body = length > 0 ? Buffer.from(buf.subarray(end + 4, end + 4 + length)) : null;
        buf = buf.length > end + 4 + length ? buf.subarray(end + 4 + length) : null;
        up.send(head, body, (status, h, answer) => {
          let out = `HTTP/1.1 ${status} X\r\n`;
          for (let i = 0; i < h.length; i += 2) out += `${h[i]}: ${h[i + 1]}\r\n`;
          sock.write(Buffer.concat([Buffer.from(`${out}\r\n`, 'latin1'), answer]));
        }, () => sock.destroy());
        if (buf === null) return;
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${server.address().port}`,
    start: async () => {},
    close: async () => server.close(),
  };
}

// ---- the benchmark -------------------------------------------------------------------------------

async function main() {
  const { values } = benchArgs(import.meta.url, {
    options: {
      seconds: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '2' },
      c: { type: 'string', default: '1,8,32,64' },
      latency: { type: 'string', default: '40' },
      pool: { type: 'string' },
      only: { type: 'string' },
      baseline: { type: 'string' },
      floor: { type: 'boolean', default: false },
      'floor-raw': { type: 'boolean', default: false },
      prof: { type: 'string' },
      'gw-flags': { type: 'string' },
      rate: { type: 'string' },
    },
  });
  const SECONDS = Number(values.seconds);
  const ROUNDS = Number(values.rounds);
  const CONCURRENCY = values.c.split(',').map(Number);
  const LATENCY = Number(values.latency);
  const POOL = values.pool === undefined ? undefined : Number(values.pool);
  const LATENCIES = values.only === undefined ? [LATENCY, 0] : [Number(values.only)];
  const RATE = values.rate === undefined ? undefined : Number(values.rate);
  const BASELINE = values.baseline === undefined ? undefined : path.resolve(values.baseline);
  const children = [];
  const gateways = [];
  const closers = [];
  const clients = (url, tls) => new NetHsmClient({ url, tls, auth: OPERATOR, connections: Math.max(...CONCURRENCY) });
  try {
    const setups = [];
    for (const latency of LATENCIES) {
      const sim = await startSim({ latency: latency > 0 ? `sign=${latency}ms,decrypt=${latency}ms` : undefined });
      children.push(sim.child);
      const keys = await prepare(sim);
      const paths = [{ name: 'direct', client: clients(sim.url, { fingerprint256: sim.fingerprint256 }) }];
      const kinds = [['gateway', ROOT], ...(BASELINE ? [['baseline', BASELINE]] : []), ...(values.floor ? [['bare proxy', ROOT, true]] : []),
        ...(values['floor-raw'] ? [['gateway raw upstream', ROOT, 'lane'], ['raw client', ROOT, 'raw-client'], ['raw both', ROOT, 'raw']] : [])];
      for (const [name, root, bare] of kinds) {
        const gw = await startGateway(root, sim, POOL, values.prof, bare, name === 'gateway' ? values['gw-flags'] : '');
        gateways.push(gw.child);
        paths.push({ name, client: clients(gw.url, { caPem: gw.caPem }), gw: gw.child });
      }
      closers.push(...paths.map((p) => p.client));
      setups.push({ latency, keys, paths, simPid: sim.child.pid });
    }
    // Warm-up (JIT, TLS sessions, pools) on every path before anything is counted.
    for (const s of setups) {
      for (const p of s.paths) {
        await closedLoop(8, 1, () => p.client.sign('p256', 'ECDSA', s.keys.digest));
        await closedLoop(8, 1, () => p.client.decrypt('aes', 'AES_CBC', s.keys.encrypted, s.keys.iv));
      }
    }
    console.log(`node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`);
    console.log('simulators, gateways and this client are separate processes on 127.0.0.1');
    if (RATE !== undefined) console.log(`paced: ${RATE} calls/s per run, at most C in flight`);
    console.log(`${SECONDS} s per run, ${ROUNDS} rounds of ${setups[0].paths.map((p) => p.name).join(', ')} per row; gateway pool: ${POOL ?? 'default'}${values['gw-flags'] ? `; gateway flags: ${values['gw-flags']}` : ''}`);
    console.log(`load average at start: ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
    const others = setups[0].paths.slice(2).map((p) => p.name);
    const extra = others.map((n) => ` ${n} ops/s | ${n} ratio | ${n} CPU µs/req |`).join('');
    console.log(`| op | device latency | in flight | direct ops/s | gateway ops/s | ratio | direct p50/p99 ms | gateway p50/p99 ms | gateway CPU µs/req |${extra}`);
    console.log(`|---|---|---|---|---|---|---|---|---|${'---|---|---|'.repeat(others.length)}`);
    const totals = new Map(); // path name → { us, requests } (CPU of the gateway process, the simulator, this client)
    const add = (key, us, requests) => {
      const t = totals.get(key) ?? { us: 0, requests: 0 };
      t.us += us;
      t.requests += requests;
      totals.set(key, t);
    };
    for (const s of setups) {
      for (const op of ['sign', 'decrypt']) {
        const call = op === 'sign' ? (client) => client.sign('p256', 'ECDSA', s.keys.digest) : (client) => client.decrypt('aes', 'AES_CBC', s.keys.encrypted, s.keys.iv);
        for (const c of CONCURRENCY) {
          const row = await measureRow(s, c, SECONDS, ROUNDS, call, RATE);
          const [d, g, ...rest] = row;
          for (const r of row) {
            if (r.gwUs !== undefined) add(`${r.name} process`, r.gwUs, r.count);
            add(`simulator, ${r.name} runs`, r.simUs, r.count);
            add(`client, ${r.name} runs`, r.clientUs, r.count);
          }
          const base = rest.map((b) => ` ${b.rate.toFixed(0)} | ${(b.rate / d.rate).toFixed(2)} | ${(b.gwUs / b.count).toFixed(0)} |`).join('');
          console.log(
            `| ${op} | ${s.latency} ms | ${c} | ${d.rate.toFixed(0)} | ${g.rate.toFixed(0)} | ${(g.rate / d.rate).toFixed(2)} | ` +
              `${fmt(d.latencies, 50)} / ${fmt(d.latencies, 99)} | ${fmt(g.latencies, 50)} / ${fmt(g.latencies, 99)} | ${(g.gwUs / g.count).toFixed(0)} |${base}`,
          );
        }
      }
    }
    console.log(`load average at end: ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
    console.log('CPU per request over all runs (µs):');
    for (const [key, t] of totals) console.log(`  ${key}: ${(t.us / t.requests).toFixed(0)} (${t.requests} requests)`);
  } finally {
    for (const c of closers) await c.close().catch(() => {});
    // Gateways end themselves (so a CPU profile is written), then the simulators.
    await Promise.all(gateways.map((g) => new Promise((resolve) => g.once('exit', resolve).send('close'))));
    for (const child of children) child.kill('SIGTERM');
  }
}

/** One row: `rounds` × (each path in turn, warmed up first); latencies pooled over the rounds. */
async function measureRow(s, c, seconds, rounds, call, rate) {
  const out = s.paths.map((p) => ({ name: p.name, latencies: [], count: 0, seconds: 0, gwUs: p.gw ? 0 : undefined, simUs: 0, clientUs: 0 }));
  for (let r = 0; r < rounds; r++) {
    for (const [i, p] of s.paths.entries()) {
      await warm(p.client, c, call);
      const gw0 = p.gw ? await cpuOf(p.gw) : undefined;
      const sim0 = simCpuUs(s.simPid);
      const client0 = process.cpuUsage();
      const res = rate === undefined ? await closedLoop(c, seconds, () => call(p.client)) : await pacedLoop(c, seconds, rate, () => call(p.client));
      const client1 = process.cpuUsage(client0);
      const o = out[i];
      o.simUs += simCpuUs(s.simPid) - sim0;
      o.clientUs += client1.user + client1.system;
      if (gw0) {
        const gw1 = await cpuOf(p.gw);
        o.gwUs += gw1.user - gw0.user + gw1.system - gw0.system;
      }
      o.latencies.push(...res.latencies);
      o.count += res.count;
      o.seconds += res.seconds;
    }
  }
  return out.map((o) => ({ ...o, latencies: Float64Array.from(o.latencies).sort(), rate: o.count / o.seconds }));
}

/** Enough calls at concurrency `c` that the pools have their connections before the clock runs. */
async function warm(client, c, call) {
  await Promise.all(
    Array.from({ length: c }, async () => {
      for (let i = 0; i < 3; i++) await call(client);
    }),
  );
}

function fmt(sorted, p) {
  return nearestRank(sorted, p).toFixed(1);
}

function cpuOf(child) {
  return new Promise((resolve) => {
    const on = (m) => {
      if (m.cpu) {
        child.off('message', on);
        resolve(m.cpu);
      }
    };
    child.on('message', on);
    child.send('cpu');
  });
}

/** User + system CPU of another process, in µs (Linux /proc; 10 ms resolution, fine over seconds-long runs). */
function simCpuUs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * CLOCK_TICK_US;
}

// ---- processes and fixtures ------------------------------------------------------------------------

/** A gateway process (code from `root`) in front of `sim`. */
function startGateway(root, sim, pool, profDir, bare = false, flags = '') {
  const execArgv = [...(profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []), ...flags.split(/\s+/).filter(Boolean)];
  const args = ['--gateway-child', JSON.stringify({ root, url: sim.url, fingerprint256: sim.fingerprint256, pool, bare })];
  const child = fork(HERE, args, { stdio: 'inherit', execArgv });
  return new Promise((resolve, reject) => {
    const onExit = (code) => reject(new Error(`gateway exited with ${code}`));
    child.once('exit', onExit);
    child.once('message', (m) => {
      child.off('exit', onExit);
      resolve({ child, url: m.url, caPem: m.caPem });
    });
  });
}

/** Provisions the simulator, adds the operator, a P-256 signing key and an AES-256 key; returns the call arguments. */
async function prepare(sim) {
  const client = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
  try {
    await client.provision({ unlockPassphrase: 'unlockPassphrase', adminPassphrase: ADMIN.password, systemTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') });
    const admin = client.withAuth(ADMIN.username, ADMIN.password);
    await admin.createUser({ realName: 'bench operator', role: 'Operator', passphrase: OPERATOR.password }, OPERATOR.username);
    await admin.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'p256' });
    const aes = { type: 'Generic', mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'], private: { data: randomBytes(32).toString('base64') } };
    await admin.importKey(aes, 'aes');
    const op = client.withAuth(OPERATOR.username, OPERATOR.password);
    const { encrypted, iv } = await op.encrypt('aes', 'AES_CBC', randomBytes(32));
    return { digest: createHash('sha256').update('bench').digest(), encrypted, iv };
  } finally {
    await client.close();
  }
}
