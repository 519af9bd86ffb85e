/**
 * The customer's scenario: key pairs generated at both sites at the same time, each site primary for its own namespace
 * with `generate: replicated`, so every key is made in the daemon, imported, and streamed to the other site.
 */
import { createHash, createPublicKey, verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { caughtUp, diffInventories, inventory, streamReady } from './stream-helpers.js';

describe('replicated generation at both sites at once', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({
      namespaces: [
        { name: 'gamma', primary: 'a', generate: 'replicated' },
        { name: 'delta', primary: 'b', generate: 'replicated' },
      ],
      gateway: true,
    });
    await lab.startDaemons();
    await Promise.all([lab.site('a').daemon!.syncer.sync('delta', { actor: 'test' }), lab.site('b').daemon!.syncer.sync('gamma', { actor: 'test' })]);
    await streamReady([lab.site('a'), lab.site('b')]);
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('generates at both sites concurrently; each key reaches the other site once, with the same public key, and signs there', async () => {
    const generate = async (site: string, ns: string) => {
      const gw = lab.site(site).gatewayClient(`${ns}~admin`, LAB_PASSPHRASES.nsAdmin);
      try {
        const ids: string[] = [];
        await Promise.all(
          [0, 1, 2, 3].map(async (w) => {
            for (let i = 0; i < 6; i++) ids.push(await gw.generateKey({ type: w % 2 ? 'EC_P256' : 'Curve25519', mechanisms: [w % 2 ? 'ECDSA_Signature' : 'EdDSA_Signature'] }));
          }),
        );
        return ids;
      } finally {
        await gw.close();
      }
    };
    const [atA, atB] = await Promise.all([generate('a', 'gamma'), generate('b', 'delta')]);
    expect(new Set(atA).size).toBe(24);
    expect(new Set(atB).size).toBe(24);
    await Promise.all([caughtUp(lab.site('a'), lab.site('b'), 'gamma'), caughtUp(lab.site('b'), lab.site('a'), 'delta')]);

    for (const [primary, replica, ns] of [
      ['a', 'b', 'gamma'],
      ['b', 'a', 'delta'],
    ] as const) {
      const p = lab.site(primary).nsOperator(ns);
      const r = lab.site(replica).nsOperator(ns);
      expect(diffInventories(await inventory(p), await inventory(r))).toEqual({ missing: [], extra: [], differ: [] });
      // A key made at one site signs at the other, verified with the public key the primary shows.
      for (const id of (await p.listKeys()).slice(0, 2)) {
        const key = await p.getKey(id);
        const msg = Buffer.from(`signed at ${replica} with a key made at ${primary}`);
        // EdDSA signs the message; ECDSA signs its SHA-256 digest (the caller hashes, as with the NetHSM).
        const sig = key.type === 'Curve25519' ? await r.sign(id, 'EdDSA', msg) : await r.sign(id, 'ECDSA', createHash('sha256').update(msg).digest());
        const pub = createPublicKey(await p.publicKeyPem(id));
        expect(key.type === 'Curve25519' ? verify(null, msg, pub, sig) : verify('sha256', msg, pub, sig)).toBe(true);
      }
      await Promise.all([p.close(), r.close()]);
    }
    // Streamed, not snapshotted: the replicas applied the imports as changes.
    expect(await lab.site('b').registry.metrics()).toMatch(/nethsm_replicator_stream_changes_applied_total\{namespace="gamma",outcome="applied"\} 24/);
  });
});
