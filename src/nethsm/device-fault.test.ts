/**
 * Device faults against the simulator over real HTTPS: a Locked NetHSM's 412 and a refused credential's 401/403 become
 * the causes an operator acts on; the state check names the state, and is bounded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetHsmCredentialRefusedError, NetHsmHttpError, NetHsmLockedError, NetHsmNotOperationalError, NetHsmTimeoutError } from '../errors.js';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../sim/fixture.js';
import { NetHsmClient } from './client.js';
import { asDeviceFault, assertOperational, replicationAccount, ROOT_OPERATOR } from './device-fault.js';

let sim: ProvisionedSimulator;
let root: NetHsmClient;
let admin: NetHsmClient;

beforeAll(async () => {
  sim = await startProvisionedSimulator();
  root = new NetHsmClient({ url: sim.url, tls: { fingerprint256: sim.fingerprint256 } });
  admin = root.withAuth(sim.users.admin.username, sim.users.admin.password);
});
afterAll(async () => {
  await root?.close();
  await sim?.close();
});

const caught = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

describe('device faults', () => {
  it('names a Locked NetHSM (412), from an answer and from its state', async () => {
    await admin.lock();
    try {
      const err = asDeviceFault(await caught(admin.listKeys()), ROOT_OPERATOR);
      expect(err).toBeInstanceOf(NetHsmNotOperationalError);
      expect((err as Error).message).toMatch(/NetHSM is Locked .*412 to GET \/keys/);
      const state = await caught(assertOperational(() => root.healthState(), 5_000));
      expect(state).toBeInstanceOf(NetHsmLockedError);
      expect((state as Error).message).toMatch(/^this site's NetHSM is Locked: nothing can be applied to it until it is unlocked/);
    } finally {
      await root.unlock(sim.unlockPassphrase);
    }
    await assertOperational(() => root.healthState(), 5_000);
  });

  it('names the account whose credential (401) or role (403) was refused, and its config setting', async () => {
    const operator = root.withAuth(sim.users.operator.username, sim.users.operator.password);
    const e403 = asDeviceFault(await caught(operator.createUser({ realName: 'x', role: 'Operator', passphrase: 'passphrase-x' }, 'x')), ROOT_OPERATOR);
    expect(e403).toMatchObject({ code: 'NHR_ERR_NETHSM_CREDENTIAL_REFUSED', path: 'nethsm.credentials.operator' });
    expect((e403 as Error).message).toMatch(/\(nethsm\.credentials\.operator: 403, the account lacks the role/);
    // Last: the NetHSM rate-limits an account after a failed login (429).
    const wrong = root.withAuth(sim.users.operator.username, 'not-its-passphrase');
    const e401 = asDeviceFault(await caught(wrong.listKeys()), replicationAccount('alpha', 'alpha~replicator'));
    expect(e401).toBeInstanceOf(NetHsmCredentialRefusedError);
    expect(e401).toMatchObject({ path: 'namespaces[alpha].replicationUser' });
    expect((e401 as Error).message).toMatch(/refused the replication account alpha~replicator credential \(namespaces\[alpha\]\.replicationUser: 401, wrong user name or passphrase\)/);
    // Within the second after it, the NetHSM holds the account back (429): the same cause.
    const e429 = asDeviceFault(await caught(wrong.listKeys()), replicationAccount('alpha', 'alpha~replicator'));
    expect(e429).toBeInstanceOf(NetHsmCredentialRefusedError);
    // The message names the setting too (a sync's answer and `status` show only the message; it lacked it before).
    expect((e429 as Error).message).toMatch(/\(namespaces\[alpha\]\.replicationUser: 429, held back after a refused login\)/);
  });

  it('leaves other errors as they are', async () => {
    const notFound = await caught(admin.getKey('absent'));
    expect(asDeviceFault(notFound, ROOT_OPERATOR)).toBe(notFound);
    expect(notFound).toBeInstanceOf(NetHsmHttpError);
    const other = new Error('x');
    expect(asDeviceFault(other, ROOT_OPERATOR)).toBe(other);
  });

  it('bounds the state check', async () => {
    const err = await caught(assertOperational(() => new Promise<string>(() => undefined), 50));
    expect(err).toBeInstanceOf(NetHsmTimeoutError);
  });
});
