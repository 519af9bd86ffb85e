/** `nethsm-replicator daemon --config <file>`: runs the site's daemon in the foreground (systemd's ExecStart). */
import type { Command } from 'commander';
import { DEFAULT_CONFIG_PATH } from '../config/schema.js';
import { runDaemon } from '../daemon/run.js';

export function registerDaemon(program: Command): void {
  program
    .command('daemon')
    .description('run the replication daemon for this site until SIGTERM')
    .option('-c, --config <file>', 'configuration file', DEFAULT_CONFIG_PATH)
    .action(async (opts: { config: string }) => {
      process.exitCode = await runDaemon({ configPath: opts.config });
    });
}
