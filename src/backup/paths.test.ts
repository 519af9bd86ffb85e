import { describe, expect, it } from 'vitest';
import { MANIFEST_PATH, classifyPath, isNamespacePath, keyPath, namespaceOfPath, namespacePath, userPath } from './paths.js';

describe('backup KV path classification', () => {
  it('recognises the three kinds of entries of a namespace', () => {
    expect(classifyPath('/namespace/N')).toEqual({ kind: 'namespace', namespace: 'N' });
    expect(classifyPath('/key/.N/k1')).toEqual({ kind: 'namespace-key', namespace: 'N', keyId: 'k1' });
    expect(classifyPath('/authentication/N~op')).toEqual({ kind: 'namespace-user', namespace: 'N', userId: 'op' });
  });

  it('never counts a namespace whose name merely starts with N as N', () => {
    for (const other of ['N2', 'N.x', 'N-a', 'N_b', 'NN']) {
      for (const p of [`/namespace/${other}`, `/key/.${other}/k`, `/authentication/${other}~u`]) {
        expect(isNamespacePath(p, 'N')).toBe(false);
        expect(isNamespacePath(p, other)).toBe(true);
      }
    }
    expect(isNamespacePath('/key/N/k', 'N')).toBe(false);
    expect(isNamespacePath('/authentication/N', 'N')).toBe(false);
  });

  it('says exactly what namespaceOfPath says, for tricky paths too (its fast path for keys splits nothing)', () => {
    const paths = [
      '/key/.N/k1', '/key/.N/', '/key/.N/k/x', '/key/.N/.version', '/key/.N/k~1', '/key/.N/k 1', `/key/.N/${'k'.repeat(200)}`,
      '/key/.N', '/key/N/k', '/key/.N2/k', '/namespace/N', '/namespace/N/x', '/authentication/N~op', '/authentication/N~',
      '/authentication/N~a~b', '/authentication/N', '/config/x', '/key/.version', MANIFEST_PATH, 'key/.N/k',
    ];
    for (const ns of ['N', 'N2', 'bad/ns', '', '.version']) {
      for (const p of paths) expect([p, ns, isNamespacePath(p, ns)]).toEqual([p, ns, namespaceOfPath(p) === ns]);
    }
  });

  it('tells root keys and root users from namespaced ones', () => {
    expect(classifyPath('/key/myKey')).toEqual({ kind: 'root-key', keyId: 'myKey' });
    expect(classifyPath('/authentication/admin')).toEqual({ kind: 'root-user', userId: 'admin' });
    expect(namespaceOfPath('/key/myKey')).toBeUndefined();
  });

  it('keeps the stores\' version entries apart from a namespace called "version"', () => {
    expect(classifyPath('/key/.version')).toEqual({ kind: 'store-version', store: 'key' });
    expect(classifyPath('/authentication/.version')).toEqual({ kind: 'store-version', store: 'authentication' });
    expect(classifyPath('/namespace/.version')).toEqual({ kind: 'store-version', store: 'namespace' });
    expect(classifyPath('/key/.version/k')).toEqual({ kind: 'namespace-key', namespace: 'version', keyId: 'k' });
    expect(classifyPath('/namespace/version')).toEqual({ kind: 'namespace', namespace: 'version' });
  });

  it('classifies device and configuration entries, the manifest, and unknown paths', () => {
    for (const p of ['/.initialized', '/config/version', '/config/backup-salt', '/local/dev1/config/unlock-salt', '/domain-key/attended']) {
      expect(classifyPath(p).kind).toBe('config');
    }
    expect(classifyPath(MANIFEST_PATH).kind).toBe('manifest');
    for (const p of ['', 'key/x', '/weird', '/key/.N/a/b', '/key/.N', '/authentication/~u', '/authentication/a~b~c', '/namespace/.x']) {
      expect(classifyPath(p).kind).toBe('other');
    }
  });

  it('builds the paths of keys, users and namespaces', () => {
    expect(keyPath('N', 'k1')).toBe('/key/.N/k1');
    expect(keyPath(undefined, 'k1')).toBe('/key/k1');
    expect(namespacePath('N')).toBe('/namespace/N');
    expect(userPath('N', 'op')).toBe('/authentication/N~op');
    expect(userPath(undefined, 'admin')).toBe('/authentication/admin');
  });
});
