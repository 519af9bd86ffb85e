import { describe, expect, it } from 'vitest';
import type { LoggedChange } from '../state/changelog-repo.js';
import { changeLineFor, formatPosition, MAX_LINE_BYTES, parseLine, parseLogParam, parsePosition } from './protocol.js';

const REF = '0f8a3c1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b';
const base = { type: 'change', epoch: 1, seq: 7, at: 1_700_000_000_000, ref: REF };
const LOG = '6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f';

describe('stream lines', () => {
  it('accepts each kind of change, heartbeats and snapshot requests', () => {
    for (const line of [
      { ...base, kind: 'key-deleted', keyId: 'k1' },
      { ...base, kind: 'key-moved', keyId: 'k1', newId: 'k2' },
      { ...base, kind: 'cert-set', keyId: 'k1', contentType: 'application/octet-stream', data: 'AAEC' },
      { ...base, kind: 'tag-added', keyId: 'k1', tag: 't' },
      { ...base, kind: 'label-set', keyId: 'k1', label: 'ünïcode' },
      { ...base, kind: 'catchup', reason: 'user change' },
      { type: 'heartbeat', at: 5, head: { epoch: 1, seq: 0 } },
      { type: 'snapshot-required', reason: 'old', head: { epoch: 2, seq: 9 } },
      // The change log's id on every kind of line (optional: a primary older than log ids sends none).
      { ...base, kind: 'key-deleted', keyId: 'k1', log: LOG },
      { type: 'heartbeat', at: 5, head: { epoch: 1, seq: 0 }, log: LOG },
      { type: 'snapshot-required', reason: 'old', head: { epoch: 2, seq: 9 }, log: LOG },
    ]) {
      expect(parseLine(JSON.stringify(line)), JSON.stringify(line)).toMatchObject({ ok: true });
    }
  });

  it('refuses malformed lines, naming what is wrong', () => {
    const cases: [string, RegExp][] = [
      ['{not json', /not JSON/],
      [JSON.stringify({ type: 'gossip' }), /"gossip" is not change, heartbeat or snapshot-required/],
      [JSON.stringify({ ...base, kind: 'key-deleted' }), /keyId/],
      [JSON.stringify({ ...base, kind: 'key-deleted', keyId: '../etc' }), /keyId must be a valid NetHSM id/],
      [JSON.stringify({ ...base, kind: 'key-deleted', keyId: 'k', extra: 1 }), /extra|Unrecognized/i],
      [JSON.stringify({ ...base, seq: 0, kind: 'key-deleted', keyId: 'k' }), /seq/],
      [JSON.stringify({ ...base, ref: 'x', kind: 'key-deleted', keyId: 'k' }), /ref must be a UUID/],
      [JSON.stringify({ ...base, kind: 'label-set', keyId: 'k', label: 'x'.repeat(33) }), /label must be at most 32 bytes/],
      [JSON.stringify({ ...base, kind: 'cert-set', keyId: 'k', contentType: 'a', data: 'not base64!' }), /data must be canonical base64/],
      [JSON.stringify({ ...base, kind: 'key-imported', keyId: 'k', envelope: { v: 1 } }), /envelope/],
      [JSON.stringify({ ...base, kind: 'explode', keyId: 'k' }), /kind/],
      [JSON.stringify({ type: 'heartbeat', at: -1, head: { epoch: 1, seq: 0 } }), /at/],
      [JSON.stringify({ ...base, kind: 'key-deleted', keyId: 'k', log: 'not-a-log' }), /log must be a UUID \(a change log id\)/],
      [JSON.stringify({ type: 'heartbeat', at: 5, head: { epoch: 1, seq: 0 }, log: LOG.toUpperCase() }), /log must be a UUID/],
      [JSON.stringify({ type: 'snapshot-required', reason: 'r', head: { epoch: 1, seq: 0 }, log: 7 }), /log/],
    ];
    for (const [text, problem] of cases) {
      const r = parseLine(text);
      expect(r.ok, text).toBe(false);
      if (!r.ok) expect(r.problem, text).toMatch(problem);
    }
  });

  it('refuses an oversized line without parsing it', () => {
    const r = parseLine(JSON.stringify({ ...base, kind: 'catchup', reason: 'x'.repeat(MAX_LINE_BYTES) }));
    expect(r).toEqual({ ok: false, problem: `line is over ${MAX_LINE_BYTES} bytes` });
  });

  it('reads the log query parameter: absent, none, or a log id', () => {
    expect(parseLogParam(null)).toEqual({ ok: true, log: undefined });
    expect(parseLogParam('none')).toEqual({ ok: true, log: null });
    expect(parseLogParam(LOG)).toEqual({ ok: true, log: LOG });
    for (const bad of ['', 'None', LOG.toUpperCase(), `${LOG}x`, '../x']) expect(parseLogParam(bad)).toEqual({ ok: false });
  });

  it('reads and writes positions as <epoch>.<seq>', () => {
    expect(parsePosition(formatPosition({ epoch: 3, seq: 41 }))).toEqual({ epoch: 3, seq: 41 });
    for (const bad of ['', '3', '3.', '.4', '-1.2', '1.2.3', 'a.b', '1e3.1', null, undefined]) expect(parsePosition(bad)).toBeUndefined();
  });
});

describe('changeLineFor', () => {
  const logged = (over: Partial<LoggedChange>): LoggedChange => ({ namespace: 'ns', epoch: 1, seq: 3, createdAt: 10, ref: REF, kind: 'key-deleted', keyId: 'k', detail: {}, ...over });

  it("gives each site its own envelope, and a catch-up to a site that has none", () => {
    const envelopes = { b: { v: 2, site: 'b' }, c: { v: 2, site: 'c' } };
    const c = logged({ kind: 'key-imported', envelopes });
    expect(changeLineFor(c, 'b')).toMatchObject({ kind: 'key-imported', envelope: { site: 'b' } });
    expect(changeLineFor(c, 'd')).toMatchObject({ kind: 'catchup', reason: 'key k imported without an envelope for site d' });
  });

  it('sends an import logged with an old-format envelope (before an upgrade) as a catch-up', () => {
    const c = logged({ kind: 'key-imported', envelopes: { b: { v: 1, site: 'b' } } });
    expect(changeLineFor(c, 'b')).toMatchObject({ kind: 'catchup', reason: 'key k imported in envelope format v1, which is not bound to its key id' });
  });

  it('carries public fields and turns incomplete rows into catch-ups', () => {
    expect(changeLineFor(logged({ kind: 'tag-added', detail: { tag: 't' } }), 'b')).toEqual({ type: 'change', epoch: 1, seq: 3, at: 10, ref: REF, kind: 'tag-added', keyId: 'k', tag: 't' });
    expect(changeLineFor(logged({ kind: 'key-moved', detail: {} }), 'b')).toMatchObject({ kind: 'catchup' });
    expect(changeLineFor(logged({ kind: 'catchup', keyId: undefined, detail: { reason: 'users' } }), 'b')).toMatchObject({ kind: 'catchup', reason: 'users' });
    expect(changeLineFor(logged({ kind: 'key-deleted' }), 'b', LOG)).toEqual({ type: 'change', epoch: 1, seq: 3, at: 10, ref: REF, log: LOG, kind: 'key-deleted', keyId: 'k' });
    expect(changeLineFor(logged({ kind: 'key-moved', detail: {} }), 'b', LOG)).toMatchObject({ kind: 'catchup', log: LOG });
  });
});
