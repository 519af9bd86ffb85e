import { createPublicKey, generateKeyPairSync, publicEncrypt, constants, verify, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetHsmClient } from '../nethsm/client.js';
import { NetHsmHttpError } from '../errors.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { createSelfSignedCertificate, type CertificateBundle } from '../tls/index.js';
import type { NamespaceRole } from './policy.js';
import type { MutationObserver, MutationStart } from './observer.js';
import { GatewayServer, type GatewayRequestEvent } from './server.js';
import { capturingLogger, httpsCaller, type Cred } from './test-support.js';

const b64 = (s: string): string => Buffer.from(s, 'base64url').toString('base64');

describe('gateway in front of a simulator', () => {
  let sim: ProvisionedSimulator;
  let cert: CertificateBundle;
  let gw: GatewayServer;
  const roles = new Map<string, NamespaceRole>();
  const events: GatewayRequestEvent[] = [];
  const observed: { start: MutationStart; end?: { status: number; location?: string }; original?: Buffer }[] = [];
  let refuseCapture = false;
  const observer: MutationObserver = {
    async begin(m) {
      if (refuseCapture) throw new Error('state store unavailable');
      // Copy: the gateway zeroes the body once the mutation is done.
      const copy = m.body ? { ...m.body, bytes: Buffer.from(m.body.bytes) } : undefined;
      observed.push({ start: { ...m, ...(copy ? { body: copy } : {}) }, ...(m.body ? { original: m.body.bytes } : {}) });
      return String(observed.length - 1);
    },
    async end(id, outcome) {
      observed[Number(id)]!.end = outcome;
      return undefined;
    },
  };
  const log = capturingLogger();
  let direct: ReturnType<typeof httpsCaller>;
  let viaGw: ReturnType<typeof httpsCaller>;
  let app: NetHsmClient; // an application using the gateway's URL in place of the NetHSM's
  let alphaAdmin: Cred, alphaOp: Cred, betaAdmin: Cred, betaOp: Cred;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['alpha', 'beta'] });
    cert = await createSelfSignedCertificate();
    roles.set('alpha', { role: 'primary', epoch: 3, primarySite: 'a' });
    roles.set('beta', { role: 'replica', epoch: 4, primarySite: 'b' });
    gw = new GatewayServer({
      site: 'a',
      tls: { certPem: cert.certPem, keyPem: cert.keyPem },
      nethsm: { url: sim.url, tls: { fingerprint256: sim.fingerprint256 } },
      roles: { roleOf: (ns) => roles.get(ns) },
      observer,
      onRequest: (e) => events.push(e),
      logger: log.logger,
    });
    await gw.start();
    await gw.start(); // idempotent
    direct = httpsCaller(sim.url, sim.certPem);
    viaGw = httpsCaller(gw.url, cert.certPem);
    app = new NetHsmClient({ url: gw.url, tls: { caPem: cert.certPem } });
    ({ admin: alphaAdmin, operator: alphaOp } = sim.nsUsers.alpha!);
    ({ admin: betaAdmin, operator: betaOp } = sim.nsUsers.beta!);
    // A key in the replica namespace, as replication would have put it there.
    const r = await direct.call('POST', '/keys/generate', {
      auth: betaAdmin,
      json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'replicated1' },
    });
    expect(r.status).toBe(201);
  });

  afterAll(async () => {
    await app?.close();
    await direct?.close();
    await viaGw?.close();
    await gw?.close();
    await gw?.close(); // idempotent
    await sim?.close();
  });

  it('lets an application generate, import, list, sign, decrypt and delete in a primary namespace', async () => {
    const admin = app.withAuth(alphaAdmin.username, alphaAdmin.password);
    const op = app.withAuth(alphaOp.username, alphaOp.password);

    const edId = await admin.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'ed1' });
    expect(edId).toBe('ed1');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = rsa.privateKey.export({ format: 'jwk' });
    const rsaId = await admin.importKey(
      { type: 'RSA', mechanisms: ['RSA_Decryption_OAEP_SHA256'], private: { primeP: b64(jwk.p!), primeQ: b64(jwk.q!), publicExponent: b64(jwk.e!) } },
      'rsa1',
    );
    expect(rsaId).toBe('rsa1');

    expect(await op.listKeys()).toEqual(['ed1', 'rsa1']);
    const directList = await direct.call('GET', '/keys', { auth: alphaOp });
    const gwList = await viaGw.call('GET', '/keys', { auth: alphaOp });
    expect(gwList.status).toBe(directList.status);
    expect(gwList.body).toBe(directList.body);
    expect(gwList.headers['content-type']).toBe(directList.headers['content-type']);

    const message = randomBytes(100);
    const signature = await op.sign('ed1', 'EdDSA', message);
    const pub = createPublicKey(await op.publicKeyPem('ed1'));
    expect(verify(null, message, pub, signature)).toBe(true);

    const secret = randomBytes(32);
    const encrypted = publicEncrypt({ key: rsa.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, secret);
    expect((await op.decrypt('rsa1', 'OAEP_SHA256', encrypted)).equals(secret)).toBe(true);

    await admin.deleteKey('ed1');
    await admin.deleteKey('rsa1');
    expect(JSON.parse((await direct.call('GET', '/keys', { auth: alphaAdmin })).body)).toEqual([]);
  });

  it('passes the NetHSM error answers through unchanged', async () => {
    for (const [method, path, auth] of [
      ['GET', '/keys/missing', alphaOp],
      ['POST', '/keys/missing/sign', alphaOp],
      ['GET', '/keys/.version', alphaOp],
      ['POST', '/keys/generate', alphaOp], // an Operator may not generate: 403 from the NetHSM
      ['GET', '/config/time', alphaAdmin], // namespaced caller on a root-only call
    ] as const) {
      const d = await direct.call(method, path, { auth, json: {} });
      const g = await viaGw.call(method, path, { auth, json: {} });
      expect({ status: g.status, body: g.body }, `${method} ${path}`).toEqual({ status: d.status, body: d.body });
    }
    const d = await direct.call('GET', '/keys', { auth: { username: 'nobody1', password: 'wrongPassphrase' } });
    const g = await viaGw.call('GET', '/keys', { auth: { username: 'nobody2', password: 'wrongPassphrase' } });
    expect(g.status).toBe(401);
    expect(g.status).toBe(d.status);
    expect(g.headers['www-authenticate']).toBe(d.headers['www-authenticate']);
  });

  it('refuses replica-namespace mutations naming the primary, without reaching the NetHSM', async () => {
    const admin = app.withAuth(betaAdmin.username, betaAdmin.password);
    const before = (await direct.call('GET', '/keys', { auth: betaAdmin })).body;
    const err = await admin.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'new1' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetHsmHttpError);
    expect((err as NetHsmHttpError).status).toBe(403);
    expect((err as NetHsmHttpError).message).toContain('namespace beta is a read-only replica at site a (epoch 4); its primary is site b');

    for (const [method, path, json] of [
      ['DELETE', '/keys/replicated1', undefined],
      ['PUT', '/keys/replicated1/restrictions/tags/t1', undefined],
      ['PUT', '/keys/replicated1/label', { label: 'x' }],
      ['POST', '/keys/replicated1/move', { newId: 'moved' }],
      ['PUT', '/users/beta~eve', { realName: 'e', role: 'Operator', passphrase: 'evePassphrase' }],
      ['POST', '/users/beta~operator/passphrase', { passphrase: 'newOperatorPassphrase' }],
    ] as const) {
      const r = await viaGw.call(method, path, { auth: betaAdmin, ...(json ? { json } : {}) });
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.headers['content-type']).toBe('application/json');
      expect(JSON.parse(r.body).message).toMatch(/^namespace beta is a read-only replica .* its primary is site b \[NHR_ERR_GATEWAY_READ_ONLY\]$/);
    }
    expect((await direct.call('GET', '/keys', { auth: betaAdmin })).body).toBe(before);
    expect((await direct.call('GET', '/keys/replicated1', { auth: betaAdmin })).body).not.toContain('"x"');
    expect((await direct.call('GET', '/users/beta~eve', { auth: sim.users.admin })).status).toBe(404);
    // The operator's passphrase did not change: it still works directly.
    expect((await direct.call('GET', '/keys', { auth: betaOp })).status).toBe(200);
    expect(events.filter((e) => e.namespace === 'beta' && e.outcome === 'refused_replica').length).toBeGreaterThanOrEqual(7);
  });

  it('serves sign, public key and list in a replica namespace locally', async () => {
    const op = app.withAuth(betaOp.username, betaOp.password);
    expect(await op.listKeys()).toEqual(['replicated1']);
    const message = Buffer.from('hello from a replica site');
    const sig = await op.sign('replicated1', 'EdDSA', message);
    expect(verify(null, message, createPublicKey(await op.publicKeyPem('replicated1')), sig)).toBe(true);
  });

  it('refuses writes when the namespace becomes fenced, and allows them again once primary', async () => {
    roles.set('beta', { role: 'fenced', epoch: 5, primarySite: 'c' });
    const r = await viaGw.call('DELETE', '/keys/replicated1', { auth: betaAdmin });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body).message).toContain('namespace beta is fenced');
    roles.set('beta', { role: 'primary', epoch: 6, primarySite: 'a' });
    const ok = await viaGw.call('PUT', '/keys/replicated1/restrictions/tags/t1', { auth: betaAdmin });
    expect(ok.status).toBe(204);
    roles.set('beta', { role: 'replica', epoch: 4, primarySite: 'b' });
  });

  it('reports each primary-namespace mutation to the observer with its body and outcome', async () => {
    observed.length = 0;
    const gen = await viaGw.call('POST', '/keys/generate', { auth: alphaAdmin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'] } });
    expect(gen.status).toBe(201);
    const certPut = await viaGw.call('PUT', `/keys/${JSON.parse(gen.body).id}/cert`, {
      auth: alphaAdmin,
      headers: { 'content-type': 'application/octet-stream' },
      body: Buffer.from('certificate bytes'),
    });
    expect(certPut.status).toBe(201);
    const dup = await viaGw.call('POST', '/keys/generate', {
      auth: alphaAdmin,
      json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: JSON.parse(gen.body).id },
    });
    expect(dup.status).toBe(400);
    // Reads, crypto and other namespaces are not observed.
    await viaGw.call('GET', '/keys', { auth: alphaAdmin });
    await viaGw.call('DELETE', '/keys/replicated1', { auth: betaAdmin });

    expect(observed).toHaveLength(3);
    const [g, c, d] = observed;
    expect(g!.start).toMatchObject({ namespace: 'alpha', method: 'POST', path: '/keys/generate', operation: 'POST /keys/generate', user: 'alpha~admin' });
    expect(g!.start.body?.json).toEqual({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'] });
    expect(g!.end).toEqual({ status: 201, location: gen.headers['location'] });
    expect(c!.start).toMatchObject({ operation: 'PUT /keys/{id}/cert', keyId: JSON.parse(gen.body).id });
    expect(c!.start.body?.bytes.toString()).toBe('certificate bytes');
    expect(c!.start.body?.contentType).toBe('application/octet-stream');
    expect(c!.end).toEqual({ status: 201, location: certPut.headers['location'] });
    expect(d!.end?.status).toBe(400);
  });

  it('gives the observer an imported key body, and zeroes its buffer after the write', async () => {
    observed.length = 0;
    const ed = generateKeyPairSync('ed25519');
    const d = ed.privateKey.export({ format: 'jwk' }).d!;
    const r = await viaGw.call('PUT', '/keys/imported1', {
      auth: alphaAdmin,
      json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: b64(d) } },
    });
    expect(r.status).toBe(204);
    expect(observed).toHaveLength(1);
    expect(observed[0]!.start).toMatchObject({ operation: 'PUT /keys/{id}', keyId: 'imported1', body: { contentType: 'application/json' } });
    expect(observed[0]!.start.body?.json).toEqual({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: b64(d) } });
    expect(observed[0]!.end).toMatchObject({ status: 204 });
    expect(observed[0]!.original!.every((b) => b === 0)).toBe(true);
    // The NetHSM got exactly what the client sent: the key signs as the one imported.
    const sig = await viaGw.call('POST', '/keys/imported1/sign', { auth: alphaOp, json: { mode: 'EdDSA', message: Buffer.from('x').toString('base64') } });
    expect(verify(null, Buffer.from('x'), ed.publicKey, Buffer.from(JSON.parse(sig.body).signature, 'base64'))).toBe(true);
  });

  it('answers 503 and forwards nothing when the observer cannot record the change', async () => {
    refuseCapture = true;
    try {
      const r = await viaGw.call('POST', '/keys/generate', {
        auth: alphaAdmin,
        json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'notrecorded' },
      });
      expect(r.status).toBe(503);
      expect(r.headers['retry-after']).toBeDefined();
      expect(JSON.parse(r.body).message).toContain('NHR_ERR_GATEWAY_CAPTURE_FAILED');
      expect((await direct.call('GET', '/keys/notrecorded', { auth: alphaAdmin })).status).toBe(404);
    } finally {
      refuseCapture = false;
    }
  });

  it('refuses a restore through the gateway before reading its body', async () => {
    const r = await viaGw.call('POST', '/system/restore', {
      headers: { 'content-type': 'multipart/form-data; boundary=x' },
      body: Buffer.alloc(2 * 1024 * 1024, 1),
    });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body).message).toMatch(/^POST \/system\/restore is not served by the gateway: .* \[NHR_ERR_GATEWAY_CALL_REFUSED\]$/);
    expect((await direct.call('GET', '/health/state')).body).toContain('Operational');
  });

  it('forwards device reads and root-namespace writes', async () => {
    const info = await viaGw.call('GET', '/info');
    expect(info).toMatchObject({ status: 200, body: (await direct.call('GET', '/info')).body });
    const r = await viaGw.call('POST', '/keys/generate', {
      auth: sim.users.admin,
      json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'rootkey' },
    });
    expect(r.status).toBe(201);
    expect(r.headers['location']).toBe('/api/v1/keys/rootkey');
    expect((await direct.call('GET', '/keys/rootkey', { auth: sim.users.admin })).status).toBe(200);
  });

  it('never logs the Authorization header, passphrases or key material', async () => {
    await viaGw.call('POST', '/users/alpha~operator/passphrase', { auth: alphaAdmin, json: { passphrase: 'rotatedOperatorPassphrase' } });
    await viaGw.call('POST', '/users/alpha~operator/passphrase', { auth: alphaAdmin, json: { passphrase: alphaOp.password } });
    const text = log.lines.join('');
    expect(log.lines.length).toBeGreaterThan(10);
    expect(text).toContain('gateway: forwarded');
    for (const secret of [
      alphaAdmin.password,
      alphaOp.password,
      betaAdmin.password,
      sim.users.admin.password,
      'rotatedOperatorPassphrase',
      Buffer.from(`${alphaAdmin.username}:${alphaAdmin.password}`).toString('base64'),
      'Basic ',
      'certificate bytes',
      'primeP',
    ]) {
      expect(text, `log holds ${secret}`).not.toContain(secret);
    }
    expect(text.toLowerCase()).not.toContain('authorization');
  });
});
