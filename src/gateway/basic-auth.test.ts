import { describe, expect, it } from 'vitest';
import { splitUserId } from '../nethsm/ids.js';
import { headerValues, isCanonicalBase64, parseBasicAuth, type CallerIdentity } from './basic-auth.js';

const basic = (s: string): string => 'Basic ' + Buffer.from(s, 'latin1').toString('base64');

describe('parseBasicAuth', () => {
  it('reads the namespace of a namespaced user and no namespace for a root user', () => {
    expect(parseBasicAuth([basic('alpha~admin:secret passphrase')])).toEqual({ kind: 'user', user: 'alpha~admin', namespace: 'alpha' });
    expect(parseBasicAuth([basic('admin:x:y')])).toEqual({ kind: 'user', user: 'admin', namespace: undefined });
    expect(parseBasicAuth(['basic ' + Buffer.from('operator:p').toString('base64')])).toMatchObject({ kind: 'user', user: 'operator' });
  });

  it('reports no credentials when there is no header', () => {
    expect(parseBasicAuth([])).toEqual({ kind: 'none' });
  });

  it.each([
    [[basic('a:b'), basic('alpha~admin:b')], 'more than one'],
    [['Bearer abc'], 'not HTTP Basic'],
    [['Basic'], 'not HTTP Basic'],
    [['Basic !!!!'], 'not HTTP Basic'],
    [['Basic YWRtaW46cGFzcw'], 'canonical'], // missing padding
    [['Basic YWRtaW46cGFzcx=='], 'canonical'], // stray bits
    [[basic('adminpass')], 'no colon'],
    [[basic('~admin:p')], 'not a valid'],
    [[basic('alpha~:p')], 'not a valid'],
    [[basic('al pha~admin:p')], 'not a valid'],
    [[basic('alpha~ädmin:p')], 'not a valid'],
  ])('refuses to guess at %j', (values, why) => {
    const r = parseBasicAuth(values);
    expect(r.kind).toBe('unparsable');
    if (r.kind === 'unparsable') {
      expect(r.reason).toContain(why);
      expect(r.reason).not.toMatch(/pass|YWRt/);
    }
  });

  it('collects every value of a header from raw headers, any case', () => {
    expect(headerValues(['Authorization', 'a', 'Host', 'h', 'authorization', 'b'], 'authorization')).toEqual(['a', 'b']);
    expect(headerValues(['Host', 'h'], 'authorization')).toEqual([]);
  });

  it('finds a header however its name is cased, and only that header', () => {
    expect(headerValues(['AUTHORIZATION', 'a', 'x-authorizatio', 'n', 'AuthorizatioN', 'b'], 'authorization')).toEqual(['a', 'b']);
  });
});

/** The reading before it decoded only up to the colon (whole buffer, re-encoded to check): the reference. */
function reference(values: string[]): CallerIdentity {
  if (values.length !== 1) return parseBasicAuth(values);
  const m = /^Basic +([A-Za-z0-9+/]+={0,2})$/i.exec(values[0]!.trim());
  if (m === null) return { kind: 'unparsable', reason: 'Authorization is not HTTP Basic' };
  const b64 = m[1]!;
  const decoded = Buffer.from(b64, 'base64');
  if (b64.length % 4 !== 0 || decoded.toString('base64') !== b64) return { kind: 'unparsable', reason: 'Basic credentials are not canonical base64' };
  const colon = decoded.indexOf(0x3a);
  if (colon < 0) return { kind: 'unparsable', reason: 'Basic credentials have no colon' };
  const user = decoded.subarray(0, colon).toString('latin1');
  const split = splitUserId(user);
  if (split === undefined) return { kind: 'unparsable', reason: 'Basic user id is not a valid NetHSM user id' };
  return { kind: 'user', user, namespace: split.namespace };
}

describe('parseBasicAuth reads as decoding everything and encoding it again would', () => {
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

  it('agrees on canonical base64 for every last group of 1 to 4 characters with 0 to 2 pads', () => {
    const differ: string[] = [];
    let canonical = 0;
    for (const a of ALPHABET) {
      for (const b of ALPHABET) {
        for (const tail of ['', 'A', 'AA', 'AAA', '=', '==', 'A=', 'AA=', 'Q=', 'Qw=', 'Qx=']) {
          const b64 = 'YWJj' + a + b + tail;
          const expected = Buffer.from(b64, 'base64').toString('base64') === b64;
          if (isCanonicalBase64(b64) !== expected) differ.push(b64);
          if (expected) canonical++;
        }
      }
    }
    expect(differ).toEqual([]);
    // Both answers occur: 'YWJjab' + 'AA' (groups whole), and '…a' + '==' only where its low bits are zero.
    expect(canonical).toBeGreaterThan(64 * 64);
    expect(canonical).toBeLessThan(64 * 64 * 11);
  });

  it('agrees with the reference on generated credentials: user ids of every length, colons anywhere, any bytes', () => {
    // A fixed linear congruential sequence: the same inputs on every run.
    let seed = 12345;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const pieces = ['alpha~', 'admin', '~', ':', 'op', 'ä', '\x00', ' ', 'Z9', 'x:y', '.', '-', 'é', '~~'];
    for (let i = 0; i < 5000; i++) {
      let text = '';
      for (let k = next(8); k > 0; k--) text += pieces[next(pieces.length)];
      const b64 = Buffer.from(text, 'latin1').toString('base64');
      for (const value of [`Basic ${b64}`, `basic  ${b64.replace(/=+$/, '')}`, `Basic ${b64}=`]) {
        expect(parseBasicAuth([value]), JSON.stringify(text)).toEqual(reference([value]));
      }
    }
  });
});
