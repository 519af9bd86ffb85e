/**
 * The demo (`nethsm-replicator demo`, `npm run demo`): two simulated sites on loopback replicating, then a failover.
 * Every step goes through the same surfaces an operator and an application use: the gateway for key generation, the
 * admin API (as `nethsm-replicator status` / `promote`) for the operator, the scheduler for replication.
 */
import { createWriteStream } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { AdminClient } from '../admin/client.js';
import { parseDaemonStatus, renderStatus } from '../cli/status.js';
import { describeAnswer } from '../cli/admin-commands.js';
import { createLogger } from '../log.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from './lab.js';

export interface DemoOptions {
  /** Where the narration goes. */
  out: NodeJS.WritableStream;
  /** Keys generated per site and round (default 10). */
  keys?: number;
  /** Daemon logs (JSON lines) go to this file; default: discarded. */
  logFile?: string;
  /** How long to wait for a replication step before failing (default 60 s). */
  stepTimeoutMs?: number;
}

/** Runs the demo; resolves when everything is stopped. Throws when a step does not happen (the demo then fails). */
export async function runDemo(options: DemoOptions): Promise<void> {
  const say = (line = '') => options.out.write(`${line}\n`);
  const keys = options.keys ?? 10;
  const timeout = options.stepTimeoutMs ?? 60_000;
  const logStream = options.logFile ? createWriteStream(options.logFile, { flags: 'a', mode: 0o600 }) : undefined;
  const started = Date.now();
  const step = (n: number, text: string) => say(`\n[${((Date.now() - started) / 1000).toFixed(1)}s] ${n}. ${text}`);

  step(1, 'Building two sites on loopback: a NetHSM simulator and a daemon each.');
  say('   Site a is provisioned and holds namespace alpha. Site b joins the replication domain as an operator would:');
  say("   a full restore of a's device backup onto an unprovisioned NetHSM (init-replica), then creates namespace beta.");
  const lab = await Lab.create({
    namespaces: [
      { name: 'alpha', primary: 'a' },
      { name: 'beta', primary: 'b' },
    ],
    gateway: true,
    schedule: '*/2 * * * * *',
    retryInterval: '1s',
    maxLagForPromote: '5m',
    ...(logStream ? { logger: (site: string) => createLogger({ name: `site-${site}`, destination: logStream, level: 'debug' }) } : {}),
  });
  try {
    await lab.startDaemons({ settle: false }); // its scheduled syncs start at once, and the demo shows them
    say('   Both daemons run. Each namespace replicates every 2 seconds (cron "*/2 * * * * *").');

    step(2, `Generating ${keys} EC keys in alpha at site a and ${keys} in beta at site b, at the same time, through each site's gateway.`);
    await Promise.all([generate(lab.site('a'), 'alpha', 'a-key', keys), generate(lab.site('b'), 'beta', 'b-key', keys)]);
    say(`   Done. Each site is primary for its own namespace and writes there.`);

    step(3, 'Waiting for the scheduled syncs to carry alpha to b and beta to a.');
    await waitUntil(async () => (await count(lab.site('b'), 'alpha')) === keys && (await count(lab.site('a'), 'beta')) === keys, timeout, 'replication both ways');
    say(`   b holds ${await count(lab.site('b'), 'alpha')} alpha keys; a holds ${await count(lab.site('a'), 'beta')} beta keys. Status at each site:`);
    for (const s of ['a', 'b']) await showStatus(lab.site(s), say);

    step(4, 'A replica serves keys: b signs with an alpha key generated at a. Writes to alpha at b are refused.');
    const op = lab.site('b').gatewayClient('alpha~operator', LAB_PASSPHRASES.nsOperator);
    const sig = await op.sign('a-key-0', 'ECDSA', Buffer.alloc(32, 0x42));
    await op.close();
    say(`   signature from b: ${sig.subarray(0, 16).toString('hex')}… (${sig.length} bytes)`);
    const admin = lab.site('b').gatewayClient('alpha~replicator', LAB_PASSPHRASES.replicator);
    const refused = await admin.generateKey({ id: 'not-here', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }).then(
      () => 'accepted (unexpected)',
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
    await admin.close();
    say(`   write at b: ${refused}`);

    step(5, 'Site a is lost: its daemon and its NetHSM stop.');
    await lab.site('a').stop();

    step(6, 'The operator at b promotes alpha (`nethsm-replicator promote alpha`).');
    const answer = await adminClient(lab.site('b')).namespaceAction('alpha', 'promote', { actor: 'operator@site-b', force: false });
    say(`   ${describeAnswer('promote', 'alpha', answer)}`);

    step(7, 'b is now primary for alpha and takes writes there.');
    await generate(lab.site('b'), 'alpha', 'written-at-b', 3);
    say(`   alpha at b: ${await count(lab.site('b'), 'alpha')} keys`);
    await showStatus(lab.site('b'), say);

    step(8, "Site a comes back. It learns alpha's new epoch from b, is fenced, exports its copy to quarantine, and resyncs as a replica.");
    const a = lab.site('a');
    await a.startSim();
    await a.startDaemon();
    say("   a's NetHSM restarted Locked (no unattended boot); the daemon waits for it. The operator unlocks it.");
    const unlocker = a.client();
    await unlocker.unlock(LAB_PASSPHRASES.unlock);
    await unlocker.close();
    await waitUntil(async () => a.daemon!.ctx.store.roles.get('alpha')?.role === 'replica' && (await count(a, 'alpha')) === keys + 3, timeout, 'a to resync');
    const quarantine = await readdir(a.daemon!.ctx.work.quarantine);
    say(`   quarantine file at a: ${path.join(a.daemon!.ctx.work.quarantine, quarantine[0] ?? '(none)')}`);
    say('   audit log at a for alpha:');
    for (const e of a.daemon!.ctx.store.audit.list({ namespace: 'alpha' })) {
      say(`     ${new Date(e.at).toISOString()}  ${e.action.padEnd(8)} epoch ${e.fromEpoch ?? '-'} → ${e.toEpoch ?? '-'}  ${e.fromRole ?? ''}${e.toRole ? ` → ${e.toRole}` : ''}  by ${e.actor}`);
    }
    await showStatus(a, say);

    step(9, `Done in ${((Date.now() - started) / 1000).toFixed(1)}s: replication both ways, failover, fencing and resync. Stopping everything.`);
  } finally {
    await lab.close();
    if (logStream) await new Promise<void>((r) => logStream.end(() => r()));
  }
}

async function generate(site: LabSite, ns: string, prefix: string, n: number): Promise<void> {
  const c = site.gatewayClient(`${ns}~admin`, LAB_PASSPHRASES.nsAdmin);
  try {
    for (let i = 0; i < n; i++) await c.generateKey({ id: `${prefix}-${i}`, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
  } finally {
    await c.close();
  }
}

async function count(site: LabSite, ns: string): Promise<number> {
  const c = site.nsOperator(ns);
  try {
    return (await c.listKeys()).length;
  } catch {
    return -1;
  } finally {
    await c.close();
  }
}

function adminClient(site: LabSite): AdminClient {
  return new AdminClient({ socketPath: site.config.admin.socket, timeoutMs: 120_000 });
}

async function showStatus(site: LabSite, say: (l: string) => void): Promise<void> {
  const status = parseDaemonStatus(await adminClient(site).status());
  say(`\n   $ nethsm-replicator status   (site ${site.name})`);
  for (const line of renderStatus(status).trimEnd().split('\n')) say(`   ${line}`);
}

async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`demo: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
