/**
 * Synthetic device backups for tests and benchmarks: realistic paths and value sizes (RSA-2048 key records ~2.2 KB,
 * user records ~200 B), in the firmware's order, without a NetHSM. Values are not real inner-encrypted records: they
 * are derived from the path (and a variant), so two entries never share a value and two "devices" can diverge.
 * Streams: only the user and root-key lists are held in memory; namespaced keys are generated in order.
 */
import { createHash, randomBytes } from 'node:crypto';
import { compareBackupPaths, type ScryptParams } from './format.js';
import { createBackupWriter } from './writer.js';

export interface SyntheticSpec {
  /** Namespace name → how many keys and users it holds (its `/namespace/<ns>` record is always written). */
  namespaces: Record<string, { keys: number; users: number }>;
  rootKeys: number;
  rootUsers: number;
  /** Changes every value, to make two devices' backups differ in content but not in layout. Default ''. */
  variant?: string;
  /** Bytes per key record; default 2200. */
  keySize?: number;
  /** Bytes per user record; default 200. */
  userSize?: number;
  deviceId?: string;
}

const pad = (i: number): string => String(i).padStart(8, '0');
const byPath = (a: string, b: string): number => compareBackupPaths(a, b);

/** The value of `path` in a synthetic backup: `size` bytes derived from SHA-256(variant ‖ path). */
export function syntheticValue(path: string, size: number, variant = ''): Buffer {
  const seed = createHash('sha256').update(variant).update('\0').update(path).digest();
  return Buffer.alloc(size, seed);
}

/** Key ids of a synthetic namespace or root (`k00000000`, …), in order. */
export function syntheticKeyId(i: number): string {
  return `k${pad(i)}`;
}

/** The entries of a synthetic device backup, in firmware order. */
export function* syntheticEntries(spec: SyntheticSpec): Generator<[string, Buffer]> {
  const v = spec.variant ?? '';
  const keySize = spec.keySize ?? 2200;
  const userSize = spec.userSize ?? 200;
  const dev = spec.deviceId ?? 'SYNTHETIC0001';
  const val = (p: string, size: number): [string, Buffer] => [p, syntheticValue(p, size, v)];
  const nsNames = Object.keys(spec.namespaces);
  yield ['/.initialized', Buffer.alloc(0)];

  const users = ['/authentication/.version'];
  for (let i = 0; i < spec.rootUsers; i++) users.push(`/authentication/${i === 0 ? 'admin' : `user${pad(i)}`}`);
  for (const ns of nsNames) for (let i = 0; i < (spec.namespaces[ns]?.users ?? 0); i++) users.push(`/authentication/${ns}~u${pad(i)}`);
  users.sort(byPath);
  for (const p of users) yield val(p, p.endsWith('.version') ? 30 : userSize);

  for (const p of ['/config/backup-key', '/config/backup-salt', '/config/version']) yield val(p, 60);

  // /key: namespace directories, the store version and root keys, in segment order.
  const keyItems = ['/key/.version', ...nsNames.map((ns) => `/key/.${ns}`)];
  for (let i = 0; i < spec.rootKeys; i++) keyItems.push(`/key/${syntheticKeyId(i)}`);
  keyItems.sort(byPath);
  for (const item of keyItems) {
    const ns = item.startsWith('/key/.') && item !== '/key/.version' ? item.slice(6) : undefined;
    if (ns === undefined) {
      yield val(item, item === '/key/.version' ? 30 : keySize);
      continue;
    }
    for (let i = 0; i < (spec.namespaces[ns]?.keys ?? 0); i++) yield val(`/key/.${ns}/${syntheticKeyId(i)}`, keySize);
  }

  for (const p of [`/local/${dev}/config/unlock-salt`, `/local/${dev}/domain-key/attended`]) yield val(p, 60);
  const nsRecords = ['/namespace/.version', ...nsNames.map((ns) => `/namespace/${ns}`)].sort(byPath);
  for (const p of nsRecords) yield val(p, 40);
}

export interface SyntheticWriteOptions {
  passphrase: string;
  scrypt?: ScryptParams;
  /** Header fields; random by default (a given lockedDomainKey makes two files "of the same domain"). */
  lockedDomainKey?: Buffer;
  configStoreKey?: Buffer;
}

/** Writes a synthetic device backup to `sink` (ended when done); resolves to the number of entries. */
export async function writeSyntheticDeviceBackup(sink: NodeJS.WritableStream, spec: SyntheticSpec, o: SyntheticWriteOptions): Promise<number> {
  const w = await createBackupWriter(sink, {
    passphrase: o.passphrase,
    ...(o.scrypt ? { scrypt: o.scrypt } : {}),
    lockedDomainKey: o.lockedDomainKey ?? randomBytes(60),
    deviceId: spec.deviceId ?? 'SYNTHETIC0001',
    configStoreKey: o.configStoreKey ?? randomBytes(32),
  });
  for (const [p, value] of syntheticEntries(spec)) await w.writeEntry(p, value);
  await w.finish();
  return w.entriesWritten;
}
