import { createPublicKey, createHash, verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetHsmHttpError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import { use } from '../helpers/clients.js';

async function inventory(c: NetHsmClient): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const id of await c.listKeys()) {
    const k = await c.getKey(id);
    const cert = await c.getCert(id);
    out[id] = { ...k, operations: undefined, cert: cert ? cert.data.toString('base64') : null };
  }
  return out;
}

describe('snapshot replication between two sites', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }, { name: 'beta', primary: 'b' }] });
    await lab.startDaemons();
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('replicates keys, certificates, tags, labels and operators, each site primary for its own namespace, both at once', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    await use(a.nsAdmin('alpha'), async (c) => {
      await c.generateKey({ id: 'gen-rsa', type: 'RSA', length: 2048, mechanisms: ['RSA_Signature_PKCS1', 'RSA_Decryption_OAEP_SHA256'] });
      await c.generateKey({ id: 'gen-ec', type: 'EC_P256', mechanisms: ['ECDSA_Signature'], restrictions: { tags: ['berlin'] }, label: 'ec key' });
      await c.putCert('gen-ec', Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'));
      await c.importKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], private: { data: Buffer.alloc(32, 7).toString('base64') } }, 'imported-ed');
      await c.addKeyTag('imported-ed', 'frankfurt');
      await c.setKeyLabel('gen-rsa', 'signing');
    });
    await use(b.nsAdmin('beta'), async (c) => {
      await c.generateKey({ id: 'beta-key', type: 'EC_P384', mechanisms: ['ECDSA_Signature'] });
    });

    const [toB, toA] = await Promise.all([b.daemon!.syncer.sync('alpha', { actor: 'test' }), a.daemon!.syncer.sync('beta', { actor: 'test' })]);
    expect(toB).toMatchObject({ outcome: 'applied', epoch: 1, from: 'a', strippedAdministrators: ['admin'] });
    expect(toA).toMatchObject({ outcome: 'applied', epoch: 1, from: 'b' });

    // Same inventory (ids, public data, mechanisms, tags, labels, certificates) at both sites.
    const atA = await use(a.nsOperator('alpha'), inventory);
    const atB = await use(b.nsOperator('alpha'), inventory);
    expect(Object.keys(atA).sort()).toEqual(['gen-ec', 'gen-rsa', 'imported-ed']);
    expect(atB).toEqual(atA);
    expect(await use(a.nsOperator('beta'), inventory)).toEqual(await use(b.nsOperator('beta'), inventory));
  });

  it('serves keys at the replica: a key generated in the HSM at A signs at B, verified with its public key from A', async () => {
    const message = createHash('sha256').update('replicated').digest();
    const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), message]);
    const pem = await use(lab.site('a').nsOperator('alpha'), (c) => c.publicKeyPem('gen-rsa'));
    const sig = await use(lab.site('b').nsOperator('alpha'), (c) => c.sign('gen-rsa', 'PKCS1', digestInfo));
    expect(verify('sha256', Buffer.from('replicated'), createPublicKey(pem), sig)).toBe(true);
  });

  it("keeps the replica read-only on the device: the primary's administrator is refused there, the replication account stays", async () => {
    const err = await use(lab.site('b').nsAdmin('alpha'), (c) => c.listKeys()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetHsmHttpError);
    expect((err as NetHsmHttpError).status).toBe(401);
    const replicator = lab.site('b').client('alpha~replicator', LAB_PASSPHRASES.replicator);
    expect(await use(replicator, (c) => c.listKeys())).toContain('gen-rsa');
    // The primary keeps its administrators.
    expect(await use(lab.site('a').nsAdmin('alpha'), (c) => c.listKeys())).toContain('gen-rsa');
  });

  it('replicates deletions and operator changes, and leaves every other namespace and root key alone', async () => {
    const a = lab.site('a');
    const b = lab.site('b');
    // This test writes straight to A's NetHSM (no gateway holds such writes): let A's own syncs (a recovery's, queued
    // ones) end first, or a merge-restore at A built from an older backup undoes the write (docs/architecture.md).
    await Promise.all([a.daemon!.syncer.drain(), b.daemon!.syncer.drain()]);
    await use(a.nsAdmin('alpha'), async (c) => {
      await c.deleteKey('imported-ed');
      await c.createUser({ realName: 'second operator', role: 'Operator', passphrase: 'second-operator-pass' }, 'alpha~op2');
    });
    await use(b.client(), (c) => c.generateKey({ id: 'root-at-b', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    const betaBefore = await use(b.nsOperator('beta'), inventory);
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(await use(b.nsOperator('alpha'), (c) => c.listKeys())).toEqual(['gen-ec', 'gen-rsa']);
    expect(await use(b.client('alpha~op2', 'second-operator-pass'), (c) => c.listKeys())).toEqual(['gen-ec', 'gen-rsa']);
    expect(await use(b.client(), (c) => c.listKeys())).toContain('root-at-b');
    expect(await use(b.nsOperator('beta'), inventory)).toEqual(betaBefore);
    expect(await use(b.client(), (c) => c.healthState())).toBe('Operational');
  });

  it('records positions and reports lag in the status view', async () => {
    const st = await lab.site('b').daemon!.ctx.store.positions.get('alpha', 'a');
    expect(st?.lastSyncOutcome).toBe('ok');
    expect(st?.epoch).toBe(1);
    const metrics = await lab.site('b').registry.metrics();
    expect(metrics).toMatch(/nethsm_replicator_syncs_total\{namespace="alpha",outcome="success"\} 2/);
  });
});
