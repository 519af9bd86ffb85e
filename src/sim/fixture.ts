/**
 * Test helper: a provisioned simulator with the usual users, over plain undici (not the project's client), so every
 * area's tests can start from a ready NetHSM. Uses the firmware's test scrypt parameters unless told otherwise.
 */
import { Agent, request } from 'undici';
import { TEST_KDF } from './crypto.js';
import { startSimulator, type RunningSimulator, type SimulatorOptions } from './server.js';

export interface Cred {
  username: string;
  password: string;
}
export interface SimUsers {
  admin: Cred;
  operator: Cred;
  backup: Cred;
  metrics: Cred;
}

export interface ProvisionedOptions extends SimulatorOptions {
  /** For each: users `${ns}~admin` (Administrator) and `${ns}~operator` (Operator), then the namespace. */
  namespaces?: string[];
  backupPassphrase?: string;
  unlockPassphrase?: string;
}

export type ProvisionedSimulator = RunningSimulator & {
  users: SimUsers;
  nsUsers: Record<string, { admin: Cred; operator: Cred }>;
  unlockPassphrase: string;
  backupPassphrase: string;
};

export const DEFAULT_UNLOCK_PASSPHRASE = 'unlockPassphrase';
export const DEFAULT_BACKUP_PASSPHRASE = 'backupPassphrase';

export const DEFAULT_USERS: SimUsers = {
  admin: { username: 'admin', password: 'adminPassphrase' },
  operator: { username: 'operator', password: 'operatorPassphrase' },
  backup: { username: 'backup', password: 'backupUserPassphrase' },
  metrics: { username: 'metrics', password: 'metricsPassphrase' },
};

/** A tiny HTTPS JSON caller trusting one certificate; for fixtures and tests. Throws on a status other than `expect`. */
export function simCaller(sim: Pick<RunningSimulator, 'apiUrl' | 'certPem'>): {
  call(method: string, path: string, opts?: { auth?: Cred; json?: unknown; expect?: number }): Promise<{ status: number; body: string }>;
  close(): Promise<void>;
} {
  const dispatcher = new Agent({ connect: { ca: sim.certPem } });
  return {
    async call(method, path, opts = {}) {
      const headers: Record<string, string> = {};
      if (opts.auth) headers['authorization'] = 'Basic ' + Buffer.from(`${opts.auth.username}:${opts.auth.password}`).toString('base64');
      if (opts.json !== undefined) headers['content-type'] = 'application/json';
      const res = await request(sim.apiUrl + path, {
        method: method as 'GET',
        headers,
        body: opts.json === undefined ? undefined : JSON.stringify(opts.json),
        dispatcher,
      });
      const body = await res.body.text();
      if (opts.expect !== undefined && res.statusCode !== opts.expect) {
        throw new Error(`${method} ${path}: expected ${opts.expect}, got ${res.statusCode} ${body}`);
      }
      return { status: res.statusCode, body };
    },
    close: () => dispatcher.close(),
  };
}

/** Starts and provisions a simulator; closes it again if provisioning fails. */
export async function startProvisionedSimulator(options: ProvisionedOptions = {}): Promise<ProvisionedSimulator> {
  const { namespaces = [], backupPassphrase = DEFAULT_BACKUP_PASSPHRASE, unlockPassphrase = DEFAULT_UNLOCK_PASSPHRASE, ...simOptions } = options;
  const sim = await startSimulator({ backupScrypt: TEST_KDF, unlockScrypt: TEST_KDF, ...simOptions });
  const c = simCaller(sim);
  try {
    const users = DEFAULT_USERS;
    await c.call('POST', '/provision', {
      json: { unlockPassphrase, adminPassphrase: users.admin.password, systemTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') },
      expect: 204,
    });
    const admin = users.admin;
    const roles = { operator: 'Operator', backup: 'Backup', metrics: 'Metrics' } as const;
    for (const [k, role] of Object.entries(roles) as [keyof typeof roles, string][]) {
      await c.call('PUT', `/users/${users[k].username}`, { auth: admin, json: { realName: k, role, passphrase: users[k].password }, expect: 201 });
    }
    await c.call('PUT', '/config/backup-passphrase', { auth: admin, json: { newPassphrase: backupPassphrase, currentPassphrase: '' }, expect: 204 });
    const nsUsers: Record<string, { admin: Cred; operator: Cred }> = {};
    for (const ns of namespaces) {
      const nsAdmin = { username: `${ns}~admin`, password: `${ns}AdminPassphrase` };
      const nsOperator = { username: `${ns}~operator`, password: `${ns}OperatorPassphrase` };
      await c.call('PUT', `/users/${nsAdmin.username}`, { auth: admin, json: { realName: `${ns} admin`, role: 'Administrator', passphrase: nsAdmin.password }, expect: 201 });
      await c.call('PUT', `/users/${nsOperator.username}`, { auth: admin, json: { realName: `${ns} operator`, role: 'Operator', passphrase: nsOperator.password }, expect: 201 });
      await c.call('PUT', `/namespaces/${ns}`, { auth: admin, expect: 204 });
      nsUsers[ns] = { admin: nsAdmin, operator: nsOperator };
    }
    // Assigned onto the simulator object, not spread: its certificate, power and boot count are live getters.
    return Object.assign(sim, { users: { ...users }, nsUsers, unlockPassphrase, backupPassphrase });
  } catch (err) {
    await sim.close();
    throw err;
  } finally {
    await c.close();
  }
}
