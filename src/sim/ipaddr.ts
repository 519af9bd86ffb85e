/**
 * IP address parsing and printing with the texts of the firmware's `Ipaddr` library (FACTS-system §4.3): error
 * messages such as `Ipaddr: fourth octet out of bounds`, dotted quads without octal, contiguous netmasks, the
 * compressed IPv6 form.
 */
import { isIPv6 } from 'node:net';
import { err, ok, type Result } from './json-decode.js';

/** Parses a dotted quad as `Ipaddr.V4.of_string` does; returns the 4 octets or its error text. */
export function parseIpv4(s: string): Result<number[]> {
  let i = 0;
  const octets: number[] = [];
  const bad = (at: number): Result<number[]> => err(`Ipaddr: invalid character '${s[at]}' at ${at}`);
  for (let part = 0; part < 4; part++) {
    if (part > 0) {
      if (i >= s.length) return err('Ipaddr: not enough data');
      if (s[i] !== '.') return bad(i);
      i++;
    }
    if (i + 1 < s.length && s[i] === '0' && /[0-9]/.test(s[i + 1]!)) return err('Ipaddr: octal notation disallowed');
    if (i >= s.length) return err('Ipaddr: not enough data');
    if (!/[0-9]/.test(s[i]!)) return bad(i);
    let n = 0;
    while (i < s.length && /[0-9]/.test(s[i]!)) n = n * 10 + Number(s[i++]);
    octets.push(n);
  }
  const names = ['first', 'second', 'third', 'fourth'];
  for (let k = 0; k < 4; k++) if (octets[k]! > 255) return err(`Ipaddr: ${names[k]} octet out of bounds`);
  if (i < s.length) return bad(i);
  return ok(octets);
}

export const ipv4ToString = (o: ArrayLike<number>): string => `${o[0]}.${o[1]}.${o[2]}.${o[3]}`;

/** Prefix length of a contiguous netmask, or `Ipaddr: invalid netmask`. */
export function netmaskBits(mask: ArrayLike<number>): Result<number> {
  const n = ((mask[0]! << 24) | (mask[1]! << 16) | (mask[2]! << 8) | mask[3]!) >>> 0;
  let bits = 0;
  while (bits < 32 && (n & (0x80000000 >>> bits)) !== 0) bits++;
  const expect = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return n === expect ? ok(bits) : err('Ipaddr: invalid netmask');
}

/** The dotted netmask for a prefix length. */
export function maskOfBits(bits: number): string {
  const n = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return ipv4ToString([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

/** Parses `a.b.c.d/n` (`Ipaddr.V4.Prefix.of_string`): address and length. */
export function parseIpv4Cidr(s: string): Result<{ address: number[]; bits: number }> {
  const slash = s.indexOf('/');
  if (slash < 0) {
    const a = parseIpv4(s);
    return a.ok ? err('Ipaddr: not enough data') : a;
  }
  const a = parseIpv4(s.slice(0, slash));
  if (!a.ok) return a;
  const rest = s.slice(slash + 1);
  if (!/^[0-9]+$/.test(rest)) return err(rest === '' ? 'Ipaddr: not enough data' : `Ipaddr: invalid character '${rest.replace(/^[0-9]*/, '')[0]}' at ${slash + 1 + rest.search(/[^0-9]/)}`);
  const bits = Number(rest);
  if (bits > 32) return err('Ipaddr: invalid prefix size');
  return ok({ address: a.value, bits });
}

/** The compressed lower-case form of an IPv6 address (RFC 5952, as `Ipaddr.V6.to_string` prints it), or undefined. */
export function normalizeIpv6(s: string): string | undefined {
  if (!isIPv6(s) || s.includes('%')) return undefined;
  return new URL(`http://[${s}]/`).hostname.slice(1, -1);
}

/** An IPv6 address (`Ipaddr.V6.of_string`); the error text is the library's general one [?]. */
export function parseIpv6(s: string): Result<string> {
  const n = normalizeIpv6(s);
  return n === undefined ? err(`Ipaddr: not an IPv6 address: ${s}`) : ok(n);
}

/** `addr/len` for IPv6 (`Ipaddr.V6.Prefix.of_string`, keeping the host address). */
export function parseIpv6Cidr(s: string): Result<string> {
  const slash = s.indexOf('/');
  if (slash < 0) return err('Ipaddr: not enough data');
  const a = parseIpv6(s.slice(0, slash));
  if (!a.ok) return a;
  const rest = s.slice(slash + 1);
  if (!/^[0-9]+$/.test(rest) || Number(rest) > 128) return err('Ipaddr: invalid prefix size');
  return ok(`${a.value}/${Number(rest)}`);
}

/** Either family (`Ipaddr.of_string`): the canonical text, or the library's combined error. */
export function parseIp(s: string): Result<string> {
  const v4 = parseIpv4(s);
  if (v4.ok) return ok(ipv4ToString(v4.value));
  const v6 = parseIpv6(s);
  if (v6.ok) return v6;
  return err(`Ipaddr: not an IPv4 address: ${v4.error.replace(/^Ipaddr: /, '')}\nnot an IPv6 address: ${v6.error.replace(/^Ipaddr: /, '')}`);
}
