/**
 * Key warm-up at start: derives, in the background, the backup keys the first sync after a start would otherwise
 * derive on its own path (production scrypt: about a second each, up to four per sync, on a 2-core appliance beside
 * the device's backups; docs/benchmarks.md, "key warm-up at start"):
 *   1. the device's backup key, for the salt remembered from an earlier backup (`device_backup_salt`, migration 006);
 *   2. at a site primary for a namespace, the snapshot key ring's current key (the first snapshot it serves): the key of
 *      the generation recorded before the restart while it is within its limits (`resumed`: the replicas already hold
 *      it), else of a fresh salt;
 *   3. at a replica, the keys of the salts of its last applied snapshots (its primary seals under one key for up to an
 *      hour, so a replica restarted alone meets that salt again).
 *
 * Contract: never awaited by start-up or readiness; one derivation at a time (async scrypt: one thread of the pool,
 * off the event loop), at most 1 + 1 + MAX_SNAPSHOT_SALTS derivations per start. A guess that turns out wrong (a salt
 * no longer in use) costs a derivation and nothing else: a key in a cache is only ever used when it opens the file's
 * version field, else the reader forgets it and derives as without a cache. Every failure is logged and ends the step;
 * the sync then derives as it would have. The keys live in the daemon's caches only (never SQLite or files) and are
 * zeroed by the daemon's close, which may come while a derivation runs (its key is zeroed as it arrives).
 */
import { stat } from 'node:fs/promises';
import { PRODUCTION_SCRYPT, type ScryptParams } from '../backup/format.js';
import { readBackupSalt } from '../backup/reader.js';
import type { SiteContext } from './context.js';

/** Salts of applied snapshots derived at most (the most recent files first). */
export const MAX_SNAPSHOT_SALTS = 2;

/** What the warm-up derived (for its log line and tests). */
export interface WarmupOutcome {
  device: 'derived' | 'none remembered' | 'other parameters' | 'failed';
  /** `resumed`: the recorded generation's salt (kept across the restart); `derived`: a fresh salt's. */
  snapshotRing: 'resumed' | 'derived' | 'not primary' | 'failed';
  snapshotSalts: number;
}

/** Runs the warm-up steps in order. Never rejects. */
export async function warmKeys(ctx: SiteContext): Promise<WarmupOutcome> {
  const t0 = Date.now();
  const out: WarmupOutcome = { device: await warmDeviceKey(ctx), snapshotRing: await warmSnapshotRing(ctx), snapshotSalts: await warmSnapshotSalts(ctx) };
  ctx.log.info({ ...out, durationMs: Date.now() - t0 }, 'backup keys derived ahead of the first sync');
  return out;
}

async function warmDeviceKey(ctx: SiteContext): Promise<WarmupOutcome['device']> {
  const { keyCache, passphrase, scrypt } = ctx.deviceOpen;
  if (!keyCache || passphrase === undefined || !ctx.store.isOpen) return 'none remembered';
  try {
    const remembered = ctx.store.backupSalt.get();
    if (!remembered) return 'none remembered';
    // A daemon told which parameters to use (tests) never opens with others: a key for those would never be used.
    if (scrypt !== undefined && scrypt !== 'auto' && !sameParams(scrypt, remembered.params)) return 'other parameters';
    await keyCache.warm(passphrase, remembered.salt, remembered.params);
    return 'derived';
  } catch (err) {
    ctx.log.warn({ err }, 'deriving the device backup key ahead failed; the next sync derives it');
    return 'failed';
  }
}

async function warmSnapshotRing(ctx: SiteContext): Promise<WarmupOutcome['snapshotRing']> {
  if (!ctx.snapshotKeys || !ctx.store.isOpen || !ctx.store.roles.list().some((r) => r.role === 'primary')) return 'not primary';
  try {
    await ctx.snapshotKeys.prepare();
    return ctx.snapshotKeys.resumed ? 'resumed' : 'derived';
  } catch (err) {
    ctx.log.warn({ err }, 'deriving the snapshot sealing key ahead failed; the next snapshot derives it');
    return 'failed';
  }
}

async function warmSnapshotSalts(ctx: SiteContext): Promise<number> {
  const { keyCache, passphrase, scrypt } = ctx.snapshotOpen;
  if (!keyCache || passphrase === undefined || !ctx.store.isOpen) return 0;
  const params: ScryptParams = scrypt === undefined || scrypt === 'auto' ? PRODUCTION_SCRYPT : scrypt;
  let derived = 0;
  for (const salt of await recentSnapshotSalts(ctx)) {
    try {
      await keyCache.warm(passphrase, salt, params);
      derived++;
    } catch (err) {
      ctx.log.warn({ err }, 'deriving a snapshot key ahead failed; the next sync derives it');
      return derived;
    }
  }
  return derived;
}

/** The distinct salts of the replica namespaces' last applied snapshots, newest file first, at most MAX_SNAPSHOT_SALTS. */
async function recentSnapshotSalts(ctx: SiteContext): Promise<Buffer[]> {
  const files: { file: string; mtime: number }[] = [];
  for (const row of ctx.store.roles.list()) {
    if (row.role !== 'replica') continue;
    const file = ctx.work.snapshotOf(row.namespace);
    const s = await stat(file).catch(() => undefined);
    if (s?.isFile()) files.push({ file, mtime: s.mtimeMs });
  }
  files.sort((x, y) => y.mtime - x.mtime);
  const salts: Buffer[] = [];
  for (const { file } of files) {
    if (salts.length >= MAX_SNAPSHOT_SALTS) break;
    // A file that is not a backup (or was removed meanwhile) is skipped: the sync reports what is wrong with it.
    const salt = await readBackupSalt(file).catch(() => undefined);
    if (salt && !salts.some((x) => x.equals(salt))) salts.push(salt);
  }
  return salts;
}

function sameParams(a: ScryptParams, b: ScryptParams): boolean {
  return a.N === b.N && a.r === b.r && a.p === b.p;
}
