/**
 * User records as the firmware stores them (FACTS §6.5): `/authentication/<userId>` sealed with the auth store key,
 * JSON `{"name","salt","digest","role","tags"}` where salt and digest are raw bytes inside latin1 JSON strings.
 */
import { randomBytes } from 'node:crypto';
import { passphraseDigest, sameBytes } from './crypto.js';
import { latin1JsonString, parseLatin1Json, utf8AsLatin1, latin1AsUtf8 } from './latin1-json.js';
import type { Device } from './device.js';

export type Role = 'Administrator' | 'Operator' | 'Metrics' | 'Backup';
export const ROLES: readonly Role[] = ['Administrator', 'Operator', 'Metrics', 'Backup'];

export interface UserRecord {
  /** realName, as a normal (UTF-8 decoded) string. */
  name: string;
  salt: Buffer;
  digest: Buffer;
  role: Role;
  tags: string[];
}

export function userPath(userId: string): string {
  return `/authentication/${userId}`;
}

export function encodeUserRecord(u: UserRecord): Buffer {
  const json =
    `{"name":${latin1JsonString(utf8AsLatin1(u.name))},"salt":${latin1JsonString(u.salt)},"digest":${latin1JsonString(u.digest)},` +
    `"role":${latin1JsonString(u.role)},"tags":[${u.tags.map((t) => latin1JsonString(t)).join(',')}]}`;
  return Buffer.from(json, 'latin1');
}

/** Throws Error when the bytes are not a user record. */
export function decodeUserRecord(b: Buffer): UserRecord {
  const o = parseLatin1Json(b) as Record<string, unknown>;
  const { name, salt, digest, role, tags } = o;
  if (typeof name !== 'string' || typeof salt !== 'string' || typeof digest !== 'string') throw new Error('malformed user record');
  if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) throw new Error('malformed user record: role');
  if (!Array.isArray(tags) || !tags.every((t): t is string => typeof t === 'string')) throw new Error('malformed user record: tags');
  return { name: latin1AsUtf8(name), salt: Buffer.from(salt, 'latin1'), digest: Buffer.from(digest, 'latin1'), role: role as Role, tags };
}

export function newUserRecord(realName: string, role: Role, passphrase: string): UserRecord {
  return { name: realName, ...passphraseDigestFor(passphrase), role, tags: [] };
}

/** A fresh salt and digest for a passphrase (user creation and passphrase change). */
export function passphraseDigestFor(passphrase: string): { salt: Buffer; digest: Buffer } {
  const salt = randomBytes(16);
  return { salt, digest: passphraseDigest(salt, passphrase) };
}

export function checkPassphrase(u: UserRecord, passphrase: string): boolean {
  return sameBytes(passphraseDigest(u.salt, passphrase), u.digest);
}

/** Typed access to the users in the device's auth store. Requires the device to be unlocked. */
export class UserStore {
  constructor(private readonly device: Device) {}

  get(userId: string): UserRecord | undefined {
    const v = this.device.getSealed(userPath(userId), 'auth_store');
    return v === undefined ? undefined : decodeUserRecord(v);
  }

  exists(userId: string): boolean {
    return this.device.kv.has(userPath(userId));
  }

  put(userId: string, u: UserRecord): void {
    this.device.setSealed(userPath(userId), 'auth_store', encodeUserRecord(u));
  }

  delete(userId: string): boolean {
    return this.device.kv.delete(userPath(userId));
  }

  /** Every user id (root and namespaced), sorted. */
  list(): string[] {
    return this.device.kv
      .pathsUnder('/authentication/')
      .map((p) => p.slice('/authentication/'.length))
      .filter((id) => !id.startsWith('.') && !id.includes('/'))
      .sort();
  }
}
