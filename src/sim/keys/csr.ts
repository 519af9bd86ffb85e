/**
 * `POST /keys/{id}/csr.pem` (FACTS §5.2): a PKCS#10 request signed by the key, subject from `DistinguishedName`.
 * Like the firmware, all given attributes form one (multi-valued) RDN; `subjectAltNames` absent → SAN [commonName],
 * `[]` → no SAN extension, `IP:<addr>` entries with a valid address → IP SANs, everything else DNS. Signature hash
 * SHA-256 (ocaml-x509's default). Supported for RSA, EC P-256/384/521 and Ed25519 (the types WebCrypto knows).
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { isIP } from 'node:net';
import { webcrypto } from 'node:crypto';
import { SimHttpError, invalidSchema } from '../http-error.js';
import { optString, reqString, strictObject } from './validate.js';
import { privateKeyObject, publicKeyObject } from './material.js';
import type { KeyRecord } from './types.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CreateParams = Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0];

const FIELDS: ReadonlyArray<[string, string]> = [
  ['commonName', 'CN'],
  ['countryName', 'C'],
  ['localityName', 'L'],
  ['stateOrProvinceName', 'ST'],
  ['organizationName', 'O'],
  ['organizationalUnitName', 'OU'],
  ['emailAddress', 'E'],
];

const WEBCRYPTO: Partial<Record<KeyRecord['type'], { importAlg: object; signAlg: object }>> = {
  RSA: { importAlg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, signAlg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } },
  EC_P256: { importAlg: { name: 'ECDSA', namedCurve: 'P-256' }, signAlg: { name: 'ECDSA', hash: 'SHA-256' } },
  EC_P384: { importAlg: { name: 'ECDSA', namedCurve: 'P-384' }, signAlg: { name: 'ECDSA', hash: 'SHA-256' } },
  EC_P521: { importAlg: { name: 'ECDSA', namedCurve: 'P-521' }, signAlg: { name: 'ECDSA', hash: 'SHA-256' } },
  Curve25519: { importAlg: { name: 'Ed25519' }, signAlg: { name: 'Ed25519' } },
};

function subjectAltNames(v: unknown, commonName: string): x509.JsonGeneralName[] {
  if (v === undefined) return [{ type: 'dns', value: commonName }];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw invalidSchema('DistinguishedName.subjectAltNames: expected a list of strings.');
  return (v as string[]).map((name) => {
    const ip = name.startsWith('IP:') ? name.slice(3) : '';
    return ip !== '' && isIP(ip) !== 0 ? { type: 'ip', value: ip } : { type: 'dns', value: name };
  });
}

/** Builds the CSR PEM. Throws SimHttpError 400 for a bad body, Generic keys and types WebCrypto cannot sign with. */
export async function csr(r: KeyRecord, body: unknown): Promise<string> {
  const what = 'DistinguishedName';
  const o = strictObject(body, what, [...FIELDS.map(([f]) => f), 'subjectAltNames'], ['commonName']);
  const commonName = reqString(o, 'commonName', what);
  if (commonName === '') throw new SimHttpError(400, 'JSON field commonName is empty.');
  const rdn: Record<string, string[]> = {};
  for (const [field, short] of FIELDS) {
    const v = optString(o, field, what) ?? '';
    if (v !== '') rdn[short] = [v];
  }
  const sans = subjectAltNames(o['subjectAltNames'], commonName);
  if (r.type === 'Generic') throw new SimHttpError(400, "Generic keys can't create certificates");
  const algs = WEBCRYPTO[r.type];
  if (algs === undefined) throw new SimHttpError(400, `creating signing request: ${r.type} keys are not supported by the simulator.`);
  const pkcs8 = privateKeyObject(r).export({ format: 'der', type: 'pkcs8' });
  try {
    const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, algs.importAlg as webcrypto.AlgorithmIdentifier, false, ['sign']);
    const spki = publicKeyObject(r).export({ format: 'der', type: 'spki' });
    const publicKey = await webcrypto.subtle.importKey('spki', spki, algs.importAlg as webcrypto.AlgorithmIdentifier, true, ['verify']);
    const req = await x509.Pkcs10CertificateRequestGenerator.create({
      name: new x509.Name([rdn]),
      keys: { privateKey, publicKey } as unknown as CreateParams['keys'],
      signingAlgorithm: algs.signAlg as CreateParams['signingAlgorithm'],
      extensions: sans.length === 0 ? [] : [new x509.SubjectAlternativeNameExtension(sans, false)],
    });
    return req.toString('pem') + '\n';
  } finally {
    pkcs8.fill(0);
  }
}
