/** `nethsm-replicator demo`: two simulated sites replicating, then a failover (the README's first command). */
import type { Command } from 'commander';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run two simulated sites on loopback: replication both ways, then a failover (nothing is left running)')
    .option('--keys <n>', 'keys generated per site', '10')
    .option('--log-file <file>', 'write the daemons\' JSON logs to this file')
    .action(async (opts: { keys: string; logFile?: string }) => {
      const keys = Number(opts.keys);
      if (!Number.isInteger(keys) || keys < 1 || keys > 1000) throw new Error(`--keys must be a whole number from 1 to 1000, not ${JSON.stringify(opts.keys)}`);
      const { runDemo } = await import('../lab/demo.js');
      await runDemo({ out: process.stdout, keys, ...(opts.logFile ? { logFile: opts.logFile } : {}) });
    });
}
