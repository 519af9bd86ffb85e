/**
 * Turns transport failures and NetHSM error answers into the registry's errors (src/errors.ts).
 * Contract: nothing produced here carries the Authorization header or a value listed as secret.
 */
import {
  NetHsmCredentialRefusedError,
  NetHsmHttpError,
  NetHsmTimeoutError,
  NetHsmTlsUntrustedError,
  NetHsmUnreachableError,
  NhrError,
} from '../errors.js';

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);

/** OpenSSL / Node verification failures: the peer answered, but its certificate is not trusted. */
const TLS_TRUST_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** Maps an error thrown by undici (or the connector) during `operation` to a registry error. Registry errors pass through. */
export function mapTransportError(err: unknown, operation: string, timeoutMs: number): NhrError {
  if (err instanceof NhrError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const detail = err instanceof Error ? err.message : String(err);
  if (typeof code === 'string' && TIMEOUT_CODES.has(code)) {
    return new NetHsmTimeoutError(`NetHSM did not answer within ${timeoutMs} ms (${code})`, { operation, cause: err });
  }
  if (typeof code === 'string' && TLS_TRUST_CODES.has(code)) {
    return new NetHsmTlsUntrustedError(`TLS certificate not trusted: ${detail}`, { operation, cause: err });
  }
  return new NetHsmUnreachableError(`cannot reach the NetHSM: ${detail}${typeof code === 'string' ? ` (${code})` : ''}`, {
    operation,
    cause: err,
  });
}

/**
 * Builds the error for a NetHSM error answer. `body` is the (possibly empty, possibly non-JSON) response body;
 * the NetHSM `message` is taken from JSON bodies only. Every secret that was sent is replaced in the message,
 * since a validation message may quote the request. `who` names the user the request logged in as; a 401 for a
 * credential the config names (`who.credential`) is a NetHsmCredentialRefusedError naming that setting.
 */
export function httpError(
  status: number,
  body: string,
  operation: string,
  secrets: readonly string[],
  who: { user?: string | undefined; credential?: { setting: string; name: string } | undefined } = {},
): NetHsmHttpError {
  let message: string | undefined;
  if (body.length > 0) {
    try {
      const parsed = JSON.parse(body) as unknown;
      if (parsed !== null && typeof parsed === 'object' && typeof (parsed as { message?: unknown }).message === 'string') {
        message = scrub((parsed as { message: string }).message, secrets);
      }
    } catch {
      // Not JSON (e.g. `Not found` text from an unknown route): status alone says it.
    }
  }
  if (status === 401 && who.credential && who.user !== undefined) {
    return new NetHsmCredentialRefusedError({ ...who.credential, user: who.user }, { operation, ...(message ? { nethsmMessage: message } : {}) });
  }
  return new NetHsmHttpError(status, message, { operation, ...(who.user !== undefined ? { user: who.user } : {}) });
}

/** Replaces every occurrence of each secret (of 4+ characters) and caps the length. */
export function scrub(message: string, secrets: readonly string[]): string {
  let out = message;
  for (const s of secrets) {
    if (s.length >= 4) out = out.split(s).join('[redacted]');
  }
  return out.length > 500 ? `${out.slice(0, 500)}…` : out;
}
