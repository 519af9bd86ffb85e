/**
 * Self-signed server certificates (EC P-256), as a NetHSM makes at first boot: the simulator uses one per instance.
 */
import { randomBytes } from 'node:crypto';
import { x509, subtle, EC_P256, privateKeyPem, type CryptoKeyPair } from './x509.js';
import { fingerprintOfDer } from './fingerprint.js';

export interface CertificateBundle {
  certPem: string;
  keyPem: string;
  /** `AB:CD:…` SHA-256 of the DER certificate. */
  fingerprint256: string;
}

export interface SelfSignedOptions {
  commonName?: string;
  /** DNS names for the SAN extension; default `localhost`. */
  dnsNames?: string[];
  /** IP addresses for the SAN extension; default 127.0.0.1 and ::1. */
  ipAddresses?: string[];
  validDays?: number;
}

/** Makes a fresh key pair and a self-signed serverAuth certificate. Each call gives a new key. */
export async function createSelfSignedCertificate(options: SelfSignedOptions = {}): Promise<CertificateBundle> {
  const keys = (await subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${options.commonName ?? 'keyfender'}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (options.validDays ?? 3650) * 86_400_000),
    signingAlgorithm: EC_P256,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      sanExtension(options.dnsNames ?? ['localhost'], options.ipAddresses ?? ['127.0.0.1', '::1']),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await privateKeyPem(keys.privateKey), fingerprint256: fingerprintOfDer(new Uint8Array(cert.rawData)) };
}

/** A positive random 16-byte serial (top bit clear so DER keeps it positive without padding). */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

export function sanExtension(dnsNames: string[], ipAddresses: string[]): x509.SubjectAlternativeNameExtension {
  return new x509.SubjectAlternativeNameExtension([
    ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
    ...ipAddresses.map((value) => ({ type: 'ip' as const, value })),
  ]);
}
