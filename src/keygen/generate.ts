/**
 * Replicated key generation (`generate: replicated`): the daemon generates the key pair itself, with node:crypto,
 * so that the private key can be imported into its NetHSM and streamed to the replicas in envelopes. The request is
 * validated exactly as the NetHSM would (`request.ts`); the result is the NetHSM import body.
 *
 * Key material handling: the private key is exported by node:crypto straight into DER Buffers (no KeyObject, no PEM
 * string), the fields are read as views into them, base64-encoded into Buffers (`import-body.ts`), and every such
 * Buffer is zeroed before returning. What remains is the returned body, which the caller zeroes after import/seal.
 */
import { generateKeyPair, generateKeyPairSync, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { GenerateRequestInvalidError } from '../errors.js';
import { readTlv } from '../sim/keys/der.js';
import { generateId } from '../sim/keys/material.js';
import { EC_CURVES, type KeyType } from '../sim/keys/types.js';
import { importBodyBytes, type PrivateFields } from './import-body.js';
import { parseGenerateRequest, type GenerateRequest } from './request.js';

export interface GeneratedKey {
  /** The requested id, or 20 lowercase hex characters as the NetHSM generates them. */
  id: string;
  /** The JSON `PrivateKey` body for `PUT /keys/{id}`, as bytes. Holds the private key: the caller zeroes it. */
  importBody: Buffer;
  type: KeyType;
}

type Kind = 'rsa' | 'ec' | 'ed25519';
/** The key-pair request for node:crypto, with the private half DER-encoded into a Buffer we own. */
type PairRequest = [Kind, Record<string, unknown>];

const PUBLIC_DER = { type: 'spki', format: 'der' } as const;

function pairRequest(req: GenerateRequest): PairRequest | undefined {
  if (req.type === 'Generic') return undefined;
  if (req.type === 'RSA') {
    return ['rsa', { modulusLength: req.length, publicExponent: 65537, publicKeyEncoding: PUBLIC_DER, privateKeyEncoding: { type: 'pkcs1', format: 'der' } }];
  }
  if (req.type === 'Curve25519') return ['ed25519', { publicKeyEncoding: PUBLIC_DER, privateKeyEncoding: { type: 'pkcs8', format: 'der' } }];
  const curve = EC_CURVES[req.type];
  // Every other KeyType is a curve; a future one without a table entry is refused as the simulator refuses it.
  if (curve === undefined) throw new GenerateRequestInvalidError(400, `Key type ${req.type} is not supported by the simulator.`);
  return ['ec', { namedCurve: curve.curve, publicKeyEncoding: PUBLIC_DER, privateKeyEncoding: { type: 'sec1', format: 'der' } }];
}

/** Strips the sign byte of a DER INTEGER's content (a view; no copy). */
function unsigned(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

/** The `private` fields from the DER private key (views into `der`), per type. */
function privateFields(type: KeyType, der: Buffer): { fields: PrivateFields; scratch?: Buffer } {
  if (type === 'RSA') {
    // RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dp, dq, qinv }
    const seq = readTlv(der, 0);
    const ints: Buffer[] = [];
    for (let off = seq.start; off < seq.end && ints.length < 6; ) {
      const t = readTlv(der, off);
      ints.push(der.subarray(t.start, t.end));
      off = t.end;
    }
    const [, , e, , p, q] = ints;
    if (e === undefined || p === undefined || q === undefined) throw new Error('node:crypto returned a malformed RSA key');
    return { fields: [['primeP', unsigned(p)], ['primeQ', unsigned(q)], ['publicExponent', unsigned(e)]] };
  }
  if (type === 'Curve25519') {
    // PKCS#8 for Ed25519 (RFC 8410): a fixed 16-byte prefix, then the 32-byte seed.
    if (der.length !== 48) throw new Error('node:crypto returned a malformed Ed25519 key');
    return { fields: [['data', der.subarray(16)]] };
  }
  // SEC1 ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING, … }; the NetHSM wants exactly the field size.
  const size = EC_CURVES[type]!.fieldBytes;
  const seq = readTlv(der, 0);
  const version = readTlv(der, seq.start);
  const d = readTlv(der, version.end);
  const scalar = der.subarray(d.start, d.end);
  if (d.tag !== 0x04 || scalar.length > size) throw new Error('node:crypto returned a malformed EC key');
  if (scalar.length === size) return { fields: [['data', scalar]] };
  const padded = Buffer.alloc(size);
  scalar.copy(padded, size - scalar.length);
  return { fields: [['data', padded]], scratch: padded };
}

function finish(req: GenerateRequest, material: Buffer, fromDer: boolean): GeneratedKey {
  let scratch: Buffer | undefined;
  try {
    let fields: PrivateFields;
    if (fromDer) ({ fields, scratch } = privateFields(req.type, material));
    else fields = [['data', material]];
    return { id: req.id ?? generateId(), importBody: importBodyBytes(req, fields), type: req.type };
  } finally {
    material.fill(0);
    scratch?.fill(0);
  }
}

/**
 * Validates a KeyGenerateRequestData body exactly as the NetHSM would, generates the key pair with node:crypto and
 * returns the NetHSM import body plus the id (given, or 20 lowercase hex). Throws GenerateRequestInvalidError
 * { status: 400, message } for what the NetHSM would refuse. Synchronous: RSA-4096 takes about a second and RSA-8192
 * can take far longer, blocking the event loop; a server should use {@link generateForImportAsync}.
 */
export function generateForImport(body: unknown): GeneratedKey {
  const req = parseGenerateRequest(body);
  const pair = pairRequest(req);
  if (pair === undefined) return finish(req, randomBytes(Math.ceil(req.length / 8)), false);
  const { privateKey } = generateKeyPairSync(pair[0] as 'rsa', pair[1] as never) as unknown as { privateKey: Buffer };
  return finish(req, privateKey, true);
}

const generateKeyPairAsync = promisify(generateKeyPair) as unknown as (kind: Kind, opts: Record<string, unknown>) => Promise<{ privateKey: Buffer }>;

/** As {@link generateForImport}, generating on the libuv thread pool. Validation errors reject the promise. */
export async function generateForImportAsync(body: unknown): Promise<GeneratedKey> {
  const req = parseGenerateRequest(body);
  const pair = pairRequest(req);
  if (pair === undefined) return finish(req, randomBytes(Math.ceil(req.length / 8)), false);
  const { privateKey } = await generateKeyPairAsync(pair[0], pair[1]);
  return finish(req, privateKey, true);
}
