/**
 * `/config/*` routes the simulator implements: backup passphrase (c23), unlock passphrase, unattended boot, time,
 * logging, network (the TLS endpoints are in tls.ts). All root Administrator, Operational.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { SimHttpError } from '../http-error.js';
import { NO_CONTENT, parseStrict } from '../http.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import { kdf, sameBytes } from '../crypto.js';
import { passphrase, zeroOffsetTime, parseZeroOffsetTime } from '../validation.js';

const OP = ['Operational' as const];
const ROOT_ADMIN = { roles: ['Administrator' as const], root: true };
const JSON_TYPE = 'application/json';

const ChangePassphraseBody = z.strictObject({ newPassphrase: passphrase, currentPassphrase: z.string() });
const UnattendedBody = z.strictObject({ status: z.enum(['on', 'off']) });
const TimeBody = z.strictObject({ time: zeroOffsetTime });
const LoggingBody = z.strictObject({ ipAddress: z.ipv4(), port: z.number().int().min(0).max(65535), logLevel: z.enum(['debug', 'info', 'warning', 'error']) });
const NetworkBody = z.strictObject({
  ipAddress: z.ipv4(),
  netmask: z.ipv4(),
  gateway: z.ipv4(),
  ipv6: z.strictObject({ cidr: z.string(), gateway: z.string().nullable() }).nullable().optional(),
});

const DEFAULT_LOGGING = { ipAddress: '0.0.0.0', port: 514, logLevel: 'info' };
const DEFAULT_NETWORK = { ipAddress: '192.168.1.1', netmask: '255.255.255.0', gateway: '0.0.0.0' };

async function setBackupPassphrase(sim: SimCore, body: z.infer<typeof ChangePassphraseBody>): Promise<void> {
  const { device } = sim;
  const salt = device.getGlobalConfig('backup-salt');
  const key = device.getGlobalConfig('backup-key');
  if (salt === undefined || key === undefined) {
    if (body.currentPassphrase !== '') throw new SimHttpError(403, 'Current passphrase is wrong: no backup passphrase is set, send "".');
  } else {
    const k = await kdf(body.currentPassphrase, salt, sim.backupKdf);
    const ok = sameBytes(k, key);
    k.fill(0);
    if (!ok) throw new SimHttpError(403, 'Current passphrase is wrong.');
  }
  const newSalt = randomBytes(16);
  const newKey = await kdf(body.newPassphrase, newSalt, sim.backupKdf);
  device.setGlobalConfig('backup-salt', newSalt);
  device.setGlobalConfig('backup-key', newKey);
  newKey.fill(0);
}

export function configRoutes(): Route[] {
  return [
    {
      method: 'PUT',
      path: '/config/backup-passphrase',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: async (ctx, sim) => {
        await setBackupPassphrase(sim, parseStrict(ctx.body, ChangePassphraseBody));
        return NO_CONTENT;
      },
    },
    {
      method: 'PUT',
      path: '/config/unlock-passphrase',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: async (ctx, sim) => {
        const body = parseStrict(ctx.body, ChangePassphraseBody);
        const dk = await sim.device.openLockedDomainKey(body.currentPassphrase);
        if (dk === undefined) throw new SimHttpError(403, 'Current passphrase is wrong.');
        await sim.device.writeUnlockPassphrase(body.newPassphrase, dk);
        dk.fill(0);
        return NO_CONTENT;
      },
    },
    {
      method: 'GET',
      path: '/config/unattended-boot',
      states: OP,
      access: ROOT_ADMIN,
      produces: JSON_TYPE,
      handler: (_c, sim) => ({ status: 200, json: { status: sim.device.getLocal('unattended-boot')?.toString() === '1' ? 'on' : 'off' } }),
    },
    {
      method: 'PUT',
      path: '/config/unattended-boot',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: (ctx, sim) => {
        const { status } = parseStrict(ctx.body, UnattendedBody);
        const { device } = sim;
        if (status === 'on') device.kv.batch([device.sealSlot('unattended', device.requireDomainKey()), device.sealLocal('unattended-boot', Buffer.from('1'))]);
        else device.kv.batch([device.sealLocal('unattended-boot', Buffer.from('0'))], [device.slotPath('unattended')]);
        return NO_CONTENT;
      },
    },
    {
      method: 'GET',
      path: '/config/time',
      states: OP,
      access: ROOT_ADMIN,
      produces: JSON_TYPE,
      handler: (_c, sim) => ({ status: 200, json: { time: sim.device.now().toISOString().replace(/\.\d{3}Z$/, 'Z') } }),
    },
    {
      method: 'PUT',
      path: '/config/time',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: (ctx, sim) => {
        const { time } = parseStrict(ctx.body, TimeBody);
        sim.device.setTime(parseZeroOffsetTime(time)!);
        return NO_CONTENT;
      },
    },
    {
      method: 'GET',
      path: '/config/logging',
      states: OP,
      access: ROOT_ADMIN,
      produces: JSON_TYPE,
      handler: (_c, sim) => ({ status: 200, json: readJson(sim, 'log-config') ?? DEFAULT_LOGGING }),
    },
    {
      method: 'PUT',
      path: '/config/logging',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: (ctx, sim) => {
        sim.device.setLocal('log-config', JSON.stringify(parseStrict(ctx.body, LoggingBody)));
        return NO_CONTENT;
      },
    },
    {
      method: 'GET',
      path: '/config/network',
      states: OP,
      access: ROOT_ADMIN,
      produces: JSON_TYPE,
      handler: (_c, sim) => ({ status: 200, json: readJson(sim, 'ip-config') ?? DEFAULT_NETWORK }),
    },
    {
      method: 'PUT',
      path: '/config/network',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: (ctx, sim) => {
        // Stored in the API's shape (the firmware stores a cidr form); nothing is applied to the host.
        sim.device.setLocal('ip-config', JSON.stringify(parseStrict(ctx.body, NetworkBody)));
        return NO_CONTENT;
      },
    },
  ];
}

function readJson(sim: SimCore, name: string): unknown {
  const v = sim.device.getLocal(name);
  if (v === undefined) return undefined;
  try {
    return JSON.parse(v.toString('utf8'));
  } catch {
    return undefined; // a v0 binary value restored from an old backup: show the default
  }
}
