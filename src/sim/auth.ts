/**
 * HTTP Basic authentication against the user records, with the firmware's 1-second rate limit per (IP, username).
 */
import type { IncomingMessage } from 'node:http';
import { splitUserId } from '../nethsm/ids.js';
import { SimHttpError } from './http-error.js';
import type { Caller } from './http.js';
import type { SimCore } from './context.js';
import { checkPassphrase } from './users.js';

/** Parses `Authorization: Basic …`; undefined when absent or not Basic. */
export function parseBasic(header: string | undefined): { username: string; password: string } | undefined {
  if (header === undefined) return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) return undefined;
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** Returns the caller or throws 429 (recent failure) / 401 (missing or wrong credentials, recorded as a failure). */
export function authenticate(req: IncomingMessage, ip: string, sim: SimCore): Caller {
  const creds = parseBasic(req.headers.authorization);
  if (creds === undefined) throw new SimHttpError(401);
  const key = `${ip}\0${creds.username}`;
  if (sim.limiter.blocked(key)) throw new SimHttpError(429, 'Too many requests');
  const split = splitUserId(creds.username);
  const user = split === undefined ? undefined : sim.users.get(creds.username);
  if (split === undefined || user === undefined || !checkPassphrase(user, creds.password)) {
    sim.limiter.recordFailure(key);
    throw new SimHttpError(401);
  }
  return { userId: creds.username, namespace: split.namespace, user };
}
