/**
 * `POST /keys/generate` (FACTS §5.3, c4): strict validation of KeyGenerateRequestData, then fresh key material.
 */
import { generateKeyPair, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { SimHttpError, invalidSchema } from '../http-error.js';
import { isValidId } from '../../nethsm/ids.js';
import { EC_CURVES, KEY_TYPES, MECHANISMS_BY_TYPE, type KeyMechanism, type KeyRecord, type KeyType } from './types.js';
import { keyLabel, mechanismList, optString, reqEnum, restrictionTags, strictObject } from './validate.js';
import { pkcs8Pem } from './material.js';

/** A valid KeyGenerateRequestData body. */
export interface GenerateRequest {
  /** Absent: the caller generates one. */
  id?: string;
  type: KeyType;
  /** Enum declaration order, no duplicates. */
  mechanisms: KeyMechanism[];
  /** Bits; meaningful for RSA and Generic only (ignored for the curves, as by the NetHSM). */
  length: number;
  /** Sorted, no duplicates. */
  tags: string[];
  label?: string;
}

const WHAT = 'KeyGenerateRequestData';

/**
 * Validates in the firmware's order: schema, RSA length, mechanisms vs type, non-empty, id; then Generic length.
 * Throws SimHttpError 400 with the firmware's message. Also the daemon's check of a replicated generate request
 * (src/keygen/request.ts), so the two can never disagree.
 */
export function parseGenerateRequest(body: unknown): GenerateRequest {
  const o = strictObject(body, WHAT, ['mechanisms', 'type', 'length', 'id', 'restrictions', 'label'], ['mechanisms', 'type']);
  const mechanisms = mechanismList(o['mechanisms'], WHAT);
  const type = reqEnum(o, 'type', WHAT, KEY_TYPES);
  const lengthV = o['length'] ?? 0;
  if (typeof lengthV !== 'number' || !Number.isInteger(lengthV)) throw invalidSchema(`${WHAT}.length: expected an integer.`);
  const id = optString(o, 'id', WHAT) ?? '';
  const tags = restrictionTags(o['restrictions'], WHAT);
  const label = keyLabel(o['label'], WHAT);
  if (type === 'RSA' && (lengthV < 1024 || lengthV > 8192)) throw new SimHttpError(400, 'RSA key length must be between 1024 and 8192.');
  const allowed = MECHANISMS_BY_TYPE[type];
  if (!mechanisms.every((m) => allowed.includes(m))) throw new SimHttpError(400, 'Mechanism does not match key type');
  if (mechanisms.length === 0) throw new SimHttpError(400, 'Empty set of mechanisms');
  if (id !== '' && !isValidId(id)) throw new SimHttpError(400, 'ID must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ and be 1..128 characters.');
  // Generic: the firmware accepts any 128..8192 bits (rounded up to bytes); only 128/192/256 work with AES_CBC later.
  if (type === 'Generic' && (lengthV < 128 || lengthV > 8192)) throw new SimHttpError(400, 'Length must be between 128 and 8192.');
  const req: GenerateRequest = { type, mechanisms, length: lengthV, tags };
  if (id !== '') req.id = id;
  if (label !== undefined) req.label = label;
  return req;
}

function record(req: GenerateRequest, material: { privatePem?: string; raw?: Buffer }): { id?: string; record: KeyRecord } {
  const r: KeyRecord = { type: req.type, mechanisms: req.mechanisms, cert: null, operations: 0, tags: req.tags, ...material };
  if (req.label !== undefined) r.label = req.label;
  return req.id === undefined ? { record: r } : { id: req.id, record: r };
}

type PairArgs = ['rsa', { modulusLength: number; publicExponent: number }] | ['ec', { namedCurve: string }] | ['ed25519', object];

function pairArgs(req: GenerateRequest): PairArgs {
  if (req.type === 'RSA') return ['rsa', { modulusLength: req.length, publicExponent: 65537 }];
  if (req.type === 'Curve25519') return ['ed25519', {}];
  const curve = EC_CURVES[req.type];
  if (curve === undefined) throw new SimHttpError(400, `Key type ${req.type} is not supported by the simulator.`);
  return ['ec', { namedCurve: curve.curve }];
}

/**
 * Validates a KeyGenerateRequestData body and generates the key synchronously (RSA-4096 can take seconds: prefer
 * `generateKeyAsync` on a server). Returns the requested id (absent when the caller must generate one) and the record.
 * Throws SimHttpError 400 with the firmware's message on any invalid input.
 */
export function generateKey(body: unknown): { id?: string; record: KeyRecord } {
  const req = parseGenerateRequest(body);
  if (req.type === 'Generic') return record(req, { raw: randomBytes(Math.ceil(req.length / 8)) });
  const [kind, opts] = pairArgs(req);
  const { privateKey } = generateKeyPairSync(kind as 'rsa', opts as { modulusLength: number });
  return record(req, { privatePem: pkcs8Pem(privateKey) });
}

const generateKeyPairAsync = promisify(generateKeyPair) as unknown as (kind: string, opts: object) => Promise<{ privateKey: KeyObject; publicKey: KeyObject }>;

/** As `generateKey`, generating off the event loop (libuv thread pool). Validation errors reject the promise. */
export async function generateKeyAsync(body: unknown): Promise<{ id?: string; record: KeyRecord }> {
  const req = parseGenerateRequest(body);
  if (req.type === 'Generic') return record(req, { raw: randomBytes(Math.ceil(req.length / 8)) });
  const [kind, opts] = pairArgs(req);
  const { privateKey } = await generateKeyPairAsync(kind, opts);
  return record(req, { privatePem: pkcs8Pem(privateKey) });
}
