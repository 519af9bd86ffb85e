import { describe, expect, it } from 'vitest';
import type { ChangeKind, LoggedChange } from '../state/changelog-repo.js';
import { replayChains } from './log-replay.js';

let seq = 0;
const c = (kind: ChangeKind, keyId: string, detail: Record<string, unknown> = {}): LoggedChange => ({ namespace: 'beta', epoch: 1, seq: ++seq, createdAt: 0, kind, keyId, ref: `r${seq}`, detail });
const seqs = (chains: LoggedChange[][]) => chains.map((ch) => ch.map((x) => `${x.kind}:${x.keyId}`));

describe('replayChains', () => {
  it('replays each key in its own chain, in log order', () => {
    const rows = [c('key-imported', 'k1'), c('key-imported', 'k2'), c('tag-added', 'k1', { tag: 't' }), c('key-deleted', 'k2')];
    expect(seqs(replayChains(rows))).toEqual([
      ['key-imported:k1', 'tag-added:k1'],
      ['key-imported:k2', 'key-deleted:k2'],
    ]);
  });

  it('drops a label, tag or certificate change a later one of the same thing supersedes on the same copy', () => {
    const rows = [
      c('label-set', 'k', { label: 'a' }),
      c('tag-added', 'k', { tag: 'x' }),
      c('label-set', 'k', { label: 'b' }),
      c('tag-added', 'k', { tag: 'y' }),
      c('tag-removed', 'k', { tag: 'x' }),
      c('cert-set', 'k'),
      c('label-removed', 'k'),
    ];
    expect(seqs(replayChains(rows))).toEqual([['tag-added:k', 'tag-removed:k', 'cert-set:k', 'label-removed:k']]);
    expect(replayChains(rows)[0]!.map((x) => x.detail.tag)).toEqual(['y', 'x', undefined, undefined]);
  });

  it('keeps what was set on an earlier copy of the key (before a delete and re-import)', () => {
    const rows = [c('label-set', 'k', { label: 'old' }), c('key-deleted', 'k'), c('key-imported', 'k'), c('label-set', 'k', { label: 'new' })];
    expect(seqs(replayChains(rows))).toEqual([['label-set:k', 'key-deleted:k', 'key-imported:k', 'label-set:k']]);
  });

  it('makes one chain of everything when a move links keys', () => {
    const rows = [c('key-imported', 'a'), c('key-imported', 'b'), c('key-moved', 'a', { newId: 'c' })];
    expect(seqs(replayChains(rows))).toEqual([['key-imported:a', 'key-imported:b', 'key-moved:a']]);
    expect(replayChains([])).toEqual([]);
  });
});
