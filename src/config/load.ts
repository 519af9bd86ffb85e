/**
 * Reading the config file from disk: the one impure wrapper around {@link parseConfig}.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigInvalidError } from '../errors.js';
import { parseConfig } from './parse.js';
import { DEFAULT_CONFIG_PATH, type ReplicatorConfig } from './schema.js';

/**
 * Where systemd puts the credentials of the shipped unit (`nethsm-replicator.service`): `$CREDENTIALS_DIRECTORY` as
 * the service sees it.
 */
export const SERVICE_CREDENTIALS_DIR = '/run/credentials/nethsm-replicator.service';

/**
 * `env` with CREDENTIALS_DIRECTORY defaulted to the service's, for operator commands run from a shell that only need
 * settings that are not secrets (the admin socket): the config then parses as the service parses it. Pure.
 */
export function withServiceCredentials(env: Readonly<Record<string, string | undefined>>): Record<string, string | undefined> {
  return { ...env, CREDENTIALS_DIRECTORY: env.CREDENTIALS_DIRECTORY ?? SERVICE_CREDENTIALS_DIR };
}

/**
 * Reads and validates the config file at `file` (default {@link DEFAULT_CONFIG_PATH}); relative paths inside it are
 * resolved against its directory. Throws {@link ConfigInvalidError} when unreadable or invalid.
 */
export async function loadConfigFile(
  file: string = DEFAULT_CONFIG_PATH,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<ReplicatorConfig> {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = await readFile(absolute, 'utf8');
  } catch (err) {
    const code = (err as { code?: string }).code ?? 'error';
    throw new ConfigInvalidError(`config file ${absolute} cannot be read (${code})`, {
      path: absolute,
      cause: err,
      hint:
        code === 'ENOENT'
          ? `Give the config file with --config <file> (default ${DEFAULT_CONFIG_PATH}); deploy/config.example.yaml is a starting point.`
          : 'Check that this user may read the config file (the service reads it as its own user), or give another with --config.',
    });
  }
  return parseConfig(text, env, { baseDir: path.dirname(absolute), source: absolute });
}
