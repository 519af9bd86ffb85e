/**
 * `POST /system/backup` (root Backup user, Operational; 412 without a backup passphrase): the firmware's version-1
 * file, streamed entry by entry to the response (never buffered whole), entries in the firmware's KV order.
 */
import { createBackupWriter, compareBackupPaths } from '../../backup/writer.js';
import { SimHttpError } from '../http-error.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import type { RequestContext } from '../http.js';
import { restoreRoute } from './restore.js';

async function streamBackup(ctx: RequestContext, sim: SimCore): Promise<undefined> {
  const { device } = sim;
  const backupKey = device.getGlobalConfig('backup-key');
  const salt = device.getGlobalConfig('backup-salt');
  if (backupKey === undefined || salt === undefined) throw new SimHttpError(412, 'A backup passphrase must be set before a backup can be made.');
  const lockedDomainKey = device.readSlot('attended');
  if (lockedDomainKey === undefined) throw new SimHttpError(500, 'The domain key slot is missing.');
  // A consistent snapshot: values are immutable Buffers, so holding the references is enough.
  const snapshot = device.kv
    .paths()
    .sort(compareBackupPaths)
    .map((p) => [p, device.kv.get(p)!] as const);
  const configStoreKey = device.configStoreKey();
  sim.backupsServed++;
  ctx.res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Cache-control': 'no-cache' });
  try {
    const writer = await createBackupWriter(ctx.res, { backupKey, salt, lockedDomainKey, deviceId: device.deviceId, configStoreKey });
    for (const [p, v] of snapshot) await writer.writeEntry(p, v);
    await writer.finish();
  } catch (err) {
    // Headers are gone: cut the stream so the client sees an incomplete (trailer-less) file, never a short "valid" one.
    sim.logger.error({ err }, 'backup stream failed');
    sim.metrics.logged('error');
    ctx.res.destroy();
  } finally {
    backupKey.fill(0);
    configStoreKey.fill(0);
  }
  return undefined;
}

export function backupRoutes(): Route[] {
  return [
    {
      method: 'POST',
      path: '/system/backup',
      states: ['Operational'],
      access: { roles: ['Backup'], root: true },
      produces: 'application/octet-stream',
      op: 'backup',
      handler: streamBackup,
    },
    restoreRoute(),
  ];
}
