/**
 * Test helper: small certificate hierarchies (root, intermediates, leaves for a given public key) to exercise the TLS
 * endpoints of the simulator or of a real NetHSM. EC P-256 keys, SHA-256 signatures. Not for production use.
 */
import { x509, subtle, EC_P256, type CryptoKeyPair } from '../../tls/x509.js';
import { randomSerial } from '../../tls/self-signed.js';

export interface TestCert {
  pem: string;
  der: Buffer;
  cert: x509.X509Certificate;
}

export interface TestCa extends TestCert {
  keys: CryptoKeyPair;
}

export interface TestCertOptions {
  /** Signer; absent = self-signed (a root). */
  issuer?: TestCa;
  notBefore?: Date;
  notAfter?: Date;
  /** basicConstraints cA (default true for CAs, false for leaves). */
  ca?: boolean;
  /** keyUsage keyCertSign (default true for CAs). */
  keyCertSign?: boolean;
  pathLength?: number;
}

const DAY = 86_400_000;

function toTestCert(cert: x509.X509Certificate): TestCert {
  return { pem: cert.toString('pem') + '\n', der: Buffer.from(cert.rawData), cert };
}

/** A CA certificate (root when no issuer is given). */
export async function testCa(name: string, opts: TestCertOptions = {}): Promise<TestCa> {
  const keys = (await subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const usage = opts.keyCertSign === false ? x509.KeyUsageFlags.digitalSignature : x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;
  const extensions = [
    new x509.BasicConstraintsExtension(opts.ca ?? true, opts.pathLength, true),
    new x509.KeyUsagesExtension(usage, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  const common = {
    serialNumber: randomSerial(),
    notBefore: opts.notBefore ?? new Date(now - DAY),
    notAfter: opts.notAfter ?? new Date(now + 365 * DAY),
    signingAlgorithm: EC_P256,
    extensions,
  };
  const cert =
    opts.issuer === undefined
      ? await x509.X509CertificateGenerator.createSelfSigned({ ...common, name: `CN=${name}`, keys })
      : await x509.X509CertificateGenerator.create({
          ...common,
          subject: `CN=${name}`,
          issuer: opts.issuer.cert.subject,
          publicKey: keys.publicKey,
          signingKey: opts.issuer.keys.privateKey,
          extensions: [...extensions, await x509.AuthorityKeyIdentifierExtension.create(opts.issuer.cert.publicKey)],
        });
  return { ...toTestCert(cert), keys };
}

/** A leaf certificate for `publicKeyPem` (SubjectPublicKeyInfo PEM, e.g. a NetHSM's `/config/tls/public.pem`). */
export async function testLeaf(issuer: TestCa, publicKeyPem: string, name = 'nethsm', opts: Omit<TestCertOptions, 'issuer'> = {}): Promise<TestCert> {
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${name}`,
    issuer: issuer.cert.subject,
    notBefore: opts.notBefore ?? new Date(now - DAY),
    notAfter: opts.notAfter ?? new Date(now + 90 * DAY),
    signingAlgorithm: EC_P256,
    publicKey: new x509.PublicKey(x509.PemConverter.decodeFirst(publicKeyPem)),
    signingKey: issuer.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }]),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.cert.publicKey),
    ],
  });
  return toTestCert(cert);
}
