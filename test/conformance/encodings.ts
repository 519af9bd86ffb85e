/**
 * Conformance, part 2: what FACTS-system §3–§6 say about JSON parsing, error texts, config encodings, timestamps,
 * unlock and metrics, asserted over raw HTTPS (the project's client would hide the bodies and texts). Runs on a fresh,
 * Unprovisioned device like suite.ts; its steps build on each other.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { connectorFor, parseTrust } from '../../src/nethsm/tls-trust.js';
import type { ConformanceTarget } from './suite.js';

const UNLOCK = 'unlockPassphrase';
const ADMIN = { username: 'admin', password: 'adminPassphrase' };
const METRICS = { username: 'metrics', password: 'metricsPassphrase' };

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  message: string | undefined;
  json(): unknown;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function runEncodingsConformance(name: string, target: () => Promise<ConformanceTarget>): void {
  describe(`NetHSM conformance (JSON, encodings, texts): ${name}`, () => {
    let t: ConformanceTarget;
    let agent: Agent;

    /** One raw request; `body` is sent as given with Content-Type application/json unless `type` says otherwise. */
    async function call(method: string, path: string, opts: { auth?: typeof ADMIN; body?: string; type?: string | null } = {}): Promise<Answer> {
      const headers: Record<string, string> = {};
      if (opts.auth) headers['authorization'] = 'Basic ' + Buffer.from(`${opts.auth.username}:${opts.auth.password}`).toString('base64');
      if (opts.body !== undefined && opts.type !== null) headers['content-type'] = opts.type ?? 'application/json';
      const res = await request(`${t.url}/api/v1${path}`, { method: method as 'GET', headers, body: opts.body, dispatcher: agent });
      const text = await res.body.text();
      let message: string | undefined;
      try {
        message = (JSON.parse(text) as { message?: string }).message;
      } catch {
        message = undefined;
      }
      return { status: res.statusCode, headers: res.headers, text, message, json: () => JSON.parse(text) as unknown };
    }
    const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

    beforeAll(async () => {
      t = await target();
      agent = new Agent({ connect: connectorFor(parseTrust(t.tls), 60_000) });
    });
    afterAll(async () => {
      await agent?.close();
      await t?.close();
    });

    describe('in order', () => {
      it('provision: ppx texts (last declared field wins), timestamp texts, then unquoted keys are accepted', async () => {
        expect((await call('POST', '/provision', { body: '{}' })).message).toBe('Invalid data for JSON schema: Json.provision_req.systemTime.');
        expect((await call('POST', '/provision', { body: '{"x":1}' })).message).toBe('Invalid data for JSON schema: Json.provision_req.');
        expect((await call('POST', '/provision', { body: '' })).message).toBe('Invalid JSON: Blank input data.');
        const short = await call('POST', '/provision', { body: JSON.stringify({ unlockPassphrase: 'short', adminPassphrase: ADMIN.password, systemTime: now() }) });
        expect(short.message).toBe('passphrase unlockPassphrase is not >= 10 and <= 200 characters');
        const offset = await call('POST', '/provision', { body: JSON.stringify({ unlockPassphrase: UNLOCK, adminPassphrase: ADMIN.password, systemTime: '2024-01-01T00:00:00+01:00' }) });
        expect(offset.status).toBe(400);
        expect(offset.message).toBe('Error while parsing timestamp. Offset must be 0.');
        const ok = await call('POST', '/provision', { body: `{ unlockPassphrase: "${UNLOCK}", // comment\n adminPassphrase: "${ADMIN.password}", systemTime: "${now().replace('T', ' ')}" }` });
        expect(ok.status, ok.text).toBe(204);
      });

      it('users: {realName : "x"} is created; single quotes and trailing commas are refused as the parser does', async () => {
        const r = await call('PUT', '/users/scripted', { auth: ADMIN, body: '{realName : "x", role: "Operator", passphrase: "scriptedPassphrase"}' });
        expect(r.status, r.text).toBe(201);
        const quote = await call('PUT', '/users/q1', { auth: ADMIN, body: "{'realName': 'x'}" });
        expect(quote.status).toBe(400);
        expect(quote.message).toMatch(/^Invalid JSON: Line 1, bytes \d+-\d+:\nExpected string or identifier but found ''realName': 'x'}'\.$/);
        const comma = await call('PUT', '/users/q2', { auth: ADMIN, body: '{"realName":"x","role":"Operator","passphrase":"somePassphrase",}' });
        expect(comma.message).toMatch(/^Invalid JSON: Line 1, bytes \d+-\d+:\nExpected string or identifier but found '}'\.$/);
        const role = await call('PUT', '/users/q3', { auth: ADMIN, body: '{"realName":"x","role":"Root","passphrase":"somePassphrase"}' });
        expect(role.message).toBe('Invalid data for JSON schema: Json.role.');
        expect((await call('PUT', '/users/metrics', { auth: ADMIN, body: JSON.stringify({ realName: 'm', role: 'Metrics', passphrase: METRICS.password }) })).status).toBe(201);
      });

      it('network: the default, a round trip with ipv6, and the raw Ipaddr text for a bad netmask', async () => {
        expect((await call('GET', '/config/network', { auth: ADMIN })).json()).toEqual({ ipAddress: '192.168.1.1', netmask: '255.255.255.0', gateway: '0.0.0.0' });
        const body = { ipAddress: '10.0.0.5', netmask: '255.0.0.0', gateway: '10.0.0.1', ipv6: { cidr: 'fc00::5/64', gateway: null } };
        expect((await call('PUT', '/config/network', { auth: ADMIN, body: JSON.stringify(body) })).status).toBe(204);
        expect((await call('GET', '/config/network', { auth: ADMIN })).json()).toEqual(body);
        const bad = await call('PUT', '/config/network', { auth: ADMIN, body: JSON.stringify({ ...body, netmask: '255.0.255.0' }) });
        expect(bad.status).toBe(400);
        expect(bad.message).toBe('Ipaddr: invalid netmask');
        const octet = await call('PUT', '/config/network', { auth: ADMIN, body: JSON.stringify({ ...body, ipAddress: '10.0.0.256' }) });
        expect(octet.message).toBe('Invalid data for JSON schema: Ipaddr: fourth octet out of bounds.');
      });

      it('logging: the default, then app level, an unchecked port and IPv6; quiet and unknown levels refused', async () => {
        expect((await call('GET', '/config/logging', { auth: ADMIN })).json()).toEqual({ ipAddress: '0.0.0.0', port: 514, logLevel: 'info' });
        const put = await call('PUT', '/config/logging', { auth: ADMIN, body: '{"ipAddress":"fc00::1","port":70000,"logLevel":"app"}' });
        expect(put.status, put.text).toBe(204);
        expect((await call('GET', '/config/logging', { auth: ADMIN })).json()).toEqual({ ipAddress: 'fc00::1', port: 70000, logLevel: 'app' });
        const quiet = await call('PUT', '/config/logging', { auth: ADMIN, body: '{"ipAddress":"1.2.3.4","port":514,"logLevel":"quiet"}' });
        expect(quiet.message).toBe('Invalid data for JSON schema: parse error for log level.');
        const loud = await call('PUT', '/config/logging', { auth: ADMIN, body: '{"ipAddress":"1.2.3.4","port":514,"logLevel":"loud"}' });
        expect(loud.message).toBe('Invalid data for JSON schema: "loud": unknown log level.');
      });

      it('time: space separator and -00:00 accepted; GET answers whole seconds with Z', async () => {
        expect((await call('PUT', '/config/time', { auth: ADMIN, body: `{"time":"${now().replace('T', ' ').replace('Z', '-00:00')}"}` })).status).toBe(204);
        expect((await call('GET', '/config/time', { auth: ADMIN })).json()).toEqual({ time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/) });
        const bad = await call('PUT', '/config/time', { auth: ADMIN, body: '{"time":"2030-01-02T03:04"}' });
        expect(bad.message).toBe('Failed to decode timestamp: unexpected end of input at position 15 to 15.');
      });

      it('metrics: the SDK’s 13 keys, every value a string', async () => {
        const m = (await call('GET', '/metrics', { auth: METRICS })).json() as Record<string, unknown>;
        for (const k of ['gc compactions', 'gc major bytes', 'gc major collections', 'gc minor collections', 'http response 200', 'http response 201', 'http response 204', 'http response time', 'http response total', 'kv write', 'log errors', 'log warnings', 'uptime']) {
          expect(m, k).toHaveProperty([k]);
        }
        expect(Object.values(m).every((v) => typeof v === 'string')).toBe(true);
      });

      it('unlock passphrase change and restore: 403/400 texts, 415 without Content-Type', async () => {
        const wrong = await call('PUT', '/config/unlock-passphrase', { auth: ADMIN, body: '{"newPassphrase":"newUnlockPassphrase","currentPassphrase":"notTheRightOne"}' });
        expect(wrong.status).toBe(403);
        expect(wrong.message).toBe('unlock passphrase is incorrect.');
        const short = await call('PUT', '/config/unlock-passphrase', { auth: ADMIN, body: `{"newPassphrase":"short","currentPassphrase":"${UNLOCK}"}` });
        expect(short.message).toBe('passphrase passphrase is not >= 10 and <= 200 characters');
        const restore = await call('POST', '/system/restore', { auth: ADMIN, body: 'x', type: null });
        expect(restore.status).toBe(415);
        expect(restore.text).toBe('');
      });

      it('unlock: non-JSON is 400 and not rate-limited; a wrong passphrase is 403 "not authenticated"', async () => {
        expect((await call('POST', '/lock', { auth: ADMIN })).status).toBe(204);
        const notJson = await call('POST', '/unlock', { body: '{passphrase: oops}' });
        expect(notJson.status).toBe(400);
        expect(notJson.message).toMatch(/^Invalid JSON: /);
        expect((await call('POST', '/unlock', { body: `{passphrase: "${UNLOCK}"}` })).status).toBe(204);
        expect((await call('POST', '/lock', { auth: ADMIN })).status).toBe(204);
        const wrong = await call('POST', '/unlock', { body: '{"passphrase":"wrongUnlockPassphrase"}' });
        expect(wrong.status).toBe(403);
        expect(wrong.message).toBe('not authenticated');
        await sleep(1100);
        expect((await call('POST', '/unlock', { body: `{"passphrase":"${UNLOCK}"}` })).status).toBe(204);
      });
    });
  });
}
