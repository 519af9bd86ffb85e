/**
 * `nethsm-replicator check-config [--config <file>] [--offline]`: validates the config, reads its secrets and TLS
 * files, and (unless `--offline`) checks that the NetHSM answers, that each account the daemon uses exists with
 * the right role and logs in, that the device backup passphrase opens this NetHSM's backups (reading only a backup's
 * header), and that each peer answers over mutual TLS and shares the replication passphrase (a sealed challenge, no
 * snapshot). Every check is one that does no harm: nothing is written to the NetHSM or a peer. One line per check;
 * exit 0 only when none failed. Never prints a secret: only setting paths, file paths, user ids and the remote side's
 * answers.
 */
import { X509Certificate, constants, createPrivateKey, publicEncrypt, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Command } from 'commander';
import { DEFAULT_CONFIG_PATH, loadConfigFile, loadSecrets, type LoadedSecrets, type ReplicatorConfig } from '../config/index.js';
import { openBackup } from '../backup/reader.js';
import { credentialsEnv, withCredentialsDir } from './credentials-dir.js';
import { DEVICE_BACKUP_PASSPHRASE, ROOT_CREDENTIALS } from '../daemon/credentials.js';
import { BackupWrongPassphraseError, NetHsmHttpError, NhrError, PeerRefusedError } from '../errors.js';
import type { NetHsmClient } from '../nethsm/client.js';
import type { PeerClient } from '../peer/client.js';
import { newChallenge, openPassphraseProof } from '../peer/passphrase-check.js';
import { DEFAULT_TRANSPORT_KEY_ID } from '../stream/transport-key.js';
import { DEFAULT_SITE_FIGURES, estimateSync } from '../replicator/cost-model.js';
import { relativeTime } from './format.js';
import { netHsmClient, peerClient, readPeerTls, type PeerTls } from './site-clients.js';

export type CheckOutcome = 'ok' | 'FAIL' | 'warn' | 'skip';
export interface CheckLine {
  outcome: CheckOutcome;
  what: string;
  detail: string;
}
export type Emit = (line: CheckLine) => void;

export interface CheckOptions {
  offline?: boolean;
  env?: Readonly<Record<string, string | undefined>>;
  /** Per-request timeout for the NetHSM and the peers. */
  timeoutMs?: number;
}

/** Runs every check, emitting a line each as it completes. Resolves to true when no check failed. Never throws. */
export async function checkConfig(file: string, options: CheckOptions, emit: Emit): Promise<boolean> {
  let failed = false;
  const out: Emit = (l) => {
    if (l.outcome === 'FAIL') failed = true;
    emit(l);
  };
  let config: ReplicatorConfig;
  try {
    config = await loadConfigFile(file, options.env ?? process.env);
  } catch (err) {
    out({ outcome: 'FAIL', what: 'config', detail: message(err) });
    return false;
  }
  out({ outcome: 'ok', what: 'config', detail: `site ${config.site}, ${config.namespaces.length} namespace(s), ${config.peers.length} peer(s)` });

  let secrets: LoadedSecrets | undefined;
  try {
    secrets = await loadSecrets(config, options.env ?? process.env);
    out({ outcome: 'ok', what: 'secrets', detail: 'every secret is readable and not empty' });
  } catch (err) {
    out({ outcome: 'FAIL', what: 'secrets', detail: message(err) });
  }
  const tls = await checkTlsFiles(config, out);

  if (options.offline) {
    out({ outcome: 'skip', what: 'network', detail: 'NetHSM, accounts and peers not checked (--offline)' });
    if (config.namespaces.some((n) => n.generate === 'device')) {
      out({ outcome: 'skip', what: 'catch-up cost', detail: "not estimated (--offline): it needs this NetHSM's key count" });
    }
    return !failed;
  }
  const timeoutMs = options.timeoutMs ?? 15_000;
  await checkNetHsm(config, secrets, timeoutMs, out);
  for (const peer of config.peers) {
    const what = `peer ${peer.name}`;
    if (!tls) {
      out({ outcome: 'skip', what, detail: 'not checked: the TLS files are not usable' });
      continue;
    }
    const client = peerClient(peer, tls, timeoutMs);
    try {
      const s = await client.status();
      if (s.site !== peer.name) out({ outcome: 'FAIL', what, detail: `${peer.url} answers as site ${s.site}, not ${peer.name}` });
      else {
        out({ outcome: 'ok', what, detail: `${peer.url} answers over mutual TLS (nethsm-replicator ${s.version}, ${s.namespaces.length} namespace(s))` });
        await checkReplicationPassphrase(config, peer.name, client, secrets, out);
      }
    } catch (err) {
      out({ outcome: 'FAIL', what, detail: message(err) });
    } finally {
      await client.close();
    }
  }
  return !failed;
}

/** This site's certificate, key and group CA: readable, parseable, matching, CN = site, issued by the CA. */
async function checkTlsFiles(config: ReplicatorConfig, out: Emit): Promise<PeerTls | undefined> {
  const what = 'tls';
  let tls: PeerTls;
  try {
    tls = await readPeerTls(config);
  } catch (err) {
    out({ outcome: 'FAIL', what, detail: message(err) });
    return undefined;
  }
  try {
    const cert = new X509Certificate(tls.certPem);
    const ca = new X509Certificate(tls.caPem);
    const key = createPrivateKey(tls.keyPem);
    const problems: string[] = [];
    const cn = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1];
    if (cn !== config.site) problems.push(`tls.certFile's CN is ${JSON.stringify(cn ?? '')}, peers expect the site name ${config.site}`);
    if (!cert.checkPrivateKey(key)) problems.push('tls.keyFile is not the key of tls.certFile');
    if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) problems.push('tls.certFile is not issued by tls.caFile');
    const expires = new Date(cert.validTo);
    if (expires.getTime() < Date.now()) problems.push(`tls.certFile expired ${relativeTime(expires.toISOString(), new Date())}`);
    if (problems.length > 0) out({ outcome: 'FAIL', what, detail: problems.join('; ') });
    else out({ outcome: 'ok', what, detail: `certificate CN=${cn} issued by the group CA, expires ${relativeTime(expires.toISOString(), new Date())}` });
    return problems.length > 0 ? undefined : tls;
  } catch (err) {
    out({ outcome: 'FAIL', what, detail: `a TLS file is not valid PEM: ${message(err)}` });
    return undefined;
  }
}

async function checkNetHsm(config: ReplicatorConfig, secrets: LoadedSecrets | undefined, timeoutMs: number, out: Emit): Promise<void> {
  let pool: NetHsmClient;
  try {
    pool = await netHsmClient(config, timeoutMs);
  } catch (err) {
    out({ outcome: 'FAIL', what: 'nethsm', detail: message(err) });
    return;
  }
  try {
    const state = await pool.healthState();
    const info = await pool.info();
    const product = `${info.vendor} ${info.product}`;
    if (state !== 'Operational') {
      const next = state === 'Locked' ? 'unlock it' : state === 'Unprovisioned' ? 'bootstrap it with `nethsm-replicator init-replica`' : 'wait for it';
      out({ outcome: 'FAIL', what: 'nethsm', detail: `${config.nethsm.url} (${product}) is ${state}, not Operational: ${next}` });
      out({ outcome: 'skip', what: 'accounts', detail: 'not checked: the NetHSM is not Operational' });
      return;
    }
    out({ outcome: 'ok', what: 'nethsm', detail: `${config.nethsm.url} (${product}) is Operational` });
    if (!secrets) {
      out({ outcome: 'skip', what: 'accounts', detail: 'not checked: secrets are unreadable' });
      return;
    }
    await checkAccounts(config, secrets, pool, out);
  } catch (err) {
    out({ outcome: 'FAIL', what: 'nethsm', detail: message(err) });
  } finally {
    await pool.close();
  }
}

async function checkAccounts(config: ReplicatorConfig, secrets: LoadedSecrets, pool: NetHsmClient, out: Emit): Promise<void> {
  const { admin, backup, metrics } = secrets.nethsm;
  const root = pool.withAuth(admin.username, admin.password, ROOT_CREDENTIALS.admin);
  const adminWhat = `admin account ${admin.username}`;
  try {
    const info = await root.systemInfo();
    out({ outcome: 'ok', what: adminWhat, detail: `authenticates as an Administrator (software ${info.softwareVersion})` });
  } catch (err) {
    out({ outcome: 'FAIL', what: adminWhat, detail: authProblem(err, 'Administrator', ROOT_CREDENTIALS.admin.setting) });
    out({ outcome: 'skip', what: 'other accounts', detail: 'not checked: they are looked up with the admin account' });
    return;
  }
  if (await checkRole(root, `backup account ${backup.username}`, backup.username, 'Backup', out, false)) {
    await checkDeviceBackup(pool, secrets, out);
  } else out({ outcome: 'skip', what: 'device backup passphrase', detail: 'not checked: it is checked on a backup the backup account takes' });
  if (metrics) {
    const what = `metrics account ${metrics.username}`;
    try {
      await pool.withAuth(metrics.username, metrics.password).metrics();
      out({ outcome: 'ok', what, detail: 'authenticates and reads /metrics' });
    } catch (err) {
      out({ outcome: 'FAIL', what, detail: authProblem(err, 'Metrics', ROOT_CREDENTIALS.metrics.setting) });
    }
  }
  await checkOperator(root, pool, secrets, out);
  /** Keys per namespace as listed below: the device's size for the catch-up cost. */
  const keys = new Map<string, number>();
  for (const [i, ns] of config.namespaces.entries()) {
    const cred = secrets.namespaces[ns.name];
    const what = `namespace ${ns.name} account ${ns.replicationUser.user}`;
    if (!cred) continue;
    let user;
    try {
      user = await root.getUser(cred.username);
    } catch (err) {
      if (err instanceof NetHsmHttpError && err.status === 404) {
        if (ns.primary !== config.site) {
          out({ outcome: 'warn', what, detail: `not on this NetHSM yet; it arrives with the namespace's first sync from ${ns.primary}` });
        } else out({ outcome: 'FAIL', what, detail: `does not exist on the NetHSM; create it as an Administrator of ${ns.name}` });
      } else out({ outcome: 'FAIL', what, detail: message(err) });
      continue;
    }
    if (user.role !== 'Administrator') {
      out({ outcome: 'FAIL', what, detail: `has role ${user.role}; the daemon needs an Administrator of ${ns.name}` });
      continue;
    }
    try {
      keys.set(ns.name, (await pool.withAuth(cred.username, cred.password).listKeys()).length);
      out({ outcome: 'ok', what, detail: `authenticates as an Administrator of ${ns.name}` });
    } catch (err) {
      out({ outcome: 'FAIL', what, detail: authProblem(err, `Administrator of ${ns.name}`, `namespaces[${i}].replicationUser`) });
    }
  }
  const rootKeys = await root.listKeys().then((k) => k.length, () => 0);
  checkCatchupCost(config, rootKeys + [...keys.values()].reduce((a, b) => a + b, 0), out);
}

/**
 * Keys generated inside a primary's NetHSM (`generate: device`) reach a replica only by catch-up snapshots, each a
 * merge-restore of the replica's whole NetHSM (docs/streaming.md, "Catch-ups in batches"). Warns when one, estimated
 * for a NetHSM of this one's size with the cost model's default figures (check-config measures nothing; the daemon
 * learns the real ones from its syncs and warns in `status`), takes longer than `stream.catchupWindow`.
 */
export function checkCatchupCost(config: ReplicatorConfig, deviceEntries: number, out: Emit): void {
  const device = config.namespaces.filter((n) => n.generate === 'device').map((n) => n.name);
  if (device.length === 0) return;
  const what = 'catch-up cost';
  const est = estimateSync(DEFAULT_SITE_FIGURES, deviceEntries);
  const windowS = config.stream.catchupWindowMs / 1000;
  const cost = `a catch-up snapshot into a NetHSM of ${deviceEntries} entries (this one's keys) takes about ${est.syncSeconds.toFixed(1)} s, holding writes ${est.holdSeconds.toFixed(1)} s (estimate from the default figures)`;
  const names = `namespace${device.length === 1 ? '' : 's'} ${device.join(', ')} (generate: device)`;
  const remedy = `Try: set stream.catchupWindow above ${Math.ceil(est.syncSeconds)} s, or generate: replicated for these namespaces so generated keys are streamed per key (docs/streaming.md)`;
  if (windowS === 0) out({ outcome: 'warn', what, detail: `${names}: stream.catchupWindow is 0s, so catch-ups are not bounded; ${cost}. ${remedy}` });
  else if (est.syncSeconds > windowS) out({ outcome: 'warn', what, detail: `${names}: ${cost}, longer than stream.catchupWindow (${windowS} s). ${remedy}` });
  else out({ outcome: 'ok', what, detail: `${names}: ${cost}, within stream.catchupWindow (${windowS} s)` });
}

/**
 * The backup account logs in and `replication.backupPassphrase` is the NetHSM's backup passphrase: a device backup is
 * started with the backup account, and only its header is read (magic, salt, the version field the passphrase must
 * open, the sealed header fields: a few hundred bytes), then the download is stopped. A whole-device backup can be
 * large; nothing of it is written anywhere.
 */
async function checkDeviceBackup(pool: NetHsmClient, secrets: LoadedSecrets, out: Emit): Promise<void> {
  const { backup } = secrets.nethsm;
  const what = `backup account ${backup.username}`;
  const passphraseWhat = 'device backup passphrase';
  let body;
  try {
    body = await pool.withAuth(backup.username, backup.password, ROOT_CREDENTIALS.backup).backup();
  } catch (err) {
    out({ outcome: 'FAIL', what, detail: authProblem(err, 'Backup', ROOT_CREDENTIALS.backup.setting) });
    out({ outcome: 'skip', what: passphraseWhat, detail: 'not checked: no backup could be started' });
    return;
  }
  out({ outcome: 'ok', what, detail: 'exists with role Backup and logs in (POST /system/backup)' });
  try {
    const reader = await openBackup(body, {
      passphrase: secrets.replication.backupPassphrase,
      scrypt: 'auto',
      passphraseSetting: DEVICE_BACKUP_PASSPHRASE,
    });
    const bytes = reader.bytesRead;
    try {
      await reader.close();
    } finally {
      // The header's config-store key is key material the reader leaves to its caller (reader.ts; close() zeroes only
      // the backup key): zeroed here, as the daemon's merges do (transform.ts closeAll).
      reader.header.configStoreKey?.fill(0);
    }
    out({ outcome: 'ok', what: passphraseWhat, detail: `replication.backupPassphrase opens this NetHSM's backups (read the first ${bytes} bytes of one; download stopped)` });
  } catch (err) {
    body.destroy();
    const wrong = err instanceof BackupWrongPassphraseError;
    out({
      outcome: 'FAIL',
      what: passphraseWhat,
      detail: wrong
        ? "replication.backupPassphrase does not open this NetHSM's backups: it is not the backup passphrase set on the NetHSM [NHR_ERR_BACKUP_WRONG_PASSPHRASE]"
        : message(err),
    });
  }
}

/**
 * The root Operator (`nethsm.credentials.operator`) unwraps the key material peers stream to this site, by decrypting
 * with the site's transport key (src/stream/transport-key.ts). When that key exists, the whole path is proven: 32 random
 * bytes wrapped to its public half are unwrapped through the NetHSM as the Operator (a decryption, nothing stored).
 * Before the daemon's first start it does not exist yet; then only the login is checked (`GET /keys`).
 */
async function checkOperator(root: NetHsmClient, pool: NetHsmClient, secrets: LoadedSecrets, out: Emit): Promise<void> {
  const op = secrets.nethsm.operator;
  if (!op) return;
  const what = `operator account ${op.username}`;
  const setting = ROOT_CREDENTIALS.operator.setting;
  try {
    const user = await root.getUser(op.username);
    if (user.role !== 'Operator') {
      out({ outcome: 'FAIL', what, detail: `has role ${user.role}, needs Operator (it unwraps streamed keys with the transport key)` });
      return;
    }
  } catch (err) {
    const missing = err instanceof NetHsmHttpError && err.status === 404;
    out({ outcome: 'FAIL', what, detail: missing ? 'does not exist on the NetHSM; create it with role Operator' : message(err) });
    return;
  }
  const operator = pool.withAuth(op.username, op.password, ROOT_CREDENTIALS.operator);
  let pem: string | undefined;
  try {
    pem = await root.publicKeyPem(DEFAULT_TRANSPORT_KEY_ID);
  } catch (err) {
    if (!(err instanceof NetHsmHttpError && err.status === 404)) {
      out({ outcome: 'FAIL', what, detail: `cannot read the transport key ${DEFAULT_TRANSPORT_KEY_ID}: ${message(err)}` });
      return;
    }
  }
  try {
    if (pem === undefined) {
      await operator.listKeys();
      out({ outcome: 'ok', what, detail: `authenticates as an Operator; the transport key ${DEFAULT_TRANSPORT_KEY_ID} does not exist yet (the daemon creates it at its first start)` });
      return;
    }
    const probe = randomBytes(32);
    const wrapped = publicEncrypt({ key: pem, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, probe);
    const back = await operator.decrypt(DEFAULT_TRANSPORT_KEY_ID, 'OAEP_SHA256', wrapped);
    const same = back.length === probe.length && timingSafeEqual(back, probe);
    probe.fill(0);
    back.fill(0);
    if (same) out({ outcome: 'ok', what, detail: `authenticates as an Operator and unwraps with this site's transport key ${DEFAULT_TRANSPORT_KEY_ID}` });
    else out({ outcome: 'FAIL', what, detail: `the transport key ${DEFAULT_TRANSPORT_KEY_ID} did not unwrap what was wrapped to its public half` });
  } catch (err) {
    if (err instanceof NetHsmHttpError && err.status === 403) {
      out({ outcome: 'FAIL', what, detail: `authenticates, but may not use the transport key ${DEFAULT_TRANSPORT_KEY_ID} (403): an Operator restricted by tags needs the key's tag` });
    } else out({ outcome: 'FAIL', what, detail: authProblem(err, 'Operator', setting) });
  }
}

/**
 * `replication.passphrase` is the peer's: the peer seals a fresh challenge under its own passphrase and this site opens
 * it with its own (src/peer/passphrase-check.ts). No snapshot is taken; nothing is written.
 */
async function checkReplicationPassphrase(config: ReplicatorConfig, peer: string, client: PeerClient, secrets: LoadedSecrets | undefined, out: Emit): Promise<void> {
  const what = `peer ${peer} replication passphrase`;
  if (!secrets) {
    out({ outcome: 'skip', what, detail: 'not checked: secrets are unreadable' });
    return;
  }
  const challenge = newChallenge();
  try {
    const proof = await client.replicationPassphraseProof(challenge);
    const same = await openPassphraseProof(secrets.replication.passphrase, challenge, proof, { sealer: peer, asker: config.site });
    if (same) out({ outcome: 'ok', what, detail: `replication.passphrase is the same as ${peer}'s (a challenge sealed by ${peer} opens here)` });
    else {
      out({
        outcome: 'FAIL',
        what,
        detail: `replication.passphrase differs from ${peer}'s: every site of the replication group needs the same one (snapshots from ${peer} would not open here)`,
      });
    }
  } catch (err) {
    if (err instanceof PeerRefusedError && err.status === 404) {
      out({ outcome: 'warn', what, detail: `not checked: ${peer} does not offer the check (an older nethsm-replicator)` });
    } else if (err instanceof PeerRefusedError && err.status === 429) {
      out({ outcome: 'warn', what, detail: `not checked: ${err.message}` });
    } else out({ outcome: 'FAIL', what, detail: message(err) });
  } finally {
    challenge.fill(0);
  }
}

/** Whether `userId` exists with `role`; a FAIL line otherwise, and with `okLine` an ok line when it does. */
async function checkRole(root: NetHsmClient, what: string, userId: string, role: string, out: Emit, okLine = true): Promise<boolean> {
  try {
    const user = await root.getUser(userId);
    if (user.role === role) {
      if (okLine) out({ outcome: 'ok', what, detail: `exists with role ${role}` });
      return true;
    }
    out({ outcome: 'FAIL', what, detail: `has role ${user.role}, needs ${role}` });
  } catch (err) {
    const missing = err instanceof NetHsmHttpError && err.status === 404;
    out({ outcome: 'FAIL', what, detail: missing ? `does not exist on the NetHSM; create it with role ${role}` : message(err) });
  }
  return false;
}

/** What a failed login means, naming the config setting whose secret to fix. */
function authProblem(err: unknown, role: string, setting: string): string {
  if (err instanceof NetHsmHttpError && err.status === 401) return `the NetHSM refused the credentials (401): wrong user or passphrase in ${setting}`;
  if (err instanceof NetHsmHttpError && err.status === 429) return 'the NetHSM is rate-limiting this user after a failed login (429); run again in a few seconds';
  if (err instanceof NetHsmHttpError && err.status === 403) return `authenticated but not allowed (403): is it an ${role}?`;
  return message(err);
}

function message(err: unknown): string {
  if (err instanceof NhrError) return `${err.message} [${err.code}]`;
  return err instanceof Error ? err.message : String(err);
}

/** `ok    what: detail`, the outcome padded so the columns line up. Multi-line details are indented. */
export function formatCheckLine(l: CheckLine): string {
  return `${l.outcome.padEnd(4)}  ${l.what}: ${l.detail.replace(/\n/g, '\n      ')}\n`;
}

export function registerCheckConfig(program: Command): void {
  const cmd = program
    .command('check-config')
    .description('validate the config, its secrets and TLS files, and check the NetHSM, its accounts and the peers')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG_PATH)
    .option('--offline', 'only check the file, the secrets and the TLS files (no network)');
  withCredentialsDir(cmd).action(async (flags: { config: string; offline?: boolean; credentialsDir?: string }) => {
      const env = credentialsEnv(flags.credentialsDir);
      const counts: Record<CheckOutcome, number> = { ok: 0, FAIL: 0, warn: 0, skip: 0 };
      const ok = await checkConfig(flags.config, { offline: flags.offline === true, env }, (l) => {
        counts[l.outcome]++;
        process.stdout.write(formatCheckLine(l));
      });
      const tail = [counts.warn && `${counts.warn} warning(s)`, counts.skip && `${counts.skip} skipped`].filter(Boolean).join(', ');
      process.stdout.write(ok ? `\nno check failed${tail ? ` (${tail})` : ''}\n` : `\n${counts.FAIL} check(s) FAILED\n`);
      if (!ok) process.exitCode = 1;
    });
}
