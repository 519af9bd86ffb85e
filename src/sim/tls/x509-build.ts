/**
 * DER building for the TLS identity endpoints, signed with node:crypto so every key type the firmware allows for TLS
 * works (RSA, Ed25519, NIST and Brainpool curves — WebCrypto knows no Brainpool):
 * - the self-signed certificate of `POST /config/tls/generate` (FACTS-system §2.5): version 3, random serial,
 *   subject = issuer = `CN=keyfender`, valid 1970-01-01 → 9999-12-31T23:59:59Z, no extensions, SHA-256 signature
 *   (pure Ed25519 for Ed25519 keys);
 * - the PKCS#10 request of `POST /config/tls/csr.pem` (§2.4): one RDN holding every non-empty attribute, an
 *   extension request carrying subjectAltName unless the list is empty.
 */
import { randomBytes, sign, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { tlv } from '../keys/der.js';

export interface SubjectAttributes {
  commonName: string;
  countryName: string;
  localityName: string;
  stateOrProvinceName: string;
  organizationName: string;
  organizationalUnitName: string;
  emailAddress: string;
}

/** Attribute order and string type as ocaml-x509 writes a distinguished name. */
const ATTRIBUTES: ReadonlyArray<[keyof SubjectAttributes, string, number]> = [
  ['commonName', '2.5.4.3', 0x0c],
  ['countryName', '2.5.4.6', 0x13],
  ['localityName', '2.5.4.7', 0x0c],
  ['stateOrProvinceName', '2.5.4.8', 0x0c],
  ['organizationName', '2.5.4.10', 0x0c],
  ['organizationalUnitName', '2.5.4.11', 0x0c],
  ['emailAddress', '1.2.840.113549.1.9.1', 0x16],
];

export function encodeOid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const bytes: number[] = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

const seq = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items));
const bitString = (b: Buffer): Buffer => tlv(0x03, Buffer.concat([Buffer.from([0]), b]));

function positiveInteger(b: Buffer): Buffer {
  return tlv(0x02, (b[0]! & 0x80) !== 0 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

/** A Name with one RDN holding `attrs` (an empty SET when there are none). */
function encodeName(attrs: Array<[string, number, string]>): Buffer {
  return seq(set(...attrs.map(([oid, tag, value]) => seq(encodeOid(oid), tlv(tag, Buffer.from(value, 'utf8'))))));
}

export function subjectName(s: SubjectAttributes): Buffer {
  return encodeName(ATTRIBUTES.filter(([field]) => s[field] !== '').map(([field, oid, tag]) => [oid, tag, s[field]]));
}

const KEYFENDER = (): Buffer => encodeName([['2.5.4.3', 0x0c, 'keyfender']]);

/** AlgorithmIdentifier of the signature this key makes, and how to make it. */
function signatureAlgorithm(key: KeyObject): { alg: Buffer; sign(data: Buffer): Buffer } {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return { alg: seq(encodeOid('1.2.840.113549.1.1.11'), tlv(0x05, Buffer.alloc(0))), sign: (d) => sign('sha256', d, key) };
    case 'ec':
      return { alg: seq(encodeOid('1.2.840.10045.4.3.2')), sign: (d) => sign('sha256', d, key) };
    case 'ed25519':
      return { alg: seq(encodeOid('1.3.101.112')), sign: (d) => sign(null, d, key) };
    default:
      throw new Error(`keys of type ${String(key.asymmetricKeyType)} cannot sign certificates`);
  }
}

function spkiOf(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

/** The self-signed certificate the firmware makes for a new TLS key. `publicKey` must belong to `privateKey`. */
export function selfSignedCertificate(privateKey: KeyObject, publicKey: KeyObject): Buffer {
  const s = signatureAlgorithm(privateKey);
  const serial = randomBytes(8);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    positiveInteger(serial),
    s.alg,
    KEYFENDER(),
    seq(tlv(0x17, Buffer.from('700101000000Z')), tlv(0x18, Buffer.from('99991231235959Z'))),
    KEYFENDER(),
    spkiOf(publicKey),
  );
  return seq(tbs, s.alg, bitString(s.sign(tbs)));
}

/**
 * subjectAltName entries: `IP:<address>` with a valid address becomes an iPAddress, anything else a dNSName.
 * DNS names come first, as the firmware's name map orders them.
 */
function generalNames(names: string[]): Buffer {
  const dns: Buffer[] = [];
  const ips: Buffer[] = [];
  for (const name of names) {
    const ip = name.startsWith('IP:') ? name.slice(3) : undefined;
    const family = ip === undefined ? 0 : isIP(ip);
    if (family === 4) ips.push(tlv(0x87, Buffer.from(ip!.split('.').map(Number))));
    else if (family === 6) ips.push(tlv(0x87, ipv6Bytes(ip!)));
    else dns.push(tlv(0x82, Buffer.from(name, 'utf8')));
  }
  return seq(...dns, ...ips);
}

function ipv6Bytes(addr: string): Buffer {
  const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined];
  const toGroups = (s: string | undefined): string[] => (s === undefined || s === '' ? [] : s.split(':'));
  let groups = toGroups(head);
  let rest = toGroups(tail);
  const last = (rest.length > 0 ? rest : groups).at(-1);
  const v4 = last !== undefined && last.includes('.') ? last.split('.').map(Number) : undefined;
  if (v4) {
    const words = [((v4[0]! << 8) | v4[1]!).toString(16), ((v4[2]! << 8) | v4[3]!).toString(16)];
    if (rest.length > 0) rest = [...rest.slice(0, -1), ...words];
    else groups = [...groups.slice(0, -1), ...words];
  }
  const zeros = tail === undefined ? [] : new Array<string>(8 - groups.length - rest.length).fill('0');
  const out = Buffer.alloc(16);
  [...groups, ...zeros, ...rest].forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/**
 * A PKCS#10 request for `subject`, signed by `privateKey`. `subjectAltNames` undefined → SAN = [commonName];
 * `[]` → no extension request at all.
 */
export function certificationRequest(privateKey: KeyObject, publicKey: KeyObject, subject: SubjectAttributes, subjectAltNames: string[] | undefined): Buffer {
  const s = signatureAlgorithm(privateKey);
  const sans = subjectAltNames ?? [subject.commonName];
  const attributes =
    sans.length === 0
      ? tlv(0xa0, Buffer.alloc(0))
      : tlv(0xa0, seq(encodeOid('1.2.840.113549.1.9.14'), set(seq(seq(encodeOid('2.5.29.17'), tlv(0x04, generalNames(sans)))))));
  const info = seq(tlv(0x02, Buffer.from([0])), subjectName(subject), spkiOf(publicKey), attributes);
  return seq(info, s.alg, bitString(s.sign(info)));
}
