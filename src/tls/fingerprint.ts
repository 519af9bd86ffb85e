/**
 * Certificate SHA-256 fingerprints in the form operators compare by eye: uppercase hex, colon-separated (`AB:CD:…`).
 */
import { createHash, X509Certificate } from 'node:crypto';

/** SHA-256 of DER bytes, as `AB:CD:…` (32 groups). */
export function fingerprintOfDer(der: Uint8Array): string {
  return formatFingerprint(createHash('sha256').update(der).digest('hex'));
}

/** SHA-256 fingerprint of the first certificate in a PEM string. Throws when the PEM holds no certificate. */
export function fingerprintOfPem(pem: string): string {
  return fingerprintOfDer(new X509Certificate(pem).raw);
}

function formatFingerprint(hex: string): string {
  return hex.toUpperCase().match(/../g)!.join(':');
}

/**
 * Normalises a user-supplied SHA-256 fingerprint (colon-separated or plain hex, any case, surrounding whitespace,
 * optional `sha256:`/`SHA256 Fingerprint=` prefix) to the `AB:CD:…` form.
 * Returns undefined when it is not 32 bytes of hex, so callers can name the bad input.
 */
export function normaliseFingerprint(input: string): string | undefined {
  let s = input.trim();
  s = s.replace(/^sha-?256(\s+fingerprint)?\s*[:=]\s*/i, '');
  const hex = s.replace(/[:\s]/g, '');
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return undefined;
  // Colons, when present, must separate byte pairs (so `A:BCD…` is refused rather than guessed).
  if (s.includes(':') && !/^([0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2}$/.test(s.replace(/\s/g, ''))) return undefined;
  return formatFingerprint(hex);
}

/** Compares two fingerprints in any accepted form. False when either is malformed. */
export function fingerprintsEqual(a: string, b: string): boolean {
  const na = normaliseFingerprint(a);
  return na !== undefined && na === normaliseFingerprint(b);
}
