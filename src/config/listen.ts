/**
 * Listen addresses (`host:port`, `[v6]:port`) for the peer API, health and gateway listeners. Pure.
 */
import { isIP } from 'node:net';

export interface ListenAddress {
  /** IP address or host name, without brackets. */
  host: string;
  /** 0..65535; 0 asks the OS for a free port (tests). */
  port: number;
}

const HOSTNAME = /^(?=.{1,253}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

/** Parses `host:port` / `[ipv6]:port`; undefined when malformed. Never throws. */
export function parseListenAddress(text: string): ListenAddress | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  if (m[1] !== undefined) return isIP(m[1]) === 6 ? { host: m[1], port } : undefined;
  const host = m[2] ?? '';
  if (isIP(host) === 4 || HOSTNAME.test(host)) return { host, port };
  return undefined;
}

export function formatListenAddress(a: ListenAddress): string {
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

const WILDCARD = new Set(['0.0.0.0', '::', '::0']);

/**
 * Whether two listeners would fight over one socket: same port (other than 0, which the OS picks per listener)
 * and the same host, or either host a wildcard (which binds every address).
 */
export function listenersConflict(a: ListenAddress, b: ListenAddress): boolean {
  if (a.port === 0 || b.port === 0 || a.port !== b.port) return false;
  const ha = a.host.toLowerCase();
  const hb = b.host.toLowerCase();
  return ha === hb || WILDCARD.has(ha) || WILDCARD.has(hb);
}
