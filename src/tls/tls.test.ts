import { describe, it, expect } from 'vitest';
import { X509Certificate } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createSelfSignedCertificate, createCa, issueCert, fingerprintOfPem, normaliseFingerprint, fingerprintsEqual } from './index.js';

function get(url: string, opts: https.RequestOptions): Promise<{ status: number; body: string; peerCert?: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function serve(opts: https.ServerOptions): Promise<{ port: number; close: () => Promise<void> }> {
  const server = https.createServer(opts, (req, res) => {
    const peer = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
    res.end(peer && peer.subject ? `hello ${peer.subject.CN}` : 'hello');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) };
}

describe('self-signed certificate', () => {
  it('is EC P-256 with SANs for 127.0.0.1, ::1 and localhost and a matching fingerprint', async () => {
    const b = await createSelfSignedCertificate();
    const cert = new X509Certificate(b.certPem);
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cert.subjectAltName).toContain('DNS:localhost');
    expect(cert.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(cert.subjectAltName).toMatch(/IP Address:0:0:0:0:0:0:0:1|IP Address:::1/);
    expect(b.fingerprint256).toBe(cert.fingerprint256);
    expect(b.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    expect(fingerprintOfPem(b.certPem)).toBe(b.fingerprint256);
    expect(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(b.keyPem))).toBe(true);
  });

  it('serves HTTPS that a client trusting only that certificate accepts', async () => {
    const b = await createSelfSignedCertificate();
    const s = await serve({ cert: b.certPem, key: b.keyPem });
    try {
      expect((await get(`https://127.0.0.1:${s.port}/`, { ca: b.certPem })).body).toBe('hello');
      expect((await get(`https://localhost:${s.port}/`, { ca: b.certPem, lookup: undefined })).body).toBe('hello');
      const other = await createSelfSignedCertificate();
      await expect(get(`https://127.0.0.1:${s.port}/`, { ca: other.certPem })).rejects.toThrow();
    } finally {
      await s.close();
    }
  });

  it('gives a new key and fingerprint on each call', async () => {
    const [a, b] = await Promise.all([createSelfSignedCertificate(), createSelfSignedCertificate()]);
    expect(a.fingerprint256).not.toBe(b.fingerprint256);
  });
});

describe('fingerprint normaliser', () => {
  const fp = 'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89';
  it('accepts colon form, plain hex, lower case and a sha256 prefix', () => {
    expect(normaliseFingerprint(fp)).toBe(fp);
    expect(normaliseFingerprint(fp.toLowerCase())).toBe(fp);
    expect(normaliseFingerprint(fp.replace(/:/g, ''))).toBe(fp);
    expect(normaliseFingerprint(`  sha256:${fp.replace(/:/g, '').toLowerCase()}\n`)).toBe(fp);
    expect(normaliseFingerprint(`SHA256 Fingerprint=${fp}`)).toBe(fp);
    expect(fingerprintsEqual(fp, fp.replace(/:/g, '').toLowerCase())).toBe(true);
  });
  it('refuses wrong lengths, non-hex and misplaced colons', () => {
    expect(normaliseFingerprint(fp.slice(3))).toBeUndefined();
    expect(normaliseFingerprint(fp.replace('AB', 'XY'))).toBeUndefined();
    expect(normaliseFingerprint('A:BCD' + fp.replace(/:/g, '').slice(4))).toBeUndefined();
    expect(normaliseFingerprint('')).toBeUndefined();
    expect(fingerprintsEqual('zz', 'zz')).toBe(false);
  });
});

describe('CA and leaf issuance', () => {
  it('issues leaves that verify against the CA and carry the requested usages', async () => {
    const ca = await createCa({ commonName: 'replication group' });
    const caCert = new X509Certificate(ca.certPem);
    expect(caCert.ca).toBe(true);
    const leaf = await issueCert(ca, { commonName: 'site-a', usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
    const leafCert = new X509Certificate(leaf.certPem);
    expect(leafCert.ca).toBe(false);
    expect(leafCert.verify(caCert.publicKey)).toBe(true);
    expect(leafCert.checkIssued(caCert)).toBe(true);
    expect(leafCert.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    const other = await createCa({ commonName: 'other' });
    expect(leafCert.verify(new X509Certificate(other.certPem).publicKey)).toBe(false);
  });

  it('supports mutual TLS: a client leaf from the CA is accepted, a foreign one refused', async () => {
    const ca = await createCa({ commonName: 'group' });
    const server = await issueCert(ca, { commonName: 'site-a', usages: ['serverAuth'], ipAddresses: ['127.0.0.1'] });
    const client = await issueCert(ca, { commonName: 'site-b', usages: ['clientAuth'] });
    const s = await serve({ cert: server.certPem, key: server.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true });
    try {
      const ok = await get(`https://127.0.0.1:${s.port}/`, { ca: ca.certPem, cert: client.certPem, key: client.keyPem });
      expect(ok.body).toBe('hello site-b');
      const rogueCa = await createCa({ commonName: 'rogue' });
      const rogue = await issueCert(rogueCa, { commonName: 'mallory', usages: ['clientAuth'] });
      await expect(get(`https://127.0.0.1:${s.port}/`, { ca: ca.certPem, cert: rogue.certPem, key: rogue.keyPem })).rejects.toThrow();
      // A serverAuth-only leaf cannot act as a client.
      await expect(get(`https://127.0.0.1:${s.port}/`, { ca: ca.certPem, cert: server.certPem, key: server.keyPem })).rejects.toThrow();
    } finally {
      await s.close();
    }
  });

  it('refuses to issue without usages and escapes DN specials in names', async () => {
    const ca = await createCa({ commonName: 'g' });
    await expect(issueCert(ca, { commonName: 'x', usages: [] })).rejects.toThrow(/usage/);
    const leaf = await issueCert(ca, { commonName: 'a,O=evil', usages: ['clientAuth'] });
    expect(new X509Certificate(leaf.certPem).subject).not.toMatch(/^O=evil/m);
  });
});
