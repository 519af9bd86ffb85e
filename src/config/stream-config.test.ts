import { describe, expect, it } from 'vitest';
import { ConfigInvalidError } from '../errors.js';
import { parseConfig } from './parse.js';
import { toYaml, validConfigDoc } from './test-helpers.js';

type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function parse(edit: (d: Doc) => void) {
  const doc = validConfigDoc() as Doc;
  edit(doc);
  return parseConfig(toYaml(doc), {});
}

function problems(edit: (d: Doc) => void): string[] {
  try {
    parse(edit);
    return [];
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigInvalidError);
    return [...(err as ConfigInvalidError).problems];
  }
}

describe('config: stream section', () => {
  it('defaults to 7 days or 1,000,000 changes of retention, a 5 s heartbeat, and catch-ups gathered 2 s or 1,000 changes, one per 30 s', () => {
    expect(parse(() => undefined).stream).toEqual({
      retention: { maxAgeMs: 7 * 86_400_000, maxChanges: 1_000_000 },
      heartbeatIntervalMs: 5_000,
      catchupDebounceMs: 2_000,
      catchupWindowMs: 30_000,
      catchupMaxChanges: 1_000,
    });
  });

  it('reads every stream setting', () => {
    const c = parse(
      (d) => (d.stream = { retention: { maxAge: '2d', maxChanges: 5000 }, heartbeatInterval: '2s', catchupDebounce: '0s', catchupWindow: '5m', catchupMaxChanges: '250' }),
    );
    expect(c.stream).toEqual({
      retention: { maxAgeMs: 2 * 86_400_000, maxChanges: 5000 },
      heartbeatIntervalMs: 2000,
      catchupDebounceMs: 0,
      catchupWindowMs: 300_000,
      catchupMaxChanges: 250,
    });
  });

  it('refuses a bad catch-up window or change count, naming the setting, and accepts a window of 0s', () => {
    expect(problems((d) => (d.stream = { catchupWindow: '30' })).join('\n')).toMatch(/stream\.catchupWindow.*not a duration/);
    expect(problems((d) => (d.stream = { catchupWindow: -5 })).join('\n')).toMatch(/stream\.catchupWindow/);
    expect(problems((d) => (d.stream = { catchupMaxChanges: 0 })).join('\n')).toMatch(/stream\.catchupMaxChanges/);
    expect(problems((d) => (d.stream = { catchupMaxChanges: 'many' })).join('\n')).toMatch(/stream\.catchupMaxChanges.*whole number/);
    expect(parse((d) => (d.stream = { catchupWindow: '0s' })).stream.catchupWindowMs).toBe(0);
  });

  it('refuses a bad retention, heartbeat or unknown key, naming the setting', () => {
    expect(problems((d) => (d.stream = { retention: { maxChanges: 0 } })).join('\n')).toMatch(/stream\.retention\.maxChanges/);
    expect(problems((d) => (d.stream = { retention: { maxAge: '7' } })).join('\n')).toMatch(/stream\.retention\.maxAge.*not a duration/);
    expect(problems((d) => (d.stream = { heartbeatInterval: '0s' })).join('\n')).toMatch(/stream\.heartbeatInterval.*longer than 0/);
    expect(problems((d) => (d.stream = { bufferSize: 3 })).join('\n')).toMatch(/stream.*bufferSize/);
  });

  it('refuses a heartbeat interval not shorter than the retention age', () => {
    expect(problems((d) => (d.stream = { retention: { maxAge: '10s' }, heartbeatInterval: '10s' }))).toContain(
      'stream.heartbeatInterval (10s) must be shorter than stream.retention.maxAge (10s)',
    );
  });

  it('refuses replicated generation without a gateway, and accepts it with one', () => {
    expect(problems((d) => (d.namespaces[0].generate = 'replicated'))).toContain(
      'namespaces[0].generate "replicated" needs a gateway (gateway.listen): keys are generated there',
    );
    const c = parse((d) => {
      d.namespaces[0].generate = 'replicated';
      d.gateway = { listen: '127.0.0.1:8443', certFile: '/etc/gw.crt', keyFile: '/etc/gw.key' };
    });
    expect(c.namespaces[0]?.generate).toBe('replicated');
  });
});
