/**
 * The firmware's storage encodings of the network (`ip-config`) and logging (`log-config`) configs
 * (FACTS-system §4): the v1 JSON kept under `/local/<deviceId>/config/`, the v0 binary forms found in old backups and
 * their conversion (`Config_store.migrate_v0_v1`), and the API shapes of `GET /config/network` and `/config/logging`.
 * Stored bytes are exactly the firmware's, so backups interoperate both ways.
 */
import { err, ocamlQuoted, ok, type Result } from './json-decode.js';
import { ipv4ToString, maskOfBits, netmaskBits, parseIp, parseIpv4, parseIpv4Cidr, parseIpv6, parseIpv6Cidr } from './ipaddr.js';
import { parseYojson, type YValue } from './yojson.js';

export const LOG_LEVELS = ['app', 'error', 'warning', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface NetworkConfig {
  ipv4: {
    address: number[];
    bits: number;
    /** Undefined = no gateway (`null`); a v0 conversion always sets one, possibly 0.0.0.0. */
    gateway: number[] | undefined;
  };
  /** Compressed address/len and optional gateway. */
  ipv6?: { cidr: string; gateway: string | undefined };
}

export interface LogConfig {
  /** Undefined = none, written as `0.0.0.0`. */
  ipAddress: string | undefined;
  port: number;
  logLevel: LogLevel;
}

export const DEFAULT_NETWORK: NetworkConfig = { ipv4: { address: [192, 168, 1, 1], bits: 24, gateway: undefined } };
export const DEFAULT_LOG: LogConfig = { ipAddress: undefined, port: 514, logLevel: 'info' };

/** `network_to_yojson`, compact: `{"ipv4":{"cidr":"192.168.1.1/24","gateway":null}}` (+ `ipv6` when set). */
export function encodeNetwork(n: NetworkConfig): Buffer {
  const ipv4 = { cidr: `${ipv4ToString(n.ipv4.address)}/${n.ipv4.bits}`, gateway: n.ipv4.gateway === undefined ? null : ipv4ToString(n.ipv4.gateway) };
  const doc: Record<string, unknown> = { ipv4 };
  if (n.ipv6 !== undefined) doc['ipv6'] = { cidr: n.ipv6.cidr, gateway: n.ipv6.gateway ?? null };
  return Buffer.from(JSON.stringify(doc), 'utf8');
}

const member = (v: YValue, k: string): YValue | undefined => (v.t === 'assoc' ? v.v.filter(([key]) => key === k).pop()?.[1] : undefined);

/** Reads a stored v1 `ip-config`; undefined when unreadable (the firmware then falls back to the default). */
export function decodeNetwork(bytes: Buffer): NetworkConfig | undefined {
  let doc: YValue;
  try {
    doc = parseYojson(bytes);
  } catch {
    return undefined;
  }
  if (doc.t !== 'assoc' || doc.v.some(([k]) => k !== 'ipv4' && k !== 'ipv6')) return undefined;
  const v4 = member(doc, 'ipv4');
  const cidr = v4 && member(v4, 'cidr');
  const gw = v4 && member(v4, 'gateway');
  if (cidr?.t !== 'string' || gw === undefined) return undefined;
  const prefix = parseIpv4Cidr(cidr.v);
  if (!prefix.ok) return undefined;
  let gateway: number[] | undefined;
  if (gw.t === 'string') {
    const g = parseIpv4(gw.v);
    if (!g.ok) return undefined;
    gateway = g.value;
  } else if (gw.t !== 'null') return undefined;
  const out: NetworkConfig = { ipv4: { address: prefix.value.address, bits: prefix.value.bits, gateway } };
  const v6 = member(doc, 'ipv6');
  if (v6 !== undefined && v6.t !== 'null') {
    const c6 = member(v6, 'cidr');
    const g6 = member(v6, 'gateway');
    const c = c6?.t === 'string' ? parseIpv6Cidr(c6.v) : undefined;
    if (c === undefined || !c.ok) return undefined;
    const g = g6 === undefined || g6.t === 'null' ? undefined : g6.t === 'string' ? parseIpv6(g6.v) : err('');
    if (g !== undefined && !g.ok) return undefined;
    out.ipv6 = { cidr: c.value, gateway: g?.value };
  }
  return out;
}

/** `GET /config/network`: `{"ipAddress","netmask","gateway"}` (gateway `0.0.0.0` for none) and `ipv6` only when set. */
export function networkToApi(n: NetworkConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {
    ipAddress: ipv4ToString(n.ipv4.address),
    netmask: maskOfBits(n.ipv4.bits),
    gateway: n.ipv4.gateway === undefined ? '0.0.0.0' : ipv4ToString(n.ipv4.gateway),
  };
  if (n.ipv6 !== undefined) out['ipv6'] = { cidr: n.ipv6.cidr, gateway: n.ipv6.gateway ?? null };
  return out;
}

/** `log_to_yojson`: `{"ipAddress":"0.0.0.0","port":514,"logLevel":"info"}`. */
export function logToApi(l: LogConfig): { ipAddress: string; port: number; logLevel: LogLevel } {
  return { ipAddress: l.ipAddress ?? '0.0.0.0', port: l.port, logLevel: l.logLevel };
}

export function encodeLog(l: LogConfig): Buffer {
  return Buffer.from(JSON.stringify(logToApi(l)), 'utf8');
}

/** Reads a stored v1 `log-config` (`0.0.0.0` → none); undefined when unreadable. */
export function decodeLog(bytes: Buffer): LogConfig | undefined {
  let doc: YValue;
  try {
    doc = parseYojson(bytes);
  } catch {
    return undefined;
  }
  if (doc.t !== 'assoc' || doc.v.some(([k]) => !['ipAddress', 'port', 'logLevel'].includes(k))) return undefined;
  const ip = member(doc, 'ipAddress');
  const port = member(doc, 'port');
  const level = member(doc, 'logLevel');
  if (port?.t !== 'int' || level?.t !== 'string' || !(LOG_LEVELS as readonly string[]).includes(level.v)) return undefined;
  let ipAddress: string | undefined;
  if (ip?.t === 'string') {
    const p = parseIp(ip.v);
    if (!p.ok) return undefined;
    ipAddress = p.value === '0.0.0.0' ? undefined : p.value;
  } else if (ip?.t !== 'null') return undefined;
  return { ipAddress, port: Number(port.v), logLevel: level.v as LogLevel };
}

/** `Logs.level_of_string`: a level, `quiet` (no level), or an unknown text. */
export function logLevelOf(s: string): LogLevel | 'quiet' | undefined {
  if (s === 'quiet') return 'quiet';
  return (LOG_LEVELS as readonly string[]).includes(s) ? (s as LogLevel) : undefined;
}

/**
 * v0 `ip-config` (12 bytes: route ‖ address ‖ netmask) → the v1 JSON the firmware's migration writes. The gateway is
 * always set, so a v0 "no gateway" (0.0.0.0) becomes `"gateway":"0.0.0.0"`, not `null`. Errors are the migration's text.
 */
export function convertV0IpConfig(v0: Buffer): Result<Buffer> {
  if (v0.length < 12) return err(`ip-config of ${v0.length} bytes, expected 12 [?]`);
  const route = [...v0.subarray(0, 4)];
  const address = [...v0.subarray(4, 8)];
  const bits = netmaskBits([...v0.subarray(8, 12)]);
  if (!bits.ok) return bits;
  return ok(encodeNetwork({ ipv4: { address, bits: bits.value, gateway: route } }));
}

/** v0 `log-config` (ip(4) ‖ port u16 BE ‖ level text) → v1 JSON. `quiet` and unknown levels are errors. */
export function convertV0LogConfig(v0: Buffer): Result<Buffer> {
  if (v0.length < 6) return err(`log-config of ${v0.length} bytes, expected at least 6 [?]`);
  const level = v0.subarray(6).toString('latin1');
  const l = logLevelOf(level);
  if (l === 'quiet') return err('invalid log level');
  if (l === undefined) return err(`${ocamlQuoted(level)}: unknown log level`);
  // The v0 address is kept as given (Some 0.0.0.0 prints as "0.0.0.0" like none).
  return ok(encodeLog({ ipAddress: ipv4ToString([...v0.subarray(0, 4)]), port: v0.readUInt16BE(4), logLevel: l }));
}
