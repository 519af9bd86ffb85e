/** `nethsm-replicator daemon --config <file>`: runs the site's daemon in the foreground (systemd's ExecStart). */
import type { Command } from 'commander';
import { DEFAULT_CONFIG_PATH } from '../config/schema.js';

export function registerDaemon(program: Command): void {
  program
    .command('daemon')
    .description('run the replication daemon for this site until SIGTERM')
    .option('-c, --config <file>', 'configuration file', DEFAULT_CONFIG_PATH)
    .action(async (opts: { config: string }) => {
      // Loaded when the command runs: the operator commands do not pay for the daemon's modules.
      const { runDaemon } = await import('../daemon/run.js');
      process.exitCode = await runDaemon({ configPath: opts.config });
    });
}
