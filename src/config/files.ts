/**
 * Reading the files the config names (certificates, keys, CAs). Errors name the setting and the path, never the
 * content: `tls.keyFile /etc/nethsm-replicator/site.key cannot be read (EACCES)`. ConfigInvalidError, so the daemon
 * exits with 78 (EX_CONFIG) and systemd does not restart it in a loop.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { ConfigInvalidError } from '../errors.js';

function unreadable(setting: string, file: string, err: unknown): ConfigInvalidError {
  const code = (err as NodeJS.ErrnoException).code ?? 'error';
  return new ConfigInvalidError(`${setting} ${file} cannot be read (${code})`, {
    path: file,
    cause: err,
    hint: 'Check the path in the config and that the service user may read the file.',
  });
}

export async function readConfigFile(setting: string, file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw unreadable(setting, file, err);
  }
}

export function readConfigFileSync(setting: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw unreadable(setting, file, err);
  }
}

/** This site's peer TLS material (`tls.certFile`, `tls.keyFile`, `tls.caFile`). */
export interface PeerTls {
  certPem: string;
  keyPem: string;
  caPem: string;
}

export function readPeerTlsSync(tls: { certFile: string; keyFile: string; caFile: string }): PeerTls {
  return {
    certPem: readConfigFileSync('tls.certFile', tls.certFile),
    keyPem: readConfigFileSync('tls.keyFile', tls.keyFile),
    caPem: readConfigFileSync('tls.caFile', tls.caFile),
  };
}
