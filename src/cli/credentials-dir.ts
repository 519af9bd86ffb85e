/**
 * `--credentials-dir <dir>`: the directory `${CREDENTIALS_DIRECTORY}` in the config stands for. systemd sets that
 * variable for the service (LoadCredential=); an operator running a command from a shell names the directory instead
 * of prefixing `CREDENTIALS_DIRECTORY=…`. One option, one meaning, for every command that reads the config's secrets.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { InputInvalidError } from '../errors.js';

export const CREDENTIALS_DIR_HELP =
  'the directory ${CREDENTIALS_DIRECTORY} stands for: systemd sets it for the service from LoadCredential=; from a shell, name the directory holding the credential files';

/** Adds the option to `cmd` (its value arrives as `credentialsDir`). */
export function withCredentialsDir(cmd: Command): Command {
  return cmd.option('--credentials-dir <dir>', CREDENTIALS_DIR_HELP);
}

/**
 * The environment a command expands the config with: `process.env`, with CREDENTIALS_DIRECTORY set to `dir` (made
 * absolute) when given. Throws InputInvalidError for an empty `dir`.
 */
export function credentialsEnv(dir: string | undefined): Readonly<Record<string, string | undefined>> {
  if (dir === '') throw new InputInvalidError('--credentials-dir must not be empty');
  return dir === undefined ? process.env : { ...process.env, CREDENTIALS_DIRECTORY: path.resolve(dir) };
}
