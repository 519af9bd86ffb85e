/**
 * The operator drill's first step: berlin's daemon starts before hamburg's exists, and `status` at berlin said, for
 * hamburg's namespace it never synced, "If hamburg is lost, promote here: `nethsm-replicator promote signing`": a
 * command that is refused (never-synced) or, forced, makes an empty namespace primary. A replica without a copy is
 * told to bring its primary up and take the first sync instead.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { statusProblems } from '../../src/cli/status.js';
import { Lab } from '../../src/lab/lab.js';
import { waitFor } from '../helpers/wait.js';

describe('no primary for a namespace this replica never synced', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  it('names the first sync as the remedy, not a promote', async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '200ms' });
    await lab.startDaemons();
    const [a, b] = [lab.site('a'), lab.site('b')];
    await a.stopDaemon();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')?.status === 'unreachable', 'b to mark a unreachable', 15_000);
    const line = statusProblems(await b.daemon!.status()).find((p) => p.startsWith('namespace alpha: no primary'));
    expect(line).toBe(
      'namespace alpha: no primary: its primary a is UNREACHABLE, and this site never synced the namespace (it holds no copy to promote)\n' +
        "Try: Bring a's daemon up (or the network path to it); then `nethsm-replicator sync alpha` here takes the first copy (docs/operations.md §1.5).",
    );

    // Once synced, a lost primary is a reason to promote again.
    await a.startDaemon();
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    await a.stopDaemon();
    await waitFor(() => b.daemon!.ctx.monitor.get('a')?.status === 'unreachable', 'b to mark a unreachable again', 15_000);
    expect(statusProblems(await b.daemon!.status()).find((p) => p.startsWith('namespace alpha: no primary'))).toMatch(/If a is lost, promote here: `nethsm-replicator promote alpha`/);
  }, 90_000);
});
