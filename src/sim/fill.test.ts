import { afterEach, describe, expect, it } from 'vitest';
import { createECDH, createHash } from 'node:crypto';
import { FILL_PAIRS, fillKeyId, parseFillSpec } from './fill.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from './fixture.js';
import { startSimulator, type RunningSimulator } from './server.js';
import { TestHttp } from './test-http.js';
import { TEST_KDF } from './crypto.js';

describe('parseFillSpec', () => {
  it('reads <namespace>:<count>[:<seed>]', () => {
    expect(parseFillSpec('alpha:1000000')).toEqual({ namespace: 'alpha', count: 1_000_000, seed: 'fill' });
    expect(parseFillSpec('a1:1:s-2.x_y')).toEqual({ namespace: 'a1', count: 1, seed: 's-2.x_y' });
  });

  it('refuses a bad spec naming what is wrong', () => {
    expect(() => parseFillSpec('alpha')).toThrow(/"alpha" is not <namespace>:<count>\[:<seed>\]/);
    expect(() => parseFillSpec('a:1:s:x')).toThrow(/is not <namespace>:<count>/);
    expect(() => parseFillSpec('-a:10')).toThrow(/namespace "-a" is not a NetHSM id/);
    expect(() => parseFillSpec(':10')).toThrow(/namespace "" is not a NetHSM id/);
    for (const bad of ['0', '-1', '1.5', 'ten', '', '10000001', '123456789'])
      expect(() => parseFillSpec(`a:${bad}`)).toThrow(new RegExp(`count must be a whole number from 1 to 10000000, got "${bad.replace('.', '\\.')}"`));
    expect(() => parseFillSpec('a:10:')).toThrow(/seed must be 1 to 64 characters/);
    expect(() => parseFillSpec('a:10:b c')).toThrow(/seed must be 1 to 64 characters of \[a-zA-Z0-9_.-\], got "b c"/);
  });
});

describe('fill', () => {
  const sims: RunningSimulator[] = [];
  const https: TestHttp[] = [];
  afterEach(async () => {
    for (const h of https.splice(0)) await h.close();
    for (const s of sims.splice(0)) await s.close();
  });

  async function provisioned(): Promise<{ sim: ProvisionedSimulator; http: TestHttp; op: { username: string; password: string } }> {
    const sim = await startProvisionedSimulator({ namespaces: ['alpha'] });
    sims.push(sim);
    const http = new TestHttp(sim);
    https.push(http);
    return { sim, http, op: sim.nsUsers['alpha']!.operator };
  }

  it('makes keys the simulator serves as imported ones: listed, read, public part, no certificate, signing', async () => {
    const { sim, http, op } = await provisioned();
    expect(await sim.fill(parseFillSpec('alpha:40'))).toMatchObject({ added: 40, kept: 0 });
    const list = (await http.req('GET', '/keys', { auth: op })).json() as { id: string }[];
    expect(list.map((k) => k.id)).toEqual(Array.from({ length: 40 }, (_, i) => fillKeyId(i)));
    const key = (await http.req('GET', '/keys/f00000017', { auth: op })).json() as Record<string, unknown>;
    expect(key).toMatchObject({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], restrictions: {}, operations: 0 });
    // The public part is that of the seed's key pair number 17 mod FILL_PAIRS.
    const d = createHash('sha256').update(`nethsm-sim fill fill ${17 % FILL_PAIRS}`).digest();
    const ecdh = createECDH('prime256v1');
    ecdh.setPrivateKey(d);
    expect((key['public'] as { data: string }).data).toBe(ecdh.getPublicKey().toString('base64'));
    expect((await http.req('GET', '/keys/f00000017/cert', { auth: op })).status).toBe(404);
    expect((await http.req('GET', '/keys/f00000017/public.pem', { auth: op })).text).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    const digest = createHash('sha256').update('x').digest('base64');
    const signed = await http.req('POST', '/keys/f00000017/sign', { auth: op, json: { mode: 'ECDSA', message: digest } });
    expect(signed.status).toBe(200);
    expect((await http.req('GET', '/keys/f00000040', { auth: op })).status).toBe(404);
  });

  it('gives two simulators with the same spec identical keys, and another seed other keys', async () => {
    const a = await provisioned();
    const b = await provisioned();
    await a.sim.fill(parseFillSpec('alpha:20:s1'));
    await b.sim.fill(parseFillSpec('alpha:20:s1'));
    const read = async (x: typeof a, id: string): Promise<string> => (await x.http.req('GET', `/keys/${id}`, { auth: x.op })).text;
    for (const id of ['f00000000', 'f00000007', 'f00000019']) expect(await read(a, id)).toBe(await read(b, id));
    const c = await provisioned();
    await c.sim.fill(parseFillSpec('alpha:20:s2'));
    expect(await read(c, 'f00000007')).not.toBe(await read(a, 'f00000007'));
  });

  it('keeps ids that already hold a key, and grows to a larger count', async () => {
    const { sim, http, op } = await provisioned();
    await sim.fill(parseFillSpec('alpha:10'));
    expect((await http.req('PUT', '/keys/f00000003/restrictions/tags/t1', { auth: sim.nsUsers['alpha']!.admin })).status).toBe(204);
    expect(await sim.fill(parseFillSpec('alpha:25'))).toMatchObject({ added: 15, kept: 10 });
    expect(((await http.req('GET', '/keys/f00000003', { auth: op })).json() as { restrictions: unknown }).restrictions).toEqual({ tags: ['t1'] });
    expect(((await http.req('GET', '/keys', { auth: op })).json() as unknown[]).length).toBe(25);
  });

  it('refuses, writing nothing, when the namespace does not exist or the device is not Operational', async () => {
    const { sim, http } = await provisioned();
    await expect(sim.fill(parseFillSpec('beta:10'))).rejects.toThrow('cannot fill beta: namespace "beta" does not exist');
    const root = await http.req('GET', '/keys', { auth: sim.users.admin });
    expect(root.json()).toEqual([]);
    const fresh = await startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF });
    sims.push(fresh);
    await expect(fresh.fill(parseFillSpec('alpha:10'))).rejects.toThrow('cannot fill alpha: the device is not Operational');
  });
});
