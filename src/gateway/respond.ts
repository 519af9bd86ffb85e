/**
 * Answers the gateway gives itself, shaped as the NetHSM shapes its own (FACTS §10): `application/json`
 * `{"message": …}`, or an empty body where the NetHSM sends one (401 with a Basic challenge). The message ends with the
 * registry code in brackets so operators can look it up; it never holds a secret.
 */
import type { ServerResponse } from 'node:http';
import type { NhrError } from '../errors.js';

export interface LocalAnswer {
  status: number;
  error: NhrError;
  emptyBody?: boolean;
  retryAfterSeconds?: number;
}

/** Writes the answer unless a response is already under way (then the connection is cut). Never throws. */
export function answerLocally(res: ServerResponse, answer: LocalAnswer, requestBodyPending: boolean): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Record<string, string> = { 'cache-control': 'no-cache' };
  // An unread upload is not worth draining: close after answering rather than read a large body to the end.
  if (requestBodyPending) headers['connection'] = 'close';
  if (answer.retryAfterSeconds !== undefined) headers['retry-after'] = String(answer.retryAfterSeconds);
  if (answer.status === 401) headers['www-authenticate'] = 'Basic realm="NetHSM"';
  if (answer.emptyBody === true) {
    res.writeHead(answer.status, headers).end();
    return;
  }
  const body = JSON.stringify({ message: `${answer.error.message} [${answer.error.code}]` });
  headers['content-type'] = 'application/json';
  headers['content-length'] = String(Buffer.byteLength(body));
  res.writeHead(answer.status, headers).end(body);
}
