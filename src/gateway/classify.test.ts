import { describe, expect, it } from 'vitest';
import { classify, isKeyBodyOperation, type RequestKind } from './classify.js';
import { parseTarget } from './target.js';

function kindOf(method: string, path: string): RequestKind {
  const t = parseTarget('/api/v1' + path);
  if (!t.ok) throw new Error(`bad path ${path}: ${t.reason}`);
  return classify(method, t.segments).kind;
}

describe('classify', () => {
  it.each([
    ['POST', '/keys'],
    ['POST', '/keys/generate'],
    ['PUT', '/keys/k1'],
    ['DELETE', '/keys/k1'],
    ['POST', '/keys/k1/move'],
    ['PUT', '/keys/k1/cert'],
    ['DELETE', '/keys/k1/cert'],
    ['PUT', '/keys/k1/restrictions/tags/berlin'],
    ['DELETE', '/keys/k1/restrictions/tags/berlin'],
    ['PUT', '/keys/k1/label'],
    ['DELETE', '/keys/k1/label'],
    ['POST', '/users'],
    ['PUT', '/users/alpha~bob'],
    ['POST', '/users/alpha~'],
    ['DELETE', '/users/alpha~bob'],
    ['POST', '/users/alpha~bob/passphrase'],
    ['PUT', '/users/alpha~bob/tags/berlin'],
    ['DELETE', '/users/alpha~bob/tags/berlin'],
  ])('treats %s %s as a namespace mutation', (method, path) => {
    expect(kindOf(method, path)).toBe('mutation');
  });

  it.each([
    ['GET', '/keys'],
    ['GET', '/keys/k1'],
    ['HEAD', '/keys/k1'],
    ['GET', '/keys/abc*'],
    ['GET', '/keys/k1/public.pem'],
    ['GET', '/keys/k1/cert'],
    ['GET', '/users'],
    ['GET', '/users/alpha~bob'],
    ['GET', '/users/alpha~bob/tags'],
  ])('treats %s %s as a read', (method, path) => {
    expect(kindOf(method, path)).toBe('read');
  });

  it.each([
    ['POST', '/keys/k1/sign'],
    ['POST', '/keys/k1/decrypt'],
    ['POST', '/keys/k1/encrypt'],
    ['POST', '/keys/k1/csr.pem'],
    ['POST', '/random'],
  ])('treats %s %s as crypto', (method, path) => {
    expect(kindOf(method, path)).toBe('crypto');
  });

  it.each([
    ['GET', '/info'],
    ['GET', '/health/ready'],
    ['GET', '/health/state'],
    ['GET', '/metrics'],
    ['GET', '/config/unattended-boot'],
    ['GET', '/config/tls/cert.pem'],
    ['POST', '/config/tls/csr.pem'],
    ['GET', '/system/info'],
    ['POST', '/system/backup'],
    ['GET', '/namespaces'],
    ['GET', '/cluster/members'],
  ])('treats %s %s as a device read', (method, path) => {
    expect(kindOf(method, path)).toBe('device-read');
  });

  it.each([
    ['POST', '/provision'],
    ['POST', '/unlock'],
    ['POST', '/lock'],
    ['POST', '/system/restore'],
    ['POST', '/system/factory-reset'],
    ['POST', '/system/reboot'],
    ['POST', '/system/update'],
    ['PUT', '/config/backup-passphrase'],
    ['PUT', '/config/unattended-boot'],
    ['POST', '/config/tls/generate'],
    ['PUT', '/namespaces/alpha'],
    ['DELETE', '/namespaces/alpha'],
    ['POST', '/cluster/members'],
    ['DELETE', '/cluster/members/m1'],
  ])('treats %s %s as a device write', (method, path) => {
    expect(kindOf(method, path)).toBe('device-write');
  });

  it('fails closed: unknown methods and paths under /keys and /users are mutations, elsewhere device writes', () => {
    expect(kindOf('PATCH', '/keys/k1')).toBe('mutation');
    expect(kindOf('OPTIONS', '/keys')).toBe('mutation');
    expect(kindOf('POST', '/keys/k1/public.pem')).toBe('mutation');
    expect(kindOf('POST', '/keys/k1/frobnicate')).toBe('mutation');
    expect(kindOf('PUT', '/users/alpha~bob/whatever')).toBe('mutation');
    expect(kindOf('POST', '/whatever')).toBe('device-write');
    expect(kindOf('GET', '/whatever')).toBe('device-read');
    expect(kindOf('get', '/keys')).toBe('read');
  });

  it('names the key, the operation template and the namespace a path targets', () => {
    const sign = classify('POST', ['keys', 'k1', 'sign']);
    expect(sign).toEqual({ kind: 'crypto', operation: 'POST /keys/{id}/sign', keyId: 'k1' });
    expect(classify('POST', ['keys'])).toEqual({ kind: 'mutation', operation: 'POST /keys' });
    expect(classify('POST', ['keys', 'generate']).keyId).toBeUndefined();
    expect(classify('GET', ['keys', 'ab*']).keyId).toBeUndefined();
    expect(classify('PUT', ['keys', 'generate']).keyId).toBe('generate');
    expect(classify('PUT', ['users', 'alpha~bob']).pathNamespace).toBe('alpha');
    expect(classify('POST', ['users', 'alpha~']).pathNamespace).toBe('alpha');
    expect(classify('PUT', ['users', 'bob']).pathNamespace).toBeUndefined();
    expect(classify('DELETE', ['namespaces', 'beta']).pathNamespace).toBe('beta');
    expect(classify('PATCH', ['keys', 'k1']).operation).toBe('PATCH /keys/k1');
  });

  it('marks the key calls whose body the change stream needs', () => {
    for (const op of ['POST /keys', 'PUT /keys/{id}', 'PUT /keys/{id}/cert', 'POST /keys/{id}/move', 'PUT /keys/{id}/label', 'POST /keys/generate']) {
      expect(isKeyBodyOperation(op)).toBe(true);
    }
    for (const op of ['POST /keys/{id}/sign', 'POST /users/{user}/passphrase', 'PUT /users/{user}', 'DELETE /keys/{id}']) {
      expect(isKeyBodyOperation(op)).toBe(false);
    }
  });
});

describe('parseTarget', () => {
  it('keeps the target as received and decodes segments', () => {
    expect(parseTarget('/api/v1/keys/k1?filter=')).toEqual({ ok: true, raw: '/api/v1/keys/k1?filter=', segments: ['keys', 'k1'] });
    expect(parseTarget('/api/v1/keys/ab%2A')).toMatchObject({ ok: true, segments: ['keys', 'ab*'] });
    expect(parseTarget('/api/v1/keys/')).toMatchObject({ ok: true, segments: ['keys'] });
    expect(parseTarget('/api/v1')).toMatchObject({ ok: true, segments: [] });
  });

  it.each([
    ['/api/v1/../system/restore', 'dot segment'],
    ['/api/v1/keys/..', 'dot segment'],
    ['/api/v1/keys/%2e%2e/x', 'dot segment'],
    ['/api/v1/keys/./generate', 'dot segment'],
    ['/api/v1/keys/a%2Fb', 'slash'],
    ['/api/v1/keys/a%5Cb', 'backslash'],
    ['/api/v1/keys/a%00b', 'control'],
    ['/api/v1/keys/a%20b', 'space'],
    ['/api/v1//system/restore', 'empty path segment'],
    ['/api/v1/keys/%E0%A4%A', 'percent-encoding'],
  ])('refuses %s (%s)', (url, why) => {
    const t = parseTarget(url);
    expect(t.ok).toBe(false);
    if (!t.ok) {
      expect(t.status).toBe(400);
      expect(t.reason).toContain(why);
    }
  });

  it('refuses targets outside /api/v1 and absolute-form targets with 404/400', () => {
    expect(parseTarget('/api/v2/keys')).toMatchObject({ ok: false, status: 404 });
    expect(parseTarget('/api/v1x/keys')).toMatchObject({ ok: false, status: 404 });
    expect(parseTarget('/')).toMatchObject({ ok: false, status: 404 });
    expect(parseTarget('https://nethsm.example/api/v1/keys')).toMatchObject({ ok: false, status: 400 });
    expect(parseTarget('*')).toMatchObject({ ok: false, status: 400 });
    expect(parseTarget(undefined)).toMatchObject({ ok: false, status: 400 });
  });
});
