/**
 * `/config/tls/*` (FACTS-system §2): the device's own TLS key and certificate, CSRs for it, a new self-signed key, and
 * the cluster CA. All Operational, root Administrator, 1 MiB bodies; PEM answers are `application/x-pem-file`.
 * A new certificate or key is served at once to new connections (`sim.serveTls`); a full restore changes only the
 * stored identity, which the next boot picks up (§2.7).
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { SimHttpError } from '../http-error.js';
import { NO_CONTENT, type Reply } from '../http.js';
import { decodeBody, err, field, intField, ok, optionField, record, textField, type FieldDecoder } from '../json-decode.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import { decodeCertificateChain, encodeCertificateChain, generateTlsIdentity, samePublicKey, storeTlsIdentity, tlsIdentity, type TlsKeyType } from '../tls-identity.js';
import { encodeCertificates, encodePem, pemCertificates } from '../tls/pem.js';
import { parseCertificate, type ParsedCertificate } from '../tls/x509-parse.js';
import { validCa, verifyChain, X509CheckError } from '../tls/x509-verify.js';
import { certificationRequest, type SubjectAttributes } from '../tls/x509-build.js';

const OP = ['Operational' as const];
const ROOT_ADMIN = { roles: ['Administrator' as const], root: true };
const PEM_TYPE = 'application/x-pem-file';

/** Every `key_type` the firmware's JSON knows, and which of them may be a TLS key. */
const KEY_TYPES = ['RSA', 'Curve25519', 'EC_P224', 'EC_P256', 'EC_P384', 'EC_P521', 'EC_P256K1', 'BrainpoolP256', 'BrainpoolP384', 'BrainpoolP512', 'Generic'];
const TLS_TYPES = new Set(['RSA', 'Curve25519', 'EC_P256', 'EC_P384', 'EC_P521', 'BrainpoolP256', 'BrainpoolP384', 'BrainpoolP512']);
const SUBJECT_FIELDS = ['commonName', 'countryName', 'localityName', 'stateOrProvinceName', 'organizationName', 'organizationalUnitName', 'emailAddress'] as const;

/** `key_type`'s decoder: its own texts for a non-string and for an unknown name. */
const keyType: FieldDecoder<string> = (v) => {
  if (v.t !== 'string') return err('Expected JSON string for type');
  return KEY_TYPES.includes(v.v) ? ok(v.v) : err('Json.key_type');
};

const stringList: FieldDecoder<string[]> = (v, path) =>
  v.t === 'list' && v.v.every((x) => x.t === 'string') ? ok(v.v.map((x) => Buffer.from((x as { v: string }).v, 'latin1').toString('utf8'))) : err(path);

/** `Json.subject_req`: commonName required (empty allowed here), the other names default to "", SANs optional. */
const subjectReq = record<SubjectAttributes & { subjectAltNames: string[] | undefined }>('subject_req', [
  ...SUBJECT_FIELDS.map((f) => (f === 'commonName' ? field(f, textField) : field(f, textField, { value: '' }))),
  field('subjectAltNames', optionField(stringList), { value: undefined }),
]);

/** `Json.tls_generate_key_req`: `type` (OCaml field `typ`) and `length` (default 0). */
const generateReq = record<{ type: string; length: number }>('tls_generate_key_req', [field('type', keyType), field('length', intField, { value: 0 })]);

function decodeSubject(body: Buffer): { subject: SubjectAttributes; subjectAltNames: string[] | undefined } {
  const o = decodeBody(body, subjectReq);
  const subject = Object.fromEntries(SUBJECT_FIELDS.map((f) => [f, o[f]])) as unknown as SubjectAttributes;
  return { subject, subjectAltNames: o.subjectAltNames };
}

function decodeGenerate(body: Buffer): { type: string; length: number } {
  // ppx names a missing field by its OCaml label, which is `typ` for the JSON key `type`.
  return decodeBody(body, (v) => {
    const r = generateReq(v);
    return !r.ok && r.error === 'Json.tls_generate_key_req.type' ? err('Json.tls_generate_key_req.typ') : r;
  });
}

/**
 * ETag of `public.pem` / `cert.pem`: a digest of the *stored* entry, as the firmware computes it (so after a full
 * restore it changes while the body, from the in-memory identity, does not; FACTS-system §2.7). Digest function [?].
 */
const storedDigest =
  (name: 'private-key' | 'certificate') =>
  (_ctx: unknown, sim: SimCore): string | undefined => {
    const v = sim.device.kv.get(sim.device.localConfigPath(name));
    return v === undefined ? undefined : createHash('sha256').update(v).digest('hex');
  };

function tlsKeys(sim: SimCore): { privateKey: KeyObject; publicKey: KeyObject } {
  const privateKey = createPrivateKey(sim.tls.keyPem);
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

/** The stored cluster CA, or undefined when absent or unreadable (as the firmware treats both). */
function clusterCa(sim: SimCore): ParsedCertificate | undefined {
  try {
    const v = sim.device.getGlobalConfig('cluster-ca');
    const der = v === undefined ? undefined : decodeCertificateChain(v)[0];
    return der === undefined ? undefined : parseCertificate(Buffer.from(der));
  } catch {
    return undefined;
  }
}

/** PEM body → parsed certificates; 400 with the library's text for broken PEM or DER. */
function certificatesOf(body: Buffer): ParsedCertificate[] {
  let ders: Buffer[];
  try {
    ders = pemCertificates(body.toString('latin1'));
  } catch (err) {
    throw new SimHttpError(400, (err as Error).message);
  }
  return ders.map((der) => {
    try {
      return parseCertificate(der);
    } catch (err) {
      throw new SimHttpError(400, `failed to parse certificate: ${(err as Error).message}`);
    }
  });
}

function check(status: number, prefix: string, f: () => void): void {
  try {
    f();
  } catch (err) {
    if (err instanceof X509CheckError) throw new SimHttpError(status, `${prefix}${err.message}`);
    throw err;
  }
}

/** `PUT /config/tls/cert.pem` (§2.3). */
function putCertificate(sim: SimCore, body: Buffer): Reply {
  const [leaf, ...chain] = certificatesOf(body);
  if (leaf === undefined) throw new SimHttpError(400, 'empty certificate chain');
  if (!samePublicKey(leaf.publicKey, tlsKeys(sim).publicKey)) throw new SimHttpError(400, 'public key in certificate does not match private key.');
  const anchor = chain.at(-1);
  // The last certificate is taken as trust anchor, unchecked; the rest must chain up to it at the device's time.
  if (anchor !== undefined) check(400, '', () => verifyChain([leaf, ...chain.slice(0, -1)], [anchor], sim.device.now()));
  const ca = clusterCa(sim);
  // Without hardware the firmware skips validity times for cluster-CA checks.
  if (ca !== undefined) check(412, 'the cluster CA is set, and the given cert is not signed by it: ', () => verifyChain([leaf], [ca], undefined));
  const id = tlsIdentity(
    sim.tls.keyPem,
    leaf.der,
    chain.map((c) => c.der),
  );
  sim.device.setLocal('certificate', encodeCertificateChain([id.certDer, ...id.chain]));
  sim.serveTls(id);
  return { status: 201, headers: { Location: '/api/v1/config/tls/cert.pem' } };
}

/** `POST /config/tls/generate` (§2.5). */
function generate(sim: SimCore, body: Buffer): Reply {
  const req = decodeGenerate(body);
  if (!TLS_TYPES.has(req.type)) throw new SimHttpError(400, `Unsupported key type '${JSON.stringify(req.type)}' for TLS`);
  if (clusterCa(sim) !== undefined) throw new SimHttpError(412, 'cannot generate cert if cluster CA has been set');
  if (req.type === 'RSA' && (req.length < 1024 || req.length > 8192)) throw new SimHttpError(400, 'Length must be between 1024 and 8192.');
  const id = generateTlsIdentity(req.type as TlsKeyType, req.length);
  storeTlsIdentity(sim.device, id);
  sim.serveTls(id);
  return NO_CONTENT;
}

/** `PUT /config/tls/cluster-ca.pem` (§2.6); the "active cluster" 412 cannot happen without clustering. */
function putClusterCa(sim: SimCore, body: Buffer): Reply {
  const certs = certificatesOf(body);
  if (certs.length !== 1) throw new SimHttpError(400, certs.length === 0 ? 'No certificate' : 'Multiple certificates');
  const ca = certs[0]!;
  check(400, 'this is not a valid CA: ', () => validCa(ca, undefined));
  check(412, 'the installed TLS cert is not signed by this CA: ', () => verifyChain([parseCertificate(sim.tls.certDer)], [ca], undefined));
  sim.device.setGlobalConfig('cluster-ca', encodeCertificateChain([ca.der]));
  return { status: 201, headers: { Location: '/api/v1/config/tls/cluster-ca.pem' } };
}

export function tlsRoutes(): Route[] {
  const pem = (text: string): Reply => ({ status: 200, text, contentType: PEM_TYPE });
  return [
    {
      method: 'GET',
      path: '/config/tls/public.pem',
      states: OP,
      access: ROOT_ADMIN,
      produces: PEM_TYPE,
      etag: storedDigest('private-key'),
      handler: (_c, sim) => pem(tlsKeys(sim).publicKey.export({ type: 'spki', format: 'pem' }).toString()),
    },
    {
      method: 'GET',
      path: '/config/tls/cert.pem',
      states: OP,
      access: ROOT_ADMIN,
      produces: PEM_TYPE,
      etag: storedDigest('certificate'),
      handler: (_c, sim) => pem(encodeCertificates([sim.tls.certDer, ...sim.tls.chain])),
    },
    { method: 'PUT', path: '/config/tls/cert.pem', states: OP, access: ROOT_ADMIN, accepts: [PEM_TYPE], produces: PEM_TYPE, handler: (ctx, sim) => putCertificate(sim, ctx.body) },
    {
      method: 'POST',
      path: '/config/tls/csr.pem',
      states: OP,
      access: ROOT_ADMIN,
      produces: PEM_TYPE,
      handler: (ctx, sim) => {
        const { subject, subjectAltNames } = decodeSubject(ctx.body);
        const { privateKey, publicKey } = tlsKeys(sim);
        let der: Buffer;
        try {
          der = certificationRequest(privateKey, publicKey, subject, subjectAltNames);
        } catch (err) {
          throw new SimHttpError(400, `while creating CSR: ${(err as Error).message}`);
        }
        return pem(encodePem('CERTIFICATE REQUEST', der));
      },
    },
    { method: 'POST', path: '/config/tls/generate', states: OP, access: ROOT_ADMIN, handler: (ctx, sim) => generate(sim, ctx.body) },
    {
      method: 'GET',
      path: '/config/tls/cluster-ca.pem',
      states: OP,
      access: ROOT_ADMIN,
      produces: PEM_TYPE,
      handler: (_c, sim) => {
        const ca = clusterCa(sim);
        if (ca === undefined) throw new SimHttpError(404, 'cluster CA is absent unless configured');
        return pem(encodePem('CERTIFICATE', ca.der));
      },
    },
    {
      method: 'PUT',
      path: '/config/tls/cluster-ca.pem',
      states: OP,
      access: ROOT_ADMIN,
      accepts: [PEM_TYPE],
      produces: PEM_TYPE,
      handler: (ctx, sim) => putClusterCa(sim, ctx.body),
    },
  ];
}
