/**
 * An HTTP error the simulator answers with, shaped like the firmware's (FACTS §10):
 * handler errors carry `{"message": …}` JSON; status-only errors (401, 403 from the role gate, 404 from the
 * resource check, 405, 406, 413, 414, 415, 304) have an empty body.
 */
export class SimHttpError extends Error {
  readonly status: number;
  /** JSON body `{message}`; undefined means an empty body. */
  readonly body: { message: string } | undefined;
  readonly headers: Record<string, string>;

  constructor(status: number, message?: string, headers: Record<string, string> = {}) {
    super(message ?? `HTTP ${status}`);
    this.status = status;
    this.body = message === undefined ? undefined : { message };
    this.headers = headers;
  }
}

/** 400 for a body that fails the strict JSON schema (unknown properties, missing or mistyped fields). */
export function invalidSchema(detail: string): SimHttpError {
  return new SimHttpError(400, `Invalid data for JSON schema: ${detail}`);
}

/** 400 for a body that is not JSON at all. */
export function invalidJson(detail: string): SimHttpError {
  return new SimHttpError(400, `Invalid JSON: ${detail}.`);
}
