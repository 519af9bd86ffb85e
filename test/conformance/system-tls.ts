/**
 * Conformance of the system and TLS endpoints (FACTS-system §1–2): power, update, `/config/tls/*`, asserted on the
 * exact statuses, bodies and served certificates. Runs against the simulator always and the firmware container when
 * Docker is reachable, each on its own fresh Unprovisioned device; the steps build on each other and run in order.
 *
 * Requests go out raw (undici, no certificate verification): the suite replaces the device's certificate, and it
 * checks what the listener serves with its own TLS probe. Where the test container differs from an appliance (it
 * exits on reboot/shutdown; factory reset keeps its data) the target's `powerCycle` stands in for the power button,
 * and the suite asserts only what both do.
 */
import { createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:tls';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { encodePem } from '../../src/sim/tls/pem.js';
import { testCa, testLeaf, type TestCa } from '../../src/sim/tls/test-certs.js';

export interface SystemTarget {
  /** `https://host:port` of the device now (a restarted container may be on another port). */
  url(): string;
  /**
   * Call right before a request that reboots or powers the device off; after its 204, await the returned function to
   * have the device answering again with its data, as after pressing the power button.
   */
  powerCycle(): () => Promise<void>;
  /** Stops the device (idempotent). */
  close(): Promise<void>;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const UPDATE_BIN = path.resolve(repoRoot, '..', 'shared', 'nethsm', 'fixtures', 'update', 'update.bin');
const haveImage = existsSync(UPDATE_BIN);
if (!haveImage) console.warn(`update image fixture absent at ${UPDATE_BIN}: its conformance steps are skipped`);

const UNLOCK = 'unlockPassphrase';
const ADMIN = { username: 'admin', password: 'adminPassphrase' };
const OPERATOR = { username: 'operator', password: 'operatorPassphrase' };
const PEM = { 'content-type': 'application/x-pem-file' };
const NO_UPDATE = { message: 'No update available. Please upload a system image to /system/update.' };
const WRONG_STATE = { message: 'Service not available' };

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json(): unknown;
}

interface Cred {
  username: string;
  password: string;
}

function basic(c: Cred): string {
  return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64');
}

/** Certificates the listener shows a new connection, leaf first. */
function servedChain(url: string): Promise<X509Certificate[]> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false, servername: undefined }, () => {
      const out: X509Certificate[] = [];
      const seen = new Set<string>();
      for (let c = s.getPeerCertificate(true); c?.raw && !seen.has(c.fingerprint256); c = c.issuerCertificate) {
        seen.add(c.fingerprint256);
        out.push(new X509Certificate(c.raw));
      }
      s.end();
      resolve(out);
    });
    s.once('error', reject);
  });
}

/** The firmware's update image with its version field replaced (the signature no longer matters for parse errors). */
function withVersion(image: Buffer, version: string): Buffer {
  let off = 16;
  const field = (): [number, number] => {
    const len = image.readUIntBE(off, 3);
    const start = off;
    off += 3 + len;
    return [start, off];
  };
  field(); // signature
  field(); // changelog
  const [vStart, vEnd] = field();
  const v = Buffer.from(version, 'latin1');
  const len = Buffer.alloc(3);
  len.writeUIntBE(v.length, 0, 3);
  return Buffer.concat([image.subarray(0, vStart), len, v, image.subarray(vEnd)]);
}

export function runSystemTlsConformance(name: string, target: () => Promise<SystemTarget>): void {
  describe(`NetHSM system and TLS conformance: ${name}`, () => {
    let t: SystemTarget;
    const agent = new Agent({ connect: { rejectUnauthorized: false } });
    let root: TestCa;
    let publicPem = '';

    async function call(method: string, p: string, opts: { auth?: Cred; json?: unknown; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Answer> {
      const headers: Record<string, string> = { ...opts.headers };
      if (opts.auth) headers['authorization'] = basic(opts.auth);
      let body = opts.body;
      if (opts.json !== undefined) {
        headers['content-type'] ??= 'application/json';
        body = JSON.stringify(opts.json);
      }
      const res = await request(`${t.url()}/api/v1${p}`, { method: method as 'GET', headers, body, dispatcher: agent });
      const buf = Buffer.from(await res.body.arrayBuffer());
      const text = buf.toString('utf8');
      return { status: res.statusCode, headers: res.headers, body: buf, text, json: () => JSON.parse(text) as unknown };
    }
    const answer = async (p: Promise<Answer>): Promise<[number, unknown]> => {
      const r = await p;
      return [r.status, r.body.length === 0 ? '' : r.headers['content-type'] === 'application/json' ? r.json() : r.text];
    };

    /** Waits until the API stops answering (the device went down), at most ~20 s. */
    async function down(): Promise<void> {
      for (let i = 0; i < 200; i++) {
        try {
          await call('GET', '/health/state');
        } catch {
          return;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('the device kept answering after shutting down');
    }

    beforeAll(async () => {
      t = await target();
      root = await testCa('Conformance Root');
    });
    afterAll(async () => {
      await agent.close();
      await t?.close();
    });

    describe('in order', () => {
      it('refuses every system and TLS endpoint with 412 before provisioning, before authentication', async () => {
        for (const p of ['/system/reboot', '/system/factory-reset', '/system/update', '/system/commit-update', '/system/cancel-update', '/config/tls/generate']) {
          expect(await answer(call('POST', p)), p).toEqual([412, WRONG_STATE]);
        }
        expect(await answer(call('GET', '/config/tls/cert.pem', { auth: ADMIN }))).toEqual([412, WRONG_STATE]);
        const r = await call('POST', '/provision', { json: { unlockPassphrase: UNLOCK, adminPassphrase: ADMIN.password, systemTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') } });
        expect(r.status).toBe(204);
        expect((await call('PUT', '/users/operator', { auth: ADMIN, json: { realName: 'Op', role: 'Operator', passphrase: OPERATOR.password } })).status).toBe(201);
      });

      it('needs the root Administrator for reboot, factory reset and updates', async () => {
        for (const p of ['/system/reboot', '/system/factory-reset', '/system/shutdown', '/system/update', '/system/commit-update', '/system/cancel-update']) {
          expect(await answer(call('POST', p)), p).toEqual([401, '']);
          expect(await answer(call('POST', p, { auth: OPERATOR })), p).toEqual([403, '']);
        }
        expect((await call('GET', '/system/reboot', { auth: ADMIN })).status).toBe(405);
      });

      it('answers commit/cancel without an upload with 412, and bad images with the firmware texts', async () => {
        expect(await answer(call('POST', '/system/commit-update', { auth: ADMIN }))).toEqual([412, NO_UPDATE]);
        expect(await answer(call('POST', '/system/cancel-update', { auth: ADMIN }))).toEqual([412, NO_UPDATE]);
        expect(await answer(call('POST', '/system/update', { auth: ADMIN, body: 'not an image, but long enough to have a header' }))).toEqual([400, { message: 'Invalid update file' }]);
        expect(await answer(call('POST', '/system/update', { auth: ADMIN, body: '_NETHSM' }))).toEqual([400, { message: 'Unexpected end of data' }]);
      });

      it.skipIf(!haveImage)("accepts the firmware test image once (200 releaseNotes, 409 for a second), and checks version, length and signature", async () => {
        const image = readFileSync(UPDATE_BIN);
        const bad: Array<[Buffer, string]> = [
          [withVersion(image, '9'), "Failed to parse version: no separator (.). A valid version would be '4.2'."],
          [withVersion(image, '9.0.1'), "Failed to parse version: Not a number. A valid version would be '4.2'."],
          [Buffer.concat([image, Buffer.from([0])]), 'unexpected end of data'],
          [image.subarray(0, image.length - 1), 'unexpected end of data'],
          [Buffer.concat([image.subarray(0, -1), Buffer.from([image.at(-1)! ^ 1])]), 'Signature check of update image failed.'],
        ];
        for (const [body, message] of bad) expect(await answer(call('POST', '/system/update', { auth: ADMIN, body })), message).toEqual([400, { message }]);
        const ok = await call('POST', '/system/update', { auth: ADMIN, body: image, headers: { 'content-type': 'application/octet-stream' } });
        expect([ok.status, ok.headers['content-type'], ok.text]).toEqual([200, 'application/json', '{"releaseNotes":"some cool new features\\n"}']);
        expect(await answer(call('POST', '/system/update', { auth: ADMIN, body: image }))).toEqual([409, { message: 'Update already in progress.' }]);
        expect((await call('POST', '/system/cancel-update', { auth: ADMIN })).status).toBe(204);
        expect((await call('POST', '/system/update', { auth: ADMIN, body: image })).status).toBe(200);
        expect((await call('POST', '/system/cancel-update', { auth: ADMIN })).status).toBe(204);
      });

      it('reports the served TLS key and certificate, and signs CSRs with that key', async () => {
        const pub = await call('GET', '/config/tls/public.pem', { auth: ADMIN });
        expect([pub.status, pub.headers['content-type']]).toEqual([200, 'application/x-pem-file']);
        publicPem = pub.text;
        const [leaf] = await servedChain(t.url());
        expect(createPublicKey(publicPem).export({ type: 'spki', format: 'pem' })).toBe(leaf!.publicKey.export({ type: 'spki', format: 'pem' }));
        expect((await call('GET', '/config/tls/cert.pem', { auth: ADMIN })).text).toBe(encodePem('CERTIFICATE', leaf!.raw));
        expect((await call('GET', '/config/tls/cert.pem', { auth: ADMIN, headers: { accept: 'application/json' } })).status).toBe(406);
        const csr = await call('POST', '/config/tls/csr.pem', { auth: ADMIN, json: { commonName: 'nethsm.example' } });
        expect([csr.status, csr.text.split('\n')[0]]).toEqual([200, '-----BEGIN CERTIFICATE REQUEST-----']);
        expect((await call('POST', '/config/tls/csr.pem', { auth: ADMIN, json: { commonName: '' } })).status).toBe(200);
        expect(await answer(call('POST', '/config/tls/csr.pem', { auth: ADMIN, json: { commonName: 'a', nickname: 'b' } }))).toEqual([400, { message: 'Invalid data for JSON schema: Json.subject_req.' }]);
      });

      it('generates a new TLS key, refusing bad types and lengths, and serves it to new connections at once', async () => {
        const refusals: Array<[unknown, string]> = [
          [{ type: 'RSA' }, 'Length must be between 1024 and 8192.'],
          [{ type: 'Generic' }, `Unsupported key type '"Generic"' for TLS`],
          [{ type: 'Foo' }, 'Invalid data for JSON schema: Json.key_type.'],
        ];
        for (const [json, message] of refusals) expect(await answer(call('POST', '/config/tls/generate', { auth: ADMIN, json })), message).toEqual([400, { message }]);
        const before = (await servedChain(t.url()))[0]!.fingerprint256;
        expect((await call('POST', '/config/tls/generate', { auth: ADMIN, json: { type: 'EC_P256' } })).status).toBe(204);
        const [leaf] = await servedChain(t.url());
        expect(leaf!.fingerprint256).not.toBe(before);
        expect(leaf!.subject).toBe('CN=keyfender');
        publicPem = (await call('GET', '/config/tls/public.pem', { auth: ADMIN })).text;
        expect(createPublicKey(publicPem).export({ type: 'spki', format: 'pem' })).toBe(leaf!.publicKey.export({ type: 'spki', format: 'pem' }));
      });

      it('installs a certificate chain for the TLS key at once, and refuses foreign keys and non-PEM bodies', async () => {
        const mid = await testCa('Conformance Intermediate', { issuer: root });
        const leaf = await testLeaf(mid, publicPem);
        const put = await call('PUT', '/config/tls/cert.pem', { auth: ADMIN, body: leaf.pem + mid.pem + root.pem, headers: PEM });
        expect([put.status, put.headers['location']]).toEqual([201, '/api/v1/config/tls/cert.pem']);
        const served = await servedChain(t.url());
        expect(served[0]!.fingerprint256).toBe(new X509Certificate(leaf.der).fingerprint256);
        expect(served.map((c) => c.subject)).toContain('CN=Conformance Intermediate');
        expect(await answer(call('PUT', '/config/tls/cert.pem', { auth: ADMIN, body: 'plain text', headers: PEM }))).toEqual([400, { message: 'empty certificate chain' }]);
        const foreign = await testLeaf(root, (await testCa('Elsewhere')).cert.publicKey.toString('pem'));
        expect(await answer(call('PUT', '/config/tls/cert.pem', { auth: ADMIN, body: foreign.pem, headers: PEM }))).toEqual([400, { message: 'public key in certificate does not match private key.' }]);
        expect((await call('PUT', '/config/tls/cert.pem', { auth: ADMIN, body: leaf.pem, headers: { 'content-type': 'application/json' } })).status).toBe(415);
      });

      it('keeps the cluster CA absent (404) until a CA signing the installed certificate is set, then refuses generate', async () => {
        expect(await answer(call('GET', '/config/tls/cluster-ca.pem', { auth: ADMIN }))).toEqual([404, { message: 'cluster CA is absent unless configured' }]);
        const other = await testCa('Not The Issuer');
        const refused = await call('PUT', '/config/tls/cluster-ca.pem', { auth: ADMIN, body: other.pem, headers: PEM });
        expect(refused.status).toBe(412);
        expect((refused.json() as { message: string }).message).toMatch(/^the installed TLS cert is not signed by this CA: /);
        expect(await answer(call('PUT', '/config/tls/cluster-ca.pem', { auth: ADMIN, body: root.pem + other.pem, headers: PEM }))).toEqual([400, { message: 'Multiple certificates' }]);
        // The CA check takes the server certificate alone: install one the root signs directly.
        expect((await call('PUT', '/config/tls/cert.pem', { auth: ADMIN, body: (await testLeaf(root, publicPem)).pem, headers: PEM })).status).toBe(201);
        const set = await call('PUT', '/config/tls/cluster-ca.pem', { auth: ADMIN, body: root.pem, headers: PEM });
        expect([set.status, set.headers['location']]).toEqual([201, '/api/v1/config/tls/cluster-ca.pem']);
        expect(await answer(call('GET', '/config/tls/cluster-ca.pem', { auth: ADMIN }))).toEqual([200, encodePem('CERTIFICATE', root.der)]);
        expect(await answer(call('POST', '/config/tls/generate', { auth: ADMIN, json: { type: 'EC_P256' } }))).toEqual([412, { message: 'cannot generate cert if cluster CA has been set' }]);
        const stranger = await testLeaf(await testCa('Stranger CA'), publicPem);
        const r = await call('PUT', '/config/tls/cert.pem', { auth: ADMIN, body: stranger.pem, headers: PEM });
        expect(r.status).toBe(412);
        expect((r.json() as { message: string }).message).toMatch(/^the cluster CA is set, and the given cert is not signed by it: /);
      });

      it('reboots: 204, then the device comes back Locked with its data and certificate, without the pending upload', async () => {
        if (haveImage) expect((await call('POST', '/system/update', { auth: ADMIN, body: readFileSync(UPDATE_BIN) })).status).toBe(200);
        const served = (await servedChain(t.url()))[0]!.fingerprint256;
        const back = t.powerCycle();
        const r = await call('POST', '/system/reboot', { auth: ADMIN });
        expect([r.status, r.body.length]).toEqual([204, 0]);
        await back();
        expect((await call('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
        expect((await servedChain(t.url()))[0]!.fingerprint256).toBe(served);
        expect((await call('POST', '/unlock', { json: { passphrase: UNLOCK } })).status).toBe(204);
        expect(await answer(call('POST', '/system/cancel-update', { auth: ADMIN }))).toEqual([412, NO_UPDATE]);
      });

      it.skipIf(!haveImage)('commits an uploaded image: 204 and a reboot', async () => {
        expect((await call('POST', '/system/update', { auth: ADMIN, body: readFileSync(UPDATE_BIN) })).status).toBe(200);
        const back = t.powerCycle();
        expect(await answer(call('POST', '/system/commit-update', { auth: ADMIN }))).toEqual([204, '']);
        await back();
        expect((await call('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
        expect((await call('POST', '/unlock', { json: { passphrase: UNLOCK } })).status).toBe(204);
      });

      it('shuts down without credentials when Locked: 204, then nothing answers until powered on', async () => {
        expect((await call('POST', '/lock', { auth: ADMIN })).status).toBe(204);
        const back = t.powerCycle();
        expect(await answer(call('POST', '/system/shutdown'))).toEqual([204, '']);
        await down();
        await back();
        expect((await call('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
      });

      it('factory-resets: 412 while Locked, 204 when Operational', async () => {
        expect(await answer(call('POST', '/system/factory-reset', { auth: ADMIN }))).toEqual([412, WRONG_STATE]);
        expect((await call('POST', '/unlock', { json: { passphrase: UNLOCK } })).status).toBe(204);
        expect(await answer(call('POST', '/system/factory-reset', { auth: ADMIN }))).toEqual([204, '']);
      });
    });
  });
}
