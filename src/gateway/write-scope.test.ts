import { describe, expect, it } from 'vitest';
import { parseBasicAuth, type CallerIdentity } from './basic-auth.js';
import { classify } from './classify.js';
import { writeScope } from './write-scope.js';

const user = (u: string): CallerIdentity => parseBasicAuth([`Basic ${Buffer.from(`${u}:secret`).toString('base64')}`]);
const scopeOf = (method: string, path: string, caller: CallerIdentity) => writeScope(classify(method, path.split('/').filter(Boolean)), caller);

describe('writeScope', () => {
  it("confines a namespaced caller's key writes to its namespace (its keys live under /key/.<ns>/)", () => {
    for (const [m, p] of [
      ['POST', '/keys'],
      ['POST', '/keys/generate'],
      ['PUT', '/keys/k1'],
      ['DELETE', '/keys/k1'],
      ['PUT', '/keys/k1/cert'],
      ['DELETE', '/keys/k1/label'],
      ['POST', '/keys/k1/move'],
      ['PUT', '/keys/k1/restrictions/tags/t'],
    ]) {
      expect(scopeOf(m!, p!, user('alpha~admin')), `${m} ${p}`).toBe('alpha');
    }
  });

  it("confines user writes naming a namespace's user to that namespace (/authentication/<ns>~<id>)", () => {
    expect(scopeOf('PUT', '/users/alpha~op', user('alpha~admin'))).toBe('alpha');
    expect(scopeOf('POST', '/users/alpha~', user('alpha~admin'))).toBe('alpha');
    expect(scopeOf('POST', '/users', user('alpha~admin'))).toBe('alpha'); // the NetHSM creates alpha~<hex>
    expect(scopeOf('DELETE', '/users/alpha~op', user('alpha~admin'))).toBe('alpha');
    expect(scopeOf('POST', '/users/alpha~op/passphrase', user('alpha~op'))).toBe('alpha');
    expect(scopeOf('PUT', '/users/alpha~op/tags/t', user('alpha~admin'))).toBe('alpha');
    // A root administrator creating a namespace's user (before the namespace exists) writes only that user.
    expect(scopeOf('PUT', '/users/beta~admin', user('admin'))).toBe('beta');
  });

  it('leaves root keys and root users unscoped: they are outside every namespace', () => {
    expect(scopeOf('POST', '/keys/generate', user('admin'))).toBeUndefined();
    expect(scopeOf('PUT', '/keys/k1', user('admin'))).toBeUndefined();
    expect(scopeOf('POST', '/users', user('admin'))).toBeUndefined();
    expect(scopeOf('PUT', '/users/operator', user('admin'))).toBeUndefined();
    expect(scopeOf('POST', '/users/operator/passphrase', user('operator'))).toBeUndefined();
    // A root user's path by a namespaced caller (the NetHSM refuses it): still not confined to the caller's namespace.
    expect(scopeOf('PUT', '/users/operator', user('alpha~admin'))).toBeUndefined();
  });

  it('leaves a user write across namespaces unscoped (fail closed)', () => {
    expect(scopeOf('PUT', '/users/beta~op', user('alpha~admin'))).toBeUndefined();
    expect(scopeOf('DELETE', '/users/beta~op/tags/t', user('alpha~admin'))).toBeUndefined();
  });

  it('leaves device writes, reads, unknown calls and unreadable credentials unscoped', () => {
    expect(scopeOf('PUT', '/namespaces/alpha', user('admin'))).toBeUndefined();
    expect(scopeOf('DELETE', '/namespaces/alpha', user('admin'))).toBeUndefined();
    expect(scopeOf('PUT', '/config/logging', user('admin'))).toBeUndefined();
    expect(scopeOf('POST', '/lock', user('admin'))).toBeUndefined();
    expect(scopeOf('GET', '/keys/k1', user('alpha~operator'))).toBeUndefined();
    expect(scopeOf('POST', '/keys/k1/sign', user('alpha~operator'))).toBeUndefined();
    // A mutation the table does not know (fail-closed classification) may do anything.
    expect(scopeOf('PATCH', '/keys/k1', user('alpha~admin'))).toBeUndefined();
    expect(scopeOf('POST', '/keys/k1/frobnicate', user('alpha~admin'))).toBeUndefined();
    expect(scopeOf('PUT', '/keys/k1', { kind: 'none' })).toBeUndefined();
    expect(scopeOf('PUT', '/keys/k1', { kind: 'unparsable', reason: 'x' })).toBeUndefined();
  });
});
