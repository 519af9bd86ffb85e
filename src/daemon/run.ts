/**
 * Running the daemon as a service: load the config and its secrets, start, reload the config on SIGHUP (systemd's
 * ExecReload), stop cleanly on SIGTERM/SIGINT.
 * Exit codes: 0 after a clean stop, 78 (EX_CONFIG) for a config or secret error or an unusable state directory (systemd
 * does not restart those),
 * 1 otherwise.
 */
import { TEST_SCRYPT } from '../backup/format.js';
import { parseConfigSource, readConfigSource } from '../config/load.js';
import { loadSecrets } from '../config/secrets.js';
import { ConfigInvalidError, ConfigSecretError, StateDirUnusableError } from '../errors.js';
import { assertUsableStateDir } from '../state/state-dir.js';
import { createLogger, type Logger } from '../log.js';
import { Daemon } from './daemon.js';

export const EXIT_CONFIG = 78;

export interface RunOptions {
  configPath: string;
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
}

/** Starts the daemon and resolves with the exit code once a signal stopped it. */
export async function runDaemon(options: RunOptions): Promise<number> {
  const env = options.env ?? process.env;
  let log = options.logger ?? createLogger();
  let daemon: Daemon;
  try {
    const source = await readConfigSource(options.configPath);
    const config = parseConfigSource(source, env);
    // NHR_LOG_LEVEL overrides the config, to debug a site without editing it.
    if (!options.logger) log = createLogger({ level: env.NHR_LOG_LEVEL ?? config.logging.level });
    assertUsableStateDir(config.stateDir);
    const secrets = await loadSecrets(config, env);
    // Test and demo only: the firmware's unit-test KDF parameters for the files the daemon writes and opens.
    const unsafeScrypt = env.NHR_UNSAFE_TEST_SCRYPT === '1';
    if (unsafeScrypt) log.warn('NHR_UNSAFE_TEST_SCRYPT=1: snapshots use the test KDF parameters; never set this in production');
    daemon = new Daemon({
      config,
      secrets,
      logger: log,
      configFile: { path: source.path, digest: source.digest, env },
      logLevelFromConfig: !options.logger && env.NHR_LOG_LEVEL === undefined,
      ...(unsafeScrypt ? { scrypt: TEST_SCRYPT } : {}),
    });
  } catch (err) {
    log.fatal({ err }, 'cannot start: configuration');
    if (err instanceof ConfigInvalidError || err instanceof ConfigSecretError || err instanceof StateDirUnusableError) {
      process.stderr.write(`Error: ${err.message} [${err.code}]\nTry: ${err.hint}\n`);
      return EXIT_CONFIG;
    }
    throw err;
  }
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  // Without a handler, SIGHUP would end the process. A reload never throws; its outcome is logged and kept for status.
  const onHangup = () => {
    log.info({ signal: 'SIGHUP' }, 'reloading the config');
    void daemon.reloadConfig().catch((err: unknown) => log.error({ err }, 'config reload failed'));
  };
  process.on('SIGHUP', onHangup);
  try {
    await daemon.start();
  } catch (err) {
    process.off('SIGHUP', onHangup);
    // The CLI prints it too (Error/Try on stderr); this puts it in the structured log.
    log.fatal({ err }, 'cannot start');
    log.flush?.();
    throw err;
  }
  const signal = await stopped;
  process.off('SIGHUP', onHangup);
  log.info({ signal }, 'stopping: letting in-flight work finish');
  await daemon.close();
  log.flush?.();
  return 0;
}
