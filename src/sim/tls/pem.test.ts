import { describe, expect, it } from 'vitest';
import { encodeCertificates, encodePem, parsePem, pemCertificates } from './pem.js';

const block = (label: string, data: Buffer): string => `-----BEGIN ${label}-----\n${data.toString('base64')}\n-----END ${label}-----\n`;

describe('PEM as the firmware reads and writes it', () => {
  it('reads blocks in order, skipping text around them, comments, blank lines and CRLF line ends', () => {
    const a = Buffer.from('first');
    const b = Buffer.from('second');
    const text = `garbage before\n# a comment\r\n${block('CERTIFICATE', a).replace(/\n/g, '\r\n')}\nbetween\n${block('PRIVATE KEY', b)}trailing`;
    expect(parsePem(text)).toEqual([
      { label: 'CERTIFICATE', data: a },
      { label: 'PRIVATE KEY', data: b },
    ]);
    expect(pemCertificates(text)).toEqual([a]);
    expect(pemCertificates('no pem here at all')).toEqual([]);
  });

  it('answers the library texts for broken blocks', () => {
    expect(() => parsePem('-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n')).toThrow('invalid end, expected CERTIFICATE, found PRIVATE KEY');
    expect(() => parsePem('-----BEGIN CERTIFICATE-----\nAAAA\n')).toThrow('end of input');
    expect(() => parsePem('-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n')).toThrow('invalid line, expected data or end');
    expect(() => parsePem('-----BEGIN CERTIFICATE-----\nA*AA\n-----END CERTIFICATE-----\n')).toThrow('Malformed input');
    expect(() => parsePem('-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n')).toThrow('Wrong padding');
    // The first error wins even when a good block follows.
    expect(() => parsePem(`-----BEGIN X-----\n-----END Y-----\n${block('CERTIFICATE', Buffer.from('ok'))}`)).toThrow('invalid end, expected X, found Y');
  });

  it('writes 64-column base64 with a trailing newline per block', () => {
    const der = Buffer.alloc(100, 7);
    const pem = encodePem('CERTIFICATE', der);
    const lines = pem.split('\n');
    expect(lines[0]).toBe('-----BEGIN CERTIFICATE-----');
    expect(lines[1]).toHaveLength(64);
    expect(lines.at(-2)).toBe('-----END CERTIFICATE-----');
    expect(pem.endsWith('-----\n')).toBe(true);
    expect(parsePem(pem)).toEqual([{ label: 'CERTIFICATE', data: der }]);
    expect(encodeCertificates([der, Buffer.from('x')])).toBe(pem + encodePem('CERTIFICATE', Buffer.from('x')));
  });
});
