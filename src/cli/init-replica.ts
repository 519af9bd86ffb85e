/**
 * `nethsm-replicator init-replica [--config <file>] (--from-file <backup> | --from-peer <name>) [--yes]`: bootstraps
 * this site's Unprovisioned NetHSM into the replication domain by a full restore of a primary's device backup
 * (logic in `src/replicator/init-replica.ts`). Shows what will be written and asks first; without a terminal,
 * `--yes` is required. Records nothing in the state store.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { WorkDir } from '../replicator/workdir.js';
import { DEFAULT_CONFIG_PATH, loadConfigFile, loadSecrets } from '../config/index.js';
import { InitReplicaRefusedError, InputInvalidError } from '../errors.js';
import { describePlan, initReplica, renewTlsIdentity, type InitReplicaPlan } from '../replicator/init-replica.js';
import { NetHsmClient } from '../nethsm/client.js';
import { credentialsEnv, withCredentialsDir } from './credentials-dir.js';
import { findPeer, netHsmClient, netHsmTrust, peerClient, readPeerTls } from './site-clients.js';

interface Flags {
  config: string;
  fromFile?: string;
  fromPeer?: string;
  yes?: boolean;
  newTls?: boolean;
  credentialsDir?: string;
}

export function registerInitReplica(program: Command): void {
  const cmd = program
    .command('init-replica')
    .description("bootstrap this site's Unprovisioned NetHSM by restoring a primary's device backup onto it")
    .option('-c, --config <file>', 'config file (its NetHSM is the target; replication.backupPassphrase opens the backup)', DEFAULT_CONFIG_PATH)
    .option('--from-file <backup>', "a primary's device backup file")
    .option('--from-peer <name>', "fetch the device backup from this configured peer's daemon")
    .option('--yes', 'do not ask before restoring (required without a terminal)')
    .option('--new-tls', "after the restore and the unlock: give the NetHSM a TLS certificate of its own (the restore carried the primary's) and print its fingerprint for the config");
  withCredentialsDir(cmd).action(async (flags: Flags) => (flags.newTls ? runNewTls(flags) : runInitReplica(flags)));
}

/** `init-replica --new-tls`: the replica's own TLS identity, its fingerprint printed for `nethsm.tls.fingerprint256`. */
async function runNewTls(flags: Flags): Promise<void> {
  if (flags.fromFile !== undefined || flags.fromPeer !== undefined) {
    throw new InputInvalidError('--new-tls is a step of its own, after the restore and the unlock: give it without --from-file or --from-peer');
  }
  const env = credentialsEnv(flags.credentialsDir);
  const config = await loadConfigFile(flags.config, env);
  const secrets = await loadSecrets(config, env);
  const pool = new NetHsmClient({ url: config.nethsm.url, tls: await netHsmTrust(config), connections: 1, timeoutMs: 60_000 });
  try {
    const { fingerprint256 } = await renewTlsIdentity(pool.withAuth(secrets.nethsm.admin.username, secrets.nethsm.admin.password));
    process.stdout.write(
      `${config.nethsm.url} now serves a TLS certificate of its own, SHA-256 fingerprint:\n  ${fingerprint256}\n` +
        `Next: set it in ${path.resolve(flags.config)}:\n` +
        `  nethsm:\n    tls: { fingerprint256: "${fingerprint256}" }\n` +
        `then check the site (\`nethsm-replicator check-config --config ${flags.config}\`) and start the daemon (\`systemctl start nethsm-replicator\`).\n`,
    );
  } finally {
    await pool.close();
  }
}

async function runInitReplica(flags: Flags): Promise<void> {
  if ((flags.fromFile === undefined) === (flags.fromPeer === undefined)) {
    throw new InputInvalidError('give exactly one of --from-file <backup> or --from-peer <name>');
  }
  const env = credentialsEnv(flags.credentialsDir);
  const config = await loadConfigFile(flags.config, env);
  const peer = flags.fromPeer === undefined ? undefined : findPeer(config, flags.fromPeer);
  const secrets = await loadSecrets(config, env);
  const client = await netHsmClient(config, 30 * 60_000);
  let tmp: string | undefined;
  try {
    let backupFile = flags.fromFile !== undefined ? path.resolve(flags.fromFile) : '';
    if (peer) {
      // Check the target first: no point fetching a whole device backup for a device that will be refused.
      const state = await client.healthState();
      if (state !== 'Unprovisioned') {
        throw new InitReplicaRefusedError(`${config.nethsm.url} is ${state}, not Unprovisioned: init-replica only writes to an unprovisioned NetHSM; nothing was changed`);
      }
      tmp = await mkdtemp(path.join(os.tmpdir(), 'nhr-init-replica-'));
      backupFile = path.join(tmp, `${peer.name}-device.bak`);
      const pc = peerClient(peer, await readPeerTls(config), 30 * 60_000);
      try {
        process.stderr.write(`fetching the device backup from ${peer.name} (${peer.url}) …\n`);
        const { bytes } = await pc.fetchDeviceBackup(backupFile);
        process.stderr.write(`fetched ${bytes} bytes\n`);
      } finally {
        await pc.close();
      }
    }
    const result = await initReplica({
      client,
      url: config.nethsm.url,
      backupFile,
      backupPassphrase: secrets.replication.backupPassphrase,
      confirm: (plan) => confirm(plan, flags.yes === true),
    });
    if (!result.restored) {
      process.stdout.write(`not confirmed: nothing was written to ${config.nethsm.url}\n`);
      process.exitCode = 1;
      return;
    }
    // The daemon's first sync of these namespaces adopts them instead of refusing them as of unknown origin.
    const namespaces = Object.entries(result.contents.namespaces).filter(([, n]) => n.present).map(([name]) => name);
    await new WorkDir(config.stateDir).recordBootstrap(namespaces, result.contents.deviceId);
    const host = new URL(config.nethsm.url).host;
    process.stdout.write(
      `restored: ${config.nethsm.url} is now ${result.state}.\n` +
        (result.state === 'Locked'
          ? `Next: 1. unlock the NetHSM with the primary's unlock passphrase (\`nitropy nethsm --host ${host} unlock\`, or\n` +
            `     \`curl -X POST ${config.nethsm.url}/api/v1/unlock -H 'content-type: application/json' -d @unlock.json\`);\n` +
            '      its root accounts are now the primary\'s: nethsm.credentials in this config must be theirs.\n' +
            `  2. give it a TLS certificate of its own (the restore carried the primary's, served from its next boot):\n` +
            `     \`nethsm-replicator init-replica --new-tls --config ${flags.config}\`, and set the fingerprint it prints;\n` +
            `  3. \`nethsm-replicator check-config --config ${flags.config}\`, then start the daemon (\`systemctl start nethsm-replicator\`).\n`
          : `Next: \`nethsm-replicator init-replica --new-tls --config ${flags.config}\` (a TLS certificate of its own), check-config, then start the daemon.\n`),
    );
  } finally {
    await client.close();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
}

/** Prints the plan, then `--yes`, or asks on a terminal; refuses (throws) without either. */
async function confirm(plan: InitReplicaPlan, yes: boolean): Promise<boolean> {
  process.stdout.write(describePlan(plan));
  if (yes) return true;
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new InitReplicaRefusedError(`not confirmed: stdin is not a terminal to ask on; nothing was written to ${plan.url}`, {
      hint: 'Read the plan above, then run again with --yes.',
    });
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`Restore this backup onto ${plan.url}? [y/N] `);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}
