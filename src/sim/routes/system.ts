/**
 * Lifecycle and device routes: info, health, provision, unlock, lock, random, metrics, system info, diagnose.
 */
import { randomBytes } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { NO_CONTENT, callerOf, type RequestContext } from '../http.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import { newUserRecord } from '../users.js';
import { decodeBody, decodeValue, parseBody } from '../json-decode.js';
import { checkPassphrase, checkTime, passphraseReq, provisionReq, randomReq } from '../requests.js';

const ALL = ['Unprovisioned', 'Locked', 'Operational'] as const;
const OP = ['Operational'] as const;
const JSON_TYPE = 'application/json';


/** The software version the simulator claims (the firmware line FACTS describes). */
export const SIM_SOFTWARE_VERSION = '5.0';

/** Writes a freshly provisioned device: domain key, unlock slot, store versions, admin user, local config. */
async function provision(sim: SimCore, raw: Buffer): Promise<void> {
  // The firmware's order: schema, unlock passphrase, admin passphrase, then the time.
  const body = decodeBody(raw, provisionReq);
  checkPassphrase('unlockPassphrase', body.unlockPassphrase);
  checkPassphrase('adminPassphrase', body.adminPassphrase);
  const time = checkTime(body.systemTime);
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
  device.setTime(time);
  sim.users.put('admin', newUserRecord('admin', 'Administrator', body.adminPassphrase));
  device.state = 'Operational';
}

/**
 * `POST /unlock` (FACTS-system §6.1): a body that is not JSON is refused before the rate limiter (400, not recorded);
 * a bad schema or passphrase length is 400 and a wrong passphrase 403 `not authenticated`, both recorded.
 */
async function unlock(ctx: RequestContext, sim: SimCore): Promise<undefined> {
  const key = `${ctx.ip}\0_unlock`;
  const json = parseBody(ctx.body);
  if (sim.limiter.blocked(key)) throw new SimHttpError(429, 'Service unavailable: too many requests');
  try {
    const { passphrase } = decodeValue(json, passphraseReq);
    checkPassphrase('passphrase', passphrase);
    const dk = await sim.device.openLockedDomainKey(passphrase);
    if (dk === undefined) throw new SimHttpError(403, 'not authenticated');
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
        await provision(sim, ctx.body);
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
        const { length } = decodeBody(ctx.body, randomReq);
        return { status: 200, json: { random: randomBytes(length).toString('base64') } };
      },
    },
    {
      method: 'GET',
      path: '/metrics',
      states: [...OP],
      access: { roles: ['Metrics'] },
      produces: JSON_TYPE,
      handler: (_c, sim) => ({ status: 200, json: sim.metrics.toJSON(sim.device.kv.writes) }),
    },
    {
      method: 'GET',
      path: '/system/info',
      states: [...OP],
      access: { roles: ['Administrator'], root: true },
      produces: JSON_TYPE,
      etag: 'body-md5',
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
