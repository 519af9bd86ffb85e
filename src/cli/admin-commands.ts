/**
 * The operator commands that talk to the running daemon over its admin API (unix socket): `status`, `sync`,
 * `promote`, `demote`, `pause`, `resume`, `admins restore` (docs/cli.md). Arguments are validated before any request; the daemon's
 * refusals come back as NhrErrors with its code and hint, which `main` prints as `Error: …` / `Try: …` (exit 1).
 */
import os from 'node:os';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { AdminClient } from '../admin/client.js';
import type { NamespaceAction } from '../admin/protocol.js';
import { DEFAULT_CONFIG_PATH, withServiceCredentials } from '../config/index.js';
import { adminSocketOf, parseConfigSource, readConfigSource } from '../config/load.js';
import { ConfigInvalidError, InputInvalidError } from '../errors.js';
import { isValidId } from '../nethsm/ids.js';
import { scalar } from './format.js';
import { parseDaemonStatus, renderStatus, statusExitCode } from './status.js';

interface SocketFlags {
  config: string;
  socket?: string;
}

/** How long `status` waits; actions wait the client's default (syncs and promotes can take minutes). */
const STATUS_TIMEOUT_MS = 30_000;

/**
 * The admin socket: `--socket`, else the config's `admin.socket`. The config is only parsed (its secrets are not
 * read), so an operator without access to the credentials can still ask the daemon; `${CREDENTIALS_DIRECTORY}` in it
 * stands for the service's credentials directory when a root shell has none. Throws ConfigInvalidError.
 */
export async function resolveSocket(flags: SocketFlags): Promise<string> {
  if (flags.socket !== undefined) {
    if (flags.socket === '') throw new InputInvalidError('--socket must not be empty');
    return path.resolve(flags.socket);
  }
  const env = withServiceCredentials(process.env);
  const source = await readConfigSource(flags.config);
  try {
    return parseConfigSource(source, env).admin.socket;
  } catch (err) {
    // An edited file that does not validate (yet): the daemon still runs with the config it loaded, and its status
    // says so. Its socket is found from the file's admin.socket or stateDir, as parseConfig would find it.
    const socket = err instanceof ConfigInvalidError ? adminSocketOf(source.text, env, path.dirname(source.path)) : undefined;
    if (socket === undefined) throw err;
    process.stderr.write(
      `note: ${source.path} does not validate (${err instanceof ConfigInvalidError ? err.problems.length : 1} problem(s); \`check-config\` lists them); using its admin socket ${socket}\n`,
    );
    return socket;
  }
}

/** Who is asking, for the daemon's audit log: `user@host`. */
export function actor(): string {
  let user: string;
  try {
    user = os.userInfo().username;
  } catch {
    // No passwd entry (some containers): fall back to the uid.
    user = process.env.USER ?? `uid${process.getuid?.() ?? '?'}`;
  }
  return `${user}@${os.hostname()}`.slice(0, 200);
}

/** Validates a namespace argument by the NetHSM id rule. Throws InputInvalidError. */
export function checkNamespace(ns: string): string {
  if (!isValidId(ns)) {
    throw new InputInvalidError(`namespace ${JSON.stringify(ns)} is not a valid NetHSM namespace id (letters, digits and _.-, not starting with _.-; 1..128)`);
  }
  return ns;
}

function socketOptions(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'config file; only read to find admin.socket', DEFAULT_CONFIG_PATH)
    .option('--socket <path>', "the daemon's admin socket (overrides --config)");
}

export function registerAdminCommands(program: Command): void {
  socketOptions(
    program
      .command('status')
      .description('show roles, epochs, syncs, lag and member health of the running daemon (exit 2: something needs attention)')
      .option('--json', 'print the status object as JSON'),
  ).action(async (flags: SocketFlags & { json?: boolean }) => {
    const client = new AdminClient({ socketPath: await resolveSocket(flags), timeoutMs: STATUS_TIMEOUT_MS });
    const status = parseDaemonStatus(await client.status());
    process.stdout.write(flags.json ? JSON.stringify(status, null, 2) + '\n' : renderStatus(status));
    process.exitCode = statusExitCode(status);
  });

  socketOptions(
    program
      .command('sync')
      .description('run a snapshot sync of a namespace now (at a replica site)')
      .argument('<namespace>')
      .addOption(
        new Option('--on-existing <what>', 'when the device already holds the namespace: refuse, or remove it (after a backup of it)')
          .choices(['refuse', 'remove'])
          .default('refuse'),
      )
      .option('--force', 'sync even though the namespace is paused at this site (it stays paused)'),
  ).action(async (ns: string, flags: SocketFlags & { onExisting: 'refuse' | 'remove'; force?: boolean }) => {
    await runAction(ns, 'sync', flags, { onExisting: flags.onExisting, force: flags.force === true });
  });

  socketOptions(
    program
      .command('promote')
      .description('make this site primary for a namespace (at a replica site)')
      .argument('<namespace>')
      .option('--force', 'promote even when this replica is behind or its last sync failed'),
  ).action(async (ns: string, flags: SocketFlags & { force?: boolean }) => {
    checkNamespace(ns);
    if (flags.force) {
      process.stderr.write(
        'Warning: --force promotes even when this replica is behind or its last sync failed: changes the old primary made ' +
          'after the last sync are not here (the old primary exports them to a quarantine file when it is fenced).\n',
      );
    }
    await runAction(ns, 'promote', flags, { force: flags.force === true });
  });

  socketOptions(
    program
      .command('demote')
      .description('hand a namespace over to a replica with nothing lost (planned switchover, at the primary site)')
      .argument('<namespace>')
      .option('--to <site>', 'the replica site to hand over to (default: the only replica)'),
  ).action(async (ns: string, flags: SocketFlags & { to?: string }) => {
    if (flags.to !== undefined && !isValidId(flags.to)) throw new InputInvalidError(`--to ${JSON.stringify(flags.to)} is not a valid site name`);
    await runAction(ns, 'demote', flags, flags.to === undefined ? {} : { to: flags.to });
  });

  for (const [action, what] of [
    ['pause', 'stop scheduled syncs of a namespace at this site until resume'],
    ['resume', 'resume scheduled syncs of a paused namespace'],
  ] as const) {
    socketOptions(program.command(action).description(what).argument('<namespace>')).action(async (ns: string, flags: SocketFlags) => {
      await runAction(ns, action, flags, {});
    });
  }

  const admins = program.command('admins').description("a namespace's administrators on this site's NetHSM");
  socketOptions(
    admins
      .command('restore')
      .description('retry now the administrator restore a promote (or resuming leadership) still owes for a namespace (`status` shows it as a PROBLEM); the daemon also retries by itself')
      .argument('<namespace>')
      .option('--forget', "drop the pending restore WITHOUT restoring anything, after putting the namespace's administrators back by hand (its source file is gone: docs/operations.md §4.1)", false),
  ).action(async (ns: string, flags: SocketFlags & { forget: boolean }) => {
    checkNamespace(ns);
    const client = new AdminClient({ socketPath: await resolveSocket(flags) });
    // A failed attempt comes back as the daemon's NHR_ERR_ROLE_ADMINS_NOT_RESTORED (or _SOURCE_MISSING): `main` prints
    // Error:/Try:, exit 1.
    const answer = await client.namespaceAction(ns, 'restore-admins', { actor: actor(), ...(flags.forget ? { forget: true } : {}) });
    process.stdout.write(describeAdminsRestore(ns, answer) + '\n');
  });
}

/** What `admins restore` did, from the daemon's answer (AdminRestorer.retryNow). */
export function describeAdminsRestore(ns: string, answer: unknown): string {
  const a = answer !== null && typeof answer === 'object' ? (answer as Record<string, unknown>) : {};
  const epoch = typeof a.epoch === 'number' ? ` at epoch ${a.epoch}` : '';
  switch (a.outcome) {
    case 'restored':
      // 0 is a real outcome (the file holds none of the namespace's users), not a restore: say so.
      if (a.restored === 0) {
        return `no users of ${ns} to put back${epoch}: the file they come back from${typeof a.source === 'string' ? ` (${a.source})` : ''} holds none (or, for a promote, no snapshot was ever applied here); the pending restore is cleared`;
      }
      return `administrators of ${ns} restored on this site's NetHSM${epoch} (${typeof a.restored === 'number' ? a.restored : '?'} users put back); its users can write again`;
    case 'forgotten':
      return `the pending administrator restore of ${ns}${epoch} is forgotten: nothing was restored by the daemon; writes are admitted again (administrators not put back by hand get 401 from the NetHSM)`;
    case 'nothing-pending':
      return `no administrator restore is pending for ${ns}: nothing to do`;
    case 'superseded':
      return `the administrator restore of ${ns} was dropped, not made: the role it was owed under${epoch} was superseded (demote, fence or a newer epoch), and that role must stay without them`;
    default:
      return `admins restore ${ns}: ${scalar(answer)}`;
  }
}

async function runAction(ns: string, action: NamespaceAction, flags: SocketFlags, extra: Record<string, unknown>): Promise<void> {
  checkNamespace(ns);
  const client = new AdminClient({ socketPath: await resolveSocket(flags) });
  const answer = await client.namespaceAction(ns, action, { actor: actor(), ...extra });
  const partial = action === 'promote' ? adminsPendingOf(answer) : undefined;
  if (partial) {
    // The role changed: not the generic failure (exit 1, "nothing changed"), not success either (docs/cli.md, promote).
    process.stdout.write(describePartialPromote(ns, answer as Record<string, unknown>, partial) + '\n');
    process.exitCode = PROMOTED_WITHOUT_ADMINISTRATORS;
    return;
  }
  process.stdout.write(describeAnswer(action, ns, answer) + '\n');
}

/** `promote`'s exit code when the role changed but the administrators are not restored yet (the daemon retries). */
export const PROMOTED_WITHOUT_ADMINISTRATORS = 3;

/** The answer's `administratorsPending` (the restore failed; the daemon retries), or undefined. */
function adminsPendingOf(answer: unknown): { code: string; cause: string; hint: string } | undefined {
  if (answer === null || typeof answer !== 'object') return undefined;
  const p = (answer as Record<string, unknown>).administratorsPending;
  if (p === null || typeof p !== 'object') return undefined;
  const { code, cause, hint } = p as Record<string, unknown>;
  return { code: typeof code === 'string' ? code : 'NHR_ERR_ROLE_ADMINS_NOT_RESTORED', cause: typeof cause === 'string' ? cause : 'unknown', hint: typeof hint === 'string' ? hint : '' };
}

/**
 * What a promote whose administrator restore failed did and did not do: the role changed (epoch), the administrators
 * are NOT restored, the daemon retries, why, and what to do.
 */
export function describePartialPromote(ns: string, a: Record<string, unknown>, p: { code: string; cause: string; hint: string }): string {
  const epoch = typeof a.epoch === 'number' ? a.epoch : '?';
  const from = typeof a.previousEpoch === 'number' ? ` (was ${a.previousEpoch})` : '';
  return (
    `promoted ${typeof a.namespace === 'string' ? a.namespace : ns}: this site is PRIMARY at epoch ${epoch}${from}, but its administrators were NOT restored on the NetHSM (${p.code}); ` +
    `writes by the namespace's users are refused until they are; the daemon retries by itself.\nCause: ${p.cause}${p.hint ? `\nTry: ${p.hint}` : ''}`
  );
}

const PAST: Record<NamespaceAction, string> = { sync: 'synced', promote: 'promoted', demote: 'demoted', pause: 'paused', resume: 'resumed', 'restore-admins': 'administrators restored for' };

/**
 * One line saying what happened, from the daemon's answer: `promoted alpha at site b: epoch 3 → 4`, then any other
 * fields as `key=value`. Tolerates any JSON shape (the answer is shown, not interpreted).
 */
export function describeAnswer(action: NamespaceAction, ns: string, answer: unknown): string {
  const a: Record<string, unknown> = answer !== null && typeof answer === 'object' && !Array.isArray(answer) ? { ...(answer as Record<string, unknown>) } : {};
  const shown = new Set(['namespace', 'ok']);
  let line = `${PAST[action]} ${typeof a.namespace === 'string' ? a.namespace : ns}`;
  if (typeof a.site === 'string') {
    line += ` at site ${a.site}`;
    shown.add('site');
  }
  if (typeof a.epoch === 'number' && typeof a.previousEpoch === 'number' && a.epoch !== a.previousEpoch) {
    line += `: epoch ${a.previousEpoch} → ${a.epoch}`;
    shown.add('epoch').add('previousEpoch');
  }
  const rest = Object.entries(a).filter(([k]) => !shown.has(k));
  if (rest.length > 0) line += (line.includes(':') ? ', ' : ': ') + rest.map(([k, v]) => `${k}=${scalar(v)}`).join(' ');
  if (answer !== null && typeof answer !== 'object') line += `: ${scalar(answer)}`;
  return line;
}
