/**
 * `/config/*` routes the simulator implements: backup passphrase (c23), unlock passphrase, unattended boot, time,
 * logging, network (the TLS endpoints are in tls.ts). All root Administrator, Operational.
 */
import { createHash, randomBytes } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { NO_CONTENT } from '../http.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import { kdf, sameBytes } from '../crypto.js';
import { decodeBody } from '../json-decode.js';
import { checkPassphrase, checkTime, logReq, networkFromBody, passphraseChangeReq, timeReq, unattendedReq } from '../requests.js';
import { encodeLog, encodeNetwork, logToApi, networkToApi } from '../config-encodings.js';
import { readLogConfig, readNetworkConfig } from '../local-config.js';

const OP = ['Operational' as const];
const ROOT_ADMIN = { roles: ['Administrator' as const], root: true };
const JSON_TYPE = 'application/json';

/** `passphrase_change_req`, then the new passphrase's length (FACTS-system §6.2). */
function changeBody(raw: Buffer): { newPassphrase: string; currentPassphrase: string } {
  const body = decodeBody(raw, passphraseChangeReq);
  checkPassphrase('passphrase', body.newPassphrase);
  return body;
}

async function setBackupPassphrase(sim: SimCore, body: { newPassphrase: string; currentPassphrase: string }): Promise<void> {
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

/** ETag of a config GET: a digest of the stored entry (FACTS-system §6.8; the firmware's digest function is [?]). */
const storedDigest =
  (name: string) =>
  (_ctx: unknown, sim: SimCore): string | undefined => {
    const v = sim.device.kv.get(sim.device.localConfigPath(name));
    return v === undefined ? undefined : createHash('sha256').update(v).digest('hex');
  };

export function configRoutes(): Route[] {
  return [
    {
      method: 'PUT',
      path: '/config/backup-passphrase',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: async (ctx, sim) => {
        await setBackupPassphrase(sim, changeBody(ctx.body));
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
        const body = changeBody(ctx.body);
        const dk = await sim.device.openLockedDomainKey(body.currentPassphrase);
        if (dk === undefined) throw new SimHttpError(403, 'unlock passphrase is incorrect.');
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
      etag: storedDigest('unattended-boot'),
      handler: (_c, sim) => ({ status: 200, json: { status: sim.device.getLocal('unattended-boot')?.toString() === '1' ? 'on' : 'off' } }),
    },
    {
      method: 'PUT',
      path: '/config/unattended-boot',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: (ctx, sim) => {
        const on = decodeBody(ctx.body, unattendedReq);
        const { device } = sim;
        if (on) device.kv.batch([device.sealSlot('unattended', device.requireDomainKey()), device.sealLocal('unattended-boot', Buffer.from('1'))]);
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
        const { time } = decodeBody(ctx.body, timeReq);
        sim.device.setTime(checkTime(time));
        return NO_CONTENT;
      },
    },
    {
      method: 'GET',
      path: '/config/logging',
      states: OP,
      access: ROOT_ADMIN,
      produces: JSON_TYPE,
      etag: storedDigest('log-config'),
      // Absent or unreadable: the default, not written (FACTS-system §4.2).
      handler: (_c, sim) => ({ status: 200, json: logToApi(readLogConfig(sim.device)) }),
    },
    {
      method: 'PUT',
      path: '/config/logging',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: (ctx, sim) => {
        sim.device.setLocal('log-config', encodeLog(decodeBody(ctx.body, logReq)));
        return NO_CONTENT;
      },
    },
    {
      method: 'GET',
      path: '/config/network',
      states: OP,
      access: ROOT_ADMIN,
      produces: JSON_TYPE,
      etag: storedDigest('ip-config'),
      handler: (_c, sim) => ({ status: 200, json: networkToApi(readNetworkConfig(sim.device)) }),
    },
    {
      method: 'PUT',
      path: '/config/network',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [JSON_TYPE],
      handler: (ctx, sim) => {
        // Stored in the firmware's v1 encoding; nothing is applied to the host.
        sim.device.setLocal('ip-config', encodeNetwork(networkFromBody(ctx.body)));
        return NO_CONTENT;
      },
    },
  ];
}
