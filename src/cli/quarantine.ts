/**
 * `nethsm-replicator quarantine list [--json]` and `quarantine ack <file>` (docs/cli.md): what the quarantine folder
 * holds, and the operator's "I have looked at it". Both go through the daemon's admin API: the files open only with
 * the replication passphrase, which the daemon holds and the CLI never reads; the acknowledgement is written (and
 * audited) by the daemon in its state store.
 */
import type { Command } from 'commander';
import { z } from 'zod';
import { AdminClient } from '../admin/client.js';
import { DEFAULT_CONFIG_PATH } from '../config/index.js';
import { AdminRemoteError, InputInvalidError } from '../errors.js';
import { quarantineFileNameProblem } from '../replicator/workdir.js';
import { actor, resolveSocket } from './admin-commands.js';
import { relativeTime, scalar, table } from './format.js';

interface SocketFlags {
  config: string;
  socket?: string;
}

/** Ids shown per file in the table form; `--json` lists them all. */
const IDS_SHOWN = 20;

const fileSchema = z.looseObject({
  file: z.string(),
  namespace: z.string().nullable(),
  reason: z.string().nullable(),
  epoch: z.number().nullable(),
  seq: z.number().nullable(),
  site: z.string().nullable(),
  at: z.string(),
  bytes: z.number(),
  keys: z.number().nullable(),
  users: z.number().nullable(),
  keyIds: z.array(z.string()),
  userIds: z.array(z.string()),
  acknowledged: z.looseObject({ at: z.string(), actor: z.string() }).nullable(),
  error: z.string().nullable(),
});
const listSchema = z.looseObject({ directory: z.string(), files: z.array(fileSchema) });
export type QuarantineListAnswer = z.infer<typeof listSchema>;

/** Validates the daemon's answer. Throws AdminRemoteError naming the first field that does not fit. */
export function parseQuarantineList(value: unknown): QuarantineListAnswer {
  const r = listSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new AdminRemoteError(200, {
      message: `the daemon's quarantine list is malformed: ${issue?.path.join('.') || 'body'} ${issue?.message ?? ''}`.trim(),
      hint: 'Is the CLI the same version as the daemon? Compare `nethsm-replicator --version` with the daemon log.',
    });
  }
  return r.data;
}

/** Validates a `quarantine ack` argument: a bare file name as `quarantine list` shows it. Throws InputInvalidError. */
export function checkQuarantineFile(file: string): string {
  const problem = quarantineFileNameProblem(file);
  if (problem) throw new InputInvalidError(`quarantine file ${JSON.stringify(file.slice(0, 300))} ${problem}`);
  return file;
}

/** The table form: one row per file, then the ids each holds (the first IDS_SHOWN of each kind). */
export function renderQuarantineList(list: QuarantineListAnswer, now: Date = new Date()): string {
  if (list.files.length === 0) return `no quarantine files in ${list.directory}\n`;
  const rows = list.files.map((f) => [
    f.file,
    f.namespace ?? '-',
    f.reason ?? '-',
    f.epoch === null ? '-' : f.seq === null ? String(f.epoch) : `${f.epoch}.${f.seq}`,
    f.site ?? '-',
    `${f.at} (${relativeTime(f.at, now)})`,
    f.keys === null ? '-' : String(f.keys),
    f.users === null ? '-' : String(f.users),
    f.acknowledged ? `${f.acknowledged.actor} ${relativeTime(f.acknowledged.at, now)}` : 'NO',
  ]);
  const lines = [`quarantine files in ${list.directory}`, '', table([['FILE', 'NAMESPACE', 'REASON', 'EPOCH', 'SITE', 'WRITTEN', 'KEYS', 'USERS', 'ACKNOWLEDGED'], ...rows])];
  for (const f of list.files) {
    const details = [ids('key ids', f.keyIds, f.keys), ids('user ids', f.userIds, f.users), f.error ? `cannot be read: ${f.error}` : ''].filter(Boolean);
    if (details.length > 0) lines.push('', `${f.file}:`, ...details.map((d) => `  ${d}`));
  }
  const open = list.files.filter((f) => !f.acknowledged).length;
  lines.push('', open === 0 ? 'all acknowledged' : `${open} not acknowledged: look at each (docs/operations.md §6), then \`nethsm-replicator quarantine ack <file>\``);
  return lines.join('\n') + '\n';
}

function ids(what: string, list: readonly string[], total: number | null): string {
  if (list.length === 0) return '';
  const more = Math.max(list.length, total ?? 0) - Math.min(list.length, IDS_SHOWN);
  return `${what}: ${list.slice(0, IDS_SHOWN).map(scalar).join(', ')}${more > 0 ? ` … (${more} more; --json lists all)` : ''}`;
}

function socketOptions(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'config file; only read to find admin.socket', DEFAULT_CONFIG_PATH)
    .option('--socket <path>', "the daemon's admin socket (overrides --config)");
}

export function registerQuarantineCommands(program: Command): void {
  const q = program.command('quarantine').description('quarantine files: what they hold, and acknowledging them once looked at');
  socketOptions(
    q
      .command('list')
      .description('list the quarantine files with namespace, reason, epoch, key and user ids, when written and whether acknowledged')
      .option('--json', 'print the list as JSON (every id)'),
  ).action(async (flags: SocketFlags & { json?: boolean }) => {
    const client = new AdminClient({ socketPath: await resolveSocket(flags) });
    const list = parseQuarantineList(await client.quarantineList());
    process.stdout.write(flags.json ? JSON.stringify(list, null, 2) + '\n' : renderQuarantineList(list));
  });

  socketOptions(
    q
      .command('ack')
      .description('record (audited) that you have looked at a quarantine file; status stops reporting it')
      .argument('<file>', 'the file name as `quarantine list` shows it (no directory)'),
  ).action(async (file: string, flags: SocketFlags) => {
    checkQuarantineFile(file);
    const client = new AdminClient({ socketPath: await resolveSocket(flags) });
    const a = (await client.quarantineAck({ actor: actor(), file })) as { acknowledged?: { at?: string; actor?: string }; alreadyAcknowledged?: boolean };
    const by = `${scalar(a.acknowledged?.actor)} at ${scalar(a.acknowledged?.at)}`;
    process.stdout.write(a.alreadyAcknowledged ? `${file} was acknowledged already by ${by}\n` : `acknowledged ${file} (by ${by})\n`);
  });
}
