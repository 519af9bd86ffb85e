/**
 * `nethsm-replicator check-config [--config <file>] [--offline]`: validates the config, reads its secrets and TLS
 * files, and (unless `--offline`) checks that the NetHSM answers, that each account the daemon uses exists with
 * the right role, and that each peer answers over mutual TLS. One line per check; exit 0 only when none failed.
 * Never prints a secret: only setting paths, file paths, user ids and the remote side's answers.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import path from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_CONFIG_PATH, loadConfigFile, loadSecrets, type LoadedSecrets, type ReplicatorConfig } from '../config/index.js';
import { InputInvalidError, NetHsmHttpError, NhrError } from '../errors.js';
import type { NetHsmClient } from '../nethsm/client.js';
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
      else out({ outcome: 'ok', what, detail: `${peer.url} answers over mutual TLS (nethsm-replicator ${s.version}, ${s.namespaces.length} namespace(s))` });
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
  const root = pool.withAuth(admin.username, admin.password);
  const adminWhat = `admin account ${admin.username}`;
  try {
    const info = await root.systemInfo();
    out({ outcome: 'ok', what: adminWhat, detail: `authenticates as an Administrator (software ${info.softwareVersion})` });
  } catch (err) {
    out({ outcome: 'FAIL', what: adminWhat, detail: authProblem(err, 'Administrator') });
    out({ outcome: 'skip', what: 'other accounts', detail: 'not checked: they are looked up with the admin account' });
    return;
  }
  // A Backup user can only take a backup (POST /system/backup); taking one just to test a passphrase is too heavy.
  await checkRole(root, `backup account ${backup.username}`, backup.username, 'Backup', out, '; passphrase not checked (a Backup user can only take backups)');
  if (metrics) {
    const what = `metrics account ${metrics.username}`;
    try {
      await pool.withAuth(metrics.username, metrics.password).metrics();
      out({ outcome: 'ok', what, detail: 'authenticates and reads /metrics' });
    } catch (err) {
      out({ outcome: 'FAIL', what, detail: authProblem(err, 'Metrics') });
    }
  }
  for (const ns of config.namespaces) {
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
      await pool.withAuth(cred.username, cred.password).listKeys();
      out({ outcome: 'ok', what, detail: `authenticates as an Administrator of ${ns.name}` });
    } catch (err) {
      out({ outcome: 'FAIL', what, detail: authProblem(err, `Administrator of ${ns.name}`) });
    }
  }
}

async function checkRole(root: NetHsmClient, what: string, userId: string, role: string, out: Emit, note = ''): Promise<void> {
  try {
    const user = await root.getUser(userId);
    if (user.role === role) out({ outcome: 'ok', what, detail: `exists with role ${role}${note}` });
    else out({ outcome: 'FAIL', what, detail: `has role ${user.role}, needs ${role}` });
  } catch (err) {
    const missing = err instanceof NetHsmHttpError && err.status === 404;
    out({ outcome: 'FAIL', what, detail: missing ? `does not exist on the NetHSM; create it with role ${role}` : message(err) });
  }
}

function authProblem(err: unknown, role: string): string {
  if (err instanceof NetHsmHttpError && err.status === 401) return 'the NetHSM refused the credentials (401): wrong user or passphrase';
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
  program
    .command('check-config')
    .description('validate the config, its secrets and TLS files, and check the NetHSM, its accounts and the peers')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG_PATH)
    .option('--offline', 'only check the file, the secrets and the TLS files (no network)')
    .option(
      '--credentials-dir <dir>',
      'the directory ${CREDENTIALS_DIRECTORY} stands for: systemd sets it for the service from LoadCredential=; from a shell, name the directory holding the credential files',
    )
    .action(async (flags: { config: string; offline?: boolean; credentialsDir?: string }) => {
      if (flags.credentialsDir === '') throw new InputInvalidError('--credentials-dir must not be empty');
      const env = flags.credentialsDir === undefined ? process.env : { ...process.env, CREDENTIALS_DIRECTORY: path.resolve(flags.credentialsDir) };
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
