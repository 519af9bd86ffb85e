/**
 * The firmware's request body types (its `json.ml`), decoded with ppx's rules (see json-decode.ts), and the checks it
 * runs after decoding, which answer without the JSON-schema prefix (FACTS-system §5).
 * Field order is the firmware's declaration order: it decides which error wins.
 */
import { SimHttpError } from './http-error.js';
import { bytesField, decodeBody, err, field, intField, ocamlQuoted, ok, optionField, record, textField, type FieldDecoder, type Result } from './json-decode.js';
import { ipv4ToString, netmaskBits, parseIp, parseIpv4, parseIpv6, parseIpv6Cidr } from './ipaddr.js';
import { logLevelOf, type LogConfig, type LogLevel, type NetworkConfig } from './config-encodings.js';
import { decodeTime } from './rfc3339.js';
import type { YValue } from './yojson.js';

/** `valid_passphrase`: 10..200 bytes, else 400 `passphrase <name> is not >= 10 and <= 200 characters` (no prefix). */
export function checkPassphrase(name: string, value: string): void {
  const n = Buffer.byteLength(value, 'utf8');
  if (n < 10 || n > 200) throw new SimHttpError(400, `passphrase ${name} is not >= 10 and <= 200 characters`);
}

/** `decode_time`: the instant, else 400 with the firmware's timestamp message (no prefix). */
export function checkTime(value: string): Date {
  const r = decodeTime(value);
  if (!r.ok) throw new SimHttpError(400, r.error);
  return r.value;
}

export const passphraseReq = record<{ passphrase: string }>('passphrase_req', [field('passphrase', textField)]);

export const passphraseChangeReq = record<{ newPassphrase: string; currentPassphrase: string }>('passphrase_change_req', [
  field('newPassphrase', textField),
  field('currentPassphrase', textField),
]);

export const provisionReq = record<{ unlockPassphrase: string; adminPassphrase: string; systemTime: string }>('provision_req', [
  field('unlockPassphrase', textField),
  field('adminPassphrase', textField),
  field('systemTime', bytesField),
]);

export const restoreReq = record<{ backupPassphrase: string | undefined; systemTime: string | undefined }>('restore_req', [
  field('backupPassphrase', optionField(textField), { value: undefined }),
  field('systemTime', optionField(bytesField), { value: undefined }),
]);

export const timeReq = record<{ time: string }>('time_req', [field('time', bytesField)]);

/** `random_req_of_yojson`: its range check runs inside the decoder, so its text gets the prefix. */
export const randomReq = (v: YValue): Result<{ length: number }> => {
  const r = record<{ length: number }>('random_req', [field('length', intField)])(v);
  if (r.ok && (r.value.length < 1 || r.value.length > 1024)) return err('length must be between 1 and 1024');
  return r;
};

const ROLES = ['Administrator', 'Operator', 'Metrics', 'Backup'] as const;
const roleField: FieldDecoder<(typeof ROLES)[number]> = (v) => {
  if (v.t !== 'string') return err('expected string as role');
  return (ROLES as readonly string[]).includes(v.v) ? ok(v.v as (typeof ROLES)[number]) : err('Json.role');
};

export const userReq = record<{ realName: string; role: (typeof ROLES)[number]; passphrase: string }>('user_req', [
  field('realName', textField),
  field('role', roleField),
  field('passphrase', textField),
]);

/** `PUT /config/unattended-boot` is hand-written in the firmware: exactly `{"status":"on"|"off"}`. */
export const unattendedReq = (v: YValue): Result<boolean> => {
  if (v.t === 'assoc' && v.v.length === 1 && v.v[0]![0] === 'status' && v.v[0]![1].t === 'string') {
    const s = v.v[0]![1].v;
    return s === 'on' ? ok(true) : s === 'off' ? ok(false) : err("Invalid status data, expected 'on' or 'off'.");
  }
  return err("Invalid status data, expected a dictionary with one entry 'status'.");
};

const ipv4Field: FieldDecoder<number[]> = (v) => (v.t === 'string' ? parseIpv4(v.v) : err('expected string for IP'));
const ipField: FieldDecoder<string> = (v) => (v.t === 'string' ? parseIp(v.v) : err('expected string for IP'));
const ipv6Field: FieldDecoder<string> = (v) => (v.t === 'string' ? parseIpv6(v.v) : err('expected string for IP'));
const ipv6CidrField: FieldDecoder<string> = (v) => (v.t === 'string' ? parseIpv6Cidr(v.v) : err('expected string for IP'));

/** The ipv6 part of `PUT /config/network` (its OCaml type name is not known: [?]). */
const ipv6Req = record<{ cidr: string; gateway: string | undefined }>('ipv6_config', [
  field('cidr', ipv6CidrField),
  field('gateway', optionField(ipv6Field), { value: undefined }),
]);

export const networkReq = record<{ ipAddress: number[]; netmask: number[]; gateway: number[]; ipv6: { cidr: string; gateway: string | undefined } | undefined }>(
  'network_api',
  [
    field('ipAddress', ipv4Field),
    field('netmask', ipv4Field),
    field('gateway', ipv4Field),
    field('ipv6', optionField((v) => ipv6Req(v)), { value: undefined }),
  ],
);

/** `PUT /config/network` → the stored form; a non-contiguous netmask answers the raw Ipaddr text (no prefix). */
export function networkFromBody(body: Buffer): NetworkConfig {
  const req = decodeBody(body, networkReq);
  const bits = netmaskBits(req.netmask);
  if (!bits.ok) throw new SimHttpError(400, bits.error);
  const gateway = ipv4ToString(req.gateway) === '0.0.0.0' ? undefined : req.gateway;
  const out: NetworkConfig = { ipv4: { address: req.ipAddress, bits: bits.value, gateway } };
  if (req.ipv6 !== undefined) out.ipv6 = { cidr: req.ipv6.cidr, gateway: req.ipv6.gateway };
  return out;
}

const logLevelField: FieldDecoder<LogLevel> = (v) => {
  if (v.t !== 'string') return err('expected string as log level');
  const l = logLevelOf(v.v);
  if (l === 'quiet') return err('parse error for log level');
  return l === undefined ? err(`${ocamlQuoted(v.v)}: unknown log level`) : ok(l);
};

/** `log`: all three fields required; `ipAddress` v4 or v6 (or `null`: none); any integer port. */
export const logReq = (v: YValue): Result<LogConfig> => {
  const r = record<{ ipAddress: string | undefined; port: number; logLevel: LogLevel }>('log', [
    field('ipAddress', optionField(ipField)),
    field('port', intField),
    field('logLevel', logLevelField),
  ])(v);
  if (!r.ok) return r;
  return ok({ ...r.value, ipAddress: r.value.ipAddress === '0.0.0.0' ? undefined : r.value.ipAddress });
};
