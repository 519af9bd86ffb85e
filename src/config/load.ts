/**
 * Reading the config file from disk: the one impure wrapper around {@link parseConfig}.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigInvalidError } from '../errors.js';
import { parseDocument } from 'yaml';
import { expandEnv } from './expand.js';
import { parseConfig } from './parse.js';
import { DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR, type ReplicatorConfig } from './schema.js';

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

/** A config file as read: its absolute path, text and SHA-256 (hex) of its bytes. */
export interface ConfigSource {
  path: string;
  text: string;
  digest: string;
}

/** SHA-256 of a config file's bytes, lowercase hex: what `status` compares to tell that the file changed. */
export function configDigest(bytes: Buffer | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Reads the config file (no validation). Throws {@link ConfigInvalidError} naming the file when it cannot be read. */
export async function readConfigSource(file: string = DEFAULT_CONFIG_PATH): Promise<ConfigSource> {
  const absolute = path.resolve(file);
  let bytes: Buffer;
  try {
    bytes = await readFile(absolute);
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
  return { path: absolute, text: bytes.toString('utf8'), digest: configDigest(bytes) };
}

/** Validates a config file's text as the file at `source.path` ({@link parseConfig}; relative paths from its directory). */
export function parseConfigSource(source: ConfigSource, env: Readonly<Record<string, string | undefined>>): ReplicatorConfig {
  return parseConfig(source.text, env, { baseDir: path.dirname(source.path), source: source.path });
}

/**
 * Reads and validates the config file at `file` (default {@link DEFAULT_CONFIG_PATH}); relative paths inside it are
 * resolved against its directory. Throws {@link ConfigInvalidError} when unreadable or invalid.
 */
export async function loadConfigFile(
  file: string = DEFAULT_CONFIG_PATH,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<ReplicatorConfig> {
  return parseConfigSource(await readConfigSource(file), env);
}

/**
 * The admin socket a config text names (`admin.socket`, else `<stateDir>/admin.sock`), read leniently from a file that
 * may not validate as a whole: for the operator commands, which must reach a daemon running with an older, valid
 * version of an edited file. Undefined when the text is not YAML or those settings are not strings. Pure.
 */
export function adminSocketOf(text: string, env: Readonly<Record<string, string | undefined>>, baseDir: string): string | undefined {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return undefined;
  const raw = expandEnv(doc.toJS(), env, []) as { admin?: { socket?: unknown }; stateDir?: unknown } | null;
  if (raw === null || typeof raw !== 'object') return undefined;
  const socket = raw.admin?.socket;
  if (socket !== undefined) return typeof socket === 'string' && socket !== '' ? path.resolve(baseDir, socket) : undefined;
  const stateDir = raw.stateDir ?? DEFAULT_STATE_DIR;
  return typeof stateDir === 'string' && stateDir !== '' ? path.join(path.resolve(baseDir, stateDir), 'admin.sock') : undefined;
}
