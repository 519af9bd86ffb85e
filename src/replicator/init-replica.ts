/**
 * Bootstrapping a NetHSM into the replication domain: a full restore of a primary's device backup onto an
 * Unprovisioned device (ARCHITECTURE "blobs only work on a device with the same domain key"). After it the device is
 * Locked with the primary's unlock passphrase, and holds the primary's users, keys and namespaces; the daemon's first
 * sync per namespace establishes positions, so nothing is recorded in the state store here.
 *
 * Contract: nothing is written to the device unless it is Unprovisioned, the file opens with the passphrase and passes
 * every integrity check, it is a device backup (no namespace/key backup manifest), and `confirm` said yes.
 */
import { fingerprintOfPem } from '../tls/fingerprint.js';
import type { ScryptParams } from '../backup/format.js';
import { listBackupContents, type BackupContents } from '../backup/namespace.js';
import { BackupKindMismatchError, InitReplicaFailedError, InitReplicaRefusedError } from '../errors.js';
import type { NetHsmClient, SystemState } from '../nethsm/client.js';

export interface InitReplicaPlan {
  /** The target NetHSM's URL, for messages and the question. */
  url: string;
  backupFile: string;
  contents: BackupContents;
}

export interface InitReplicaOptions {
  /** Client for the target NetHSM; no credentials needed (an Unprovisioned device takes a restore without auth). */
  client: NetHsmClient;
  url: string;
  /** The primary's device backup file. */
  backupFile: string;
  /** The group's device backup passphrase (the primary's). */
  backupPassphrase: string;
  /** Shown the plan; resolves true to write. May throw to refuse (e.g. no terminal to ask on). */
  confirm: (plan: InitReplicaPlan) => Promise<boolean>;
  /** KDF parameters of the file (default 'auto': production, then the firmware's test parameters). */
  scrypt?: ScryptParams | 'auto';
  /** The device's new clock (default now). */
  now?: () => Date;
}

export type InitReplicaResult =
  | { restored: true; state: SystemState; contents: BackupContents }
  | { restored: false; contents: BackupContents };

/**
 * Checks, shows, asks, restores, checks again. Throws InitReplicaRefusedError (device not Unprovisioned),
 * BackupKindMismatchError (not a device backup), the codec's errors (wrong passphrase, corrupted, truncated, not a
 * backup), NetHSM client errors, and InitReplicaFailedError when the device does not end Locked or Operational.
 */
export async function initReplica(options: InitReplicaOptions): Promise<InitReplicaResult> {
  const { client, url } = options;
  await requireUnprovisioned(client, url);
  const contents = await listBackupContents(options.backupFile, { input: { passphrase: options.backupPassphrase, scrypt: options.scrypt ?? 'auto' } });
  if (contents.kind !== 'device' || contents.manifest !== undefined) {
    const of = contents.manifest?.namespace ? ` of namespace ${contents.manifest.namespace}` : '';
    throw new BackupKindMismatchError(`${options.backupFile} is a ${contents.kind} backup${of}, not a device backup; nothing was written to ${url}`, {
      path: options.backupFile,
      hint: "init-replica needs a primary's whole-device backup (`POST /system/backup`, or `--from-peer <primary>`).",
    });
  }
  if (!(await options.confirm({ url, backupFile: options.backupFile, contents }))) return { restored: false, contents };
  // The question may have taken minutes: make sure nobody provisioned the device meanwhile.
  await requireUnprovisioned(client, url);
  const systemTime = (options.now?.() ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z');
  await client.restore(options.backupFile, { backupPassphrase: options.backupPassphrase, systemTime });
  const state = await client.healthState();
  if (state !== 'Locked' && state !== 'Operational') {
    throw new InitReplicaFailedError(`the restore onto ${url} finished but the NetHSM is ${state}, not Locked`, { operation: 'POST /system/restore' });
  }
  return { restored: true, state, contents };
}

async function requireUnprovisioned(client: NetHsmClient, url: string): Promise<void> {
  const state = await client.healthState();
  if (state !== 'Unprovisioned') {
    throw new InitReplicaRefusedError(`${url} is ${state}, not Unprovisioned: init-replica only writes to an unprovisioned NetHSM; nothing was changed`);
  }
}

/** The plan as lines for the operator: what the file holds and where it goes. */
export function describePlan(plan: InitReplicaPlan): string {
  const c = plan.contents;
  const lines = [
    `${plan.backupFile}: device backup (version ${c.version}${c.deviceId ? `, from device ${c.deviceId}` : ''}, ${c.entryCount} entries)`,
    `  root: ${plural(c.rootUsers, 'user')}, ${plural(c.rootKeys, 'key')}`,
  ];
  const names = Object.keys(c.namespaces).sort();
  for (const ns of names) {
    const n = c.namespaces[ns]!;
    lines.push(`  namespace ${ns}: ${plural(n.users, 'user')}, ${plural(n.keys, 'key')}${n.present ? '' : ' (users only: no namespace record)'}`);
  }
  if (names.length === 0) lines.push('  no namespaces');
  lines.push(
    `Target ${plan.url} is Unprovisioned. After the restore it belongs to the primary's replication domain, holds exactly`,
    "these users, keys and namespaces, and unlocks with the primary's unlock passphrase.",
  );
  return lines.join('\n') + '\n';
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * After init-replica and the unlock: a full restore carried the primary's TLS identity, which the NetHSM serves from
 * its next boot (FACTS-system §2.7), so the replica would present the primary's certificate. This gives the replica a
 * TLS key and certificate of its own (`POST /config/tls/generate`, EC P-256) and reads the new certificate back over
 * the same kept-alive, still-pinned connection (`admin` must be a one-connection client: a new connection would meet
 * the new certificate and fail the old pin, and nothing is ever sent over an unverified one). Returns the new
 * certificate's SHA-256 fingerprint (`AB:CD:…`) for `nethsm.tls.fingerprint256`.
 */
export async function renewTlsIdentity(admin: NetHsmClient): Promise<{ fingerprint256: string; certPem: string }> {
  const state = await admin.healthState();
  if (state !== 'Operational') {
    throw new InitReplicaRefusedError(`the NetHSM is ${state}: a new TLS certificate needs it Operational; nothing was changed`, {
      hint: "Unlock it with the primary's unlock passphrase first.",
      operation: 'POST /config/tls/generate',
    });
  }
  await admin.generateTls({ type: 'EC_P256' });
  const certPem = await admin.tlsCertificatePem();
  return { fingerprint256: fingerprintOfPem(certPem), certPem };
}
