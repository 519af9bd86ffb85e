/**
 * The client-visible firmware behaviours of FACTS-system §3, §5 and §6, over HTTPS against the simulator.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startProvisionedSimulator, type ProvisionedSimulator } from './fixture.js';
import { startSimulator } from './server.js';
import { TestHttp } from './test-http.js';
import { TEST_KDF } from './crypto.js';

const pastRateLimit = (): Promise<void> => new Promise((r) => setTimeout(r, 1100));
const message = (r: { json(): unknown }): string => (r.json() as { message: string }).message;

describe('simulator fidelity: JSON, config, unlock, restore, headers', () => {
  let sim: ProvisionedSimulator;
  let http: TestHttp;
  beforeAll(async () => {
    sim = await startProvisionedSimulator();
    http = new TestHttp(sim);
  });
  afterAll(async () => {
    await http.close();
    await sim.close();
  });
  const raw = (method: string, p: string, body: string, auth = sim.users.admin) =>
    http.req(method, p, { auth, body, headers: { 'content-type': 'application/json' } });

  it('accepts the vendor scripts’ unquoted keys and comments ({realName : "x"}) where the firmware does', async () => {
    const r = await raw('PUT', '/users/scripted', '{realName : "x", role: "Operator", /* c */ passphrase: "scriptedPassphrase"}');
    expect(r.status, r.text).toBe(201);
    expect((await http.req('GET', '/users/scripted', { auth: sim.users.admin })).json()).toEqual({ realName: 'x', role: 'Operator' });
    const k = await raw('POST', '/keys/generate', '{ type: "Curve25519", mechanisms: ["EdDSA_Signature"], id: "unq" }');
    expect(k.status, k.text).toBe(201);
  });

  it('refuses single quotes and trailing commas with the firmware’s Yojson text', async () => {
    const q = await raw('PUT', '/users/q1', "{'realName': 'x'}");
    expect(q.status).toBe(400);
    expect(message(q)).toBe("Invalid JSON: Line 1, bytes 1-17:\nExpected string or identifier but found ''realName': 'x'}'.");
    const c = await raw('PUT', '/users/q2', '{"realName":"x","role":"Operator","passphrase":"somePassphrase",}');
    expect(message(c)).toBe("Invalid JSON: Line 1, bytes 64-65:\nExpected string or identifier but found '}'.");
    const blank = await raw('PUT', '/users/q3', '');
    expect(message(blank)).toBe('Invalid JSON: Blank input data.');
  });

  it('names the same field as the firmware when several are bad, and answers post-decode checks unprefixed', async () => {
    const r = await raw('PUT', '/users/q4', '{"role":"Nobody"}');
    expect(message(r)).toBe('Invalid data for JSON schema: Json.user_req.passphrase.');
    const unknown = await raw('PUT', '/users/q5', '{"realName":"x","colour":"red","role":5}');
    expect(message(unknown)).toBe('Invalid data for JSON schema: Json.user_req.');
    const short = await raw('PUT', '/users/q6', '{"realName":"x","role":"Operator","passphrase":"short"}');
    expect(message(short)).toBe('passphrase passphrase is not >= 10 and <= 200 characters');
    const random = await raw('POST', '/random', '{"length":2048.0}', sim.users.operator);
    expect(message(random)).toBe('Invalid data for JSON schema: Json.random_req.length.');
  });

  it('§6.2 unlock passphrase change: wrong current → 403 "unlock passphrase is incorrect.", short new → 400', async () => {
    const wrong = await http.req('PUT', '/config/unlock-passphrase', { auth: sim.users.admin, json: { newPassphrase: 'newUnlockPassphrase', currentPassphrase: 'notTheRightOne' } });
    expect(wrong.status).toBe(403);
    expect(message(wrong)).toBe('unlock passphrase is incorrect.');
    const short = await http.req('PUT', '/config/unlock-passphrase', { auth: sim.users.admin, json: { newPassphrase: 'short', currentPassphrase: sim.unlockPassphrase } });
    expect(short.status).toBe(400);
    expect(message(short)).toBe('passphrase passphrase is not >= 10 and <= 200 characters');
  });

  it('§6.3 logging: app level, any integer port and an IPv6 address are accepted and read back; all keys required', async () => {
    expect((await http.req('GET', '/config/logging', { auth: sim.users.admin })).json()).toEqual({ ipAddress: '0.0.0.0', port: 514, logLevel: 'info' });
    const put = await http.req('PUT', '/config/logging', { auth: sim.users.admin, json: { ipAddress: 'FC00:0::1', port: 70000, logLevel: 'app' } });
    expect(put.status, put.text).toBe(204);
    expect((await http.req('GET', '/config/logging', { auth: sim.users.admin })).json()).toEqual({ ipAddress: 'fc00::1', port: 70000, logLevel: 'app' });
    const quiet = await http.req('PUT', '/config/logging', { auth: sim.users.admin, json: { ipAddress: '1.2.3.4', port: 514, logLevel: 'quiet' } });
    expect(message(quiet)).toBe('Invalid data for JSON schema: parse error for log level.');
    const missing = await http.req('PUT', '/config/logging', { auth: sim.users.admin, json: { port: 514, logLevel: 'info' } });
    expect(message(missing)).toBe('Invalid data for JSON schema: Json.log.ipAddress.');
  });

  it('network: stored in the firmware encoding, answered in the API form; a bad netmask answers the raw Ipaddr text', async () => {
    expect((await http.req('GET', '/config/network', { auth: sim.users.admin })).json()).toEqual({ ipAddress: '192.168.1.1', netmask: '255.255.255.0', gateway: '0.0.0.0' });
    const body = { ipAddress: '10.0.0.5', netmask: '255.0.0.0', gateway: '10.0.0.1', ipv6: { cidr: 'fc00:0::5/64', gateway: null } };
    expect((await http.req('PUT', '/config/network', { auth: sim.users.admin, json: body })).status).toBe(204);
    expect((await http.req('GET', '/config/network', { auth: sim.users.admin })).json()).toEqual({ ...body, ipv6: { cidr: 'fc00::5/64', gateway: null } });
    const bad = await http.req('PUT', '/config/network', { auth: sim.users.admin, json: { ...body, netmask: '255.0.255.0' } });
    expect(bad.status).toBe(400);
    expect(message(bad)).toBe('Ipaddr: invalid netmask');
  });

  it('§6.4 timestamps: space separator, -00:00 and fractions accepted; other offsets and bad syntax refused with the firmware text', async () => {
    for (const time of ['2030-01-02 03:04:05-00:00', '2030-01-02t03:04:05.123456+00:00']) {
      const r = await http.req('PUT', '/config/time', { auth: sim.users.admin, json: { time } });
      expect(r.status, `${time}: ${r.text}`).toBe(204);
      expect((await http.req('GET', '/config/time', { auth: sim.users.admin })).json()).toEqual({ time: expect.stringMatching(/^2030-01-02T03:04:(0[4-9]|1\d)Z$/) });
    }
    const offset = await http.req('PUT', '/config/time', { auth: sim.users.admin, json: { time: '2030-01-02T03:04:05+01:00' } });
    expect(message(offset)).toBe('Error while parsing timestamp. Offset must be 0.');
    const syntax = await http.req('PUT', '/config/time', { auth: sim.users.admin, json: { time: '2030-01-02T03:04' } });
    expect(message(syntax)).toBe('Failed to decode timestamp: unexpected end of input at position 15 to 15.');
  });

  it('§6.5 a restore without Content-Type is 415 with an empty body', async () => {
    const r = await http.req('POST', '/system/restore', { auth: sim.users.admin, body: 'x' });
    expect(r.status).toBe(415);
    expect(r.text).toBe('');
  });

  it('§6.7 a PEM endpoint refuses Accept: application/json (406); a key CSR refuses an empty commonName', async () => {
    expect((await http.req('GET', '/config/tls/cert.pem', { auth: sim.users.admin, headers: { accept: 'application/json' } })).status).toBe(406);
    const csr = await http.req('POST', '/keys/unq/csr.pem', { auth: sim.users.admin, json: { commonName: '' } });
    expect(csr.status).toBe(400);
  });

  it('§6.8 ETags: /system/info is the MD5 of its body; config GETs carry one and answer 304 to If-None-Match', async () => {
    const info = await http.req('GET', '/system/info', { auth: sim.users.admin });
    expect(info.headers['etag']).toBe(`"${createHash('md5').update(info.body).digest('hex')}"`);
    const again = await http.req('GET', '/system/info', { auth: sim.users.admin, headers: { 'if-none-match': String(info.headers['etag']) } });
    expect(again.status).toBe(304);
    const net = await http.req('GET', '/config/network', { auth: sim.users.admin });
    const tag = String(net.headers['etag']);
    expect(tag).toMatch(/^"[0-9a-f]{64}"$/);
    expect((await http.req('GET', '/config/network', { auth: sim.users.admin, headers: { 'if-none-match': tag } })).status).toBe(304);
  });

  it('§6.9 bodiless 204s of POST/PUT carry Content-Type: application/json', async () => {
    const r = await http.req('PUT', '/config/unattended-boot', { auth: sim.users.admin, json: { status: 'off' } });
    expect(r.status).toBe(204);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers['cache-control']).toBe('no-cache');
  });

  it('§6.1 unlock: wrong → 403 "not authenticated"; non-JSON → 400 and not rate-limited; short → 400 and rate-limited', async () => {
    expect((await http.req('POST', '/lock', { auth: sim.users.admin })).status).toBe(204);
    const wrong = await http.req('POST', '/unlock', { json: { passphrase: 'wrongUnlockPassphrase' } });
    expect(wrong.status).toBe(403);
    expect(message(wrong)).toBe('not authenticated');
    await pastRateLimit();
    const notJson = await http.req('POST', '/unlock', { body: '{passphrase: oops}' });
    expect(notJson.status).toBe(400);
    expect(message(notJson)).toMatch(/^Invalid JSON: Line 1, bytes 13-18:\nInvalid token 'oops}'\.$/);
    const short = await http.req('POST', '/unlock', { json: { passphrase: 'short' } });
    expect(message(short)).toBe('passphrase passphrase is not >= 10 and <= 200 characters');
    expect((await http.req('POST', '/unlock', { json: { passphrase: sim.unlockPassphrase } })).status).toBe(429);
    await pastRateLimit();
    expect((await http.req('POST', '/unlock', { body: `{passphrase: "${sim.unlockPassphrase}"}` })).status).toBe(204);
  });

  it('§3 /metrics: the firmware key set, all values strings of the firmware forms', async () => {
    await http.req('POST', '/keys/unq/sign', { auth: sim.users.operator, json: { mode: 'EdDSA', message: Buffer.from('m').toString('base64') } });
    const m = (await http.req('GET', '/metrics', { auth: sim.users.metrics })).json() as Record<string, string>;
    for (const k of ['gc compactions', 'gc major bytes', 'gc major collections', 'gc minor collections', 'http response 200', 'http response 201', 'http response 204', 'http response time', 'http response total', 'kv write', 'log errors', 'log warnings', 'uptime']) {
      expect(m, k).toHaveProperty([k]);
    }
    expect(Object.values(m).every((v) => typeof v === 'string')).toBe(true);
    for (const k of ['generate', 'sign', 'decrypt', 'encrypt']) expect(m[k], k).toMatch(/^\d+$/);
    expect(Number(m['sign'])).toBeGreaterThanOrEqual(1);
    expect(m['http response time']).toMatch(/^\d+(\.\d+)?(e[-+]\d\d)?$/);
    expect(m['http response 406']).toBe('1');
  });
});

describe('simulator fidelity: restore and failures on a fresh device', () => {
  it('§6.6 a full restore ends Locked, and every further restore of the same file is 412', async () => {
    const src = await startProvisionedSimulator();
    const srcHttp = new TestHttp(src);
    const file = await srcHttp.backup(src.users.backup);
    await srcHttp.close();
    await src.close();
    const target = await startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF });
    const http = new TestHttp(target);
    try {
      const first = await http.restore(file, { backupPassphrase: src.backupPassphrase });
      expect(first.status, first.text).toBe(204);
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
      for (let i = 0; i < 9; i++) {
        const again = await http.restore(file, { backupPassphrase: src.backupPassphrase }, src.users.admin);
        expect(again.status).toBe(412);
        expect(again.json()).toEqual({ message: 'Service not available' });
      }
    } finally {
      await http.close();
      await target.close();
    }
  });

  it('§6.10 an unexpected failure inside a handler is 503 with the exception text as plain text', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nhr-sim-503-'));
    try {
      const a = await startProvisionedSimulator({ dataDir: dir });
      const ah = new TestHttp(a);
      expect((await ah.req('POST', '/keys/generate', { auth: a.users.admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'k' } })).status).toBe(201);
      await ah.close();
      await a.close();
      // A store entry that no longer opens (corrupted on disk): the firmware's handler raises, the dispatcher answers 503.
      const file = path.join(dir, 'kv.json');
      const kv = JSON.parse(await readFile(file, 'utf8')) as Record<string, string>;
      kv['/key/k'] = Buffer.alloc(64, 7).toString('base64');
      await writeFile(file, JSON.stringify(kv));
      const b = await startSimulator({ dataDir: dir, unlockScrypt: TEST_KDF, backupScrypt: TEST_KDF });
      const bh = new TestHttp(b);
      try {
        expect((await bh.req('POST', '/unlock', { json: { passphrase: a.unlockPassphrase } })).status).toBe(204);
        const r = await bh.req('GET', '/keys/k', { auth: a.users.admin });
        expect(r.status).toBe(503);
        expect(r.headers['content-type']).toBe('text/plain');
        expect(r.text.length).toBeGreaterThan(0);
        const m = (await bh.req('GET', '/metrics', { auth: a.users.metrics })).json() as Record<string, string>;
        expect(m['log errors']).toBe('1');
        expect(m['http response 503']).toBe('1');
      } finally {
        await bh.close();
        await b.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
