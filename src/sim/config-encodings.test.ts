import { describe, expect, it } from 'vitest';
import { convertV0IpConfig, convertV0LogConfig, decodeLog, decodeNetwork, DEFAULT_NETWORK, encodeLog, encodeNetwork, networkToApi } from './config-encodings.js';
import { netmaskBits, parseIp, parseIpv4 } from './ipaddr.js';

describe('ip-config and log-config in the firmware encodings (FACTS-system §4)', () => {
  it('writes the v1 network JSON byte for byte: gateway null, not omitted; ipv6 only when set', () => {
    expect(encodeNetwork(DEFAULT_NETWORK).toString()).toBe('{"ipv4":{"cidr":"192.168.1.1/24","gateway":null}}');
    expect(encodeNetwork({ ipv4: { address: [10, 0, 0, 5], bits: 8, gateway: [10, 0, 0, 1] }, ipv6: { cidr: 'fc00::5/64', gateway: 'fc00::1' } }).toString()).toBe(
      '{"ipv4":{"cidr":"10.0.0.5/8","gateway":"10.0.0.1"},"ipv6":{"cidr":"fc00::5/64","gateway":"fc00::1"}}',
    );
  });

  it('reads the firmware network JSON and answers the API form', () => {
    const n = decodeNetwork(Buffer.from('{"ipv4":{"cidr":"6.6.6.6/24","gateway":null}}'));
    expect(n && networkToApi(n)).toEqual({ ipAddress: '6.6.6.6', netmask: '255.255.255.0', gateway: '0.0.0.0' });
    const v6 = decodeNetwork(Buffer.from('{"ipv4":{"cidr":"10.0.0.5/8","gateway":"10.0.0.1"},"ipv6":{"cidr":"fc00::5/64","gateway":null}}'));
    expect(v6 && networkToApi(v6)).toEqual({ ipAddress: '10.0.0.5', netmask: '255.0.0.0', gateway: '10.0.0.1', ipv6: { cidr: 'fc00::5/64', gateway: null } });
  });

  it('treats the old API-shaped value and garbage as unreadable', () => {
    expect(decodeNetwork(Buffer.from('{"ipAddress":"1.2.3.4","netmask":"255.0.0.0","gateway":"0.0.0.0"}'))).toBeUndefined();
    expect(decodeNetwork(Buffer.from([0xc0, 0xa8, 1, 1]))).toBeUndefined();
    expect(decodeNetwork(Buffer.from('{"ipv4":{"cidr":"1.2.3.4","gateway":null}}'))).toBeUndefined();
    expect(decodeLog(Buffer.from('{"ipAddress":"1.2.3.4","port":514}'))).toBeUndefined();
  });

  it('writes and reads log-config; 0.0.0.0 is none', () => {
    expect(encodeLog({ ipAddress: undefined, port: 514, logLevel: 'info' }).toString()).toBe('{"ipAddress":"0.0.0.0","port":514,"logLevel":"info"}');
    expect(decodeLog(Buffer.from('{"ipAddress":"0.0.0.0","port":514,"logLevel":"info"}'))).toEqual({ ipAddress: undefined, port: 514, logLevel: 'info' });
    expect(decodeLog(Buffer.from('{"ipAddress":"fc00::1","port":1,"logLevel":"app"}'))).toEqual({ ipAddress: 'fc00::1', port: 1, logLevel: 'app' });
  });

  it('converts v0 ip-config as the firmware migration does: gateway always set, 0.0.0.0 kept', () => {
    const v0 = Buffer.from('c0a82a01c0a82a2affffff00', 'hex'); // the v3.1 fixture's value
    expect(convertV0IpConfig(v0)).toEqual({ ok: true, value: Buffer.from('{"ipv4":{"cidr":"192.168.42.42/24","gateway":"192.168.42.1"}}') });
    const noGw = Buffer.from('000000000a000005ff000000', 'hex');
    expect(convertV0IpConfig(noGw)).toEqual({ ok: true, value: Buffer.from('{"ipv4":{"cidr":"10.0.0.5/8","gateway":"0.0.0.0"}}') });
    expect(convertV0IpConfig(Buffer.from('000000000a000005ff00ff00', 'hex'))).toEqual({ ok: false, error: 'Ipaddr: invalid netmask' });
    expect(convertV0IpConfig(Buffer.alloc(5)).ok).toBe(false);
  });

  it('converts v0 log-config; quiet and unknown levels are errors', () => {
    expect(convertV0LogConfig(Buffer.from('0100ff0002026465627567', 'hex'))).toEqual({ ok: true, value: Buffer.from('{"ipAddress":"1.0.255.0","port":514,"logLevel":"debug"}') });
    expect(convertV0LogConfig(Buffer.concat([Buffer.alloc(4), Buffer.from([2, 2]), Buffer.from('quiet')]))).toEqual({ ok: false, error: 'invalid log level' });
    expect(convertV0LogConfig(Buffer.concat([Buffer.alloc(4), Buffer.from([2, 2]), Buffer.from('loud')]))).toEqual({ ok: false, error: '"loud": unknown log level' });
    expect(convertV0LogConfig(Buffer.alloc(3)).ok).toBe(false);
  });
});

describe('Ipaddr texts', () => {
  it.each([
    ['1.2.3.4', undefined],
    ['1.2.3.256', 'Ipaddr: fourth octet out of bounds'],
    ['300.2.3.4', 'Ipaddr: first octet out of bounds'],
    ['1.2.3', 'Ipaddr: not enough data'],
    ['1.2.3.', 'Ipaddr: not enough data'],
    ['01.2.3.4', 'Ipaddr: octal notation disallowed'],
    ['1.2.3.4x', "Ipaddr: invalid character 'x' at 7"],
    ['a.2.3.4', "Ipaddr: invalid character 'a' at 0"],
    ['', 'Ipaddr: not enough data'],
  ])('%j', (s, error) => {
    const r = parseIpv4(s);
    expect(r.ok ? undefined : r.error).toBe(error);
  });

  it('netmasks must be contiguous; either family parses', () => {
    expect(netmaskBits([255, 255, 255, 0])).toEqual({ ok: true, value: 24 });
    expect(netmaskBits([0, 0, 0, 0])).toEqual({ ok: true, value: 0 });
    expect(netmaskBits([255, 0, 255, 0])).toEqual({ ok: false, error: 'Ipaddr: invalid netmask' });
    expect(parseIp('FC00:0::1')).toEqual({ ok: true, value: 'fc00::1' });
    expect(parseIp('nope').ok).toBe(false);
  });
});
