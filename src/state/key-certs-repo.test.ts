import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StateStore } from './store.js';
import type { KeyCertsRepo } from './key-certs-repo.js';

describe('KeyCertsRepo: what a restore forgets', () => {
  let dir: string;
  let store: StateStore;
  let repo: KeyCertsRepo;
  const NS = ['x', 'y', 'z'];
  const ids = ['k1', 'k2'];
  const counts = () => NS.map((ns) => repo.count(ns));
  /** Full reads of every key of `ns`, as a read marked at `mark` would record them. */
  const learn = (ns: string, mark: number) => repo.learn(ns, ids.map((id) => ({ id, cert: '', certType: '', mark })));

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'nhr-key-certs-'));
    store = StateStore.inDir(path.join(dir, 'state'), {}).open();
    for (const namespace of NS) store.roles.insert({ namespace, role: 'replica', epoch: 1, primarySite: 'a' });
    repo = store.keyCerts;
    for (const ns of NS) learn(ns, repo.mark());
  });

  afterEach(() => {
    store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('forgetNamespaces drops the rows of those namespaces only', () => {
    expect(counts()).toEqual([2, 2, 2]);
    repo.forgetNamespaces(['x', 'z']);
    expect(counts()).toEqual([0, 2, 0]);
    expect(repo.page('y', '', 10).map((r) => r.id)).toEqual(ids);
  });

  it('refuses what a read of a restored namespace learnt from before the forget, and keeps the others', () => {
    const end = repo.beginRead();
    try {
      const mark = repo.mark();
      repo.forgetNamespaces(['x']);
      expect(repo.forgottenSince('x', 'k1', mark)).toBe(true);
      expect(repo.forgottenSince('y', 'k1', mark)).toBe(false);
      repo.forget('y', ['k1']);
      // A read of y that raced the restore of x learns its keys; one of x that raced it learns nothing.
      expect(learn('x', mark)).toBe(0);
      expect(learn('y', mark)).toBe(1);
      // Reads marked after the restore learn again.
      expect(learn('x', repo.mark())).toBe(2);
    } finally {
      end();
    }
    // The restore's mark outlives its readers: a read marked before it still learns nothing of x.
    const stale = 0;
    expect(repo.forgottenSince('x', 'k2', stale)).toBe(true);
  });

  it('forgetAll still drops every namespace and refuses every read marked before it', () => {
    const mark = repo.mark();
    repo.forgetAll();
    expect(counts()).toEqual([0, 0, 0]);
    for (const ns of NS) expect(learn(ns, mark)).toBe(0);
  });

  describe('forgetRestored / forgetForRestore: a merge-restore that vouches for its keys', () => {
    const more = ['k1', 'k2', 'k3', 'k4'];
    const learnAll = (ns: string) => repo.learn(ns, more.map((id) => ({ id, cert: 'a'.repeat(64), certType: 't', mark: repo.mark() })));
    const rows = (ns: string) => repo.page(ns, '', 10).map((r) => r.id);

    it('drops the keys it may change and keeps the rest of the namespace; other namespaces untouched', () => {
      learnAll('x');
      const w = repo.watch();
      try {
        repo.forgetForRestore(['x', 'y'], { changed: new Map([['x', new Set(['k2'])], ['y', new Set()]]), since: w.since });
        expect(rows('x')).toEqual(['k1', 'k3', 'k4']);
        expect(rows('y')).toEqual(ids);
        expect(rows('z')).toEqual(ids);
      } finally {
        w.end();
      }
    });

    it('also drops the keys written (forgotten) since the mark, relearnt or not, and refuses reads of the changed ones marked before', () => {
      learnAll('x');
      const w = repo.watch();
      try {
        // A stream apply or gateway write of k3 after the mark; a pass then relearns k3 as it was written.
        repo.forget('x', ['k3']);
        repo.learn('x', [{ id: 'k3', cert: 'b'.repeat(64), certType: 't', mark: repo.mark() }]);
        const readMark = repo.mark();
        repo.forgetRestored('x', new Set(['k2']), w.since);
        expect(rows('x')).toEqual(['k1', 'k4']);
        // A read in flight across the restore may not learn a key the restore changed; an unchanged one it may.
        expect(repo.learn('x', [{ id: 'k2', cert: 'c'.repeat(64), certType: 't', mark: readMark }])).toBe(0);
        expect(repo.learn('x', [{ id: 'k4', cert: 'd'.repeat(64), certType: 't', mark: readMark }])).toBe(1);
      } finally {
        w.end();
      }
    });

    it("forgets the namespace whole for 'all', for a namespace forgotten since the mark, and after forgetAll", () => {
      for (const [why, act] of [
        ['all', (since: number) => repo.forgetRestored('x', 'all', since)],
        ['namespace', (since: number) => (repo.forgetNamespaces(['x']), learnAll('x'), repo.forgetRestored('x', new Set(), since))],
        ['everything', (since: number) => (repo.forgetAll(), learnAll('x'), repo.forgetRestored('x', new Set(), since))],
      ] as const) {
        learnAll('x');
        const w = repo.watch();
        try {
          act(w.since);
          expect(rows('x'), why).toEqual([]);
        } finally {
          w.end();
        }
      }
    });

    it('without certs forgets the namespaces whole, and without namespaces everything (as before)', () => {
      learnAll('x');
      repo.forgetForRestore(['x']);
      expect(counts()).toEqual([0, 2, 2]);
      repo.forgetForRestore(undefined);
      expect(counts()).toEqual([0, 0, 0]);
    });
  });
});
