import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from './fixture.js';
import { TestHttp } from './test-http.js';

describe('decision order, auth and error bodies', () => {
  let sim: ProvisionedSimulator;
  let http: TestHttp;
  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns1'] });
    http = new TestHttp(sim);
  });
  afterAll(async () => {
    await http.close();
    await sim.close();
  });

  it('answers an unknown route with 404 text, and a wrong method with an empty 405', async () => {
    const r = await http.req('GET', '/nope');
    expect(r.status).toBe(404);
    expect(r.text).toBe('Not found');
    const m = await http.req('DELETE', '/health/state');
    expect(m.status).toBe(405);
    expect(m.text).toBe('');
  });

  it('answers 414 for a URI over 2000 characters', async () => {
    expect((await http.req('GET', `/keys/${'a'.repeat(2100)}`, { auth: sim.users.admin })).status).toBe(414);
  });

  it('challenges without credentials (401, empty body, WWW-Authenticate: Basic)', async () => {
    const r = await http.req('GET', '/keys');
    expect(r.status).toBe(401);
    expect(r.text).toBe('');
    expect(String(r.headers['www-authenticate'])).toMatch(/^Basic/);
    expect(r.headers['date']).toBeDefined();
  });

  it('rate-limits a username for one second after a failed login, even with the right password, per user', async () => {
    const op = sim.users.operator;
    expect((await http.req('GET', '/keys', { auth: { ...op, password: 'wrongPassword1' } })).status).toBe(401);
    const blocked = await http.req('GET', '/keys', { auth: op });
    expect(blocked.status).toBe(429);
    expect(blocked.json()).toEqual({ message: 'Too many requests' });
    expect((await http.req('GET', '/keys', { auth: sim.users.admin })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1050));
    expect((await http.req('GET', '/keys', { auth: op })).status).toBe(200);
  });

  it('refuses the wrong role or a namespaced user on root-only routes with an empty 403', async () => {
    const r = await http.req('GET', '/namespaces', { auth: sim.nsUsers['ns1']!.admin });
    expect(r.status).toBe(403);
    expect(r.text).toBe('');
    expect((await http.req('GET', '/metrics', { auth: sim.users.admin })).status).toBe(403);
    expect((await http.req('POST', '/lock', { auth: sim.nsUsers['ns1']!.admin })).status).toBe(403);
    expect((await http.req('POST', '/random', { auth: sim.users.admin, json: { length: 4 } })).status).toBe(403);
  });

  it('checks the role before Content-Type, Content-Type (415) before body size (413), then Accept (406)', async () => {
    expect((await http.req('PUT', '/users/x1', { auth: sim.users.operator, body: 'x', headers: { 'content-type': 'text/plain' } })).status).toBe(403);
    expect((await http.req('PUT', '/users/x1', { auth: sim.users.admin, body: 'x', headers: { 'content-type': 'text/plain' } })).status).toBe(415);
    expect((await http.req('PUT', '/users/x1', { auth: sim.users.admin, body: '{}' })).status).toBe(415); // no header = octet-stream
    const big = Buffer.alloc(1024 * 1024 + 10, 0x20);
    expect((await http.req('PUT', '/users/x1', { auth: sim.users.admin, body: big, headers: { 'content-type': 'application/json' } })).status).toBe(413);
    expect((await http.req('GET', '/users', { auth: sim.users.admin, headers: { accept: 'text/html' } })).status).toBe(406);
    expect((await http.req('GET', '/users', { auth: sim.users.admin, headers: { accept: 'application/*' } })).status).toBe(200);
  });

  it('rejects unknown JSON properties with "Invalid data for JSON schema" and malformed JSON with "Invalid JSON"', async () => {
    const r = await http.req('PUT', '/users/x2', { auth: sim.users.admin, json: { realName: 'x', role: 'Operator', passphrase: 'longEnoughPass', x: 1 } });
    expect(r.status).toBe(400);
    expect((r.json() as { message: string }).message).toMatch(/^Invalid data for JSON schema: /);
    const m = await http.req('POST', '/random', { auth: sim.users.operator, body: '{"length":', headers: { 'content-type': 'application/json' } });
    expect(m.status).toBe(400);
    expect((m.json() as { message: string }).message).toMatch(/^Invalid JSON: /);
  });

  it('serves random bytes and metrics with string values', async () => {
    const r = (await http.req('POST', '/random', { auth: sim.users.operator, json: { length: 32 } })).json() as { random: string };
    expect(Buffer.from(r.random, 'base64')).toHaveLength(32);
    expect((await http.req('POST', '/random', { auth: sim.users.operator, json: { length: 1025 } })).status).toBe(400);
    const m = (await http.req('GET', '/metrics', { auth: sim.users.metrics })).json() as Record<string, unknown>;
    expect(Object.values(m).every((v) => typeof v === 'string')).toBe(true);
    expect(Number(m['http response total'])).toBeGreaterThan(0);
  });

  it('sets the backup passphrase only with the right current one (c23)', async () => {
    const admin = sim.users.admin;
    expect((await http.req('PUT', '/config/backup-passphrase', { auth: admin, json: { newPassphrase: 'anotherPassphrase', currentPassphrase: 'wrongOne123' } })).status).toBe(403);
    expect((await http.req('PUT', '/config/backup-passphrase', { auth: admin, json: { newPassphrase: 'short', currentPassphrase: sim.backupPassphrase } })).status).toBe(400);
    expect((await http.req('PUT', '/config/backup-passphrase', { auth: admin, json: { newPassphrase: 'anotherPassphrase', currentPassphrase: sim.backupPassphrase } })).status).toBe(204);
    expect((await http.req('PUT', '/config/backup-passphrase', { auth: admin, json: { newPassphrase: sim.backupPassphrase, currentPassphrase: 'anotherPassphrase' } })).status).toBe(204);
  });
});
