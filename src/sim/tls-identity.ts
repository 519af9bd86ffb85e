/**
 * The simulator's HTTPS identity, kept as the firmware keeps it: `/local/<deviceId>/config/certificate`
 * (`u32be(len) ‖ DER` for the server certificate, then its chain) and `/local/<deviceId>/config/private-key`
 * (PKCS#8 PEM), sealed with the device's early-config key. Read at every boot; made fresh when absent or unusable.
 * The in-memory identity (what the listener serves and `/config/tls/*` reports) changes only through the TLS
 * endpoints and at boot, as on the firmware (FACTS-system §2.7).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate, type KeyObject } from 'node:crypto';
import { createSelfSignedCertificate } from '../tls/self-signed.js';
import { fingerprintOfDer } from '../tls/fingerprint.js';
import type { Device } from './device.js';
import { encodeCertificates, encodePem } from './tls/pem.js';
import { selfSignedCertificate } from './tls/x509-build.js';

export interface TlsIdentity {
  /** PKCS#8 PEM of the private key. */
  keyPem: string;
  /** The server certificate, DER. */
  certDer: Buffer;
  /** Certificates sent after it, DER, as uploaded. */
  chain: Buffer[];
  /** The server certificate alone, canonical PEM. */
  certPem: string;
  /** SHA-256 of the server certificate, `AB:CD:…`. */
  fingerprint256: string;
}

/** Key types the firmware accepts for its TLS key (FACTS-system §2.5), by API name. */
export type TlsKeyType = 'RSA' | 'Curve25519' | 'EC_P256' | 'EC_P384' | 'EC_P521' | 'BrainpoolP256' | 'BrainpoolP384' | 'BrainpoolP512';

const CURVES: Partial<Record<TlsKeyType, string>> = {
  EC_P256: 'prime256v1',
  EC_P384: 'secp384r1',
  EC_P521: 'secp521r1',
  BrainpoolP256: 'brainpoolP256r1',
  BrainpoolP384: 'brainpoolP384r1',
  BrainpoolP512: 'brainpoolP512r1',
};

export function encodeCertificateChain(ders: Buffer[]): Buffer {
  return Buffer.concat(
    ders.flatMap((d) => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(d.length);
      return [len, d];
    }),
  );
}

export function decodeCertificateChain(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  while (off + 4 <= b.length) {
    const len = b.readUInt32BE(off);
    if (off + 4 + len > b.length) throw new Error('certificate chain value is cut short');
    out.push(b.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  return out;
}

/** An identity from its parts; throws when the key does not belong to the certificate. */
export function tlsIdentity(keyPem: string, certDer: Buffer, chain: Buffer[] = []): TlsIdentity {
  const certKey = new X509Certificate(certDer).publicKey;
  if (!samePublicKey(certKey, createPublicKey(createPrivateKey(keyPem)))) throw new Error('TLS private key does not match the certificate');
  return { keyPem, certDer: Buffer.from(certDer), chain: chain.map((c) => Buffer.from(c)), certPem: encodePem('CERTIFICATE', certDer), fingerprint256: fingerprintOfDer(certDer) };
}

/** Whether two public keys are the same (ocaml-x509 compares SHA-256 fingerprints of the encoded keys). */
export function samePublicKey(a: KeyObject, b: KeyObject): boolean {
  const fp = (k: KeyObject): string => createHash('sha256').update(k.export({ type: 'spki', format: 'der' })).digest('hex');
  return fp(a) === fp(b);
}

/** What the listener presents: the server certificate followed by its chain. */
export function servedCertificatesPem(id: TlsIdentity): string {
  return encodeCertificates([id.certDer, ...id.chain]);
}

/** Writes the identity to the device's local config (one KV batch). */
export function storeTlsIdentity(device: Device, id: TlsIdentity): void {
  device.kv.batch([
    device.sealLocal('certificate', encodeCertificateChain([id.certDer, ...id.chain])),
    device.sealLocal('private-key', Buffer.from(id.keyPem, 'utf8')),
  ]);
}

/** The stored identity, or undefined when absent, unreadable or inconsistent (a key that does not fit the certificate). */
export function readStoredTlsIdentity(device: Device): TlsIdentity | undefined {
  try {
    const chain = device.getLocal('certificate');
    const key = device.getLocal('private-key');
    if (chain === undefined || key === undefined) return undefined;
    const [leaf, ...rest] = decodeCertificateChain(chain);
    return leaf === undefined ? undefined : tlsIdentity(key.toString('utf8'), leaf, rest);
  } catch {
    return undefined;
  }
}

/** Boot: the stored identity, or a fresh self-signed EC P-256 one (stored at once), as at a first boot. */
export async function loadOrCreateTlsIdentity(device: Device): Promise<TlsIdentity> {
  const stored = readStoredTlsIdentity(device);
  if (stored !== undefined) return stored;
  const fresh = await createSelfSignedCertificate({ commonName: 'keyfender' });
  const id = tlsIdentity(fresh.keyPem, Buffer.from(new X509Certificate(fresh.certPem).raw));
  storeTlsIdentity(device, id);
  return id;
}

/**
 * `POST /config/tls/generate`: a new key of `type` (`lengthBits` for RSA, checked by the caller) and the firmware's
 * self-signed certificate for it, with an empty chain.
 */
export function generateTlsIdentity(type: TlsKeyType, lengthBits: number): TlsIdentity {
  const pair =
    type === 'RSA'
      ? generateKeyPairSync('rsa', { modulusLength: lengthBits })
      : type === 'Curve25519'
        ? generateKeyPairSync('ed25519')
        : generateKeyPairSync('ec', { namedCurve: CURVES[type]! });
  const der = selfSignedCertificate(pair.privateKey, pair.publicKey);
  return tlsIdentity(pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), der);
}
