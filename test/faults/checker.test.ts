/**
 * The checker's self-test: synthetic histories and inspections, each with a known defect, and one without.
 * Fast (no processes): it proves the checker can fail, and fails for the right reason.
 */
import { describe, expect, it } from 'vitest';
import type { DaemonStatus, NamespaceStatus } from '../../src/daemon/status.js';
import { check, formatReport, summaryLine } from './checker.js';
import type { HistoryRecord, OpRecord } from './history.js';
import type { KeyView, Observation } from './inspection.js';

const T0 = 1_000_000;
let nextId = 0;

function op(o: Partial<OpRecord> & Pick<OpRecord, 'kind' | 'key'>): OpRecord {
  return { type: 'op', id: nextId++, worker: 'w0', site: 'a', ns: 'alpha', start: T0 + 100 * nextId, end: T0 + 100 * nextId + 10, outcome: 'ack', ...o };
}

function nsStatus(role: 'primary' | 'replica', seq: number): NamespaceStatus {
  return {
    name: 'alpha',
    role,
    epoch: 1,
    primarySite: 'a',
    paused: false,
    busy: false,
    lastSync: null,
    position: null,
    lagSeconds: null,
    lagLimitSeconds: 3600,
    nextScheduledSync: null,
    stream: { state: role === 'primary' ? 'idle' : 'streaming', position: { epoch: 1, seq }, head: null, changesBehind: 0, lagSeconds: 0, lastHeartbeat: null, lastErrorCode: null, lastError: null },
  };
}

function status(site: string, ns: NamespaceStatus): DaemonStatus {
  return { site, version: 'test', startedAt: new Date(T0).toISOString(), namespaces: [ns], members: [] };
}

/** A clean two-site world: a primary of alpha since T0, b a caught-up replica holding what a holds. */
function observation(atA: KeyView[], atB: KeyView[] = atA, over: Partial<Observation> = {}): Observation {
  return {
    at: T0 + 1e6,
    converged: true,
    waitedMs: 10,
    problems: [],
    statuses: { a: status('a', nsStatus('primary', 7)), b: status('b', nsStatus('replica', 7)) },
    inventories: { a: { alpha: atA }, b: { alpha: atB } },
    roleChecks: { a: { alpha: { primary: 200, replica: 503 } }, b: { alpha: { primary: 503, replica: 200 } } },
    quarantine: { a: [], b: [] },
    roles: {
      alpha: {
        a: [{ at: T0, role: 'primary', epoch: 1, action: 'init', actor: 'daemon' }],
        b: [{ at: T0, role: 'replica', epoch: 1, action: 'init', actor: 'daemon' }],
      },
    },
    ...over,
  };
}

const meta: HistoryRecord = { type: 'meta', seed: 7, minutes: 1, sites: ['a', 'b'], namespaces: [{ name: 'alpha', primary: 'a', generate: 'replicated' }], mechanism: 'test', startedAt: T0 };
const key = (id: string, pub: string, extra: Partial<KeyView> = {}): KeyView => ({ id, pub, tags: [], ...extra });

describe('the fault checker', () => {
  it('passes a history whose every acknowledged write is at the primary and at the caught-up replica', () => {
    const ops = [op({ kind: 'import', key: 'k1', pub: 'p1' }), op({ kind: 'tag', key: 'k1', tag: 't0' }), op({ kind: 'import', key: 'k2', pub: 'p2', outcome: 'unknown' })];
    const inv = [key('k1', 'p1', { tags: ['t0'] })];
    const r = check([meta, ...ops], observation(inv));
    expect(r.findings).toEqual([]);
    expect(r.ops).toEqual({ total: 3, ack: 2, refused: 0, unknown: 1 });
    expect(summaryLine(r)).toMatch(/^faults seed=7 minutes=1 PASS ops=3 ack=2 refused=0 unknown=1 faults=0 lost=0 /);
  });

  it('flags one lost write, one duplicate and one extra key, each for what it is', () => {
    const ops = [
      op({ kind: 'import', key: 'lost1', pub: 'pl' }),
      op({ kind: 'import', key: 'k2', pub: 'p2' }),
      op({ kind: 'generate', key: 'k3', pub: 'p3' }),
    ];
    // lost1 is nowhere; k3 came back with k2's public key (one key twice); x9 was never created by anyone.
    const inv = [key('k2', 'p2'), key('k3', 'p2'), key('x9', 'p9')];
    const r = check([meta, ...ops], observation(inv));
    expect(r.counts.lost).toBe(1);
    expect(r.findings.find((f) => f.kind === 'lost')).toMatchObject({ ns: 'alpha', site: 'a', key: 'lost1' });
    expect(r.counts.duplicated).toBe(2); // at a and at b
    expect(r.findings.find((f) => f.kind === 'duplicated')!.detail).toMatch(/alpha\/k2 and alpha\/k3/);
    expect(r.findings.filter((f) => f.kind === 'extra').map((f) => f.key)).toEqual(['x9']);
    expect(r.counts['wrong-key']).toBe(1); // k3 is not the key its generate read back
    expect(formatReport(r)).toMatch(/FINDINGS lost \(1\):\n {2}- \[alpha@a\] import #\d+ of lost1 acknowledged at a/);
    expect(summaryLine(r)).toMatch(/ FAIL .* lost=1 wrong-key=1 duplicated=2 extra=1 /);
  });

  it('counts an acknowledged write found only in a later quarantine file of the site that took it as quarantined, not lost', () => {
    const w = op({ kind: 'import', key: 'q1', pub: 'pq' });
    const quarantine = { a: [{ file: 'alpha-epoch1.nsbackup', ns: 'alpha', createdAt: w.end + 500, keys: ['q1'] }], b: [] };
    const r = check([meta, w], observation([], [], { quarantine }));
    expect(r.findings).toEqual([]);
    expect(r.info.quarantined).toBe(1);
    // A quarantine file written before the ack cannot hold it.
    const early = { a: [{ file: 'alpha-epoch1.nsbackup', ns: 'alpha', createdAt: w.end - 500, keys: ['q1'] }], b: [] };
    expect(check([meta, w], observation([], [], { quarantine: early })).counts.lost).toBe(1);
  });

  it('flags an acknowledged delete undone, and a refused create that happened anyway', () => {
    const ops = [op({ kind: 'import', key: 'd1', pub: 'pd' }), op({ kind: 'delete', key: 'd1' }), op({ kind: 'import', key: 'r1', pub: 'pr', outcome: 'refused', status: 503 })];
    const inv = [key('d1', 'pd'), key('r1', 'pr')];
    const r = check([meta, ...ops], observation(inv));
    expect(r.findings.map((f) => [f.kind, f.key])).toEqual([
      ['lost', 'd1'],
      ['extra', 'r1'],
    ]);
  });

  it('flags an acknowledged tag or certificate missing at the primary', () => {
    const ops = [op({ kind: 'import', key: 'k1', pub: 'p1' }), op({ kind: 'tag', key: 'k1', tag: 't0' }), op({ kind: 'cert', key: 'k1', cert: 'c1' })];
    const r = check([meta, ...ops], observation([key('k1', 'p1')]));
    expect(r.findings.map((f) => f.detail)).toEqual([expect.stringMatching(/^tag t0 on k1/), expect.stringMatching(/^certificate on k1/)]);
  });

  it('flags a replica that differs while its status says it is caught up (stale status), and one that admits it is behind', () => {
    const ops = [op({ kind: 'import', key: 'k1', pub: 'p1' }), op({ kind: 'import', key: 'k2', pub: 'p2' })];
    const atA = [key('k1', 'p1'), key('k2', 'p2')];
    const stale = check([meta, ...ops], observation(atA, [key('k1', 'p1')]));
    expect(stale.findings.map((f) => f.kind).sort()).toEqual(['diverged', 'stale-status']);
    expect(stale.findings.find((f) => f.kind === 'stale-status')!.detail).toMatch(/b's status says alpha is caught up with a \(position 1\.7.*k2 missing/);
    const behind = observation(atA, [key('k1', 'p1')], { converged: false, problems: ['alpha@b: stream at 1.6, primary a head 1.7'] });
    behind.statuses.b = status('b', nsStatus('replica', 6));
    const r = check([meta, ...ops], behind);
    expect(r.findings.map((f) => f.kind).sort()).toEqual(['diverged', 'unconverged']);
  });

  it('flags a write acknowledged through a site that was not primary then, by its audit log', () => {
    const w = op({ kind: 'import', key: 'k1', pub: 'p1', site: 'b' });
    const r = check([meta, w], observation([key('k1', 'p1')]));
    expect(r.findings).toEqual([expect.objectContaining({ kind: 'ack-not-primary', site: 'b', key: 'k1' })]);
    expect(r.findings[0]!.detail).toMatch(/which was replica@1 during the request/);
  });

  it('flags 401s from a site that was primary throughout, once per site and namespace', () => {
    const ops = [op({ kind: 'import', key: 'k1', outcome: 'refused', status: 401 }), op({ kind: 'tag', key: 'k0', outcome: 'refused', status: 401 }), op({ kind: 'import', key: 'k2', site: 'b', outcome: 'refused', status: 401 })];
    const r = check([meta, ...ops], observation([]));
    expect(r.findings).toEqual([expect.objectContaining({ kind: 'unwritable-primary', ns: 'alpha', site: 'a' })]);
    expect(r.findings[0]!.detail).toMatch(/^2 write\(s\) refused with 401 by a while it was primary of alpha/);
  });

  it('counts an acknowledgement by a primary whose epoch was already superseded elsewhere', () => {
    const w = op({ kind: 'import', key: 'k1', pub: 'p1', site: 'a' });
    const obs = observation([key('k1', 'p1')]);
    obs.roles.alpha!.b!.push({ at: w.start - 5, role: 'primary', epoch: 2, action: 'promote', actor: 'op' });
    expect(check([meta, w], obs).info.ackedBySupersededPrimary).toBe(1);
  });

  describe('automatic failover runs (terms, acknowledgements after a step-down, scenario promises)', () => {
    const autoMeta: HistoryRecord = { ...(meta as Extract<HistoryRecord, { type: 'meta' }>), failover: 'automatic', leaseTtlMs: 6_000, safetyMarginMs: 1_000 };
    // a primary at epoch 1, steps down at T0+1000; b promotes at epoch 2 at T0+3000.
    const roles: Observation['roles'] = {
      alpha: {
        a: [
          { at: T0, role: 'primary', epoch: 1, action: 'init', actor: 'daemon' },
          { at: T0 + 1_000, role: 'fenced', epoch: 1, action: 'fence', actor: 'daemon' },
        ],
        b: [
          { at: T0, role: 'replica', epoch: 1, action: 'init', actor: 'daemon' },
          { at: T0 + 3_000, role: 'primary', epoch: 2, action: 'promote', actor: 'automatic failover' },
        ],
      },
    };
    const at = (site: string, start: number, end: number, id: string): OpRecord => op({ kind: 'import', key: id, pub: id, site, start: T0 + start, end: T0 + end });
    const inv = (ids: string[]): KeyView[] => ids.map((id) => key(id, id));

    it('passes acknowledgements of one term after another, counting one that came within the margin after the step-down', () => {
      const ops = [at('a', 100, 200, 'k1'), at('a', 900, 1_500, 'k2'), at('b', 3_100, 3_200, 'k3')];
      const r = check([autoMeta, ...ops], observation(inv(['k1', 'k2', 'k3']), inv(['k1', 'k2', 'k3']), { roles }));
      expect(r.findings.filter((f) => ['split-brain', 'ack-after-lease-lost', 'failover'].includes(f.kind))).toEqual([]);
      expect(r.info.ackedAfterStepDown).toBe(1);
      expect(r.terms).toEqual({ alpha: [expect.stringMatching(/^a@1 /), expect.stringMatching(/^b@2 /)] });
    });

    it('flags an acknowledgement after the step-down plus the margin, and two primaries acknowledging at the same time', () => {
      const ops = [at('a', 100, 200, 'k1'), at('b', 3_100, 3_200, 'k3'), at('a', 900, 3_500, 'late')];
      const r = check([autoMeta, ...ops], observation(inv(['k1', 'k3', 'late']), inv(['k1', 'k3', 'late']), { roles }));
      expect(r.counts['ack-after-lease-lost']).toBe(1);
      expect(r.findings.find((f) => f.kind === 'ack-after-lease-lost')?.detail).toMatch(/late acknowledged by a .* 2500 ms after it stepped down from epoch 1 \(margin 1000 ms\)/);
      expect(r.counts['split-brain']).toBe(1);
      expect(r.findings.find((f) => f.kind === 'split-brain')?.detail).toMatch(/a@1 .* overlaps b@2/);
    });

    it('flags two sites acknowledging at one epoch', () => {
      const same: Observation['roles'] = { alpha: { a: roles.alpha!.a!, b: [{ at: T0 + 3_000, role: 'primary', epoch: 1, action: 'promote', actor: 'x' }] } };
      const ops = [at('a', 100, 200, 'k1'), at('b', 3_100, 3_200, 'k3')];
      const r = check([autoMeta, ...ops], observation(inv(['k1', 'k3']), inv(['k1', 'k3']), { roles: same }));
      expect(r.findings.find((f) => f.kind === 'split-brain')?.detail).toMatch(/two sites acknowledged writes of alpha at epoch 1/);
    });

    it('reports a broken scenario promise as a failover finding; manual runs ignore terms', () => {
      const fault: HistoryRecord = { type: 'fault', step: 3, kind: 'kill-witness', target: 'etcd witness', start: T0, end: T0 + 1, ok: true, detail: '', violation: 'primaries changed' };
      expect(check([autoMeta, fault], observation([])).findings).toEqual([expect.objectContaining({ kind: 'failover', detail: expect.stringMatching(/kill-witness #3 .*primaries changed/) })]);
      const ops = [at('a', 100, 200, 'k1'), at('b', 3_100, 3_200, 'k3'), at('a', 900, 3_500, 'late')];
      const manual = check([meta, ...ops], observation(inv(['k1', 'k3', 'late']), inv(['k1', 'k3', 'late']), { roles }));
      expect(manual.counts['split-brain'] + manual.counts['ack-after-lease-lost']).toBe(0);
      expect(manual.terms).toBeUndefined();
    });
  });
});
