/**
 * How the client trusts a NetHSM's TLS certificate: a CA, a pinned SHA-256 fingerprint (NetHSMs ship self-signed
 * certificates), or an explicit insecure opt-in. Builds the undici connect option for each.
 */
import type { TLSSocket } from 'node:tls';
import { buildConnector } from 'undici';
import { InputInvalidError, TlsPinMismatchError } from '../errors.js';
import { fingerprintOfDer, normaliseFingerprint } from '../tls/fingerprint.js';

/** Exactly one of the three. */
export interface TlsTrust {
  /** PEM of the CA (or the server certificate itself) that must sign the server certificate; host name is checked. */
  caPem?: string;
  /** SHA-256 fingerprint of the server certificate, `AB:CD:…` or plain hex, any case. */
  fingerprint256?: string;
  /** Accept any certificate. Logs a warning once per client. */
  insecure?: boolean;
}

/** The certificate and key a client presents (PEM). */
export interface ClientIdentity {
  certPem: string;
  keyPem: string;
}

export type TrustMode =
  | { kind: 'ca'; caPem: string }
  | { kind: 'pin'; fingerprint256: string }
  | { kind: 'insecure' };

/** Validates a TlsTrust. Throws InputInvalidError naming what is wrong. */
export function parseTrust(tls: TlsTrust | undefined): TrustMode {
  if (tls === undefined || tls === null || typeof tls !== 'object') {
    throw new InputInvalidError('tls is required: give caPem, fingerprint256 or insecure: true');
  }
  const given = [tls.caPem !== undefined, tls.fingerprint256 !== undefined, tls.insecure === true].filter(Boolean).length;
  if (given !== 1) {
    throw new InputInvalidError('tls must have exactly one of caPem, fingerprint256 or insecure: true');
  }
  if (tls.caPem !== undefined) {
    if (typeof tls.caPem !== 'string' || !tls.caPem.includes('-----BEGIN CERTIFICATE-----')) {
      throw new InputInvalidError('tls.caPem is not a PEM certificate');
    }
    return { kind: 'ca', caPem: tls.caPem };
  }
  if (tls.fingerprint256 !== undefined) {
    const fp = typeof tls.fingerprint256 === 'string' ? normaliseFingerprint(tls.fingerprint256) : undefined;
    if (fp === undefined) {
      throw new InputInvalidError('tls.fingerprint256 is not a SHA-256 fingerprint (64 hex digits, optionally colon-separated)');
    }
    return { kind: 'pin', fingerprint256: fp };
  }
  return { kind: 'insecure' };
}

/**
 * The undici `connect` option for a trust mode.
 * Pinning: the handshake cannot verify a self-signed certificate, so it runs with `rejectUnauthorized: false` and the
 * peer certificate's fingerprint is compared once the handshake completes and before undici writes any request on the
 * socket; a mismatch destroys the socket and fails the request with TlsPinMismatchError (no credentials sent).
 * `checkServerIdentity` cannot do this: Node skips it when chain verification already failed.
 */
export function connectorFor(mode: TrustMode, timeoutMs: number, identity?: ClientIdentity): buildConnector.connector {
  // A client certificate (mutual TLS between gateways): presented on every connection when given.
  const own = identity ? { cert: identity.certPem, key: identity.keyPem } : {};
  switch (mode.kind) {
    case 'ca':
      return buildConnector({ ca: mode.caPem, rejectUnauthorized: true, timeout: timeoutMs, ...own });
    case 'insecure':
      return buildConnector({ rejectUnauthorized: false, timeout: timeoutMs, ...own });
    case 'pin': {
      // No session cache: every connection presents (and has checked) the full certificate.
      const base = buildConnector({ rejectUnauthorized: false, timeout: timeoutMs, maxCachedSessions: 0, ...own });
      return (opts, callback) => {
        base(opts, (err, socket) => {
          if (err !== null) {
            callback(err, null);
            return;
          }
          const raw = (socket as TLSSocket).getPeerCertificate?.()?.raw;
          const actual = raw ? fingerprintOfDer(raw) : '(no certificate)';
          if (actual !== mode.fingerprint256) {
            socket.destroy();
            callback(
              new TlsPinMismatchError(
                `TLS certificate of ${opts.hostname}:${opts.port} has SHA-256 fingerprint ${actual}, expected ${mode.fingerprint256}`,
              ),
              null,
            );
            return;
          }
          callback(null, socket);
        });
      };
    }
  }
}
