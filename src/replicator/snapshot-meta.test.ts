/** A snapshot's meta from the primary: the change log its position is in is optional (older primaries) but checked. */
import { describe, expect, it } from 'vitest';
import type { BackupManifest } from '../backup/manifest.js';
import { PeerMessageInvalidError } from '../errors.js';
import { snapshotMetaOf } from './snapshot-meta.js';

const LOG = '6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f';
const manifest = (meta: Record<string, unknown>) => ({ kind: 'namespace', namespace: 'alpha', meta }) as unknown as BackupManifest;
const base = { epoch: 1, site: 'a', takenAt: 5, administrators: ['admin'], seq: 4 };

describe('snapshot meta', () => {
  it('reads the change log of the position, and its absence from a primary older than log ids', () => {
    expect(snapshotMetaOf(manifest({ ...base, log: LOG }), 'alpha')).toEqual({ ...base, log: LOG });
    expect(snapshotMetaOf(manifest(base), 'alpha')).toEqual(base);
  });

  it('refuses a malformed log id, naming the field', () => {
    for (const log of ['x', LOG.toUpperCase(), 7, null]) {
      const err = (() => {
        try {
          snapshotMetaOf(manifest({ ...base, log }), 'alpha');
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(PeerMessageInvalidError);
      expect((err as Error).message).toMatch(/^snapshot manifest meta\.log /);
    }
  });
});
