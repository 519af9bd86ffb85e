import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startSimulator, type RunningSimulator } from './server.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from './fixture.js';
import { TEST_KDF } from './crypto.js';
import { TestHttp } from './test-http.js';

const NOW = '2024-01-01T00:00:00Z';

describe('states, provision, unlock, lock', () => {
  let sim: RunningSimulator;
  let http: TestHttp;
  beforeAll(async () => {
    sim = await startSimulator({ unlockScrypt: TEST_KDF, backupScrypt: TEST_KDF });
    http = new TestHttp(sim);
  });
  afterAll(async () => {
    await http.close();
    await sim.close();
  });

  it('starts Unprovisioned, answers info and health without credentials', async () => {
    expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Unprovisioned' });
    expect((await http.req('GET', '/info')).json()).toEqual({ vendor: 'Nitrokey GmbH', product: 'NetHSM' });
    expect((await http.req('GET', '/health/alive')).status).toBe(200);
    const ready = await http.req('GET', '/health/ready');
    expect(ready.status).toBe(412);
    expect(ready.json()).toEqual({ message: 'Service not available' });
  });

  it('answers 412 for a wrong state before anything else, even without credentials', async () => {
    const r = await http.req('GET', '/keys');
    expect(r.status).toBe(412);
    expect(r.json()).toEqual({ message: 'Service not available' });
    expect((await http.req('POST', '/unlock', { json: { passphrase: 'whatever1234' } })).status).toBe(412);
  });

  it('refuses provision bodies with unknown fields, short passphrases or a non-zero offset', async () => {
    const good = { unlockPassphrase: 'unlockPassphrase', adminPassphrase: 'adminPassphrase', systemTime: NOW };
    const extra = await http.req('POST', '/provision', { json: { ...good, extra: 1 } });
    expect(extra.status).toBe(400);
    expect((extra.json() as { message: string }).message).toMatch(/^Invalid data for JSON schema: /);
    expect((await http.req('POST', '/provision', { json: { ...good, adminPassphrase: 'short' } })).status).toBe(400);
    expect((await http.req('POST', '/provision', { json: { ...good, systemTime: '2024-01-01T00:00:00+01:00' } })).status).toBe(400);
    const bad = await http.req('POST', '/provision', { body: '{not json', headers: { 'content-type': 'application/json' } });
    expect(bad.status).toBe(400);
    expect((bad.json() as { message: string }).message).toMatch(/^Invalid JSON: /);
    expect((await http.req('POST', '/provision', { body: JSON.stringify(good) })).status).toBe(415);
    expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Unprovisioned' });
  });

  it('provisions to Operational, locks, and unlocks only with the right passphrase (rate-limited per IP)', async () => {
    const admin = { username: 'admin', password: 'adminPassphrase' };
    expect((await http.req('POST', '/provision', { json: { unlockPassphrase: 'unlockPassphrase', adminPassphrase: admin.password, systemTime: NOW } })).status).toBe(204);
    expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Operational' });
    expect((await http.req('POST', '/provision', { json: {} })).status).toBe(412);
    expect((await http.req('GET', '/health/ready')).status).toBe(200);
    expect((await http.req('POST', '/lock')).status).toBe(401);
    expect((await http.req('POST', '/lock', { auth: admin })).status).toBe(204);
    expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
    const wrong = await http.req('POST', '/unlock', { json: { passphrase: 'wrongPassphrase' } });
    expect(wrong.status).toBe(403);
    const limited = await http.req('POST', '/unlock', { json: { passphrase: 'unlockPassphrase' } });
    expect(limited.status).toBe(429);
    expect(limited.json()).toEqual({ message: 'Service unavailable: too many requests' });
    await new Promise((r) => setTimeout(r, 1050));
    expect((await http.req('POST', '/unlock', { json: { passphrase: 'unlockPassphrase' } })).status).toBe(204);
    expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Operational' });
  });
});

describe('provisioned fixture', () => {
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

  it('has the usual users, a namespace and a backup passphrase', async () => {
    const users = (await http.req('GET', '/users', { auth: sim.users.admin })).json();
    expect(users).toEqual([{ user: 'admin' }, { user: 'backup' }, { user: 'metrics' }, { user: 'ns1~admin' }, { user: 'ns1~operator' }, { user: 'operator' }]);
    expect((await http.req('GET', '/namespaces', { auth: sim.users.admin })).json()).toEqual([{ id: 'ns1' }]);
    expect((await http.req('GET', '/users/ns1~operator', { auth: sim.nsUsers['ns1']!.admin })).json()).toEqual({ realName: 'ns1 operator', role: 'Operator' });
    const info = (await http.req('GET', '/system/info', { auth: sim.users.admin })).json() as { deviceId: string };
    expect(info.deviceId).toMatch(/^[0-9A-Z]{10}$/);
    expect(sim.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });
});
