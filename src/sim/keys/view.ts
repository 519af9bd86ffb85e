/**
 * What `GET /keys/{id}` and `GET /keys/{id}/public.pem` show of a key (FACTS §5.2), and the tag rule of §5.5.
 */
import { SimHttpError } from '../http-error.js';
import { EC_CURVES, sortMechanisms, sortTags, type KeyRecord } from './types.js';
import { publicKeyObject } from './material.js';

/** Base64 of a base64url JWK field (already big-endian without leading zero bytes). */
const b64 = (u: string | undefined): string => Buffer.from(u ?? '', 'base64url').toString('base64');

function publicData(r: KeyRecord): Record<string, string> | undefined {
  if (r.type === 'Generic') return undefined;
  if (r.type === 'RSA' || r.type === 'Curve25519') {
    const jwk = publicKeyObject(r).export({ format: 'jwk' });
    return r.type === 'RSA' ? { modulus: b64(jwk.n), publicExponent: b64(jwk.e) } : { data: b64(jwk.x) };
  }
  // EC: the SPKI ends with the uncompressed point 04‖X‖Y (not via JWK, which lacks the Brainpool curves).
  const size = 1 + 2 * (EC_CURVES[r.type]?.fieldBytes ?? 0);
  const spki = publicKeyObject(r).export({ format: 'der', type: 'spki' });
  return { data: spki.subarray(spki.length - size).toString('base64') };
}

/**
 * The `PublicKey` body: mechanisms in enum order, `public` omitted for Generic, `restrictions` `{}` without tags,
 * `label` omitted when empty. Pure; throws only if the stored key is corrupt.
 */
export function publicKeyView(r: KeyRecord): object {
  const view: Record<string, unknown> = { mechanisms: sortMechanisms(r.mechanisms), type: r.type, operations: r.operations };
  const pub = publicData(r);
  if (pub !== undefined) view['public'] = pub;
  const tags = sortTags(r.tags);
  view['restrictions'] = tags.length === 0 ? {} : { tags };
  if (r.label !== undefined && r.label !== '') view['label'] = r.label;
  return view;
}

/** SubjectPublicKeyInfo PEM. Generic keys → SimHttpError 400 `Generic keys have no public key`. */
export function publicKeyPem(r: KeyRecord): string {
  if (r.type === 'Generic' || r.privatePem === undefined) throw new SimHttpError(400, 'Generic keys have no public key');
  return publicKeyObject(r).export({ type: 'spki', format: 'pem' }) as string;
}

/** True when the key has no restriction tags or shares at least one with the user's tags (FACTS §5.5). */
export function tagsAllow(r: KeyRecord, userTags: string[]): boolean {
  return r.tags.length === 0 || r.tags.some((t) => userTags.includes(t));
}
