import { describe, expect, it } from 'vitest';
import { connect } from 'node:tls';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../fixture.js';
import { startSimulator } from '../server.js';
import { TestHttp } from '../test-http.js';
import { TEST_KDF } from '../crypto.js';
import { encodeCertificates, encodePem, pemCertificates } from '../tls/pem.js';
import { testCa, testLeaf } from '../tls/test-certs.js';
import { parseCertificate, formatName } from '../tls/x509-parse.js';

const PEM = { 'content-type': 'application/x-pem-file' };

/** The certificates a new TLS connection is shown (leaf first), and whether `ca` (if given) validates them. */
function served(port: number, ca?: string): Promise<{ chain: X509Certificate[]; authorized: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(ca ? { ca } : {}), checkServerIdentity: () => undefined }, () => {
      const chain: X509Certificate[] = [];
      let c = s.getPeerCertificate(true);
      const seen = new Set<string>();
      while (c?.raw && !seen.has(c.fingerprint256)) {
        seen.add(c.fingerprint256);
        chain.push(new X509Certificate(c.raw));
        c = c.issuerCertificate;
      }
      const authorized = s.authorized;
      s.end();
      resolve({ chain, authorized });
    });
    s.once('error', reject);
  });
}

async function withSim(f: (sim: ProvisionedSimulator, http: TestHttp) => Promise<void>): Promise<void> {
  const sim = await startProvisionedSimulator({ namespaces: ['ns1'] });
  const http = new TestHttp(sim, { insecure: true });
  try {
    await f(sim, http);
  } finally {
    await http.close();
    await sim.close();
  }
}

describe('GET /config/tls/public.pem and cert.pem', () => {
  it('report the key and certificate the listener serves, as canonical PEM', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      const pub = await http.req('GET', '/config/tls/public.pem', { auth: admin });
      expect(pub.status).toBe(200);
      expect(pub.headers['content-type']).toBe('application/x-pem-file');
      expect(pub.text).toMatch(/^-----BEGIN PUBLIC KEY-----\n(.{1,64}\n)+-----END PUBLIC KEY-----\n$/);
      const cert = await http.req('GET', '/config/tls/cert.pem', { auth: admin });
      const { chain } = await served(sim.port);
      expect(cert.text).toBe(encodePem('CERTIFICATE', chain[0]!.raw));
      expect(createPublicKey(pub.text).export({ type: 'spki', format: 'der' })).toEqual(chain[0]!.publicKey.export({ type: 'spki', format: 'der' }));
      expect((await http.req('GET', '/config/tls/cert.pem', { auth: admin, headers: { accept: 'application/json' } })).status).toBe(406);
      const etag = cert.headers['etag'] as string;
      expect(etag).toMatch(/^"[0-9a-f]{64}"$/);
      expect((await http.req('GET', '/config/tls/cert.pem', { auth: admin, headers: { 'if-none-match': etag } })).status).toBe(304);
      expect(pub.headers['etag']).toMatch(/^"[0-9a-f]{64}"$/);
      expect((await http.req('GET', '/config/tls/cert.pem', { auth: sim.nsUsers['ns1']!.admin })).status).toBe(403);
      expect((await http.req('GET', '/config/tls/cert.pem')).status).toBe(401);
    });
  });
});

describe('POST /config/tls/generate', () => {
  it('makes a new key and self-signed certificate, served at once to new connections', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      const before = sim.fingerprint256;
      for (const [type, length] of [['EC_P384', undefined], ['Curve25519', undefined], ['RSA', 2048]] as const) {
        const r = await http.req('POST', '/config/tls/generate', { auth: admin, json: length === undefined ? { type } : { type, length } });
        expect(r.status, type).toBe(204);
        const pub = (await http.req('GET', '/config/tls/public.pem', { auth: admin })).text;
        const { chain } = await served(sim.port);
        expect(chain).toHaveLength(1);
        expect(chain[0]!.publicKey.export({ type: 'spki', format: 'pem' })).toBe(createPublicKey(pub).export({ type: 'spki', format: 'pem' }));
        expect(chain[0]!.subject).toBe('CN=keyfender');
        expect(chain[0]!.fingerprint256).toBe(sim.fingerprint256);
      }
      expect(sim.fingerprint256).not.toBe(before);
      // Stored too: the next boot serves the same identity.
      const fp = sim.fingerprint256;
      const boots = sim.boots;
      await http.req('PUT', '/config/unattended-boot', { auth: admin, json: { status: 'on' } });
      expect((await http.req('POST', '/system/reboot', { auth: admin })).status).toBe(204);
      await sim.waitForBoot(boots + 1);
      expect(sim.fingerprint256).toBe(fp);
      expect((await served(sim.port)).chain[0]!.fingerprint256).toBe(fp);
    });
  });

  it('refuses bad requests with the firmware texts and keeps the current key', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      const pub = (await http.req('GET', '/config/tls/public.pem', { auth: admin })).text;
      const cases: Array<[unknown, string]> = [
        [{ type: 'RSA' }, 'Length must be between 1024 and 8192.'],
        [{ type: 'RSA', length: 512 }, 'Length must be between 1024 and 8192.'],
        [{ type: 'RSA', length: 8193 }, 'Length must be between 1024 and 8192.'],
        [{ type: 'Generic' }, `Unsupported key type '"Generic"' for TLS`],
        [{ type: 'EC_P256K1' }, `Unsupported key type '"EC_P256K1"' for TLS`],
        [{ type: 'EC_P224', length: 1 }, `Unsupported key type '"EC_P224"' for TLS`],
        [{ type: 'Foo' }, 'Invalid data for JSON schema: Json.key_type.'],
        [{ type: 5 }, 'Invalid data for JSON schema: Expected JSON string for type.'],
        [{}, 'Invalid data for JSON schema: Json.tls_generate_key_req.typ.'],
        [{ type: 'EC_P256', size: 1 }, 'Invalid data for JSON schema: Json.tls_generate_key_req.'],
        [{ type: 'EC_P256', length: '2048' }, 'Invalid data for JSON schema: Json.tls_generate_key_req.length.'],
        [[], 'Invalid data for JSON schema: Json.tls_generate_key_req.'],
      ];
      for (const [json, message] of cases) {
        const r = await http.req('POST', '/config/tls/generate', { auth: admin, json });
        expect([r.status, r.json()], JSON.stringify(json)).toEqual([400, { message }]);
      }
      const float = await http.req('POST', '/config/tls/generate', { auth: admin, body: '{"type":"RSA","length":2048.0}' });
      expect([float.status, float.json()]).toEqual([400, { message: 'Invalid data for JSON schema: Json.tls_generate_key_req.length.' }]);
      const bad = await http.req('POST', '/config/tls/generate', { auth: admin, body: '{"type":' });
      expect(bad.status).toBe(400);
      expect((bad.json() as { message: string }).message).toMatch(/^Invalid JSON: /);
      expect((await http.req('GET', '/config/tls/public.pem', { auth: admin })).text).toBe(pub);
    });
  });
});

describe('POST /config/tls/csr.pem', () => {
  it('signs a request with the TLS key; empty common name accepted, strict body', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      const r = await http.req('POST', '/config/tls/csr.pem', { auth: admin, json: { commonName: 'hsm.example', organizationName: 'Org', subjectAltNames: ['IP:10.0.0.1'] } });
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toBe('application/x-pem-file');
      expect(r.text).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----\n/);
      const { x509 } = await import('../../tls/x509.js');
      const req = new x509.Pkcs10CertificateRequest(r.text);
      expect(await req.verify()).toBe(true);
      const pub = (await http.req('GET', '/config/tls/public.pem', { auth: admin })).text;
      expect(Buffer.from(req.publicKey.rawData)).toEqual(createPublicKey(pub).export({ type: 'spki', format: 'der' }));
      expect((await http.req('POST', '/config/tls/csr.pem', { auth: admin, json: { commonName: '' } })).status).toBe(200);
      // The firmware's JSON reader takes unquoted keys.
      expect((await http.req('POST', '/config/tls/csr.pem', { auth: admin, body: '{ commonName: "x", subjectAltNames: null }' })).status).toBe(200);
      const cases: Array<[unknown, string]> = [
        [{}, 'Invalid data for JSON schema: Json.subject_req.commonName.'],
        [{ commonName: 'a', extra: 1 }, 'Invalid data for JSON schema: Json.subject_req.'],
        [{ commonName: 1, countryName: 2 }, 'Invalid data for JSON schema: Json.subject_req.countryName.'],
        [{ commonName: 'a', subjectAltNames: 'x' }, 'Invalid data for JSON schema: Json.subject_req.subjectAltNames.'],
      ];
      for (const [json, message] of cases) {
        const e = await http.req('POST', '/config/tls/csr.pem', { auth: admin, json });
        expect([e.status, e.json()], JSON.stringify(json)).toEqual([400, { message }]);
      }
    });
  });
});

describe('PUT /config/tls/cert.pem', () => {
  it('installs a certificate for the TLS key with its chain; new clients trusting only the root connect', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      const pub = (await http.req('GET', '/config/tls/public.pem', { auth: admin })).text;
      const root = await testCa('Test Root');
      const mid = await testCa('Test Intermediate', { issuer: root });
      const leaf = await testLeaf(mid, pub);
      const body = leaf.pem + mid.pem + root.pem;
      const r = await http.req('PUT', '/config/tls/cert.pem', { auth: admin, body, headers: PEM });
      expect([r.status, r.body.length, r.headers['location']]).toEqual([201, 0, '/api/v1/config/tls/cert.pem']);
      expect((await http.req('GET', '/config/tls/cert.pem', { auth: admin })).text).toBe(encodeCertificates([leaf.der, mid.der, root.der]));
      const now = await served(sim.port, root.pem);
      expect(now.authorized).toBe(true);
      expect(now.chain[0]!.fingerprint256).toBe(new X509Certificate(leaf.der).fingerprint256);
      expect(now.chain.map((c) => c.subject)).toContain('CN=Test Intermediate');
      // A single certificate is not validated at all.
      const other = await testCa('Unrelated');
      expect((await http.req('PUT', '/config/tls/cert.pem', { auth: admin, body: (await testLeaf(other, pub)).pem, headers: PEM })).status).toBe(201);
    });
  });

  it('refuses bad uploads with the firmware texts and keeps the served certificate', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      const pub = (await http.req('GET', '/config/tls/public.pem', { auth: admin })).text;
      const before = sim.fingerprint256;
      const root = await testCa('Root');
      const mid = await testCa('Intermediate', { issuer: root });
      const stranger = await testCa('Stranger');
      const { publicKey } = await import('node:crypto').then((c) => c.generateKeyPairSync('ec', { namedCurve: 'P-256' }));
      const foreignLeaf = await testLeaf(root, publicKey.export({ type: 'spki', format: 'pem' }).toString());
      const expired = await testLeaf(mid, pub, 'old', { notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
      const put = (body: string, headers: Record<string, string> = PEM) => http.req('PUT', '/config/tls/cert.pem', { auth: admin, body, headers });
      let r = await put('just text');
      expect([r.status, r.json()]).toEqual([400, { message: 'empty certificate chain' }]);
      r = await put('-----BEGIN CERTIFICATE-----\nAAAA\n');
      expect([r.status, r.json()]).toEqual([400, { message: 'end of input' }]);
      r = await put(foreignLeaf.pem);
      expect([r.status, r.json()]).toEqual([400, { message: 'public key in certificate does not match private key.' }]);
      r = await put((await testLeaf(mid, pub)).pem + stranger.pem);
      expect(r.status).toBe(400);
      expect((r.json() as { message: string }).message).toMatch(/^no trust anchor found for X\.509 certificate\n/);
      r = await put(expired.pem + mid.pem + root.pem);
      expect((r.json() as { message: string }).message).toMatch(/^leaf certificate X\.509 certificate\n.*expired \(now /s);
      // The leaf must come first.
      r = await put(root.pem + (await testLeaf(root, pub)).pem);
      expect((r.json() as { message: string }).message).toBe('public key in certificate does not match private key.');
      expect((await put((await testLeaf(root, pub)).pem, { 'content-type': 'application/json' })).status).toBe(415);
      expect(sim.fingerprint256).toBe(before);
      expect((await served(sim.port)).chain[0]!.fingerprint256).toBe(before);
    });
  });
});

describe('/config/tls/cluster-ca.pem', () => {
  it('is absent (404 JSON) until set; must be a CA that signs the installed certificate; then blocks generate and foreign certificates', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      let r = await http.req('GET', '/config/tls/cluster-ca.pem', { auth: admin });
      expect([r.status, r.json()]).toEqual([404, { message: 'cluster CA is absent unless configured' }]);
      const pub = (await http.req('GET', '/config/tls/public.pem', { auth: admin })).text;
      const root = await testCa('Cluster Root');
      const put = (body: string) => http.req('PUT', '/config/tls/cluster-ca.pem', { auth: admin, body, headers: PEM });
      // The self-signed boot certificate is not signed by it.
      r = await put(root.pem);
      expect(r.status).toBe(412);
      expect((r.json() as { message: string }).message).toMatch(/^the installed TLS cert is not signed by this CA: no trust anchor found for X\.509 certificate\n/);
      r = await put('nothing');
      expect([r.status, r.json()]).toEqual([400, { message: 'No certificate' }]);
      r = await put(root.pem + root.pem);
      expect([r.status, r.json()]).toEqual([400, { message: 'Multiple certificates' }]);
      const notCa = await testCa('Not a CA', { ca: false });
      r = await put(notCa.pem);
      expect([r.status, (r.json() as { message: string }).message.replace(/X\.509 certificate.*: invalid/s, '…: invalid')]).toEqual([400, 'this is not a valid CA: CA certificate …: invalid CA extensions']);

      expect((await http.req('PUT', '/config/tls/cert.pem', { auth: admin, body: (await testLeaf(root, pub)).pem, headers: PEM })).status).toBe(201);
      r = await put(root.pem);
      expect([r.status, r.headers['location']]).toEqual([201, '/api/v1/config/tls/cluster-ca.pem']);
      r = await http.req('GET', '/config/tls/cluster-ca.pem', { auth: admin });
      expect([r.status, r.text]).toEqual([200, encodePem('CERTIFICATE', root.der)]);

      r = await http.req('POST', '/config/tls/generate', { auth: admin, json: { type: 'EC_P256' } });
      expect([r.status, r.json()]).toEqual([412, { message: 'cannot generate cert if cluster CA has been set' }]);
      const other = await testCa('Other Root');
      r = await http.req('PUT', '/config/tls/cert.pem', { auth: admin, body: (await testLeaf(other, pub)).pem, headers: PEM });
      expect(r.status).toBe(412);
      expect((r.json() as { message: string }).message).toMatch(/^the cluster CA is set, and the given cert is not signed by it: no trust anchor found for /);
      // A certificate from the cluster CA is still accepted.
      expect((await http.req('PUT', '/config/tls/cert.pem', { auth: admin, body: (await testLeaf(root, pub, 'node2')).pem, headers: PEM })).status).toBe(201);
    });
  });
});

describe('full restore and the TLS identity (FACTS-system §2.7)', () => {
  it('keeps serving the pre-restore certificate until the next boot, then serves the backup source certificate', async () => {
    const source = await startProvisionedSimulator();
    const target = await startSimulator({ unlockScrypt: TEST_KDF, backupScrypt: TEST_KDF });
    const hs = new TestHttp(source, { insecure: true });
    const ht = new TestHttp(target, { insecure: true });
    try {
      const file = await hs.backup(source.users.backup);
      const targetBefore = target.fingerprint256;
      expect(targetBefore).not.toBe(source.fingerprint256);
      expect((await ht.restore(file, { backupPassphrase: source.backupPassphrase })).status).toBe(204);
      expect((await ht.req('POST', '/unlock', { json: { passphrase: source.unlockPassphrase } })).status).toBe(204);
      expect((await served(target.port)).chain[0]!.fingerprint256).toBe(targetBefore);
      const certAnswer = await ht.req('GET', '/config/tls/cert.pem', { auth: source.users.admin });
      expect(new X509Certificate(pemCertificates(certAnswer.text)[0]!).fingerprint256).toBe(targetBefore);
      const etagAfterRestore = certAnswer.headers['etag'];
      const boots = target.boots;
      expect((await ht.req('POST', '/system/reboot', { auth: source.users.admin })).status).toBe(204);
      await target.waitForBoot(boots + 1);
      expect((await served(target.port)).chain[0]!.fingerprint256).toBe(source.fingerprint256);
      expect(target.fingerprint256).toBe(source.fingerprint256);
      expect(formatName(parseCertificate((await served(target.port)).chain[0]!.raw).subject)).toBe('CN=keyfender');
      // The ETag followed the stored (restored) entry all along; only the body changed with the boot.
      expect((await ht.req('POST', '/unlock', { json: { passphrase: source.unlockPassphrase } })).status).toBe(204);
      const afterBoot = await ht.req('GET', '/config/tls/cert.pem', { auth: source.users.admin });
      expect(afterBoot.headers['etag']).toBe(etagAfterRestore);
      expect(afterBoot.text).not.toBe(certAnswer.text);
    } finally {
      await hs.close();
      await ht.close();
      await source.close();
      await target.close();
    }
  });
});
