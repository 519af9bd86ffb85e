/**
 * Just enough X.509 DER reading for the firmware's TLS checks (FACTS-system §2): version, serial, names, validity,
 * public key, extensions and the signature algorithm of a certificate. Parsing follows RFC 5280's structure; the
 * checks themselves live in `x509-verify.ts`.
 */
import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readTlv } from '../keys/der.js';

export interface NameAttribute {
  oid: string;
  value: string;
}

export interface ParsedExtension {
  oid: string;
  critical: boolean;
  /** Content of the extnValue OCTET STRING. */
  value: Buffer;
}

export interface ParsedCertificate {
  /** The whole certificate as given. */
  der: Buffer;
  /** 1, 2 or 3. */
  version: number;
  serial: Buffer;
  /** OID of the outer signatureAlgorithm. */
  signatureOid: string;
  issuer: NameAttribute[][];
  subject: NameAttribute[][];
  notBefore: Date;
  notAfter: Date;
  /** DER SubjectPublicKeyInfo. */
  spki: Buffer;
  extensions: ParsedExtension[];
  publicKey: KeyObject;
  /** Node's view, for signature checks (OpenSSL knows every curve the firmware does). */
  node: X509Certificate;
}

const OID_NAMES: Record<string, string> = {
  '2.5.4.3': 'CN',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '1.2.840.113549.1.9.1': 'emailAddress',
};

/** Dotted OID text of an OBJECT IDENTIFIER's content bytes. */
export function decodeOid(content: Buffer): string {
  const parts: number[] = [];
  let v = 0;
  for (const b of content) {
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      parts.push(v);
      v = 0;
    }
  }
  const first = parts.shift() ?? 0;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...parts].join('.');
}

interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  hdr: number;
  start: number;
  end: number;
}

function tlvAt(b: Buffer, off: number): Tlv {
  return { ...readTlv(b, off), hdr: off };
}

/** The TLVs directly inside `outer`. */
function children(b: Buffer, outer: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let off = outer.start; off < outer.end; ) {
    const t = tlvAt(b, off);
    if (t.end > outer.end) throw new Error('element runs past its container');
    out.push(t);
    off = t.end;
  }
  return out;
}

function content(b: Buffer, t: Tlv): Buffer {
  return b.subarray(t.start, t.end);
}

function expectTag(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined || t.tag !== tag) throw new Error(`${what} is missing or malformed`);
  return t;
}

function decodeString(b: Buffer, t: Tlv): string {
  const c = content(b, t);
  if (t.tag === 0x1e) {
    // BMPString: UTF-16BE
    const swapped = Buffer.from(c);
    swapped.swap16();
    return swapped.toString('utf16le');
  }
  return t.tag === 0x0c ? c.toString('utf8') : c.toString('latin1');
}

function decodeName(b: Buffer, t: Tlv): NameAttribute[][] {
  return children(b, expectTag(t, 0x30, 'name')).map((set) =>
    children(b, expectTag(set, 0x31, 'relative distinguished name')).map((atv) => {
      const [oid, value] = children(b, expectTag(atv, 0x30, 'name attribute'));
      return { oid: decodeOid(content(b, expectTag(oid, 0x06, 'attribute type'))), value: value === undefined ? '' : decodeString(b, value) };
    }),
  );
}

function decodeTime(b: Buffer, t: Tlv): Date {
  const s = content(b, t).toString('latin1');
  const m = t.tag === 0x17 ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) throw new Error(`validity time "${s}" is malformed`);
  let year = Number(m[1]);
  if (t.tag === 0x17) year += year < 50 ? 2000 : 1900;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

function decodeExtensions(b: Buffer, t: Tlv): ParsedExtension[] {
  const seq = children(b, t)[0];
  return children(b, expectTag(seq, 0x30, 'extensions')).map((ext) => {
    const parts = children(b, expectTag(ext, 0x30, 'extension'));
    const oid = decodeOid(content(b, expectTag(parts[0], 0x06, 'extension id')));
    const critical = parts.length === 3 && parts[1]!.tag === 0x01 && b[parts[1]!.start] !== 0;
    const value = parts[parts.length - 1];
    return { oid, critical, value: Buffer.from(content(b, expectTag(value, 0x04, 'extension value'))) };
  });
}

/** Parses a DER certificate. Throws Error with a short reason when it is not one. */
export function parseCertificate(der: Buffer): ParsedCertificate {
  const cert = tlvAt(der, 0);
  if (cert.tag !== 0x30 || cert.end !== der.length) throw new Error('not a DER certificate');
  const [tbs, sigAlg] = children(der, cert);
  const fields = children(der, expectTag(tbs, 0x30, 'tbsCertificate'));
  let i = 0;
  let version = 1;
  if (fields[0]?.tag === 0xa0) {
    const v = children(der, fields[0])[0];
    version = content(der, expectTag(v, 0x02, 'version')).readUIntBE(0, Math.min(6, v!.end - v!.start)) + 1;
    i = 1;
  }
  const serial = Buffer.from(content(der, expectTag(fields[i], 0x02, 'serial number')));
  const issuer = decodeName(der, fields[i + 2]!);
  const validity = children(der, expectTag(fields[i + 3], 0x30, 'validity'));
  const subject = decodeName(der, fields[i + 4]!);
  const spkiTlv = expectTag(fields[i + 5], 0x30, 'subject public key info');
  const spki = Buffer.from(der.subarray(spkiTlv.hdr, spkiTlv.end));
  const extTlv = fields.slice(i + 6).find((f) => f.tag === 0xa3);
  const sigOid = children(der, expectTag(sigAlg, 0x30, 'signature algorithm'))[0];
  return {
    der,
    version,
    serial,
    signatureOid: decodeOid(content(der, expectTag(sigOid, 0x06, 'signature algorithm id'))),
    issuer,
    subject,
    notBefore: decodeTime(der, validity[0]!),
    notAfter: decodeTime(der, validity[1]!),
    spki,
    extensions: extTlv === undefined ? [] : decodeExtensions(der, extTlv),
    publicKey: createPublicKey({ key: spki, format: 'der', type: 'spki' }),
    node: new X509Certificate(der),
  };
}

/** `CN=keyfender,O=…` (RFC 4514 order: last RDN first) for messages. */
export function formatName(name: NameAttribute[][]): string {
  return [...name]
    .reverse()
    .map((rdn) => rdn.map((a) => `${OID_NAMES[a.oid] ?? a.oid}=${a.value}`).join('+'))
    .join(',');
}

/** Name equality as ocaml-x509 decides it: the same attributes with the same values, whatever their string type. */
export function sameName(a: NameAttribute[][], b: NameAttribute[][]): boolean {
  const norm = (n: NameAttribute[][]): string => JSON.stringify(n.map((rdn) => rdn.map((x) => `${x.oid}=${x.value}`).sort()));
  return norm(a) === norm(b);
}

export function findExtension(c: ParsedCertificate, oid: string): ParsedExtension | undefined {
  return c.extensions.find((e) => e.oid === oid);
}

/** basicConstraints: `{ca, pathLen}`, or undefined when absent. */
export function basicConstraints(c: ParsedCertificate): { ca: boolean; pathLen: number | undefined } | undefined {
  const e = findExtension(c, '2.5.29.19');
  if (e === undefined) return undefined;
  const seq = tlvAt(e.value, 0);
  let ca = false;
  let pathLen: number | undefined;
  for (const t of children(e.value, seq)) {
    if (t.tag === 0x01) ca = e.value[t.start] !== 0;
    else if (t.tag === 0x02) pathLen = e.value.readUIntBE(t.start, Math.min(6, t.end - t.start));
  }
  return { ca, pathLen };
}

/** Whether keyUsage is present and whether it allows keyCertSign (bit 5). */
export function keyUsage(c: ParsedCertificate): { present: boolean; keyCertSign: boolean } {
  const e = findExtension(c, '2.5.29.15');
  if (e === undefined) return { present: false, keyCertSign: false };
  const bits = tlvAt(e.value, 0);
  const first = bits.end - bits.start >= 2 ? e.value[bits.start + 1]! : 0;
  return { present: true, keyCertSign: (first & 0x04) !== 0 };
}

/** subjectKeyIdentifier bytes, if present. */
export function subjectKeyId(c: ParsedCertificate): Buffer | undefined {
  const e = findExtension(c, '2.5.29.14');
  if (e === undefined) return undefined;
  const t = tlvAt(e.value, 0);
  return e.value.subarray(t.start, t.end);
}

/** The keyIdentifier of authorityKeyIdentifier, if present. */
export function authorityKeyId(c: ParsedCertificate): Buffer | undefined {
  const e = findExtension(c, '2.5.29.35');
  if (e === undefined) return undefined;
  const seq = tlvAt(e.value, 0);
  const id = children(e.value, seq).find((t) => t.tag === 0x80);
  return id === undefined ? undefined : e.value.subarray(id.start, id.end);
}

/** Whether certificatePolicies includes anyPolicy. */
export function hasAnyPolicy(c: ParsedCertificate): boolean {
  const e = findExtension(c, '2.5.29.32');
  if (e === undefined) return false;
  const seq = tlvAt(e.value, 0);
  return children(e.value, seq).some((p) => {
    const oid = children(e.value, p)[0];
    return oid !== undefined && decodeOid(e.value.subarray(oid.start, oid.end)) === '2.5.29.32.0';
  });
}
