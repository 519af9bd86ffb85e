import { createVerify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { caughtUp, diffInventories, eventually, importBody, inventory, streamReady } from './stream-helpers.js';

describe('streaming replication between two sites (gateway at A, stream to B)', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'gamma', primary: 'a', generate: 'replicated' }], gateway: true });
    await lab.startDaemons();
    await streamReady([lab.site('a'), lab.site('b')]);
    const b = lab.site('b');
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await b.daemon!.syncer.sync('gamma', { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('carries imports, deletes, moves, certificates, tags and labels made at A to B, in order, each once', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    const gw = a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin);
    await gw.importKey(importBody('EC_P256', ['ECDSA_Signature'], { restrictions: { tags: ['t0'] } }), 'k1');
    const k2 = await gw.importKey(importBody('RSA', ['RSA_Signature_PSS_SHA256']));
    await gw.importKey(importBody('Curve25519', ['EdDSA_Signature']), 'k3');
    await gw.putCert('k1', Buffer.from('-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n'));
    await gw.addKeyTag('k1', 't1');
    await gw.removeKeyTag('k1', 't0');
    await gw.setKeyLabel('k1', 'first');
    await gw.setKeyLabel('k1', 'second');
    await gw.moveKey('k3', 'k3moved');
    await gw.putCert('k3moved', Buffer.from('cert-bytes'));
    await gw.deleteCert('k3moved');
    await gw.removeKeyLabel('k1');
    await gw.setKeyLabel(k2, 'rsa');
    await gw.deleteKey('k3moved');
    await gw.close();

    await caughtUp(a, b, 'alpha');
    const kinds = a.daemon!.ctx.store.changelog.after('alpha', 1, 0, 1000).map((c) => c.kind);
    expect(kinds).toEqual([
      'key-imported',
      'key-imported',
      'key-imported',
      'cert-set',
      'tag-added',
      'tag-removed',
      'label-set',
      'label-set',
      'key-moved',
      'cert-set',
      'cert-removed',
      'label-removed',
      'label-set',
      'key-deleted',
    ]);
    const applied = b.daemon!.ctx.store.db.prepare("SELECT seq, kind, outcome FROM applied_changes WHERE namespace = 'alpha' ORDER BY seq").all() as { seq: number; kind: string; outcome: string }[];
    expect(applied.map((r) => r.kind)).toEqual(kinds);
    expect(applied.every((r) => r.outcome === 'applied')).toBe(true);

    const [pa, pb] = [a.nsAdmin('alpha'), b.client('alpha~replicator', LAB_PASSPHRASES.replicator)];
    const diff = diffInventories(await inventory(pa), await inventory(pb));
    await Promise.all([pa.close(), pb.close()]);
    expect(diff).toEqual({ missing: [], extra: [], differ: [] });
  });

  it('keys imported at A sign at B with the same public key', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    const gw = a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin);
    await gw.importKey(importBody('RSA', ['RSA_Signature_PKCS1']), 'signer');
    const pem = await gw.publicKeyPem('signer');
    await gw.close();
    await caughtUp(a, b, 'alpha');
    const op = b.gatewayClient('alpha~operator', LAB_PASSPHRASES.nsOperator);
    const message = Buffer.from('streamed key, signed at B');
    const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), (await import('node:crypto')).createHash('sha256').update(message).digest()]);
    const sig = await op.sign('signer', 'PKCS1', digestInfo);
    expect(await op.publicKeyPem('signer')).toBe(pem);
    await op.close();
    expect(createVerify('sha256').update(message).verify(pem, sig)).toBe(true);
  });

  it('brings a key generated inside the NetHSM at A to B through a snapshot catch-up', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    const gw = a.gatewayClient('alpha~admin', LAB_PASSPHRASES.nsAdmin);
    await gw.generateKey({ id: 'hsmgen', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    const pem = await gw.publicKeyPem('hsmgen');
    await gw.close();
    const last = a.daemon!.ctx.store.changelog.after('alpha', 1, 0, 1000).at(-1)!;
    expect(last.kind).toBe('catchup');
    await caughtUp(a, b, 'alpha');
    const op = b.client('alpha~replicator', LAB_PASSPHRASES.replicator);
    await eventually(async () => (await op.listKeys()).includes('hsmgen'), 30_000, 'hsmgen at B');
    expect(await op.publicKeyPem('hsmgen')).toBe(pem);
    await op.close();
  });

  it('answers a replicated generate as the NetHSM would, and the key reaches B by the stream', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    const gw = a.gatewayClient('gamma~admin', LAB_PASSPHRASES.nsAdmin);
    const id = await gw.generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['x'] }, label: 'made here' });
    expect(id).toMatch(/^[0-9a-f]{20}$/);
    const named = await gw.generateKey({ id: 'named', type: 'RSA', length: 2048, mechanisms: ['RSA_Signature_PKCS1'] });
    expect(named).toBe('named');
    const dup = await gw.generateKey({ id: 'named', type: 'RSA', length: 2048, mechanisms: ['RSA_Signature_PKCS1'] }).catch((e: unknown) => e);
    expect((dup as { status?: number }).status).toBe(400);
    const bad = await gw.generateKey({ type: 'EC_P256', mechanisms: [] }).catch((e: unknown) => e);
    expect((bad as { status?: number }).status).toBe(400);
    const key = await gw.getKey(id);
    expect(key).toMatchObject({ type: 'EC_P256', label: 'made here', restrictions: { tags: ['x'] } });
    await gw.close();
    const kinds = a.daemon!.ctx.store.changelog.after('gamma', 1, 0, 1000).map((c) => c.kind);
    expect(kinds).toEqual(['key-imported', 'key-imported']);
    await caughtUp(a, b, 'gamma');
    const [pa, pb] = [a.nsAdmin('gamma'), b.client('gamma~replicator', LAB_PASSPHRASES.replicator)];
    const diff = diffInventories(await inventory(pa), await inventory(pb));
    await Promise.all([pa.close(), pb.close()]);
    expect(diff).toEqual({ missing: [], extra: [], differ: [] });
  });
});
