/** Minimal DER writing for the few private-key structures we assemble by hand (SEC1, PKCS#8 for Ed25519). */

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** A DER TLV with the given tag byte and content. */
export function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLength(content.length), content]);
}

/**
 * SEC1 `ECPrivateKey` (RFC 5915): version 1, the scalar, the named-curve OID and the uncompressed public point.
 * The returned buffer holds key material: the caller zeroes it.
 */
export function sec1PrivateKey(scalar: Buffer, curveOidHex: string, publicPoint: Buffer): Buffer {
  return tlv(
    0x30,
    Buffer.concat([
      Buffer.from([0x02, 0x01, 0x01]),
      tlv(0x04, scalar),
      tlv(0xa0, tlv(0x06, Buffer.from(curveOidHex, 'hex'))),
      tlv(0xa1, tlv(0x03, Buffer.concat([Buffer.from([0]), publicPoint]))),
    ]),
  );
}

/** PKCS#8 for an Ed25519 seed (RFC 8410): a fixed 16-byte prefix then the 32-byte seed. Caller zeroes the result. */
export function ed25519Pkcs8(seed: Buffer): Buffer {
  return Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
}

/** Unsigned big-endian bytes of a non-negative bigint, minimal length (at least one byte). */
export function bigToBytes(n: bigint, size?: number): Buffer {
  let hex = n.toString(16);
  if (hex.length % 2) hex = '0' + hex;
  const b = Buffer.from(hex, 'hex');
  if (size === undefined || b.length >= size) return b;
  return Buffer.concat([Buffer.alloc(size - b.length), b]);
}

export function bytesToBig(b: Buffer): bigint {
  return b.length === 0 ? 0n : BigInt('0x' + b.toString('hex'));
}

/** Reads one TLV at `off`: returns tag, content bounds and the offset after it. Throws on truncation. */
export function readTlv(b: Buffer, off: number): { tag: number; start: number; end: number } {
  const tag = b[off];
  let len = b[off + 1];
  if (tag === undefined || len === undefined) throw new Error('truncated DER');
  let start = off + 2;
  if (len & 0x80) {
    const nBytes = len & 0x7f;
    len = 0;
    for (let i = 0; i < nBytes; i++) len = len * 256 + (b[start + i] ?? 0);
    start += nBytes;
  }
  if (start + len > b.length) throw new Error('truncated DER');
  return { tag, start, end: start + len };
}

/** The private scalar of a SEC1 `ECPrivateKey` DER (a view into `der`; the caller zeroes `der`). */
export function sec1Scalar(der: Buffer): Buffer {
  const seq = readTlv(der, 0);
  const version = readTlv(der, seq.start);
  const d = readTlv(der, version.end);
  if (d.tag !== 0x04) throw new Error('not a SEC1 private key');
  return der.subarray(d.start, d.end);
}
