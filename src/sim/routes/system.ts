/**
 * Lifecycle and device routes: info, health, provision, unlock, lock, random, metrics, system info, diagnose.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { SimHttpError } from '../http-error.js';
import { NO_CONTENT, parseStrict, callerOf, type RequestContext } from '../http.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import { newUserRecord } from '../users.js';
import { passphrase, zeroOffsetTime, parseZeroOffsetTime } from '../validation.js';

const ALL = ['Unprovisioned', 'Locked', 'Operational'] as const;
const OP = ['Operational'] as const;
const JSON_TYPE = 'application/json';

const ProvisionBody = z.strictObject({ unlockPassphrase: passphrase, adminPassphrase: passphrase, systemTime: zeroOffsetTime });
const UnlockBody = z.strictObject({ passphrase: z.string() });
const RandomBody = z.strictObject({ length: z.number().int().min(1).max(1024) });

/** The software version the simulator claims (the firmware line FACTS describes). */
export const SIM_SOFTWARE_VERSION = '5.0';

/** Writes a freshly provisioned device: domain key, unlock slot, store versions, admin user, local config. */
async function provision(sim: SimCore, body: z.infer<typeof ProvisionBody>): Promise<void> {
  const { device } = sim;
  const dk = randomBytes(32);
  await device.writeUnlockPassphrase(body.unlockPassphrase, dk);
  device.setDomainKey(dk);
  dk.fill(0);
  const sets: [string, Buffer][] = [
    ['/.initialized', Buffer.alloc(0)],
    ['/config/version', Buffer.from('1')],
    device.sealLocal('unattended-boot', Buffer.from('0')),
  ];
  for (const [p, store] of [
    ['/authentication/.version', 'auth_store'],
    ['/key/.version', 'key_store'],
    ['/namespace/.version', 'namespace_store'],
  ] as const) {
    sets.push([p, device.seal(p, store, Buffer.from('0'))]);
  }
  device.kv.batch(sets);
  device.setTime(parseZeroOffsetTime(body.systemTime)!);
  sim.users.put('admin', newUserRecord('admin', 'Administrator', body.adminPassphrase));
  device.state = 'Operational';
}

async function unlock(ctx: RequestContext, sim: SimCore): Promise<undefined> {
  const key = `${ctx.ip}\0_unlock`;
  if (sim.limiter.blocked(key)) throw new SimHttpError(429, 'Service unavailable: too many requests');
  try {
    const body = parseStrict(ctx.body, UnlockBody);
    const n = Buffer.byteLength(body.passphrase, 'utf8');
    if (n < 10 || n > 200) throw new SimHttpError(400, 'Passphrase must be 10 to 200 bytes long.');
    const dk = await sim.device.openLockedDomainKey(body.passphrase);
    if (dk === undefined) throw new SimHttpError(403, 'Unlock failed: wrong passphrase.');
    if (sim.device.state !== 'Locked') throw new SimHttpError(412, 'Service not available');
    sim.device.setDomainKey(dk);
    dk.fill(0);
    sim.device.migrateLegacyConfig();
    sim.device.state = 'Operational';
  } catch (err) {
    if (err instanceof SimHttpError && (err.status === 400 || err.status === 403)) sim.limiter.recordFailure(key);
    throw err;
  }
  return undefined;
}

export function systemRoutes(): Route[] {
  return [
    { method: 'GET', path: '/info', states: [...ALL], access: 'public', produces: JSON_TYPE, handler: () => ({ status: 200, json: { vendor: 'Nitrokey GmbH', product: 'NetHSM' } }) },
    { method: 'GET', path: '/health/state', states: [...ALL], access: 'public', produces: JSON_TYPE, handler: (_c, sim) => ({ status: 200, json: { state: sim.device.state } }) },
    { method: 'GET', path: '/health/alive', states: ['Locked', 'Unprovisioned'], access: 'public', handler: () => ({ status: 200 }) },
    { method: 'GET', path: '/health/ready', states: [...OP], access: 'public', handler: () => ({ status: 200 }) },
    {
      method: 'GET',
      path: '/health/diagnose',
      states: [...ALL],
      access: (state) => (state === 'Operational' ? { roles: ['Administrator'], root: true } : 'public'),
      produces: JSON_TYPE,
      handler: () => ({ status: 200, json: { clusterLogs: [{ level: 'error', msg: 'Mock: no etcd' }], clusterState: { running: false } } }),
    },
    {
      method: 'POST',
      path: '/provision',
      states: ['Unprovisioned'],
      access: 'public',
      accepts: [JSON_TYPE],
      op: 'provision',
      handler: async (ctx, sim) => {
        await provision(sim, parseStrict(ctx.body, ProvisionBody));
        return NO_CONTENT;
      },
    },
    {
      method: 'POST',
      path: '/unlock',
      states: ['Locked'],
      access: 'public',
      op: 'unlock',
      handler: async (ctx, sim) => {
        await unlock(ctx, sim);
        return NO_CONTENT;
      },
    },
    {
      method: 'POST',
      path: '/lock',
      states: [...OP],
      access: { roles: ['Administrator'], root: true },
      handler: (_c, sim) => {
        sim.keys.flushOperations();
        sim.device.setDomainKey(undefined);
        sim.device.state = 'Locked';
        return NO_CONTENT;
      },
    },
    {
      method: 'POST',
      path: '/random',
      states: [...OP],
      access: { roles: ['Operator'] },
      produces: JSON_TYPE,
      handler: (ctx) => {
        const { length } = parseStrict(ctx.body, RandomBody);
        return { status: 200, json: { random: randomBytes(length).toString('base64') } };
      },
    },
    {
      method: 'GET',
      path: '/metrics',
      states: [...OP],
      access: { roles: ['Metrics'] },
      produces: JSON_TYPE,
      handler: (_c, sim) => ({ status: 200, json: sim.metrics.toJSON({ 'kv write': sim.device.kv.writes }) }),
    },
    {
      method: 'GET',
      path: '/system/info',
      states: [...OP],
      access: { roles: ['Administrator'], root: true },
      produces: JSON_TYPE,
      handler: (ctx, sim) => {
        callerOf(ctx);
        return {
          status: 200,
          json: {
            softwareVersion: SIM_SOFTWARE_VERSION,
            softwareBuild: 'nethsm-replicator-simulator',
            firmwareVersion: 'N/A',
            hardwareVersion: 'N/A',
            deviceId: sim.device.deviceId,
            akPub: {},
            pcr: {},
          },
        };
      },
    },
  ];
}
