import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { generateKey } from './generate.js';
import { csr } from './csr.js';
import { publicKeyPem } from './view.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

async function rejects400(p: Promise<unknown>, message: RegExp): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(SimHttpError);
  expect((err as SimHttpError).status).toBe(400);
  expect((err as SimHttpError).body?.message).toMatch(message);
}

const sanOf = (req: x509.Pkcs10CertificateRequest): x509.SubjectAlternativeNameExtension | undefined =>
  req.extensions.find((e) => e.type === '2.5.29.17') as x509.SubjectAlternativeNameExtension | undefined;
const spkiB64 = (pem: string): string => pem.replace(/-----[^-]+-----|\s/g, '');

describe('csr', () => {
  it('makes a verifiable CSR for RSA, EC P-256/384/521 and Ed25519 with subject and default SAN [commonName]', async () => {
    const cases = [
      { type: 'RSA', length: 1024, mechanisms: ['RSA_Signature_PKCS1'] },
      { type: 'EC_P256', mechanisms: ['ECDSA_Signature'] },
      { type: 'EC_P384', mechanisms: ['ECDSA_Signature'] },
      { type: 'EC_P521', mechanisms: ['ECDSA_Signature'] },
      { type: 'Curve25519', mechanisms: ['EdDSA_Signature'] },
    ];
    for (const body of cases) {
      const { record } = generateKey(body);
      const pem = await csr(record, { commonName: 'hsm.example.com', countryName: 'DE', organizationName: 'Example', emailAddress: 'ops@example.com', localityName: '' });
      expect(pem).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----\n[\s\S]+-----END CERTIFICATE REQUEST-----\n$/);
      const req = new x509.Pkcs10CertificateRequest(pem);
      expect(await req.verify(), body.type).toBe(true);
      expect(req.subject).toContain('CN=hsm.example.com');
      expect(req.subject).toContain('C=DE');
      expect(req.subject).toContain('O=Example');
      expect(req.subject).not.toContain('L=');
      expect(req.subjectName.getField('E')).toEqual(['ops@example.com']);
      // All attributes sit in one RDN, as ocaml-x509 builds it.
      expect(req.subjectName.toJSON()).toHaveLength(1);
      expect(Buffer.from(req.publicKey.rawData).toString('base64')).toBe(spkiB64(publicKeyPem(record)));
      const san = sanOf(req);
      expect(san?.names.toJSON()).toEqual([{ type: 'dns', value: 'hsm.example.com' }]);
    }
  });

  it('turns IP: entries with valid addresses into IP SANs, other entries into DNS, and [] into no SAN', async () => {
    const { record } = generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    const req = new x509.Pkcs10CertificateRequest(await csr(record, { commonName: 'x', subjectAltNames: ['a.example', 'IP:192.0.2.1', 'IP:::1', 'IP:not-an-ip'] }));
    expect(sanOf(req)?.names.toJSON()).toEqual([
      { type: 'dns', value: 'a.example' },
      { type: 'ip', value: '192.0.2.1' },
      { type: 'ip', value: '::1' },
      { type: 'dns', value: 'IP:not-an-ip' },
    ]);
    const none = new x509.Pkcs10CertificateRequest(await csr(record, { commonName: 'x', subjectAltNames: [] }));
    expect(sanOf(none)).toBeUndefined();
  });

  it('refuses bad bodies, Generic keys and curves WebCrypto lacks', async () => {
    const { record } = generateKey({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
    await rejects400(csr(record, { commonName: '' }), /^JSON field commonName is empty\.$/);
    await rejects400(csr(record, {}), /^Invalid data for JSON schema: .*"commonName"/);
    await rejects400(csr(record, { commonName: 'x', title: 'y' }), /^Invalid data for JSON schema: .*"title"/);
    await rejects400(csr(record, { commonName: 'x', subjectAltNames: 'a' }), /^Invalid data for JSON schema/);
    await rejects400(csr(record, { commonName: 'x', countryName: 1 }), /^Invalid data for JSON schema/);
    const generic = generateKey({ type: 'Generic', length: 128, mechanisms: ['AES_Encryption_CBC'] }).record;
    await rejects400(csr(generic, { commonName: 'x' }), /^Generic keys can't create certificates$/);
    const k1 = generateKey({ type: 'EC_P256K1', mechanisms: ['ECDSA_Signature'] }).record;
    await rejects400(csr(k1, { commonName: 'x' }), /not supported by the simulator/);
  });
});
