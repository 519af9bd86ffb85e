/**
 * Restore logic (FACTS §7): open the uploaded file, read and authenticate **every** entry into a staging map, then
 * apply in one KV batch — so a file that fails midway leaves the device as it was. The one exception is the
 * firmware's documented case of a v1 file whose trailer is present but wrong: its entries are applied without the
 * removal step and the caller answers 400 "The backup file was truncated. …".
 */
import { openBackup, type BackupHeader } from '../backup/reader.js';
import { BackupCorruptedError, BackupNotABackupError, BackupTruncatedError, BackupUnsupportedVersionError, BackupWrongPassphraseError } from '../errors.js';
import { SimHttpError } from './http-error.js';
import { Device } from './device.js';
import { gcmOpen, kdf, sameBytes, PRODUCTION_KDF, TEST_KDF, type KdfParams } from './crypto.js';
import type { SimCore } from './context.js';
import { convertV0IpConfig, convertV0LogConfig } from './config-encodings.js';

export const TRUNCATED_MESSAGE = 'The backup file was truncated. Present keys were still restored.';

/** Local config names a v0 backup keeps under `/config/` and v1 keeps under `/local/<deviceId>/config/`. */
const LOCAL_CONFIG_NAMES = new Set(['unlock-salt', 'certificate', 'private-key', 'ip-config', 'log-config', 'time-offset', 'unattended-boot', 'pending-unlock-migrations']);
/** What a partial restore replaces (and removes when absent from the file). */
const PARTIAL_PREFIXES = ['/authentication/', '/key/', '/namespace/'];
const PARTIAL_GLOBALS = ['/config/backup-key', '/config/backup-salt', '/config/cluster-ca'];

export interface StagedBackup {
  header: BackupHeader;
  entries: Map<string, Buffer>;
  /** The v1 trailer was present but wrong: apply without removal, then answer 400. */
  truncated: boolean;
}

const PREAMBLE = 15 + 1 + 3 + 16 + 3 + 29; // magic, version, salt field, version field

/** Reads from an async iterator until `n` bytes are buffered (or the source ends). */
async function peek(it: AsyncIterator<Uint8Array>, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  while (size < n) {
    const r = await it.next();
    if (r.done) break;
    const b = Buffer.from(r.value);
    chunks.push(b);
    size += b.length;
  }
  return Buffer.concat(chunks);
}

async function* replay(first: Buffer, it: AsyncIterator<Uint8Array>): AsyncGenerator<Uint8Array> {
  if (first.length > 0) yield first;
  for (;;) {
    const r = await it.next();
    if (r.done) return;
    yield r.value;
  }
}

/** Whether `key` authenticates the version field held in the preamble. */
function versionFieldOpens(pre: Buffer, key: Buffer): boolean {
  try {
    gcmOpen(key, 'backup-version', pre.subarray(38, 38 + 29));
    return true;
  } catch {
    return false;
  }
}

/**
 * The backup key for this file: from the passphrase (trying the simulator's KDF parameters, then the other set, so
 * both test-scrypt and production files restore), or the device's stored key when the salts match (§7.3).
 */
async function backupKeyFor(pre: Buffer, sim: SimCore, passphrase: string | undefined): Promise<Buffer> {
  if (pre.length < 15 || pre.subarray(0, 15).toString('latin1') !== '_NETHSM_BACKUP_') throw new SimHttpError(400, 'Not a NetHSM backup file');
  const version = pre[15];
  if (version !== 0 && version !== 1) throw new SimHttpError(400, `Version mismatch on restore, expected 0 or 1, got ${version ?? 'none'}.`);
  if (pre.length < 35) throw new SimHttpError(400, 'Unexpected end of data');
  const salt = pre.subarray(19, 35);
  if (passphrase === undefined) {
    const deviceSalt = sim.device.state === 'Operational' ? sim.device.getGlobalConfig('backup-salt') : undefined;
    const key = deviceSalt !== undefined && sameBytes(deviceSalt, salt) ? sim.device.getGlobalConfig('backup-key') : undefined;
    if (key === undefined) throw new SimHttpError(400, 'No backupPassphrase provided');
    return key;
  }
  const tried: KdfParams[] = [sim.backupKdf, sim.backupKdf.N === PRODUCTION_KDF.N ? TEST_KDF : PRODUCTION_KDF];
  let key: Buffer | undefined;
  for (const params of tried) {
    key = await kdf(passphrase, salt, params);
    if (pre.length < PREAMBLE || versionFieldOpens(pre, key)) return key;
    key.fill(0);
  }
  throw new SimHttpError(400, 'Could not decrypt backup-version, authentication failed. Is the passphrase correct?');
}

/** Maps codec errors to the firmware's restore answers. */
function restoreError(err: unknown): SimHttpError {
  if (err instanceof SimHttpError) return err;
  if (err instanceof BackupNotABackupError) return new SimHttpError(400, 'Not a NetHSM backup file');
  if (err instanceof BackupUnsupportedVersionError) return new SimHttpError(400, 'Version mismatch on restore, expected 0 or 1.');
  if (err instanceof BackupWrongPassphraseError) return new SimHttpError(400, 'Could not decrypt backup-version, authentication failed. Is the passphrase correct?');
  if (err instanceof BackupTruncatedError) return new SimHttpError(400, 'Unexpected end of data');
  if (err instanceof BackupCorruptedError) return new SimHttpError(400, 'Could not decrypt backup. Backup incomplete, try another one.');
  return new SimHttpError(400, 'Invalid backup file.');
}

/** Reads and authenticates the whole file into memory; throws SimHttpError 400 on any failure (nothing applied). */
export async function stageBackup(source: AsyncIterable<Uint8Array>, sim: SimCore, passphrase: string | undefined): Promise<StagedBackup> {
  const it = source[Symbol.asyncIterator]();
  const pre = await peek(it, PREAMBLE);
  const backupKey = await backupKeyFor(pre, sim, passphrase);
  const entries = new Map<string, Buffer>();
  let header: BackupHeader | undefined;
  try {
    const reader = await openBackup(replay(pre, it), { backupKey });
    header = { ...reader.header, lockedDomainKey: Buffer.from(reader.header.lockedDomainKey) };
    if (reader.header.configStoreKey !== undefined) header.configStoreKey = Buffer.from(reader.header.configStoreKey);
    try {
      for await (const e of reader.entries()) {
        await sim.delay('restore-per-entry');
        entries.set(e.path, e.value);
      }
    } finally {
      await reader.close();
    }
    return { header, entries, truncated: false };
  } catch (err) {
    // The firmware's one partial case: marker present, trailer bytes present but wrong (§7.6).
    if (header !== undefined && err instanceof BackupTruncatedError && /trailer at offset \d+ is wrong/.test(err.message)) {
      return { header, entries, truncated: true };
    }
    throw restoreError(err);
  } finally {
    backupKey.fill(0);
  }
}

function moveLocalPath(p: string, fromDev: string, toDev: string): string {
  return `/local/${toDev}/` + p.slice(`/local/${fromDev}/`.length);
}

/**
 * The v1 values of a v0 backup's binary `log-config` and `ip-config`, converted as the firmware's migration does
 * (FACTS-system §4.4), in its order (log-config first). A value it cannot convert fails the restore with 400
 * `could not apply migrations to old backup: …`; here before anything is written.
 */
function convertV0LocalConfig(entries: Map<string, Buffer>): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const [name, convert] of [
    ['log-config', convertV0LogConfig],
    ['ip-config', convertV0IpConfig],
  ] as const) {
    const v0 = entries.get(`/config/${name}`);
    if (v0 === undefined) continue;
    const r = convert(v0);
    if (!r.ok) throw new SimHttpError(400, `could not apply migrations to old backup: ${r.error}`);
    out.set(name, r.value);
  }
  return out;
}

/** Unprovisioned → full restore (§7.4). Ends Locked, or Operational when a valid unattended slot came along. */
export function applyFullRestore(sim: SimCore, staged: StagedBackup): void {
  const { device } = sim;
  const { header, entries } = staged;
  if (!entries.has('/config/version')) throw new SimHttpError(500, 'Restore failed: the backup has no /config/version.');
  const converted = header.version === 0 ? convertV0LocalConfig(entries) : new Map<string, Buffer>();
  const sets: [string, Buffer][] = [];
  const me = device.deviceId;
  const backupDev = header.deviceId;
  for (const [p, value] of entries) {
    if (p.startsWith('/local/')) {
      const dev = p.split('/')[2] ?? '';
      if (header.version === 1 && dev !== backupDev) continue; // other cluster members' local data
      const configPrefix = `/local/${dev}/config/`;
      if (p.startsWith(configPrefix) && header.configStoreKey !== undefined) {
        const name = p.slice(configPrefix.length);
        try {
          sets.push(device.sealLocal(name, gcmOpen(header.configStoreKey, p, value)));
        } catch {
          // A local value that does not open is dropped; the device falls back to its defaults for it.
        }
        continue;
      }
      if (p === device.slotPath('unattended', dev)) {
        try {
          sets.push(device.sealSlot('unattended', gcmOpen(device.identity.deviceKey, Device.slotAd('unattended', dev), value)));
        } catch {
          // Sealed with another device's key: unattended boot cannot carry over.
        }
        continue;
      }
      if (p === device.slotPath('attended', dev)) continue; // rewritten from header field 4 below
      sets.push([moveLocalPath(p, dev, me), value]);
      continue;
    }
    if (header.version === 0 && p.startsWith('/config/') && LOCAL_CONFIG_NAMES.has(p.slice('/config/'.length))) {
      const name = p.slice('/config/'.length);
      sets.push(device.sealLocal(name, converted.get(name) ?? value));
      continue;
    }
    if (header.version === 0 && p === '/domain-key/unattended') {
      try {
        sets.push(device.sealSlot('unattended', gcmOpen(device.identity.deviceKey, 'domain-keyunattended', value)));
      } catch {
        // other device
      }
      continue;
    }
    if (header.version === 0 && p === '/domain-key/attended') continue;
    sets.push([p, value]);
  }
  sets.push(device.sealSlot('attended', header.lockedDomainKey));
  device.kv.batch(sets);
  sim.keys.dropPendingOperations();
  device.boot();
}

/** The backup device's unlock salt, if the file carries it. */
function backupUnlockSalt(staged: StagedBackup): Buffer | undefined {
  const { header, entries } = staged;
  if (header.version === 0) return entries.get('/config/unlock-salt');
  if (header.deviceId === undefined || header.configStoreKey === undefined) return undefined;
  const p = `/local/${header.deviceId}/config/unlock-salt`;
  const v = entries.get(p);
  if (v === undefined) return undefined;
  try {
    return gcmOpen(header.configStoreKey, p, v);
  } catch {
    return undefined;
  }
}

/**
 * Operational → partial restore (§7.5): users, keys, namespaces and the backup key/salt/cluster CA from the file,
 * removal of what it lacks (unless truncated), unlock salt and attended slot from the backup; Locked when the locked
 * domain key differs (unattended boot switched off).
 */
export function applyPartialRestore(sim: SimCore, staged: StagedBackup): void {
  const { device } = sim;
  const { header, entries, truncated } = staged;
  const inScope = (p: string): boolean => PARTIAL_PREFIXES.some((x) => p.startsWith(x)) || PARTIAL_GLOBALS.includes(p);
  const sets: [string, Buffer][] = [];
  for (const [p, v] of entries) if (inScope(p)) sets.push([p, v]);
  const deletes: string[] = truncated ? [] : device.kv.paths().filter((p) => inScope(p) && !entries.has(p));
  const salt = backupUnlockSalt(staged);
  if (salt !== undefined) sets.push(device.sealLocal('unlock-salt', salt));
  const current = device.readSlot('attended');
  const changed = current === undefined || !sameBytes(current, header.lockedDomainKey);
  sets.push(device.sealSlot('attended', header.lockedDomainKey));
  if (changed) {
    sets.push(device.sealLocal('unattended-boot', Buffer.from('0')));
    deletes.push(device.slotPath('unattended'));
  }
  device.kv.batch(sets, deletes);
  sim.keys.dropPendingOperations();
  if (changed) {
    device.setDomainKey(undefined);
    device.state = 'Locked';
  } else {
    device.setDomainKey(device.requireDomainKey()); // flush derived-key caches
    device.migrateLegacyConfig();
  }
}
