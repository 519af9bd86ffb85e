/**
 * The validation of a `POST /keys/generate` body (`KeyGenerateRequestData`, FACTS §5.3, c4) for replicated
 * generation, answering exactly as the NetHSM would: the simulator's own field checks (`src/sim/keys/validate.ts`),
 * applied in the firmware's order — schema, RSA length, mechanisms vs type, empty mechanisms, id, Generic length.
 * Kept in step with the simulator's `parseGenerateRequest` by a test that sends each bad body to both.
 */
import { isValidId } from '../nethsm/ids.js';
import { GenerateRequestInvalidError } from '../errors.js';
import { SimHttpError, invalidSchema } from '../sim/http-error.js';
import { parseJsonBody } from '../sim/http.js';
import { KEY_TYPES, MECHANISMS_BY_TYPE, type KeyMechanism, type KeyType } from '../sim/keys/types.js';
import { keyLabel, mechanismList, optString, reqEnum, restrictionTags, strictObject } from '../sim/keys/validate.js';

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
 * Validates a parsed JSON body. Throws GenerateRequestInvalidError { status: 400, message } with the NetHSM's message
 * for anything the NetHSM would refuse; the message never holds more than the request's own (public) fields.
 */
export function parseGenerateRequest(body: unknown): GenerateRequest {
  try {
    return parse(body);
  } catch (err) {
    throw asInvalid(err);
  }
}

/** Parses request bytes as the NetHSM does (`Invalid JSON: …` → 400), then validates them. */
export function parseGenerateRequestBytes(bytes: Buffer): GenerateRequest {
  let body: unknown;
  try {
    body = parseJsonBody(bytes);
  } catch (err) {
    throw asInvalid(err);
  }
  return parseGenerateRequest(body);
}

function asInvalid(err: unknown): unknown {
  if (err instanceof SimHttpError) return new GenerateRequestInvalidError(err.status, err.body?.message ?? err.message, { operation: 'POST /keys/generate' });
  return err;
}

function parse(body: unknown): GenerateRequest {
  const o = strictObject(body, WHAT, ['mechanisms', 'type', 'length', 'id', 'restrictions', 'label'], ['mechanisms', 'type']);
  const mechanisms = mechanismList(o['mechanisms'], WHAT);
  const type = reqEnum(o, 'type', WHAT, KEY_TYPES);
  const length = o['length'] ?? 0;
  if (typeof length !== 'number' || !Number.isInteger(length)) throw invalidSchema(`${WHAT}.length: expected an integer.`);
  const id = optString(o, 'id', WHAT) ?? '';
  const tags = restrictionTags(o['restrictions'], WHAT);
  const label = keyLabel(o['label'], WHAT);
  if (type === 'RSA' && (length < 1024 || length > 8192)) throw new SimHttpError(400, 'RSA key length must be between 1024 and 8192.');
  if (!mechanisms.every((m) => MECHANISMS_BY_TYPE[type].includes(m))) throw new SimHttpError(400, 'Mechanism does not match key type');
  if (mechanisms.length === 0) throw new SimHttpError(400, 'Empty set of mechanisms');
  if (id !== '' && !isValidId(id)) throw new SimHttpError(400, 'ID must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ and be 1..128 characters.');
  if (type === 'Generic' && (length < 128 || length > 8192)) throw new SimHttpError(400, 'Length must be between 128 and 8192.');
  const req: GenerateRequest = { type, mechanisms, length, tags };
  if (id !== '') req.id = id;
  if (label !== undefined) req.label = label;
  return req;
}
