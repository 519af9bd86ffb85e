/**
 * Issue 3's namespace test, end to end over HTTPS against two simulators of one replication domain:
 * extract namespace N from device A's backup, merge it into device B's own backup, partial-restore B with the result.
 * N on B must then be exactly A's N; N2, root keys and everything else on B untouched; B stays Operational; a key of
 * N signs on B and verifies with A's public key.
 */
import { verify } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SCRYPT } from '../../src/backup/format.js';
import { extractNamespace, mergeNamespace } from '../../src/backup/namespace.js';
import { isNamespacePath, namespaceOfPath } from '../../src/backup/paths.js';
import { openBackup } from '../../src/backup/reader.js';
import { NetHsmClient, type KeyGenerateRequest } from '../../src/nethsm/client.js';
import { TEST_KDF } from '../../src/sim/crypto.js';
import { startProvisionedSimulator, type Cred, type ProvisionedSimulator } from '../../src/sim/fixture.js';
import { startSimulator, type RunningSimulator } from '../../src/sim/server.js';

const REPL = 'replication-passphrase-for-N';
const ED: Pick<KeyGenerateRequest, 'type' | 'mechanisms'> = { type: 'Curve25519', mechanisms: ['EdDSA_Signature'] };

let dir: string;
let a: ProvisionedSimulator;
let b: RunningSimulator;
const clients: NetHsmClient[] = [];

function client(sim: RunningSimulator, cred?: Cred): NetHsmClient {
  const c = new NetHsmClient({ url: sim.url, tls: { caPem: sim.certPem }, ...(cred ? { auth: cred } : {}) });
  clients.push(c);
  return c;
}

async function entries(file: string, passphrase: string): Promise<Map<string, Buffer>> {
  const r = await openBackup(file, { passphrase, scrypt: TEST_SCRYPT });
  const m = new Map<string, Buffer>();
  for await (const e of r.entries()) m.set(e.path, Buffer.from(e.value));
  await r.close();
  return m;
}

/** The key, user and namespace entries (what a partial restore writes), optionally filtered. */
function restorable(m: Map<string, Buffer>, keep: (path: string) => boolean): Map<string, Buffer> {
  return new Map([...m].filter(([p]) => /^\/(key|authentication|namespace)\//.test(p) && keep(p)));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ns-restore-'));
  a = await startProvisionedSimulator({ namespaces: ['N', 'N2'] });
  const aN = client(a, a.nsUsers.N!.admin);
  const aN2 = client(a, a.nsUsers.N2!.admin);
  const aRoot = client(a, a.users.admin);
  await aN.generateKey({ ...ED, id: 'nk1' });
  await aN.generateKey({ ...ED, id: 'nk2' });
  await aN2.generateKey({ ...ED, id: 'n2k1' });
  await aRoot.generateKey({ ...ED, id: 'rk1' });

  // B: a full restore of A's backup onto an unprovisioned simulator puts it in A's domain.
  const a0 = join(dir, 'a0.bin');
  await client(a, a.users.backup).backupToFile(a0);
  b = await startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF });
  const bAnon = client(b);
  await bAnon.restore(a0, { backupPassphrase: a.backupPassphrase, systemTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') });
  if ((await bAnon.healthState()) === 'Locked') await bAnon.unlock(a.unlockPassphrase);
  expect(await bAnon.healthState()).toBe('Operational');

  // Diverge. A: N gains nk3, loses nk1. B: N gains bk (must vanish), N2 gains b2k and root gains rkB (must stay).
  await aN.generateKey({ ...ED, id: 'nk3' });
  await aN.deleteKey('nk1');
  await client(b, a.nsUsers.N!.admin).generateKey({ ...ED, id: 'bk' });
  await client(b, a.nsUsers.N2!.admin).generateKey({ ...ED, id: 'b2k' });
  await client(b, a.users.admin).generateKey({ ...ED, id: 'rkB' });
});

afterAll(async () => {
  for (const c of clients) await c.close();
  await a?.close();
  await b?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('namespace restore across devices of one domain', () => {
  it('replaces N on B with A\'s N and leaves everything else on B as it was', async () => {
    const a1 = join(dir, 'a1.bin');
    const b1 = join(dir, 'b1.bin');
    await client(a, a.users.backup).backupToFile(a1);
    await client(b, a.users.backup).backupToFile(b1);

    const nsb = join(dir, 'N.nsb');
    const ex = await extractNamespace(a1, 'N', nsb, { input: { passphrase: a.backupPassphrase }, passphrase: REPL, scrypt: TEST_SCRYPT });
    expect(ex).toMatchObject({ namespace: 'N', keys: 2 });

    const merged = join(dir, 'merged.bin');
    const sum = await mergeNamespace(b1, nsb, merged, {
      device: { passphrase: a.backupPassphrase },
      namespaceBackup: { passphrase: REPL },
      expectNamespace: 'N',
    });
    expect(sum).toMatchObject({ namespace: 'N', namespaceWasPresent: true, added: 1, removed: 2 }); // +nk3; -nk1, -bk

    const bAdmin = client(b, a.users.admin);
    await bAdmin.restore(merged, { backupPassphrase: a.backupPassphrase });
    expect(await bAdmin.healthState()).toBe('Operational');

    // Through the API: N is A's, N2 and root keys are B's.
    expect((await client(b, a.nsUsers.N!.admin).listKeys()).sort()).toEqual(['nk2', 'nk3']);
    expect((await client(b, a.nsUsers.N2!.admin).listKeys()).sort()).toEqual(['b2k', 'n2k1']);
    expect((await bAdmin.listKeys()).sort()).toEqual(['rk1', 'rkB']);

    // Byte for byte: B's own backup now holds A's N entries and B's previous other entries.
    const b2 = join(dir, 'b2.bin');
    await client(b, a.users.backup).backupToFile(b2);
    const [A1, B1, B2] = await Promise.all([entries(a1, a.backupPassphrase), entries(b1, a.backupPassphrase), entries(b2, a.backupPassphrase)]);
    expect(restorable(B2, (p) => isNamespacePath(p, 'N'))).toEqual(restorable(A1, (p) => isNamespacePath(p, 'N')));
    expect(restorable(B2, (p) => !isNamespacePath(p, 'N'))).toEqual(restorable(B1, (p) => !isNamespacePath(p, 'N')));
    expect([...B2.keys()].some((p) => namespaceOfPath(p) === 'N2')).toBe(true);
  });

  it('signs on B with a key of N that only A generated, verifiable with A\'s public key', async () => {
    const message = Buffer.from('replicated namespace N');
    const sig = await client(b, a.nsUsers.N!.operator).sign('nk3', 'EdDSA', message);
    const pem = await client(a, a.nsUsers.N!.operator).publicKeyPem('nk3');
    expect(verify(null, message, pem, sig)).toBe(true);
  });
});
