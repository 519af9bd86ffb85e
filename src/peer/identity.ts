/**
 * Who is on the other end of a peer connection. Peers present certificates issued by the replication group's CA
 * (verified by TLS itself); this maps a verified certificate to a configured peer by its common name and,
 * where configured, its pinned SHA-256 fingerprint. Pure.
 */
import type { PeerCertificate } from 'node:tls';
import { fingerprintsEqual } from '../tls/fingerprint.js';

export interface PeerIdentity {
  /** Site name; the certificate's CN must equal it. */
  name: string;
  /** Optional pin on top of the CA check. */
  fingerprint256?: string;
}

/** The configured peer this certificate belongs to, or undefined. */
export function identifyPeer(cert: PeerCertificate | undefined, peers: readonly PeerIdentity[]): PeerIdentity | undefined {
  if (!cert || !cert.subject) return undefined;
  const cn = Array.isArray(cert.subject.CN) ? undefined : cert.subject.CN;
  if (!cn) return undefined;
  const peer = peers.find((p) => p.name === cn);
  if (!peer) return undefined;
  if (peer.fingerprint256 && !fingerprintsEqual(peer.fingerprint256, cert.fingerprint256)) return undefined;
  return peer;
}
