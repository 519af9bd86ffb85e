/**
 * The validation of a `POST /keys/generate` body (`KeyGenerateRequestData`, FACTS §5.3, c4) for replicated
 * generation, answering exactly as the NetHSM would: it is the simulator's own parser (`src/sim/keys/generate.ts`, the
 * firmware's order: schema, RSA length, mechanisms vs type, empty mechanisms, id, Generic length), its SimHttpError
 * turned into the daemon's GenerateRequestInvalidError.
 */
import { GenerateRequestInvalidError } from '../errors.js';
import { SimHttpError } from '../sim/http-error.js';
import { parseJsonBody } from '../sim/http.js';
import { parseGenerateRequest as parseSimRequest, type GenerateRequest } from '../sim/keys/generate.js';

export type { GenerateRequest };

/**
 * Validates a parsed JSON body. Throws GenerateRequestInvalidError { status: 400, message } with the NetHSM's message
 * for anything the NetHSM would refuse; the message never holds more than the request's own (public) fields.
 */
export function parseGenerateRequest(body: unknown): GenerateRequest {
  try {
    return parseSimRequest(body);
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
