/**
 * A small certificate authority for the daemon's peer mutual TLS: one CA per replication group, one leaf per site.
 * Keys are EC P-256; leaves carry serverAuth and/or clientAuth.
 */
import { x509, subtle, EC_P256, privateKeyPem, type CryptoKeyPair, importPrivateKeyPem } from './x509.js';
import { fingerprintOfDer } from './fingerprint.js';
import { randomSerial, sanExtension, type CertificateBundle } from './self-signed.js';

export interface CaOptions {
  commonName: string;
  validDays?: number;
}

/** Creates a self-signed CA certificate (basicConstraints CA, keyCertSign/cRLSign). */
export async function createCa(options: CaOptions): Promise<CertificateBundle> {
  const keys = (await subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${escapeDn(options.commonName)}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (options.validDays ?? 3650) * 86_400_000),
    signingAlgorithm: EC_P256,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await privateKeyPem(keys.privateKey), fingerprint256: fingerprintOfDer(new Uint8Array(cert.rawData)) };
}

export type CertUsage = 'serverAuth' | 'clientAuth';

export interface IssueOptions {
  commonName: string;
  /** At least one; a peer certificate usually has both. */
  usages: CertUsage[];
  dnsNames?: string[];
  ipAddresses?: string[];
  validDays?: number;
}

/**
 * Issues a leaf certificate signed by `ca` (as returned by {@link createCa}) for a fresh key pair.
 * Throws when the CA key does not parse or `usages` is empty.
 */
export async function issueCert(ca: { certPem: string; keyPem: string }, options: IssueOptions): Promise<CertificateBundle> {
  if (options.usages.length === 0) throw new Error('issueCert: at least one usage (serverAuth, clientAuth) is required');
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await importPrivateKeyPem(ca.keyPem);
  const keys = (await subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const ekus = options.usages.map((u) => (u === 'serverAuth' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth));
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    new x509.ExtendedKeyUsageExtension(ekus),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
  ];
  const dns = options.dnsNames ?? [];
  const ips = options.ipAddresses ?? [];
  if (dns.length + ips.length > 0) extensions.push(sanExtension(dns, ips));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${escapeDn(options.commonName)}`,
    issuer: caCert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (options.validDays ?? 825) * 86_400_000),
    signingAlgorithm: EC_P256,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions,
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await privateKeyPem(keys.privateKey), fingerprint256: fingerprintOfDer(new Uint8Array(cert.rawData)) };
}

/** Escapes RFC 4514 special characters so a common name cannot inject extra RDNs. */
function escapeDn(value: string): string {
  return value.replace(/([,+"\\<>;=])/g, '\\$1').replace(/^([ #])/, '\\$1').replace(/ $/, '\\ ');
}
