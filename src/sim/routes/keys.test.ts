import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash, createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { FormData, Agent, request } from 'undici';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../fixture.js';
import { TestHttp, basic } from '../test-http.js';

const EC = { type: 'EC_P256', mechanisms: ['ECDSA_Signature'] };

describe('keys (§5): scoping, CRUD codes, tags, counter, list filters', () => {
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

  it('generates with 201 + Location, refuses an existing id with 400, imports with PUT (204) and POST (201)', async () => {
    const admin = sim.users.admin;
    const g = await http.req('POST', '/keys/generate', { auth: admin, json: { ...EC, id: 'k1' } });
    expect(g.status).toBe(201);
    expect(g.headers['location']).toBe('/api/v1/keys/k1');
    expect(g.json()).toEqual({ id: 'k1' });
    const dup = await http.req('POST', '/keys/generate', { auth: admin, json: { ...EC, id: 'k1' } });
    expect(dup.status).toBe(400);
    expect(dup.json()).toEqual({ message: 'Key with id k1 already exists' });
    const gen = await http.req('POST', '/keys/generate', { auth: admin, json: EC });
    expect((gen.json() as { id: string }).id).toMatch(/^[0-9a-f]{20}$/);
    const aes = { type: 'Generic', mechanisms: ['AES_Encryption_CBC', 'AES_Decryption_CBC'], private: { data: Buffer.alloc(32, 7).toString('base64') } };
    const put = await http.req('PUT', '/keys/aes1', { auth: admin, json: aes });
    expect(put.status, put.text).toBe(204);
    expect((await http.req('PUT', '/keys/aes1', { auth: admin, json: aes })).status).toBe(400);
    const post = await http.req('POST', '/keys', { auth: admin, json: aes });
    expect(post.status).toBe(201);
    expect((await http.req('POST', '/keys/generate', { auth: admin, json: { ...EC, id: 'k9', extra: true } })).status).toBe(400);
    expect((await http.req('POST', '/keys/generate', { auth: sim.users.operator, json: EC })).status).toBe(403);
  });

  it('imports a PEM key through multipart (arguments + key_file)', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const form = new FormData();
    form.append('arguments', JSON.stringify({ mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['pem'] } }));
    form.append('key_file', privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
    const agent = new Agent({ connect: { ca: sim.certPem } });
    const res = await request(`${sim.apiUrl}/keys/pem1`, { method: 'PUT', headers: { authorization: basic(sim.users.admin) }, body: form, dispatcher: agent });
    expect(res.statusCode, await res.body.text()).toBe(204);
    await agent.close();
    const pem = (await http.req('GET', '/keys/pem1/public.pem', { auth: sim.users.admin })).text;
    expect(createPublicKey(pem).export({ format: 'jwk' })).toEqual(publicKey.export({ format: 'jwk' }));
  });

  it('scopes keys by namespace: root sees only root keys, a namespace only its own', async () => {
    const nsAdmin = sim.nsUsers['ns1']!.admin;
    expect((await http.req('POST', '/keys/generate', { auth: nsAdmin, json: { ...EC, id: 'k1' } })).status).toBe(201);
    expect((await http.req('POST', '/keys/generate', { auth: nsAdmin, json: { ...EC, id: 'nsonly' } })).status).toBe(201);
    expect((await http.req('GET', '/keys', { auth: nsAdmin })).json()).toEqual([{ id: 'k1' }, { id: 'nsonly' }]);
    expect((await http.req('GET', '/keys/nsonly', { auth: sim.users.admin })).status).toBe(404);
    const rootIds = ((await http.req('GET', '/keys', { auth: sim.users.admin })).json() as { id: string }[]).map((k) => k.id);
    expect(rootIds).not.toContain('nsonly');
    expect(rootIds).toContain('k1');
  });

  it('answers 400 for an invalid id and 404 (empty) for a missing key', async () => {
    expect((await http.req('GET', '/keys/.version', { auth: sim.users.admin })).status).toBe(400);
    const missing = await http.req('GET', '/keys/missing', { auth: sim.users.admin });
    expect(missing.status).toBe(404);
    expect(missing.text).toBe('');
    expect((await http.req('DELETE', '/keys/missing', { auth: sim.users.admin })).status).toBe(404);
    expect((await http.req('POST', '/keys/missing/sign', { auth: sim.users.operator, json: { mode: 'ECDSA', message: 'AA==' } })).status).toBe(404);
  });

  it('enforces restriction tags with the caller\'s user tags and counts successful operations', async () => {
    const admin = sim.users.admin;
    const op = sim.users.operator;
    await http.req('POST', '/keys/generate', { auth: admin, json: { ...EC, id: 'tagged', restrictions: { tags: ['berlin'] } } });
    const signed = Buffer.from('message to sign');
    const digest = createHash('sha256').update(signed).digest('base64');
    const denied = await http.req('POST', '/keys/tagged/sign', { auth: op, json: { mode: 'ECDSA', message: digest } });
    expect(denied.status).toBe(403);
    expect(denied.json()).toEqual({ message: 'tags restriction not met' });
    expect((await http.req('PUT', '/users/operator/tags/berlin', { auth: admin })).status).toBe(204);
    const ok = await http.req('POST', '/keys/tagged/sign', { auth: op, json: { mode: 'ECDSA', message: digest } });
    expect(ok.status).toBe(200);
    const pem = (await http.req('GET', '/keys/tagged/public.pem', { auth: op })).text;
    expect(verify('sha256', signed, createPublicKey(pem), Buffer.from((ok.json() as { signature: string }).signature, 'base64'))).toBe(true);
    await http.req('POST', '/keys/tagged/sign', { auth: op, json: { mode: 'ECDSA', message: digest } });
    expect((await http.req('POST', '/keys/tagged/sign', { auth: op, json: { mode: 'EdDSA', message: digest } })).status).toBe(400);
    expect(((await http.req('GET', '/keys/tagged', { auth: op })).json() as { operations: number }).operations).toBe(2);
    // ?filter (operators only) keeps keys usable by the caller; admins always see all.
    await http.req('POST', '/keys/generate', { auth: admin, json: { ...EC, id: 'paris', restrictions: { tags: ['paris'] } } });
    const filtered = ((await http.req('GET', '/keys?filter=', { auth: op })).json() as { id: string }[]).map((k) => k.id);
    expect(filtered).toContain('tagged');
    expect(filtered).not.toContain('paris');
    expect(((await http.req('GET', '/keys?filter=', { auth: admin })).json() as { id: string }[]).map((k) => k.id)).toContain('paris');
  });

  it('lists by prefix (filter ignored, label honoured) and by label', async () => {
    const admin = sim.users.admin;
    await http.req('POST', '/keys/generate', { auth: admin, json: { ...EC, id: 'pre-a', label: 'L1' } });
    await http.req('POST', '/keys/generate', { auth: admin, json: { ...EC, id: 'pre-b' } });
    expect((await http.req('GET', '/keys/pre*', { auth: admin })).json()).toEqual([{ id: 'pre-a' }, { id: 'pre-b' }]);
    expect((await http.req('GET', '/keys/pre*?label=L1', { auth: admin })).json()).toEqual([{ id: 'pre-a' }]);
    expect((await http.req('GET', '/keys?label=L1', { auth: admin })).json()).toEqual([{ id: 'pre-a' }]);
    expect((await http.req('GET', '/keys/*', { auth: admin })).status).toBe(400);
    expect((await http.req('GET', `/keys?label=${'x'.repeat(33)}`, { auth: admin })).status).toBe(400);
  });

  it('sets and removes labels (304 for the same label) and restriction tags (304 / 404)', async () => {
    const admin = sim.users.admin;
    expect((await http.req('PUT', '/keys/k1/label', { auth: admin, json: { label: 'hello' } })).status).toBe(204);
    expect((await http.req('PUT', '/keys/k1/label', { auth: admin, json: { label: 'hello' } })).status).toBe(304);
    expect((await http.req('PUT', '/keys/k1/label', { auth: admin, json: { label: 'x'.repeat(33) } })).status).toBe(400);
    expect((await http.req('PUT', '/keys/nokey/label', { auth: admin, json: { label: 'x' } })).json()).toEqual({ message: 'key not found' });
    expect((await http.req('PUT', '/keys/k1/label', { auth: sim.users.operator, json: { label: 'x' } })).status).toBe(403);
    expect(((await http.req('GET', '/keys/k1', { auth: admin })).json() as { label?: string }).label).toBe('hello');
    expect((await http.req('DELETE', '/keys/k1/label', { auth: admin })).status).toBe(204);
    expect(((await http.req('GET', '/keys/k1', { auth: admin })).json() as { label?: string }).label).toBeUndefined();
    expect((await http.req('PUT', '/keys/k1/restrictions/tags/t1', { auth: admin })).status).toBe(204);
    expect((await http.req('PUT', '/keys/k1/restrictions/tags/t1', { auth: admin })).status).toBe(304);
    expect((await http.req('PUT', '/keys/k1/restrictions/tags/-t', { auth: admin })).status).toBe(400);
    expect(((await http.req('GET', '/keys/k1', { auth: admin })).json() as { restrictions: unknown }).restrictions).toEqual({ tags: ['t1'] });
    expect((await http.req('DELETE', '/keys/k1/restrictions/tags/t2', { auth: admin })).status).toBe(404);
    expect((await http.req('DELETE', '/keys/k1/restrictions/tags/t1', { auth: admin })).status).toBe(204);
    expect(((await http.req('GET', '/keys/k1', { auth: admin })).json() as { restrictions: unknown }).restrictions).toEqual({});
  });

  it('stores certificates (201, 409, 415, 400 for case variants, 404 without one)', async () => {
    const admin = sim.users.admin;
    const octet = { 'content-type': 'application/octet-stream' };
    expect((await http.req('GET', '/keys/k1/cert', { auth: admin })).status).toBe(404);
    expect((await http.req('PUT', '/keys/k1/cert', { auth: admin, body: 'cert', headers: { 'content-type': 'text/plain' } })).status).toBe(415);
    expect((await http.req('PUT', '/keys/k1/cert', { auth: admin, body: 'cert', headers: { 'content-type': 'Application/Octet-Stream' } })).status).toBe(400);
    expect((await http.req('PUT', '/keys/k1/cert', { auth: admin, body: 'cert-bytes', headers: octet })).status).toBe(201);
    expect((await http.req('PUT', '/keys/k1/cert', { auth: admin, body: 'cert-bytes', headers: octet })).status).toBe(409);
    const got = await http.req('GET', '/keys/k1/cert', { auth: sim.users.operator });
    expect(got.text).toBe('cert-bytes');
    expect(got.headers['content-type']).toBe('application/octet-stream');
    expect((await http.req('DELETE', '/keys/k1/cert', { auth: admin })).status).toBe(204);
    expect((await http.req('DELETE', '/keys/k1/cert', { auth: admin })).status).toBe(404);
  });

  it('moves a key (200 + new id; 409 onto an existing id) and carries the operations counter', async () => {
    const admin = sim.users.admin;
    expect((await http.req('POST', '/keys/tagged/move', { auth: admin, json: { newId: 'k1' } })).status).toBe(409);
    expect((await http.req('POST', '/keys/tagged/move', { auth: admin, json: { newId: '' } })).status).toBe(400);
    const mv = await http.req('POST', '/keys/tagged/move', { auth: admin, json: { newId: 'moved' } });
    expect(mv.status).toBe(200);
    expect(mv.json()).toEqual({ id: 'moved' });
    expect((await http.req('GET', '/keys/tagged', { auth: admin })).status).toBe(404);
    expect(((await http.req('GET', '/keys/moved', { auth: admin })).json() as { operations: number }).operations).toBe(2);
    expect((await http.req('POST', '/keys/gone/move', { auth: admin, json: { newId: 'x' } })).status).toBe(404);
  });

  it('encrypts and decrypts with AES-CBC for operators only', async () => {
    const op = sim.users.operator;
    const msg = Buffer.alloc(32, 9).toString('base64');
    const enc = await http.req('POST', '/keys/aes1/encrypt', { auth: op, json: { mode: 'AES_CBC', message: msg } });
    expect(enc.status, enc.text).toBe(200);
    const { encrypted, iv } = enc.json() as { encrypted: string; iv: string };
    const dec = await http.req('POST', '/keys/aes1/decrypt', { auth: op, json: { mode: 'AES_CBC', encrypted, iv } });
    expect((dec.json() as { decrypted: string }).decrypted).toBe(msg);
    expect((await http.req('POST', '/keys/aes1/encrypt', { auth: sim.users.admin, json: { mode: 'AES_CBC', message: msg } })).status).toBe(403);
  });
});
