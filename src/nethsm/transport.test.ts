/**
 * Transport, TLS trust and error mapping against a small HTTPS server started by the test (the server is the test's,
 * not a mock of our modules; the simulator-backed tests are in client.test.ts).
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import busboy from 'busboy';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  InputInvalidError,
  InternalError,
  ERROR_CLASSES,
  NetHsmCredentialRefusedError,
  NetHsmHttpError,
  NetHsmResponseInvalidError,
  NetHsmTimeoutError,
  NetHsmTlsUntrustedError,
  NetHsmUnreachableError,
  TlsPinMismatchError,
  isRetryable,
} from '../errors.js';
import { createSelfSignedCertificate, type CertificateBundle } from '../tls/index.js';
import { NetHsmClient } from './client.js';

type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

interface TestServer {
  url: string;
  cert: CertificateBundle;
  /** Every request that reached the handler: method, url and authorization header. */
  seen: { method: string; url: string; authorization: string | undefined }[];
  secureConnections: number;
  handle(h: Handler): void;
  close(): Promise<void>;
}

async function startServer(cert: CertificateBundle): Promise<TestServer> {
  let handler: Handler = (_req, res) => res.writeHead(500).end();
  const seen: TestServer['seen'] = [];
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    if ((req.headers['content-type'] ?? '').startsWith('multipart/')) {
      handler(req, res, Buffer.alloc(0));
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, res, Buffer.concat(chunks)));
  });
  const state = { secureConnections: 0 };
  server.on('secureConnection', () => state.secureConnections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    cert,
    seen,
    get secureConnections() {
      return state.secureConnections;
    },
    handle(h) {
      handler = h;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

let srv: TestServer;
let otherCert: CertificateBundle;
const clients: NetHsmClient[] = [];

function client(opts: Partial<ConstructorParameters<typeof NetHsmClient>[0]> = {}): NetHsmClient {
  const c = new NetHsmClient({
    url: srv.url,
    tls: { fingerprint256: srv.cert.fingerprint256 },
    auth: { username: 'admin', password: 'adminadmin' },
    ...opts,
  });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  const [cert, other] = await Promise.all([createSelfSignedCertificate(), createSelfSignedCertificate()]);
  otherCert = other;
  srv = await startServer(cert);
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  srv.seen.length = 0;
});
afterAll(async () => srv.close());

describe('TLS trust', () => {
  it('connects with the right fingerprint in colon form and in plain lowercase hex', async () => {
    srv.handle((_req, res) => json(res, 200, { vendor: 'Nitrokey GmbH', product: 'NetHSM' }));
    await expect(client().info()).resolves.toEqual({ vendor: 'Nitrokey GmbH', product: 'NetHSM' });
    const plain = srv.cert.fingerprint256.replace(/:/g, '').toLowerCase();
    await expect(client({ tls: { fingerprint256: plain } }).info()).resolves.toMatchObject({ product: 'NetHSM' });
  });

  it('refuses a wrong fingerprint before sending anything, so the server never sees the credentials', async () => {
    srv.handle((_req, res) => json(res, 200, { state: 'Operational' }));
    const c = client({ tls: { fingerprint256: otherCert.fingerprint256 } });
    const err = await c.listKeys().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TlsPinMismatchError);
    expect((err as Error).message).toContain(srv.cert.fingerprint256);
    expect(isRetryable(err)).toBe(false);
    expect(srv.seen).toEqual([]);
  });

  it('trusts a server whose certificate verifies against the given CA PEM', async () => {
    srv.handle((_req, res) => json(res, 200, { state: 'Locked' }));
    await expect(client({ tls: { caPem: srv.cert.certPem } }).healthState()).resolves.toBe('Locked');
  });

  it('refuses a server whose certificate does not verify against the CA, without sending the request', async () => {
    srv.handle((_req, res) => json(res, 200, { state: 'Locked' }));
    const err = await client({ tls: { caPem: otherCert.certPem } }).healthState().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetHsmTlsUntrustedError);
    expect(srv.seen).toEqual([]);
  });

  it('accepts any certificate with insecure: true and warns once per client', async () => {
    srv.handle((_req, res) => json(res, 200, { state: 'Operational' }));
    const lines: { level: number; msg: string }[] = [];
    const logger = pino({ level: 'debug' }, new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c))), cb()) }));
    const c = client({ tls: { insecure: true }, logger });
    await c.healthState();
    await c.healthState();
    await c.withAuth('other', 'otherother').healthState();
    const warnings = lines.filter((l) => l.level === 40);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toMatch(/verification is disabled/);
    expect(JSON.stringify(lines)).not.toContain('adminadmin');
    expect(JSON.stringify(lines)).not.toContain(Buffer.from('admin:adminadmin').toString('base64'));
  });

  it('refuses options without exactly one trust setting, non-https URLs and malformed fingerprints', () => {
    expect(() => client({ tls: {} })).toThrow(InputInvalidError);
    expect(() => client({ tls: { insecure: true, fingerprint256: srv.cert.fingerprint256 } })).toThrow(InputInvalidError);
    expect(() => client({ tls: { fingerprint256: 'AB:CD' } })).toThrow(/fingerprint256/);
    expect(() => client({ tls: { caPem: 'not a pem' } })).toThrow(/caPem/);
    expect(() => client({ url: 'http://127.0.0.1:1' })).toThrow(/https/);
    expect(() => client({ url: 'https://u:p@127.0.0.1:1' })).toThrow(/credentials/);
    for (const connections of [0, 1.5, -1]) expect(() => client({ connections })).toThrow(/connections must be a whole number/);
    expect(client({ connections: 3 }).connections).toBe(3);
  });
});

describe('error mapping', () => {
  it.each([
    [400, { message: 'Invalid data for JSON schema: foo' }, false, 'Invalid data for JSON schema: foo'],
    [401, undefined, false, undefined],
    [403, undefined, false, undefined],
    [404, { message: 'key not found' }, false, 'key not found'],
    [412, { message: 'Service not available' }, true, 'Service not available'],
    [429, { message: 'Too many requests' }, true, 'Too many requests'],
    [500, undefined, true, undefined],
  ] as const)('maps %i to NetHsmHttpError with its message and retryable flag', async (status, body, retryable, message) => {
    srv.handle((_req, res) => (body ? json(res, status, body) : res.writeHead(status).end()));
    const err = await client().generateKey({ type: 'Curve25519', mechanisms: ['EdDSA_Signature'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetHsmHttpError);
    const e = err as NetHsmHttpError;
    expect(e.status).toBe(status);
    expect(e.nethsmMessage).toBe(message);
    expect(e.operation).toBe('POST /keys/generate');
    expect(e.retryable).toBe(retryable);
    expect(isRetryable(e)).toBe(retryable);
    expect(e.code).toBe('NHR_ERR_NETHSM_HTTP');
  });

  it('says in the message itself what an answer without a message means, naming the user; no hint points "above"', async () => {
    for (const [status, words] of [
      [401, /^NetHSM answered 401 Unauthorized: it refused the credentials of user admin \(wrong passphrase, or no such user\) \(GET \/users\)$/],
      [403, /^NetHSM answered 403 Forbidden: user admin may not do this \(its role or namespace\) \(GET \/users\)$/],
      [500, /^NetHSM answered 500 Internal Server Error \(GET \/users\)$/],
    ] as const) {
      srv.handle((_req, res) => res.writeHead(status).end());
      const err = (await client().listUsers().catch((e: unknown) => e)) as NetHsmHttpError;
      expect(err.message).toMatch(words);
      expect(err.hint).not.toMatch(/above/);
    }
    for (const C of ERROR_CLASSES) expect(C.defaultHint, C.code).not.toMatch(/ above/);
  });

  it('names the config setting of a credential the NetHSM refuses (NHR_ERR_NETHSM_CREDENTIAL_REFUSED) and tells whoever watches', async () => {
    srv.handle((_req, res) => res.writeHead(401, { 'www-authenticate': 'Basic' }).end());
    const seen: { setting: string; refused: boolean }[] = [];
    const root = client({ auth: undefined, onCredential: (c, refused) => seen.push({ setting: c.setting, refused: refused !== undefined }) });
    const admin = root.withAuth('admin', 'adminadmin', { setting: 'nethsm.credentials.admin', name: 'nethsm-admin' });
    const err = (await admin.systemInfo().catch((e: unknown) => e)) as NetHsmCredentialRefusedError;
    expect(err).toBeInstanceOf(NetHsmCredentialRefusedError);
    expect(err).toBeInstanceOf(NetHsmHttpError);
    expect(err.code).toBe('NHR_ERR_NETHSM_CREDENTIAL_REFUSED');
    expect(err.status).toBe(401);
    expect(err.setting).toBe('nethsm.credentials.admin');
    expect(err.message).toBe('the NetHSM refused the nethsm-admin credential (nethsm.credentials.admin) for user admin: 401 Unauthorized on GET /system/info');
    expect(err.hint).toMatch(/check-config/);
    expect(seen).toEqual([{ setting: 'nethsm.credentials.admin', refused: true }]);
    srv.handle((_req, res) => json(res, 200, { softwareVersion: '1', deviceId: 'x', firmwareVersion: '1', hardwareVersion: '1', softwareBuild: '1', firmwareBuild: '1', akPub: {}, pcr: {} }));
    await admin.systemInfo();
    expect(seen).toEqual([
      { setting: 'nethsm.credentials.admin', refused: true },
      { setting: 'nethsm.credentials.admin', refused: false },
    ]);
  });

  it('keeps no NetHSM message for a non-JSON error body', async () => {
    srv.handle((_req, res) => res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found'));
    const err = (await client().getKey('x').catch((e: unknown) => e)) as NetHsmHttpError;
    expect(err.status).toBe(404);
    expect(err.nethsmMessage).toBeUndefined();
    expect(err.operation).toBe('GET /keys/x');
  });

  it('redacts the passphrases it sent from a NetHSM message that quotes them', async () => {
    srv.handle((_req, res, body) => json(res, 400, { message: `Invalid JSON: ${body.toString()}` }));
    const err = (await client().setUserPassphrase('operator', 'SuperSecret-123').catch((e: unknown) => e)) as NetHsmHttpError;
    expect(err.status).toBe(400);
    expect(err.message).toContain('[redacted]');
    expect(JSON.stringify({ m: err.message, j: err.toJSON(), n: err.nethsmMessage })).not.toContain('SuperSecret-123');
  });

  it('never puts the Authorization header into an error', async () => {
    srv.handle((_req, res) => res.writeHead(401, { 'www-authenticate': 'Basic' }).end());
    const err = (await client().listUsers().catch((e: unknown) => e)) as NetHsmHttpError;
    expect(srv.seen[0]!.authorization).toBe(`Basic ${Buffer.from('admin:adminadmin').toString('base64')}`);
    const dump = JSON.stringify({ m: err.message, j: err.toJSON(), s: err.stack, c: String(err.cause) });
    expect(dump).not.toContain('adminadmin');
    expect(dump).not.toContain(Buffer.from('admin:adminadmin').toString('base64'));
  });

  it('raises NetHsmResponseInvalidError for unparsable JSON and for JSON of the wrong shape, without quoting the body', async () => {
    srv.handle((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"decrypted": "c2VjcmV0'));
    const err = (await client().decrypt('k', 'PKCS1', Buffer.from('x')).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(NetHsmResponseInvalidError);
    expect(err.message).not.toContain('c2VjcmV0');
    srv.handle((_req, res) => json(res, 200, [{ name: 'k' }]));
    await expect(client().listKeys()).rejects.toBeInstanceOf(NetHsmResponseInvalidError);
  });

  it('raises NetHsmUnreachableError (retryable) when nothing listens', async () => {
    const dead = await startServer(otherCert);
    const url = dead.url;
    await dead.close();
    const err = await client({ url }).info().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetHsmUnreachableError);
    expect(isRetryable(err)).toBe(true);
  });

  it('raises NetHsmTimeoutError when the answer does not start in time', async () => {
    srv.handle(() => undefined);
    const err = await client({ timeoutMs: 300 }).info().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetHsmTimeoutError);
    expect(isRetryable(err)).toBe(true);
  });

  it('raises NetHsmTimeoutError when the body stalls half-way', async () => {
    srv.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('[{"id":');
    });
    await expect(client({ timeoutMs: 300 }).listKeys()).rejects.toBeInstanceOf(NetHsmTimeoutError);
  });
});

describe('requests', () => {
  it('sends JSON with its content type, query parameters and the prefix route', async () => {
    const bodies: string[] = [];
    srv.handle((req, res, body) => {
      bodies.push(`${req.headers['content-type'] ?? '-'} ${body.toString()}`);
      json(res, 200, [{ id: 'a' }, { id: 'b' }]);
    });
    const c = client();
    await expect(c.listKeys({ filter: '', label: 'my label' })).resolves.toEqual(['a', 'b']);
    await c.listKeys({ prefix: 'my', label: 'x' });
    expect(srv.seen.map((s) => s.url)).toEqual(['/api/v1/keys?filter=&label=my+label', '/api/v1/keys/my*?label=x']);
  });

  it('shares the pool between clients made with withAuth, each sending its own credentials', async () => {
    srv.handle((_req, res) => json(res, 200, { state: 'Operational' }));
    const root = client();
    const op = root.withAuth('operator', 'operatoroperator');
    // Warm-up: undici may open a second socket while the first is still being released.
    await root.healthState();
    await root.healthState();
    const before = srv.secureConnections;
    srv.seen.length = 0;
    for (let i = 0; i < 3; i++) {
      await op.healthState();
      await root.healthState();
    }
    await op.close(); // no-op for a derived client
    await root.healthState();
    expect(srv.secureConnections).toBe(before);
    const admin = `Basic ${Buffer.from('admin:adminadmin').toString('base64')}`;
    const operator = `Basic ${Buffer.from('operator:operatoroperator').toString('base64')}`;
    expect(srv.seen.map((s) => s.authorization)).toEqual([operator, admin, operator, admin, operator, admin, admin]);
    await root.close();
    await root.close();
    await expect(op.healthState()).rejects.toBeInstanceOf(InternalError);
  });

  it('uploads a restore as multipart with the JSON arguments first and the backup streamed second', async () => {
    const parts: { name: string; type: string; size: number; text?: string }[] = [];
    srv.handle((req, res) => {
      const bb = busboy({ headers: req.headers });
      bb.on('field', (name, value) => parts.push({ name, type: 'field', size: value.length, text: value }));
      bb.on('file', (name, file, info) => {
        let size = 0;
        file.on('data', (c: Buffer) => (size += c.length));
        file.on('end', () => parts.push({ name, type: info.mimeType, size }));
      });
      bb.on('close', () => res.writeHead(204).end());
      req.pipe(bb);
    });
    async function* backup(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 64; i++) yield Buffer.alloc(16 * 1024, i);
    }
    await client().restore(backup(), { backupPassphrase: 'backupPassphrase' });
    expect(parts).toEqual([
      // busboy reports a part without a filename as a field
      { name: 'arguments', type: 'field', size: 39, text: '{"backupPassphrase":"backupPassphrase"}' },
      { name: 'backup_file', type: 'application/octet-stream', size: 64 * 16 * 1024 },
    ]);
  });
});
