/**
 * For tests that drive a snapshot apply at a lab replica directly (seams the daemon's sync does not expose): a fresh
 * snapshot of `namespace` from its primary's daemon, copied into the replica's work dir, and the replica daemon's own
 * apply dependencies (its device, barrier, key caches), `over` on top.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Lab } from '../../src/lab/lab.js';
import type { ApplyDeps } from '../../src/replicator/snapshot-apply.js';
import { takeSnapshot } from '../../src/replicator/snapshot-source.js';

export async function snapshotAndDeps(
  lab: Lab,
  over: Partial<ApplyDeps> = {},
  at: { namespace?: string; from?: string; to?: string } = {},
): Promise<{ file: string; deps: ApplyDeps }> {
  const { namespace = 'alpha', from = 'a', to = 'b' } = at;
  const b = lab.site(to).daemon!;
  const snap = await takeSnapshot(lab.site(from).daemon!.failover.snapshotDeps(), namespace, 1);
  const file = b.ctx.work.temp('test-snapshot');
  await writeFile(file, await readFile(snap.file));
  const deps: ApplyDeps = {
    device: b.ctx.device,
    work: b.ctx.work,
    deviceOpen: b.ctx.deviceOpen,
    snapshotOpen: b.ctx.snapshotOpen,
    replicationUserId: 'replicator',
    ...over,
  };
  return { file, deps };
}
