import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../fixture.js';
import { TestHttp } from '../test-http.js';

const user = (role: string, passphrase = 'somePassphrase1') => ({ realName: 'someone', role, passphrase });

describe('users and namespaces: root versus namespace rules (§3, §4)', () => {
  let sim: ProvisionedSimulator;
  let http: TestHttp;
  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns1', 'ns11'] });
    http = new TestHttp(sim);
  });
  afterAll(async () => {
    await http.close();
    await sim.close();
  });

  it('creates users with PUT (201 + Location, empty body; existing → 409) and POST (201 + generated id)', async () => {
    const admin = sim.users.admin;
    const put = await http.req('PUT', '/users/alice', { auth: admin, json: user('Operator') });
    expect(put.status).toBe(201);
    expect(put.headers['location']).toBe('/api/v1/users/alice');
    expect(put.text).toBe('');
    expect((await http.req('PUT', '/users/alice', { auth: admin, json: user('Operator') })).status).toBe(409);
    const post = await http.req('POST', '/users', { auth: admin, json: user('Metrics') });
    expect(post.status).toBe(201);
    expect((post.json() as { id: string }).id).toMatch(/^[0-9a-f]{20}$/);
    const nsPost = await http.req('POST', '/users', { auth: sim.nsUsers['ns1']!.admin, json: user('Operator') });
    expect((nsPost.json() as { id: string }).id).toMatch(/^ns1~[0-9a-f]{20}$/);
    expect((await http.req('PUT', '/users/~bad', { auth: admin, json: user('Operator') })).status).toBe(400);
    expect((await http.req('POST', '/users/ns1', { auth: admin, json: user('Operator') })).status).toBe(400);
  });

  it('lets a root admin create ns~users only while the namespace does not exist', async () => {
    const admin = sim.users.admin;
    const r = await http.req('PUT', '/users/ns1~late', { auth: admin, json: user('Operator') });
    expect(r.status).toBe(403);
    expect(r.json()).toEqual({ message: 'R-User trying to create N-User for an already created namespace' });
    expect((await http.req('POST', '/users/ns1~', { auth: admin, json: user('Operator') })).status).toBe(403);
    expect((await http.req('PUT', '/users/fresh~a', { auth: admin, json: user('Administrator') })).status).toBe(201);
    const gen = await http.req('POST', '/users/fresh~', { auth: admin, json: user('Operator') });
    expect((gen.json() as { id: string }).id).toMatch(/^fresh~[0-9a-f]{20}$/);
    // Users of a namespace that does not exist authenticate but are refused everything.
    expect((await http.req('GET', '/keys', { auth: { username: 'fresh~a', password: 'somePassphrase1' } })).status).toBe(403);
  });

  it('keeps namespaced admins inside their namespace', async () => {
    const nsAdmin = sim.nsUsers['ns1']!.admin;
    expect((await http.req('PUT', '/users/rootling', { auth: nsAdmin, json: user('Operator') })).status).toBe(403);
    expect((await http.req('PUT', '/users/ns11~x', { auth: nsAdmin, json: user('Operator') })).status).toBe(403);
    expect((await http.req('PUT', '/users/ns1~op2', { auth: nsAdmin, json: user('Operator') })).status).toBe(201);
    const list = (await http.req('GET', '/users', { auth: nsAdmin })).json() as { user: string }[];
    expect(list.every((u) => u.user.startsWith('ns1~'))).toBe(true);
    expect((await http.req('GET', '/users/ns11~admin', { auth: nsAdmin })).status).toBe(403);
    expect((await http.req('GET', '/users/admin', { auth: nsAdmin })).status).toBe(403);
  });

  it('lets root read any user but change ns users only while their namespace is gone', async () => {
    const admin = sim.users.admin;
    expect((await http.req('GET', '/users/ns1~operator', { auth: admin })).json()).toEqual({ realName: 'ns1 operator', role: 'Operator' });
    expect((await http.req('DELETE', '/users/ns1~op2', { auth: admin })).status).toBe(403);
    expect((await http.req('POST', '/users/ns1~op2/passphrase', { auth: admin, json: { passphrase: 'newPassphrase1' } })).status).toBe(403);
    expect((await http.req('PUT', '/users/ns1~op2/tags/t1', { auth: admin })).status).toBe(403);
    expect((await http.req('GET', '/users/nobody', { auth: admin })).status).toBe(404);
    expect((await http.req('DELETE', '/users/admin', { auth: admin })).json()).toEqual({ message: 'Users cannot delete themselves' });
  });

  it('lets an operator read only itself and change only its own passphrase', async () => {
    const op = sim.users.operator;
    expect((await http.req('GET', '/users/operator', { auth: op })).status).toBe(200);
    expect((await http.req('GET', '/users/admin', { auth: op })).status).toBe(403);
    expect((await http.req('POST', '/users/alice/passphrase', { auth: op, json: { passphrase: 'newPassphrase1' } })).status).toBe(403);
    expect((await http.req('POST', '/users/operator/passphrase', { auth: op, json: { passphrase: 'newOperatorPass' } })).status).toBe(204);
    expect((await http.req('GET', '/users/operator', { auth: { ...op, password: 'newOperatorPass' } })).status).toBe(200);
    expect((await http.req('POST', '/users/operator/passphrase', { auth: sim.users.admin, json: { passphrase: op.password } })).status).toBe(204);
    expect((await http.req('POST', '/users/metrics/passphrase', { auth: sim.users.metrics, json: { passphrase: 'newMetricsPass' } })).status).toBe(403);
  });

  it('keeps tags on operators only (c20)', async () => {
    const admin = sim.users.admin;
    expect((await http.req('PUT', '/users/alice/tags/berlin', { auth: admin })).status).toBe(204);
    expect((await http.req('PUT', '/users/alice/tags/berlin', { auth: admin })).status).toBe(304);
    expect((await http.req('PUT', '/users/alice/tags/a', { auth: admin })).status).toBe(204);
    expect((await http.req('GET', '/users/alice/tags', { auth: admin })).json()).toEqual(['a', 'berlin']);
    expect((await http.req('PUT', '/users/metrics/tags/x', { auth: admin })).status).toBe(400);
    expect((await http.req('GET', '/users/metrics/tags', { auth: admin })).status).toBe(404);
    expect((await http.req('DELETE', '/users/alice/tags/zzz', { auth: admin })).status).toBe(404);
    expect((await http.req('DELETE', '/users/alice/tags/a', { auth: admin })).status).toBe(204);
    expect((await http.req('PUT', '/users/alice/tags/-bad', { auth: admin })).status).toBe(400);
  });

  it('creates, lists and deletes namespaces; deleting keeps users (unusable) and removes only that namespace\'s keys', async () => {
    const admin = sim.users.admin;
    expect((await http.req('PUT', '/namespaces/ns1', { auth: admin })).status).toBe(400);
    expect((await http.req('PUT', '/namespaces/-x', { auth: admin })).status).toBe(400);
    const nsAdmin = sim.nsUsers['ns1']!.admin;
    const ns11Admin = sim.nsUsers['ns11']!.admin;
    const gen = { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'k' };
    expect((await http.req('POST', '/keys/generate', { auth: nsAdmin, json: gen })).status).toBe(201);
    expect((await http.req('POST', '/keys/generate', { auth: ns11Admin, json: gen })).status).toBe(201);
    expect((await http.req('DELETE', '/namespaces/ns1', { auth: admin })).status).toBe(204);
    expect((await http.req('DELETE', '/namespaces/ns1', { auth: admin })).status).toBe(404);
    expect((await http.req('GET', '/namespaces', { auth: admin })).json()).toEqual([{ id: 'ns11' }]);
    expect((await http.req('GET', '/users/ns1~admin', { auth: admin })).status).toBe(200);
    expect((await http.req('GET', '/keys', { auth: nsAdmin })).status).toBe(403);
    expect((await http.req('GET', '/keys', { auth: ns11Admin })).json()).toEqual([{ id: 'k' }]);
    // Re-creating revives the users; the keys are gone.
    expect((await http.req('PUT', '/namespaces/ns1', { auth: admin, headers: { 'content-type': 'application/json' }, body: '{}' })).status).toBe(204);
    expect((await http.req('GET', '/keys', { auth: nsAdmin })).json()).toEqual([]);
  });
});
