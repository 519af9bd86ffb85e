import { describe, expect, it } from 'vitest';
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { certificationRequest, type SubjectAttributes } from './x509-build.js';
import { formatName, parseCertificate } from './x509-parse.js';
import { validCa, verifyChain, X509CheckError } from './x509-verify.js';
import { encodePem } from './pem.js';
import { testCa, testLeaf } from './test-certs.js';
import { generateTlsIdentity, type TlsKeyType } from '../tls-identity.js';

const DAY = 86_400_000;
const subject = (over: Partial<SubjectAttributes> = {}): SubjectAttributes => ({
  commonName: 'nethsm.example',
  countryName: '',
  localityName: '',
  stateOrProvinceName: '',
  organizationName: '',
  organizationalUnitName: '',
  emailAddress: '',
  ...over,
});

function openssl(args: string[], input: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'nhr-x509-'));
  try {
    const file = path.join(dir, 'in.pem');
    writeFileSync(file, input);
    return execFileSync('openssl', [...args, '-in', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function checkError(f: () => void): string {
  try {
    f();
  } catch (err) {
    if (err instanceof X509CheckError) return err.message;
    throw err;
  }
  return 'passed';
}

describe('TLS certificates and requests the simulator makes', () => {
  const types: TlsKeyType[] = ['RSA', 'Curve25519', 'EC_P256', 'EC_P384', 'EC_P521', 'BrainpoolP256', 'BrainpoolP384', 'BrainpoolP512'];
  it.each(types)('generates a %s key with the firmware-style self-signed certificate', (type) => {
    const id = generateTlsIdentity(type, 2048);
    const c = parseCertificate(id.certDer);
    expect(c.version).toBe(3);
    expect(formatName(c.subject)).toBe('CN=keyfender');
    expect(formatName(c.issuer)).toBe('CN=keyfender');
    expect(c.notBefore.toISOString()).toBe('1970-01-01T00:00:00.000Z');
    expect(c.notAfter.toISOString()).toBe('9999-12-31T23:59:59.000Z');
    expect(c.extensions).toEqual([]);
    expect(id.chain).toEqual([]);
    expect(c.node.verify(c.publicKey)).toBe(true);
    expect(new X509Certificate(id.certDer).checkPrivateKey(createPrivateKey(id.keyPem))).toBe(true);
  });

  it('builds CSRs that OpenSSL verifies, with the SAN rules of the firmware', () => {
    for (const [t, o] of [
      ['ec', { namedCurve: 'brainpoolP384r1' }],
      ['ed25519', {}],
      ['rsa', { modulusLength: 2048 }],
    ] as const) {
      const { privateKey, publicKey } = generateKeyPairSync(t as 'ec', o as { namedCurve: string });
      const der = certificationRequest(privateKey, publicKey, subject({ countryName: 'DE', organizationName: 'Org' }), ['IP:10.1.2.3', 'host.example', 'IP:not-an-ip', 'IP:fe80::1']);
      const text = openssl(['req', '-verify', '-noout', '-text'], encodePem('CERTIFICATE REQUEST', der));
      expect(text).toMatch(/CN\s*=\s*nethsm\.example/);
      expect(text).toMatch(/DNS:host\.example, DNS:IP:not-an-ip, IP Address:10\.1\.2\.3, IP Address:FE80:0:0:0:0:0:0:1/);
    }
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const defaultSan = openssl(['req', '-noout', '-text'], encodePem('CERTIFICATE REQUEST', certificationRequest(privateKey, publicKey, subject(), undefined)));
    expect(defaultSan).toMatch(/DNS:nethsm\.example/);
    const noSan = openssl(['req', '-noout', '-text'], encodePem('CERTIFICATE REQUEST', certificationRequest(privateKey, publicKey, subject(), [])));
    expect(noSan).not.toMatch(/Subject Alternative Name/);
    // An empty common name is accepted: the subject is then an empty name.
    const empty = openssl(['req', '-verify', '-noout', '-subject'], encodePem('CERTIFICATE REQUEST', certificationRequest(privateKey, publicKey, subject({ commonName: '' }), [])));
    expect(empty.trim()).toBe('subject=');
  });
});

describe('certificate checks (ocaml-x509 rules)', () => {
  it('verifies leaf → intermediate → anchor, and names what is wrong otherwise', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const root = await testCa('Root');
    const mid = await testCa('Intermediate', { issuer: root });
    const leaf = await testLeaf(mid, spki);
    const p = (c: { der: Buffer }) => parseCertificate(c.der);
    const now = new Date();
    expect(checkError(() => verifyChain([p(leaf), p(mid)], [p(root)], now))).toBe('passed');
    expect(checkError(() => verifyChain([p(leaf)], [p(mid)], now))).toBe('passed');
    // Wrong anchor: no trust anchor for the top certificate.
    const other = await testCa('Other');
    expect(checkError(() => verifyChain([p(leaf), p(mid)], [p(other)], now))).toMatch(/^no trust anchor found for X\.509 certificate\nversion 3\n.*subject CN=Intermediate/s);
    // Leaf expired at the device's time.
    expect(checkError(() => verifyChain([p(leaf), p(mid)], [p(root)], new Date(Date.now() + 400 * DAY)))).toMatch(/^leaf certificate X\.509 certificate.*expired \(now /s);
    // A CA as leaf: invalid server extensions.
    expect(checkError(() => verifyChain([p(mid)], [p(root)], now))).toMatch(/invalid server extensions$/);
    // An intermediate without keyCertSign.
    const weak = await testCa('Weak', { issuer: root, keyCertSign: false });
    const leaf2 = await testLeaf(weak, spki);
    expect(checkError(() => verifyChain([p(leaf2), p(weak)], [p(root)], now))).toMatch(/^intermediate certificate .*: invalid extensions$/s);
    // Chain order broken: the issuer name does not match.
    expect(checkError(() => verifyChain([p(leaf), p(other)], [p(root)], now))).toMatch(/^invalid chain: issuer of /);
    // Without a time, expiry is not checked.
    expect(checkError(() => verifyChain([p(leaf)], [p(mid)], undefined))).toBe('passed');
  });

  it('accepts a self-signed CA and refuses non-CAs with the library texts', async () => {
    const root = await testCa('Root');
    expect(checkError(() => validCa(parseCertificate(root.der), undefined))).toBe('passed');
    const mid = await testCa('Intermediate', { issuer: root });
    expect(checkError(() => validCa(parseCertificate(mid.der), undefined))).toMatch(/^CA certificate X\.509 certificate.*: issuer does not match subject$/s);
    const notCa = await testCa('NotCa', { ca: false });
    expect(checkError(() => validCa(parseCertificate(notCa.der), undefined))).toMatch(/: invalid CA extensions$/);
    const old = await testCa('Old', { notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) });
    expect(checkError(() => validCa(parseCertificate(old.der), undefined))).toBe('passed');
    expect(checkError(() => validCa(parseCertificate(old.der), new Date()))).toMatch(/: expired \(now /);
  });

  it('refuses DER that is not a certificate', () => {
    expect(() => parseCertificate(Buffer.from('30030201', 'hex'))).toThrow();
    expect(() => parseCertificate(Buffer.from('hello'))).toThrow();
  });
});
