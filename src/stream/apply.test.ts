/**
 * Applying stream changes after the position moved back, against a simulator over real HTTPS: a snapshot that sets the
 * position below changes applied before forgets their records, so the primary's next changes (which reuse those
 * numbers) take effect instead of being skipped as duplicates; a change from another change log (the primary's log was
 * reset) is refused until a snapshot from that log moved the position there.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { EnvelopeInvalidError, StreamLogChangedError } from '../errors.js';
import { NetHsmClient } from '../nethsm/client.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { StateStore } from '../state/store.js';
import { admitChange, applyChange, type ApplyDeps } from './apply.js';
import { EnvelopeSealer } from './envelope-keys.js';
import { envelopeContext, type ChangeLine } from './protocol.js';
import { TransportKey } from './transport-key.js';
import { CertRead } from '../namespaces/cert-read.js';
import { readItems } from '../namespaces/inventory-reader.js';

const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
const LOG_1 = '6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f';
const LOG_2 = 'a9b8c7d6-e5f4-4321-9abc-def012345678';

const tag = (seq: number, t: string, log?: string): ChangeLine => ({
  type: 'change',
  epoch: 1,
  seq,
  at: 1000 + seq,
  ref: REF,
  kind: 'tag-added',
  keyId: 'k',
  tag: t,
  ...(log ? { log } : {}),
});

describe('stream apply after the position moved back', () => {
  let sim: ProvisionedSimulator;
  let admin: NetHsmClient;
  let dir: string;
  let n = 0;

  beforeAll(async () => {
    sim = await startProvisionedSimulator({ namespaces: ['ns'] });
    admin = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, auth: sim.nsUsers.ns!.admin });
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-apply-'));
  });

  afterAll(async () => {
    await admin?.close();
    await sim?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function setup(log?: string) {
    const id = String(n++);
    await admin.deleteKey('k').catch(() => undefined);
    await admin.generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'k' });
    const store = StateStore.inDir(path.join(dir, id)).open();
    store.roles.insert({ namespace: 'ns', role: 'replica', epoch: 1, primarySite: 'a' });
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 0, ...(log ? { log } : {}), takenAt: 1, durationMs: 1 });
    const deps: ApplyDeps = { site: 'b', store, client: () => admin, transportKey: () => undefined };
    const tags = async () => [...((await admin.getKey('k')).restrictions?.tags ?? [])].sort();
    const records = () => store.db.prepare("SELECT seq FROM applied_changes WHERE namespace = 'ns' ORDER BY seq").all().map((r) => (r as { seq: number }).seq);
    return { store, deps, tags, records };
  }

  it('applies a new change whose seq was applied before a snapshot moved the position back', async () => {
    const { store, deps, tags, records } = await setup();
    for (let s = 1; s <= 3; s++) expect(await applyChange(deps, 'ns', 'a', tag(s, `old${s}`))).toEqual({ outcome: 'applied' });
    expect(records()).toEqual([1, 2, 3]);
    // A snapshot taken when the primary's head was 1 (its log restarted, or an older backup): the device now reflects
    // 1.1, and the records after it no longer describe the device.
    await admin.removeKeyTag('k', 'old2');
    await admin.removeKeyTag('k', 'old3');
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 1, takenAt: 2, durationMs: 1 });
    expect(records()).toEqual([1]);
    expect(await applyChange(deps, 'ns', 'a', tag(2, 'new2'))).toEqual({ outcome: 'applied' });
    expect(await applyChange(deps, 'ns', 'a', tag(3, 'new3'))).toEqual({ outcome: 'applied' });
    expect(await tags()).toEqual(['new2', 'new3', 'old1']);
    expect(store.positions.get('ns', 'a')).toMatchObject({ epoch: 1, seq: 3 });
    // A replay at or below the position is still a duplicate.
    expect(await applyChange(deps, 'ns', 'a', tag(3, 'new3'))).toEqual({ outcome: 'duplicate' });
    store.close();
  });

  it('refuses a change of another change log and applies it once a snapshot of that log set the position', async () => {
    const { store, deps, tags, records } = await setup(LOG_1);
    expect(await applyChange(deps, 'ns', 'a', tag(1, 'first', LOG_1))).toEqual({ outcome: 'applied' });
    expect(await applyChange(deps, 'ns', 'a', tag(2, 'second', LOG_1))).toEqual({ outcome: 'applied' });
    // The primary lost its state: a new log numbers from 1 again. 1.3 would follow the position, 1.1 would look replayed.
    for (const seq of [1, 3]) {
      const err = (() => {
        try {
          admitChange(deps, 'ns', 'a', tag(seq, 'reset', LOG_2));
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(StreamLogChangedError);
      expect((err as Error).message).toMatch(new RegExp(`change 1\\.${seq} from a is in change log ${LOG_2}; this replica's position 1\\.2 is in change log ${LOG_1}`));
    }
    // A primary that sends no log id is not the log the position is in either.
    expect(() => admitChange(deps, 'ns', 'a', tag(3, 'legacy'))).toThrow(StreamLogChangedError);
    expect(store.positions.get('ns', 'a')).toMatchObject({ seq: 2, logId: LOG_1 });
    expect(await tags()).toEqual(['first', 'second']);
    // The catch-up snapshot from the new log (head 0) clears the old log's records.
    store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 0, log: LOG_2, takenAt: 3, durationMs: 1 });
    expect(records()).toEqual([]);
    expect(await applyChange(deps, 'ns', 'a', tag(1, 'reset', LOG_2))).toEqual({ outcome: 'applied' });
    expect(store.positions.get('ns', 'a')).toMatchObject({ seq: 1, logId: LOG_2 });
    expect(store.db.prepare("SELECT log_id, seq FROM applied_changes WHERE namespace = 'ns'").all()).toEqual([{ log_id: LOG_2, seq: 1 }]);
    expect(await tags()).toEqual(['first', 'reset', 'second']);
    store.close();
  });

  it('makes the certificate table forget a key whose certificate a change sets, and not one whose tags change', async () => {
    const { store, deps } = await setup();
    const readK = async () => {
      const certs = new CertRead(store.keyCerts, 'ns', 1000);
      try {
        for await (const item of readItems(admin, ['k'], { certs })) return { item, counts: certs.counts };
      } finally {
        certs.end();
      }
      throw new Error('k not read');
    };
    expect((await readK()).counts.unknown).toBe(1); // learnt: no certificate
    expect(await applyChange(deps, 'ns', 'a', tag(1, 't'))).toEqual({ outcome: 'applied' });
    expect((await readK()).counts.fromTable).toBe(1);
    const cert: ChangeLine = { type: 'change', epoch: 1, seq: 2, at: 1002, ref: REF, kind: 'cert-set', keyId: 'k', contentType: 'application/octet-stream', data: Buffer.from('c').toString('base64') };
    expect(await applyChange(deps, 'ns', 'a', cert)).toEqual({ outcome: 'applied' });
    const after = await readK();
    expect(after.counts.unknown).toBe(1);
    expect(after.item.hasCert).toBe(true);
    store.close();
  });

  it('imports a key, and counts it present on a replay, also when its envelope does not open here', async () => {
    const { store, deps } = await setup();
    const root = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
    try {
      const tk = new TransportKey({ site: 'b', admin: root.withAuth(sim.users.admin.username, sim.users.admin.password), operator: root.withAuth(sim.users.operator.username, sim.users.operator.password), bits: 2048 });
      await tk.ensure();
      const info = tk.publicInfo();
      const withKey: ApplyDeps = { ...deps, transportKey: () => ({ keyId: info.keyId, fingerprint: info.fingerprint, unwrap: (w) => tk.unwrap(w) }) };
      const sealer = new EnvelopeSealer();
      const d = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }).d!;
      const body = Buffer.from(JSON.stringify({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: Buffer.from(d, 'base64url').toString('base64') } }));
      const importLine = (seq: number, keyId: string, sealedFor = keyId) =>
        ({
          type: 'change', epoch: 1, seq, at: 1000 + seq, ref: REF, kind: 'key-imported', keyId,
          envelope: sealer.seal(body, { site: 'b', keyId: info.keyId, publicKeyPem: info.publicKeyPem }, envelopeContext({ namespace: 'ns', keyId: sealedFor, kind: 'key-imported', ref: REF })),
        }) as unknown as ChangeLine;
      await admin.deleteKey('imp1').catch(() => undefined);
      expect(await applyChange(withKey, 'ns', 'a', importLine(1, 'imp1'))).toEqual({ outcome: 'applied' });
      expect((await admin.getKey('imp1')).type).toBe('EC_P256');
      // A snapshot moved the position back: the replay finds the key there.
      store.positions.recordSyncOk('ns', 'a', { epoch: 1, seq: 0, takenAt: 2, durationMs: 1 });
      expect(await applyChange(withKey, 'ns', 'a', importLine(1, 'imp1'))).toEqual({ outcome: 'present' });
      // An envelope that does not open for this change: nothing imported; a key already there is present all the same.
      expect(await applyChange(withKey, 'ns', 'a', importLine(2, 'imp1', 'other'))).toEqual({ outcome: 'present' });
      await expect(applyChange(withKey, 'ns', 'a', importLine(3, 'imp-absent', 'other'))).rejects.toBeInstanceOf(EnvelopeInvalidError);
      await expect(admin.getKey('imp-absent')).rejects.toMatchObject({ status: 404 });
      expect(store.positions.get('ns', 'a')).toMatchObject({ seq: 2 });
      sealer.close();
    } finally {
      await root.close();
      store.close();
    }
  });
});
