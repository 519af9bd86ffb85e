import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  ERROR_CLASSES,
  NetHsmHttpError,
  NetHsmUnreachableError,
  BackupWrongPassphraseError,
  ConfigInvalidError,
  isRetryable,
} from './errors.js';

describe('error registry', () => {
  it('gives every class a unique NHR_ERR_ code', () => {
    const codes = ERROR_CLASSES.map((c) => c.code);
    for (const code of codes) expect(code).toMatch(/^NHR_ERR_[A-Z0-9]+(_[A-Z0-9]+)+$|^NHR_ERR_INTERNAL$/);
    expect(new Set(codes).size).toBe(codes.length);
  });

  it('keeps docs/errors.md listing exactly the registered codes', () => {
    const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
    const documented = new Set([...doc.matchAll(/^## (NHR_ERR_[A-Z0-9_]+)/gm)].map((m) => m[1]));
    const registered = new Set(ERROR_CLASSES.map((c) => c.code));
    expect([...registered].filter((c) => !documented.has(c))).toEqual([]);
    expect([...documented].filter((c) => !registered.has(c!))).toEqual([]);
  });

  it('carries code, hint, cause and operator context', () => {
    const cause = new Error('boom');
    const err = new ConfigInvalidError('sites[1].url is required', { cause, path: 'sites[1].url', site: 'b' });
    expect(err.code).toBe('NHR_ERR_CONFIG_INVALID');
    expect(err.hint).toMatch(/check-config/);
    expect(err.cause).toBe(cause);
    expect(err.toJSON()).toEqual({ code: 'NHR_ERR_CONFIG_INVALID', message: 'sites[1].url is required', site: 'b', path: 'sites[1].url' });
    expect(err).toBeInstanceOf(Error);
  });

  it('decides retryability by class, status and system error code', () => {
    expect(isRetryable(new NetHsmUnreachableError('down'))).toBe(true);
    expect(isRetryable(new BackupWrongPassphraseError('no'))).toBe(false);
    expect(isRetryable(new NetHsmHttpError(503, 'busy', { operation: 'GET /info' }))).toBe(true);
    expect(isRetryable(new NetHsmHttpError(429, 'Too many requests', {}))).toBe(true);
    expect(isRetryable(new NetHsmHttpError(400, 'bad', {}))).toBe(false);
    expect(isRetryable(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isRetryable(new Error('plain'))).toBe(false);
    expect(isRetryable(undefined)).toBe(false);
  });
});
