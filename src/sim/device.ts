/**
 * The simulated device: identity (device id and device key), lifecycle state, the domain key while unlocked,
 * and the encrypted views of the KV store (FACTS §6.4–6.5). Every other module reads and writes state through this.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { deriveSubKey, gcmOpen, gcmSeal, kdf, type KdfParams } from './crypto.js';
import type { KvStore } from './kv.js';

export type SimState = 'Unprovisioned' | 'Locked' | 'Operational';
export type StoreName = 'auth_store' | 'key_store' | 'namespace_store' | 'config_store';
export type Slot = 'attended' | 'unattended';

/** Global config entries (shared in a cluster, backed up): sealed with the config store key in v1, plaintext in v0. */
export type GlobalConfigName = 'backup-key' | 'backup-salt' | 'cluster-ca';

export interface DeviceIdentity {
  deviceId: string;
  deviceKey: Buffer;
}

const ID_ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** A random 10-character device id in the firmware's style (upper-case alphanumerics). */
export function randomDeviceId(): string {
  const b = randomBytes(10);
  let out = '';
  for (const x of b) out += ID_ALPHABET[x % ID_ALPHABET.length];
  return out;
}

/** Loads `<dataDir>/device.json` or creates a fresh identity (persisted when dataDir is given). */
export async function loadIdentity(dataDir?: string): Promise<DeviceIdentity> {
  if (dataDir !== undefined) {
    const file = path.join(dataDir, 'device.json');
    try {
      const obj = JSON.parse(await readFile(file, 'utf8')) as { deviceId?: unknown; deviceKey?: unknown };
      if (typeof obj.deviceId !== 'string' || typeof obj.deviceKey !== 'string') throw new Error(`${file} is malformed`);
      const deviceKey = Buffer.from(obj.deviceKey, 'base64');
      if (deviceKey.length !== 32) throw new Error(`${file}: device key must be 32 bytes`);
      return { deviceId: obj.deviceId, deviceKey };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const identity = { deviceId: randomDeviceId(), deviceKey: randomBytes(32) };
    await saveIdentity(dataDir, identity);
    return identity;
  }
  return { deviceId: randomDeviceId(), deviceKey: randomBytes(32) };
}

/** Writes `<dataDir>/device.json` atomically (owner-only: it holds the device key). */
export async function saveIdentity(dataDir: string, identity: DeviceIdentity): Promise<void> {
  const file = path.join(dataDir, 'device.json');
  await mkdir(dataDir, { recursive: true });
  const tmp = `${file}.tmp`;
  await writeFile(tmp, JSON.stringify({ deviceId: identity.deviceId, deviceKey: identity.deviceKey.toString('base64') }), { mode: 0o600 });
  await rename(tmp, file);
}

export class Device {
  state: SimState = 'Unprovisioned';
  private domainKey: Buffer | undefined;
  private readonly storeKeys = new Map<StoreName, Buffer>();
  /** Called when the domain key changes or goes away (caches, op counters). */
  onDomainKeyChange: (() => void) | undefined;

  constructor(
    readonly kv: KvStore,
    readonly identity: DeviceIdentity,
    readonly unlockKdf: KdfParams,
  ) {}

  get deviceId(): string {
    return this.identity.deviceId;
  }

  /** `SHA256(deviceKey ‖ "early_config_store")`: seals the device-local config (header field 6 of a v1 backup). */
  configStoreKey(): Buffer {
    return deriveSubKey(this.identity.deviceKey, 'early_config_store');
  }

  localConfigPath(name: string, deviceId = this.deviceId): string {
    return `/local/${deviceId}/config/${name}`;
  }

  slotPath(slot: Slot, deviceId = this.deviceId): string {
    return `/local/${deviceId}/domain-key/${slot}`;
  }

  /** The firmware's odd associated data for slots: no leading `/`, no separator before the slot name. */
  static slotAd(slot: Slot, deviceId: string): string {
    return `local/${deviceId}/domain-key${slot}`;
  }

  getLocal(name: string): Buffer | undefined {
    const p = this.localConfigPath(name);
    const v = this.kv.get(p);
    return v === undefined ? undefined : gcmOpen(this.configStoreKey(), p, v);
  }

  setLocal(name: string, value: Buffer | string): void {
    const p = this.localConfigPath(name);
    this.kv.set(p, gcmSeal(this.configStoreKey(), p, Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8')));
  }

  /** Sealed value for a local-config entry, for batch writes. */
  sealLocal(name: string, value: Buffer): [string, Buffer] {
    const p = this.localConfigPath(name);
    return [p, gcmSeal(this.configStoreKey(), p, value)];
  }

  sealSlot(slot: Slot, value: Buffer): [string, Buffer] {
    return [this.slotPath(slot), gcmSeal(this.identity.deviceKey, Device.slotAd(slot, this.deviceId), value)];
  }

  /** The slot's content (locked domain key for attended, domain key for unattended), or undefined when absent or foreign. */
  readSlot(slot: Slot): Buffer | undefined {
    const v = this.kv.get(this.slotPath(slot));
    if (v === undefined) return undefined;
    try {
      return gcmOpen(this.identity.deviceKey, Device.slotAd(slot, this.deviceId), v);
    } catch {
      return undefined;
    }
  }

  isProvisioned(): boolean {
    return this.kv.has('/config/version');
  }

  /** State after (re)start: Unprovisioned without `/config/version`; Operational via a valid unattended slot; else Locked. */
  boot(): void {
    if (!this.isProvisioned()) {
      this.state = 'Unprovisioned';
      this.setDomainKey(undefined);
      return;
    }
    const dk = this.getLocal('unattended-boot')?.toString() === '1' ? this.readSlot('unattended') : undefined;
    if (dk !== undefined && dk.length === 32) {
      this.setDomainKey(dk);
      this.state = 'Operational';
      this.migrateLegacyConfig();
    } else {
      this.setDomainKey(undefined);
      this.state = 'Locked';
    }
  }

  /** Replaces the in-memory domain key (a copy is kept; `dk` may be the current key) and drops derived keys. */
  setDomainKey(dk: Buffer | undefined): void {
    const next = dk === undefined ? undefined : Buffer.from(dk);
    for (const k of this.storeKeys.values()) k.fill(0);
    this.storeKeys.clear();
    this.domainKey?.fill(0);
    this.domainKey = next;
    this.onDomainKeyChange?.();
  }

  hasDomainKey(): boolean {
    return this.domainKey !== undefined;
  }

  /** The domain key; throws when locked (callers run only in Operational). */
  requireDomainKey(): Buffer {
    if (this.domainKey === undefined) throw new Error('device is locked');
    return this.domainKey;
  }

  storeKey(store: StoreName): Buffer {
    let k = this.storeKeys.get(store);
    if (k === undefined) {
      k = deriveSubKey(this.requireDomainKey(), store);
      this.storeKeys.set(store, k);
    }
    return k;
  }

  /** Reads and opens a store-encrypted value (ad = full path). Undefined when absent; throws when it fails to open. */
  getSealed(p: string, store: StoreName): Buffer | undefined {
    const v = this.kv.get(p);
    return v === undefined ? undefined : gcmOpen(this.storeKey(store), p, v);
  }

  seal(p: string, store: StoreName, value: Buffer): Buffer {
    return gcmSeal(this.storeKey(store), p, value);
  }

  setSealed(p: string, store: StoreName, value: Buffer): void {
    this.kv.set(p, this.seal(p, store, value));
  }

  /**
   * Global config: sealed with the config store key. A v0 backup carries backup key (32 B) and salt (16 B) in
   * plaintext; such values (which never open as sealed) are returned as they are until migrated at unlock.
   */
  getGlobalConfig(name: GlobalConfigName): Buffer | undefined {
    const p = `/config/${name}`;
    const v = this.kv.get(p);
    if (v === undefined) return undefined;
    const legacy = this.legacyPlaintext(name, v);
    return legacy ?? gcmOpen(this.storeKey('config_store'), p, v);
  }

  /** The value when it is a v0 plaintext (right size for the name and not a sealed value), else undefined. */
  private legacyPlaintext(name: GlobalConfigName, v: Buffer): Buffer | undefined {
    const plainSize = name === 'backup-key' ? 32 : name === 'backup-salt' ? 16 : -1;
    if (v.length !== plainSize) return undefined;
    return Buffer.from(v);
  }

  setGlobalConfig(name: GlobalConfigName, value: Buffer): void {
    this.setSealed(`/config/${name}`, 'config_store', value);
  }

  /** Unlock: scrypt the passphrase with the device's unlock salt and open the locked domain key. False when wrong. */
  async openLockedDomainKey(passphrase: string): Promise<Buffer | undefined> {
    const salt = this.getLocal('unlock-salt');
    const locked = this.readSlot('attended');
    if (salt === undefined || locked === undefined) return undefined;
    const uk = await kdf(passphrase, salt, this.unlockKdf);
    try {
      return gcmOpen(uk, 'passphrase', locked);
    } catch {
      return undefined;
    } finally {
      uk.fill(0);
    }
  }

  /** Seals `dk` under a new unlock passphrase: fresh salt, new attended slot (and the unattended slot when on). */
  async writeUnlockPassphrase(passphrase: string, dk: Buffer): Promise<void> {
    const salt = randomBytes(16);
    const uk = await kdf(passphrase, salt, this.unlockKdf);
    const locked = gcmSeal(uk, 'passphrase', dk);
    uk.fill(0);
    this.kv.batch([this.sealLocal('unlock-salt', salt), this.sealSlot('attended', locked)]);
  }

  /** After unlocking a device restored from a v0 backup: seal plaintext backup key/salt, mark the store version 1. */
  migrateLegacyConfig(): void {
    for (const name of ['backup-key', 'backup-salt'] as const) {
      const v = this.kv.get(`/config/${name}`);
      const plain = v === undefined ? undefined : this.legacyPlaintext(name, v);
      if (plain !== undefined) this.setGlobalConfig(name, plain);
    }
    if (this.kv.get('/config/version')?.toString() === '0') this.kv.set('/config/version', Buffer.from('1'));
  }

  /** Seconds to add to the host clock (PUT /config/time, provision's systemTime). */
  timeOffsetSeconds(): number {
    const v = this.getLocal('time-offset');
    const n = v === undefined ? 0 : Number(v.toString());
    return Number.isFinite(n) ? n : 0;
  }

  now(): Date {
    return new Date(Date.now() + this.timeOffsetSeconds() * 1000);
  }

  setTime(t: Date): void {
    this.setLocal('time-offset', String(Math.round((t.getTime() - Date.now()) / 1000)));
  }
}
