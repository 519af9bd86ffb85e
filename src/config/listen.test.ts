import { describe, expect, it } from 'vitest';
import { formatListenAddress, listenersConflict, parseListenAddress } from './listen.js';

describe('listen addresses', () => {
  it('parses IPv4, IPv6 in brackets and host names', () => {
    expect(parseListenAddress('127.0.0.1:9443')).toEqual({ host: '127.0.0.1', port: 9443 });
    expect(parseListenAddress('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseListenAddress('replicator.example.org:443')).toEqual({ host: 'replicator.example.org', port: 443 });
  });

  it('refuses missing ports, ports over 65535, bare IPv6 and junk', () => {
    for (const bad of ['127.0.0.1', ':9443', '127.0.0.1:65536', '::1:80', '[nothost]:80', 'a b:80', 'host:-1', 'host:port']) {
      expect(parseListenAddress(bad), bad).toBeUndefined();
    }
  });

  it('formats back, bracketing IPv6', () => {
    expect(formatListenAddress({ host: '::1', port: 80 })).toBe('[::1]:80');
    expect(formatListenAddress({ host: '10.0.0.1', port: 80 })).toBe('10.0.0.1:80');
  });

  it('sees conflicts on the same address and under wildcards, never on port 0', () => {
    const a = (s: string) => parseListenAddress(s)!;
    expect(listenersConflict(a('127.0.0.1:9000'), a('127.0.0.1:9000'))).toBe(true);
    expect(listenersConflict(a('0.0.0.0:9000'), a('127.0.0.1:9000'))).toBe(true);
    expect(listenersConflict(a('127.0.0.1:9000'), a('[::]:9000'))).toBe(true);
    expect(listenersConflict(a('127.0.0.1:9000'), a('127.0.0.2:9000'))).toBe(false);
    expect(listenersConflict(a('127.0.0.1:9000'), a('127.0.0.1:9001'))).toBe(false);
    expect(listenersConflict(a('127.0.0.1:0'), a('127.0.0.1:0'))).toBe(false);
  });
});
