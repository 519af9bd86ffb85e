/**
 * Clients the operator commands build from the config: this site's NetHSM and its peers. Unlike the daemon's (which
 * fail at start-up), these read each file with an error naming the setting and the path, so `check-config` and
 * `init-replica` can say which file is wrong.
 */
import { readConfigFile, type PeerTls } from '../config/files.js';
import type { PeerConfig, ReplicatorConfig } from '../config/index.js';
import { InputInvalidError } from '../errors.js';

export type { PeerTls } from '../config/files.js';
import { NetHsmClient, type TlsTrust } from '../nethsm/client.js';
import { PeerClient } from '../peer/client.js';

/** This site's peer TLS material (`tls.certFile`, `tls.keyFile`, `tls.caFile`). */
export async function readPeerTls(config: ReplicatorConfig): Promise<PeerTls> {
  return {
    certPem: await readConfigFile('tls.certFile', config.tls.certFile),
    keyPem: await readConfigFile('tls.keyFile', config.tls.keyFile),
    caPem: await readConfigFile('tls.caFile', config.tls.caFile),
  };
}

export async function netHsmTrust(config: ReplicatorConfig): Promise<TlsTrust> {
  const t = config.nethsm.tls;
  if ('caFile' in t) return { caPem: await readConfigFile('nethsm.tls.caFile', t.caFile) };
  if ('fingerprint256' in t) return { fingerprint256: t.fingerprint256 };
  return { insecure: true };
}

/** An unauthenticated client for this site's NetHSM; add accounts with `withAuth`. Close it when done. */
export async function netHsmClient(config: ReplicatorConfig, timeoutMs = 30_000): Promise<NetHsmClient> {
  return new NetHsmClient({ url: config.nethsm.url, tls: await netHsmTrust(config), timeoutMs });
}

/** The configured peer of that name. Throws InputInvalidError listing the configured ones. */
export function findPeer(config: ReplicatorConfig, name: string): PeerConfig {
  const peer = config.peers.find((p) => p.name === name);
  if (!peer) {
    const known = config.peers.map((p) => p.name).join(', ') || 'none';
    throw new InputInvalidError(`peer ${JSON.stringify(name)} is not in the config (configured peers: ${known})`, {
      hint: 'Name a peer from the config\'s `peers` list.',
    });
  }
  return peer;
}

export function peerClient(peer: PeerConfig, tls: PeerTls, timeoutMs?: number): PeerClient {
  return new PeerClient({
    url: peer.url,
    identity: { name: peer.name, ...(peer.fingerprint256 ? { fingerprint256: peer.fingerprint256 } : {}) },
    tls,
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  });
}
