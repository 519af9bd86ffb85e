/**
 * Resolving the config's secret references into values, at start-up, once. Separate from `parseConfig` so that
 * validation (`check-config`) needs no access to the secrets, and the config object never holds them.
 * Contract: errors name the setting path and the source (file path / variable name), never the value.
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import { ConfigSecretError } from '../errors.js';
import type { ReplicatorConfig } from './schema.js';
import { describeSecretRef, type AccountRef, type SecretRef } from './secret-ref.js';

export interface Credential {
  readonly username: string;
  readonly password: string;
}

export interface LoadedSecrets {
  readonly nethsm: { readonly backup: Credential; readonly admin: Credential; readonly metrics?: Credential; readonly operator?: Credential };
  /** Replication account per namespace name. */
  readonly namespaces: Readonly<Record<string, Credential>>;
  readonly replication: { readonly passphrase: string; readonly backupPassphrase: string };
}

export type SecretFileReader = (path: string) => Promise<string | Buffer> | string | Buffer;

/**
 * Reads every secret the config names. A file's content loses one trailing newline (`echo pw > file`), nothing else.
 * Throws one {@link ConfigSecretError} listing every unreadable, unset or empty secret by setting path.
 */
export async function loadSecrets(
  config: ReplicatorConfig,
  env: Readonly<Record<string, string | undefined>> = process.env,
  readFile: SecretFileReader = (p) => fsReadFile(p),
): Promise<LoadedSecrets> {
  const problems: string[] = [];
  const resolve = async (where: string, ref: SecretRef): Promise<string> => {
    try {
      const value = await resolveOne(ref, env, readFile);
      if (value === '') problems.push(`${where}: ${describeSecretRef(ref)} is empty`);
      return value;
    } catch (err) {
      problems.push(`${where}: ${describeSecretRef(ref)} ${(err as Error).message}`);
      return '';
    }
  };
  const account = async (where: string, a: AccountRef): Promise<Credential> => ({
    username: a.user,
    password: await resolve(`${where}.passphrase`, a.passphrase),
  });

  const creds = config.nethsm.credentials;
  const backup = await account('nethsm.credentials.backup', creds.backup);
  const admin = await account('nethsm.credentials.admin', creds.admin);
  const metrics = creds.metrics ? await account('nethsm.credentials.metrics', creds.metrics) : undefined;
  const operator = creds.operator ? await account('nethsm.credentials.operator', creds.operator) : undefined;
  const namespaces: Record<string, Credential> = {};
  for (const [i, ns] of config.namespaces.entries()) {
    namespaces[ns.name] = await account(`namespaces[${i}].replicationUser`, ns.replicationUser);
  }
  const passphrase = await resolve('replication.passphrase', config.replication.passphrase);
  const backupPassphrase = await resolve('replication.backupPassphrase', config.replication.backupPassphrase);

  if (problems.length > 0) {
    throw new ConfigSecretError(`cannot read ${problems.length} secret${problems.length === 1 ? '' : 's'}:\n  - ${problems.join('\n  - ')}`);
  }
  return Object.freeze({
    nethsm: Object.freeze({ backup, admin, ...(metrics ? { metrics } : {}), ...(operator ? { operator } : {}) }),
    namespaces: Object.freeze(namespaces),
    replication: Object.freeze({ passphrase, backupPassphrase }),
  });
}

/** Throws an Error whose message is a predicate about the source (`is not set`), never holding the value. */
async function resolveOne(
  ref: SecretRef,
  env: Readonly<Record<string, string | undefined>>,
  readFile: SecretFileReader,
): Promise<string> {
  switch (ref.kind) {
    case 'inline':
      return ref.value;
    case 'env': {
      const v = env[ref.name];
      if (v === undefined) throw new Error('is not set');
      return v;
    }
    case 'file': {
      let content: string | Buffer;
      try {
        content = await readFile(ref.path);
      } catch (err) {
        // Only the error code, and no cause: a reader's message could in principle quote content.
        // eslint-disable-next-line preserve-caught-error
        throw new Error(`cannot be read (${(err as { code?: string }).code ?? 'error'})`);
      }
      if (typeof content === 'string') return content.replace(/\r?\n$/, '');
      const text = content.toString('utf8');
      content.fill(0);
      return text.replace(/\r?\n$/, '');
    }
  }
}
