/**
 * Reading the config file from disk: the one impure wrapper around {@link parseConfig}.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigInvalidError } from '../errors.js';
import { parseConfig } from './parse.js';
import { DEFAULT_CONFIG_PATH, type ReplicatorConfig } from './schema.js';

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
    throw new ConfigInvalidError(`config file ${absolute} cannot be read (${code})`, { path: absolute, cause: err });
  }
  return parseConfig(text, env, { baseDir: path.dirname(absolute), source: absolute });
}
