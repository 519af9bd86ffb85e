/**
 * The `nethsm-replicator` command line. Each area registers its commands from its own module.
 * Errors print as `Error: …` and `Try: …` on stderr, and the process exits non-zero.
 */
import { Command, CommanderError } from 'commander';
import { NhrError } from '../errors.js';
import { VERSION } from '../version.js';
import { registerAdminCommands } from './admin-commands.js';
import { registerBackup } from './backup.js';
import { registerCheckConfig } from './check-config.js';
import { registerInitReplica } from './init-replica.js';
import { registerDaemon } from './daemon.js';
import { registerDemo } from './demo.js';
import { registerKeyBackup } from './key-backup.js';
import { registerQuarantineCommands } from './quarantine.js';
import { registerSim } from './sim.js';

/** Builds the program; exported for tests that run commands in-process. */
export function buildProgram(): Command {
  const program = new Command('nethsm-replicator')
    .description('Replicates Nitrokey NetHSM namespaces between sites.')
    .version(VERSION)
    .showSuggestionAfterError()
    .exitOverride();
  registerAdminCommands(program);
  registerBackup(program);
  registerCheckConfig(program);
  registerInitReplica(program);
  registerDaemon(program);
  registerDemo(program);
  registerKeyBackup(program);
  registerQuarantineCommands(program);
  registerSim(program);
  return program;
}

/** Formats an error for an operator: `Error: …` and, when known, `Try: …`. */
export function formatCliError(err: unknown): string {
  if (err instanceof NhrError) {
    // The file, when the message does not name it: a command with two inputs (merge, key import) must say which one
    // is cut short or does not open.
    const file = err.path !== undefined && !err.message.includes(err.path) && `file ${err.path}`;
    const ctx = [file, err.namespace && `namespace ${err.namespace}`, err.site && `site ${err.site}`, err.epoch !== undefined && `epoch ${err.epoch}`]
      .filter(Boolean)
      .join(', ');
    return `Error: ${err.message}${ctx ? ` (${ctx})` : ''} [${err.code}]\nTry: ${err.hint}\n`;
  }
  const message = err instanceof Error ? err.message : String(err);
  return `Error: ${message}\n`;
}

/** Runs the CLI; resolves to the exit code. Never throws. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its message (help, version, or a usage error).
      return err.exitCode;
    }
    process.stderr.write(formatCliError(err));
    return 1;
  }
}
