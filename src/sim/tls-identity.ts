/**
 * The simulator's HTTPS identity, kept as the firmware keeps it: `/local/<deviceId>/config/certificate`
 * (`u32be(len) ‖ DER` per certificate) and `/local/<deviceId>/config/private-key` (PKCS#8 PEM), sealed with the
 * device's early-config key. Made at first start; reused after a restart with the same data directory.
 */
import { X509Certificate } from 'node:crypto';
import { createSelfSignedCertificate } from '../tls/self-signed.js';
import { fingerprintOfDer } from '../tls/fingerprint.js';
import type { Device } from './device.js';

export interface TlsIdentity {
  certPem: string;
  keyPem: string;
  fingerprint256: string;
}

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

/** Loads the stored identity or makes and stores a new one. */
export async function loadOrCreateTlsIdentity(device: Device): Promise<TlsIdentity> {
  try {
    const chain = device.getLocal('certificate');
    const key = device.getLocal('private-key');
    if (chain !== undefined && key !== undefined) {
      const der = decodeCertificateChain(chain)[0];
      if (der !== undefined) {
        const certPem = new X509Certificate(der).toString();
        return { certPem, keyPem: key.toString('utf8'), fingerprint256: fingerprintOfDer(der) };
      }
    }
  } catch {
    // A value that does not open (e.g. copied from another device) is replaced below, as a fresh boot would.
  }
  const fresh = await createSelfSignedCertificate({ commonName: 'keyfender' });
  const der = Buffer.from(new X509Certificate(fresh.certPem).raw);
  device.kv.batch([device.sealLocal('certificate', encodeCertificateChain([der])), device.sealLocal('private-key', Buffer.from(fresh.keyPem, 'utf8'))]);
  return fresh;
}
