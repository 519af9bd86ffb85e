/**
 * The certificate checks the firmware runs on `/config/tls/*` uploads, following ocaml-x509's `Validation`
 * (`verify_chain` and `valid_ca`), with its error texts (FACTS-system §2.3, §2.6):
 * - `verifyChain`: leaf validity and server extensions, then each issuer up the chain must be a valid CA that signs
 *   the certificate below it, and the top certificate must be signed by one of the anchors. Signatures with
 *   SHA-256/384/512 (or Ed25519) only.
 * - `validCa`: self-signed (issuer = subject) with a valid self-signature (any hash), CA extensions, validity.
 * Times are checked only when `time` is given (the firmware passes none for cluster-CA checks on a container).
 * Certificates appear in messages in a shortened form of the library's printer (see `describeCertificate`).
 */
import {
  authorityKeyId,
  basicConstraints,
  formatName,
  hasAnyPolicy,
  keyUsage,
  sameName,
  subjectKeyId,
  type ParsedCertificate,
} from './x509-parse.js';

const HASH_OF_SIGNATURE: Record<string, { scheme: string; hash: string }> = {
  '1.2.840.113549.1.1.4': { scheme: 'RSA', hash: 'MD5' },
  '1.2.840.113549.1.1.5': { scheme: 'RSA', hash: 'SHA1' },
  '1.2.840.113549.1.1.14': { scheme: 'RSA', hash: 'SHA224' },
  '1.2.840.113549.1.1.11': { scheme: 'RSA', hash: 'SHA256' },
  '1.2.840.113549.1.1.12': { scheme: 'RSA', hash: 'SHA384' },
  '1.2.840.113549.1.1.13': { scheme: 'RSA', hash: 'SHA512' },
  '1.2.840.10045.4.1': { scheme: 'ECDSA', hash: 'SHA1' },
  '1.2.840.10045.4.3.1': { scheme: 'ECDSA', hash: 'SHA224' },
  '1.2.840.10045.4.3.2': { scheme: 'ECDSA', hash: 'SHA256' },
  '1.2.840.10045.4.3.3': { scheme: 'ECDSA', hash: 'SHA384' },
  '1.2.840.10045.4.3.4': { scheme: 'ECDSA', hash: 'SHA512' },
  '1.3.101.112': { scheme: 'ED25519', hash: 'SHA512' },
};
const SHA2 = ['SHA256', 'SHA384', 'SHA512'];
const ALL_HASHES = ['MD5', 'SHA1', 'SHA224', ...SHA2];
/** Extensions a server (leaf) certificate may mark critical. */
const LEAF_CRITICAL_OK = new Set(['2.5.29.19', '2.5.29.15', '2.5.29.37', '2.5.29.17']);
/** Extensions a CA certificate may mark critical. */
const CA_CRITICAL_OK = new Set(['2.5.29.19', '2.5.29.15']);

/** A failed check; `message` is the text the firmware puts after its own prefix. */
export class X509CheckError extends Error {}

/** The library's certificate printer, shortened: version, serial, algorithm, issuer, validity, subject. */
export function describeCertificate(c: ParsedCertificate): string {
  const alg = HASH_OF_SIGNATURE[c.signatureOid];
  const human = (d: Date): string => `${d.toISOString().slice(0, 19).replace('T', ' ')} +00:00`;
  return [
    'X.509 certificate',
    `version ${c.version}`,
    `serial ${c.serial.toString('hex')}`,
    `algorithm ${alg === undefined ? 'NONE' : `${alg.scheme}-${alg.hash}`}`,
    `issuer ${formatName(c.issuer)}`,
    `valid from ${human(c.notBefore)} until ${human(c.notAfter)}`,
    `subject ${formatName(c.subject)}`,
    `extensions ${c.extensions.length}`,
  ].join('\n');
}

function validAt(c: ParsedCertificate, time: Date | undefined): boolean {
  return time === undefined || (time > c.notBefore && time < c.notAfter);
}

function timeText(time: Date | undefined): string {
  return time === undefined ? 'no timestamp provided' : `${time.toISOString().slice(0, 19).replace('T', ' ')} +00:00`;
}

/** Version 1/2 certificates must not carry extensions. */
function versionMatchesExtensions(c: ParsedCertificate): boolean {
  return c.version === 3 || c.extensions.length === 0;
}

function validCaExtensions(c: ParsedCertificate): boolean {
  const bc = basicConstraints(c);
  const ku = keyUsage(c);
  return bc?.ca === true && ku.present && ku.keyCertSign && c.extensions.every((e) => !e.critical || CA_CRITICAL_OK.has(e.oid));
}

function validServerExtensions(c: ParsedCertificate): boolean {
  if (basicConstraints(c)?.ca === true) return false;
  return c.extensions.every((e) => {
    if (e.oid === '2.5.29.32') return !e.critical || hasAnyPolicy(c);
    return !e.critical || LEAF_CRITICAL_OK.has(e.oid);
  });
}

/** Checks `cert`'s signature with `signer`'s key, allowing only `hashes`. */
function checkSignature(signer: ParsedCertificate, cert: ParsedCertificate, hashes: string[]): void {
  const subject = formatName(cert.subject);
  const alg = HASH_OF_SIGNATURE[cert.signatureOid];
  if (alg === undefined) throw new X509CheckError(`unsupported algorithm used to sign ${subject}: ${cert.signatureOid}`);
  if (!hashes.includes(alg.hash)) throw new X509CheckError(`hash algorithm ${subject} is not allowed, but ${alg.hash} is signed using it`);
  let ok: boolean;
  try {
    ok = cert.node.verify(signer.publicKey);
  } catch {
    ok = false;
  }
  if (!ok) throw new X509CheckError(`failed to verify signature of ${subject}: bad signature`);
}

function validPathLen(issuer: ParsedCertificate, pathLen: number): boolean {
  if (issuer.version < 3) return true;
  const bc = basicConstraints(issuer);
  return bc?.ca === true && (bc.pathLen === undefined || bc.pathLen >= pathLen);
}

/** `signs`: `issuer` issued `cert` (names, key ids, signature, path length). */
function signs(issuer: ParsedCertificate, cert: ParsedCertificate, pathLen: number): void {
  if (!sameName(issuer.subject, cert.issuer)) {
    throw new X509CheckError(`invalid chain: issuer of ${describeCertificate(issuer)} does not match subject of ${describeCertificate(cert)}`);
  }
  const aki = authorityKeyId(cert);
  const ski = subjectKeyId(issuer);
  if (aki !== undefined && ski !== undefined && !aki.equals(ski)) {
    throw new X509CheckError(
      `invalid chain: authority key id extension of ${describeCertificate(issuer)} does not match subject key id extension of ${describeCertificate(cert)}`,
    );
  }
  checkSignature(issuer, cert, SHA2);
  if (!validPathLen(issuer, pathLen)) {
    throw new X509CheckError(`invalid chain: the path length of ${describeCertificate(issuer)} is smaller than the required path length ${pathLen}`);
  }
}

/**
 * `X509.Validation.verify_chain ~host:None`: `chain` is leaf first; the top of it must be signed by an anchor.
 * Throws X509CheckError with the library's message.
 */
export function verifyChain(chain: ParsedCertificate[], anchors: ParsedCertificate[], time: Date | undefined): void {
  const leaf = chain[0];
  if (leaf === undefined) throw new X509CheckError('certificate chain is empty');
  const liveAnchors = anchors.filter((a) => validAt(a, time));
  if (!validAt(leaf, time)) throw new X509CheckError(`leaf certificate ${describeCertificate(leaf)} expired (now ${timeText(time)})`);
  if (!versionMatchesExtensions(leaf)) throw new X509CheckError(`leaf certificate ${describeCertificate(leaf)}: version 3 is required for extensions`);
  if (!validServerExtensions(leaf)) throw new X509CheckError(`leaf certificate ${describeCertificate(leaf)}: invalid server extensions`);
  for (let i = 0; i + 1 < chain.length; i++) {
    const cert = chain[i]!;
    const issuer = chain[i + 1]!;
    if (!validAt(issuer, time)) throw new X509CheckError(`intermediate certificate ${describeCertificate(issuer)} expired (now ${timeText(time)})`);
    if (!versionMatchesExtensions(issuer)) {
      throw new X509CheckError(`intermediate certificate ${describeCertificate(issuer)}: version 3 is required for extensions`);
    }
    if (!validCaExtensions(issuer)) throw new X509CheckError(`intermediate certificate ${describeCertificate(issuer)}: invalid extensions`);
    signs(issuer, cert, i);
  }
  const top = chain[chain.length - 1]!;
  const pathLen = chain.length - 1;
  const ok = liveAnchors.some((a) => {
    if (!sameName(a.subject, top.issuer)) return false;
    try {
      signs(a, top, pathLen);
      return true;
    } catch {
      return false;
    }
  });
  if (!ok) throw new X509CheckError(`no trust anchor found for ${describeCertificate(top)}`);
}

/** `X509.Validation.valid_ca ?time`: throws X509CheckError with the library's message. */
export function validCa(ca: ParsedCertificate, time: Date | undefined): void {
  const d = (): string => describeCertificate(ca);
  if (!sameName(ca.issuer, ca.subject)) throw new X509CheckError(`CA certificate ${d()}: issuer does not match subject`);
  if (!versionMatchesExtensions(ca)) throw new X509CheckError(`CA certificate ${d()}: version 3 is required for extensions`);
  checkSignature(ca, ca, ALL_HASHES);
  if (!validAt(ca, time)) throw new X509CheckError(`CA certificate ${d()}: expired (now ${timeText(time)})`);
  if (ca.version === 3 && !validCaExtensions(ca)) throw new X509CheckError(`CA certificate ${d()}: invalid CA extensions`);
}
