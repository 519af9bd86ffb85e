import { describe, expect, it } from 'vitest';
import { headerValues, parseBasicAuth } from './basic-auth.js';

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
});
